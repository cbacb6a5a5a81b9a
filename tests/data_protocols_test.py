"""Protocols (methods.md §1.6): sizes, per-class counts, disjointness, determinism per seed."""

import numpy as np
import pytest

from unhash_jax.data import builders
from unhash_jax.data import protocols


def _fake_cifar(seed=123):
  """Labels/official splits shaped like CIFAR-10 (5,000 train + 1,000 test per class), shuffled."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(10), 6000)
  split = np.tile(np.array(["train"] * 5000 + ["test"] * 1000), 10)
  perm = rng.permutation(len(labels))
  labels, split = labels[perm].astype(np.int32), split[perm]
  return builders.Source(name="fake_cifar", images=np.zeros((len(labels), 1, 1, 1), np.uint8),
                         labels=labels, official_split=split,
                         class_names=tuple(str(c) for c in range(10)), image_shape=(1, 1, 1))


def _fake_digits():
  labels = np.array([0] * 178 + [1] * 182 + [2] * 177 + [3] * 183 + [4] * 181 + [5] * 182
                    + [6] * 181 + [7] * 179 + [8] * 174 + [9] * 180, np.int32)
  labels = np.random.default_rng(7).permutation(labels)
  return builders.Source(name="fake_digits", images=np.zeros((len(labels), 1, 1, 1), np.uint8),
                         labels=labels, official_split=np.full(len(labels), "train"),
                         class_names=tuple(str(c) for c in range(10)), image_shape=(1, 1, 1))


@pytest.fixture(scope="module")
def cifar():
  return _fake_cifar()


def _per_class(labels, idx):
  return np.bincount(labels[idx], minlength=10).tolist()


def _assert_sorted_unique(a):
  assert a.dtype == np.int64
  assert np.all(np.diff(a) > 0)


# (protocol, query, train, database, per-class query, per-class train, k)
_SIZES = [
    ("cifar10-i", 1000, 5000, 54000, 100, 500, 1000),
    ("cifar10-i-59k", 1000, 5000, 59000, 100, 500, 1000),
    ("cifar10-ii", 10000, 50000, 50000, 1000, 5000, 1000),
    ("cibhash", 5000, 5000, 50000, None, 500, 1000),
]


@pytest.mark.parametrize("name,nq,nt,ndb,pq,pt,k", _SIZES)
def test_cifar_protocol_sizes_and_rules(cifar, name, nq, nt, ndb, pq, pt, k):
  s = protocols.make_splits(name, cifar, seed=0)
  assert (len(s.query), len(s.train), len(s.database)) == (nq, nt, ndb)
  assert s.topk == k and s.protocol == name
  for a in (s.query, s.train, s.database, s.val_query, s.val_database):
    _assert_sorted_unique(a)
  if pq is not None:
    assert _per_class(cifar.labels, s.query) == [pq] * 10
  assert _per_class(cifar.labels, s.train) == [pt] * 10
  q, t, db = set(s.query.tolist()), set(s.train.tolist()), set(s.database.tolist())
  assert not q & t and not q & db
  everything = set(range(len(cifar)))
  if name == "cifar10-i":
    assert not t & db and q | t | db == everything
  elif name == "cifar10-i-59k":
    assert t <= db and q | db == everything
  elif name == "cifar10-ii":
    assert t == db == set(np.flatnonzero(cifar.official_split == "train").tolist())
    assert q == set(np.flatnonzero(cifar.official_split == "test").tolist())
  else:  # cibhash
    test = set(np.flatnonzero(cifar.official_split == "test").tolist())
    vq = set(s.val_query.tolist())
    assert q <= test and vq <= test and not q & vq and q | vq == test
    assert len(vq) == 5000
    assert db == set(np.flatnonzero(cifar.official_split == "train").tolist())
    assert t <= db
    assert np.array_equal(s.val_database, s.database)


@pytest.mark.parametrize("name", ["cifar10-i", "cifar10-i-59k", "cifar10-ii"])
def test_validation_carved_from_train_stratified(cifar, name):
  s = protocols.make_splits(name, cifar, seed=3, val_fraction=0.1)
  per_class_train = np.bincount(cifar.labels[s.train], minlength=10)
  expected = [int(round(0.1 * n)) for n in per_class_train]
  assert _per_class(cifar.labels, s.val_query) == expected
  vq, vdb, t = set(s.val_query.tolist()), set(s.val_database.tolist()), set(s.train.tolist())
  assert vq <= t and vdb == t - vq
  assert not vq & set(s.query.tolist())


def test_val_fraction_zero_and_bad(cifar):
  s = protocols.make_splits("cifar10-i", cifar, val_fraction=0.0)
  assert len(s.val_query) == 0 and np.array_equal(s.val_database, s.train)
  with pytest.raises(ValueError, match="val_fraction"):
    protocols.make_splits("cifar10-i", cifar, val_fraction=1.0)


def test_cifar10_i_59k_is_the_same_draw(cifar):
  a = protocols.make_splits("cifar10-i", cifar, seed=5)
  b = protocols.make_splits("cifar10-i-59k", cifar, seed=5)
  assert np.array_equal(a.query, b.query) and np.array_equal(a.train, b.train)
  assert np.array_equal(b.database, np.union1d(a.database, a.train))


@pytest.mark.parametrize("name", ["cifar10-i", "cibhash"])
def test_determinism_per_seed(cifar, name):
  a = protocols.make_splits(name, cifar, seed=11)
  b = protocols.make_splits(name, cifar, seed=11)
  c = protocols.make_splits(name, cifar, seed=12)
  for f in ("query", "train", "database", "val_query", "val_database"):
    assert np.array_equal(getattr(a, f), getattr(b, f)), f
  assert not np.array_equal(a.query, c.query)
  assert not np.array_equal(a.train, c.train)
  assert not np.array_equal(a.val_query, c.val_query)


def test_digits_protocol():
  src = _fake_digits()
  s = protocols.make_splits("digits", src, seed=0)
  assert len(src) == 1797
  assert _per_class(src.labels, s.query) == [30] * 10
  assert len(s.train) == len(s.database) == 1497 and np.array_equal(s.train, s.database)
  assert set(s.query.tolist()) | set(s.train.tolist()) == set(range(1797))
  assert s.topk is None
  per_class = np.bincount(src.labels[s.train], minlength=10)
  assert _per_class(src.labels, s.val_query) == [int(round(0.1 * n)) for n in per_class]
  other = protocols.make_splits("digits", src, seed=1)
  assert not np.array_equal(s.query, other.query)


def test_default_protocols_exist():
  for dataset, name in protocols.DEFAULT_PROTOCOL.items():
    assert name in protocols.PROTOCOLS, dataset


def test_unknown_protocol_lists_choices(cifar):
  with pytest.raises(ValueError) as e:
    protocols.make_splits("cifar-1", cifar)
  for name in protocols.PROTOCOLS:
    assert name in str(e.value)


def test_too_small_source_and_missing_split():
  with pytest.raises(ValueError, match="at least 600"):
    protocols.make_splits("cifar10-i", _fake_digits())
  with pytest.raises(ValueError, match="'test'"):
    protocols.make_splits("cifar10-ii", _fake_digits())


def test_check_splits_catches_overlap():
  def splits(**kw):
    base = dict(protocol="x", query=np.array([0, 1]), train=np.array([2, 3]),
                database=np.array([2, 3, 4]), val_query=np.array([2]), val_database=np.array([3]),
                topk=None)
    base.update(kw)
    return protocols.Splits(**base)

  protocols.check_splits(splits(), train_vs_database="subset")
  with pytest.raises(ValueError, match="query and train"):
    protocols.check_splits(splits(train=np.array([1, 2])))
  with pytest.raises(ValueError, match="query and database"):
    protocols.check_splits(splits(database=np.array([0, 5])))
  with pytest.raises(ValueError, match="train and database overlap"):
    protocols.check_splits(splits(), train_vs_database="disjoint")
  with pytest.raises(ValueError, match="differ"):
    protocols.check_splits(splits(), train_vs_database="equal")
  with pytest.raises(ValueError, match="val_query and val_database"):
    protocols.check_splits(splits(val_database=np.array([2, 3])))
  with pytest.raises(ValueError, match="duplicate"):
    protocols.check_splits(splits(database=np.array([2, 2, 3])))


def test_counts_are_logged(cifar, caplog):
  with caplog.at_level("INFO"):
    protocols.make_splits("cifar10-i", cifar)
  assert "'query': 1000" in caplog.text and "'database': 54000" in caplog.text
