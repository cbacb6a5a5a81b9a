"""Tests of the cosine-ranking mAP against a literal float64 loop and against the Hamming evaluator."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unhash_jax import cosine_retrieval, ops, retrieval

# ---------------------------------------------------------------------------------------------------
# Independent reference: one query at a time, float64 cosines, Python sort on (-cos, index).


def ref_cosines(q, x):
  q, x = np.asarray(q, np.float64), np.asarray(x, np.float64)
  out = np.zeros(len(x))
  nq = np.sqrt(q @ q)
  for j, row in enumerate(x):
    nx = np.sqrt(row @ row)
    out[j] = (q @ row) / (nq * nx) if nq > 0 and nx > 0 else 0.0
  return out


def ref_relevant(a, b):
  a, b = np.asarray(a), np.asarray(b)
  return int(a == b) if a.ndim == 0 else int(np.sum((a > 0) & (b > 0)) > 0)


def ref_order(q, x):
  c = ref_cosines(q, x)
  return sorted(range(len(x)), key=lambda j: (-c[j], j))


def ref_ap(qf, dbf, ql, dbl, k=None):
  n = len(dbf)
  k = n if k is None else min(k, n)
  out = []
  for q, lq in zip(qf, ql):
    order = ref_order(q, dbf)[:k]
    hits, total = 0, 0.0
    for p, j in enumerate(order, start=1):
      if ref_relevant(lq, dbl[j]):
        hits += 1
        total += hits / p
    out.append(total / hits if hits else 0.0)
  return np.array(out)


def tied_features(seed, nq=14, nbase=40, dim=8, gap=1e-4):
  """Random features plus exact ties: duplicated rows, power-of-two multiples, zero rows, database
  copies of queries. Seeds whose distinct float64 cosines come closer than ``gap`` are skipped (float32
  similarities resolve ~1e-7; such near-ties are not ties)."""
  for s in range(seed * 1000, seed * 1000 + 100):
    rng = np.random.default_rng(s)
    base = rng.standard_normal((nbase, dim))
    q = rng.standard_normal((nq, dim))
    q[1] = 0.0  # every cosine 0: index order
    db = np.concatenate([base, base[:6], 2.0 * base[3:9], 0.25 * base[:4], np.zeros((3, dim)),
                         q[:4], 4.0 * q[2:3]])
    perm = rng.permutation(len(db))
    db = db[perm]
    ok = True
    for row in q:
      c = np.unique(ref_cosines(row, db))
      if np.any(np.diff(c) < gap):
        ok = False
        break
    if ok:
      return q, db, rng
  raise AssertionError("no seed without near-ties")


def labels(rng, nq, ndb, multi, classes=4):
  if not multi:
    ql, dl = rng.integers(0, classes, nq), rng.integers(0, classes, ndb)
    ql[0] = classes + 3  # no relevant item at all
    return ql, dl
  ql = (rng.random((nq, classes + 1)) < 0.35).astype(np.int32)
  dl = (rng.random((ndb, classes + 1)) < 0.35).astype(np.int32)
  ql[0] = 0
  return ql, dl


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("multi", [False, True])
def test_ap_matches_literal_loop_with_ties(seed, multi):
  q, db, rng = tied_features(seed)
  ql, dl = labels(rng, len(q), len(db), multi)
  for k in (1, 5, 17, 60, None, 10_000):
    want = ref_ap(q, db, ql, dl, k)
    for block in (None, 1, 5):
      got = cosine_retrieval.cosine_average_precision(q, db, ql, dl, topk=k, block=block)
      assert got.dtype == np.float64 and got.shape == (len(q),)
      np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"k={k} block={block}")
    m = cosine_retrieval.cosine_mean_average_precision(q, db, ql, dl, topk=k)
    assert m == pytest.approx(float(want.mean()), abs=1e-12)
  assert ref_ap(q, db, ql, dl)[0] == 0.0  # the query without relevant items counts as 0


@pytest.mark.parametrize("seed", range(3))
def test_topk_indices_match_literal_order(seed):
  q, db, _ = tied_features(seed)
  for k in (1, 9, len(db), len(db) + 5):
    got = cosine_retrieval.cosine_topk(q, db, k, block=4)
    assert got.shape == (len(q), min(k, len(db))) and got.dtype == np.int64
    for i in range(len(q)):
      assert got[i].tolist() == ref_order(q[i], db)[:k]
  # The zero query ranks by index; a query's database copies (cosine 1) come first, lower index first.
  np.testing.assert_array_equal(cosine_retrieval.cosine_topk(q[1:2], db, 10)[0], np.arange(10))
  top = cosine_retrieval.cosine_topk(q[2:3], db, 2)[0]
  copies = np.flatnonzero(np.isclose(ref_cosines(q[2], db), 1.0))
  assert len(copies) == 2 and top.tolist() == copies.tolist()


def test_ties_are_exact_for_duplicates_and_power_of_two_multiples():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((5, 32)).astype(np.float32)
  db = np.concatenate([x, x, 2 * x, 0.5 * x])  # items j, j+5, j+10, j+15 have equal cosines
  q = rng.standard_normal((3, 32)).astype(np.float32)
  got = cosine_retrieval.cosine_topk(q, db, 20)
  for row, qq in zip(got, q):
    groups = [row[4 * g:4 * g + 4] for g in range(5)]
    for g in groups:
      assert (g % 5 == g[0] % 5).all() and g.tolist() == sorted(g.tolist())
  # Scaling the queries or the database by powers of two changes nothing.
  ql, dl = rng.integers(0, 2, 3), rng.integers(0, 2, 20)
  a = cosine_retrieval.cosine_average_precision(q, db, ql, dl, topk=7)
  np.testing.assert_array_equal(cosine_retrieval.cosine_average_precision(8 * q, db / 4, ql, dl, topk=7),
                                a)


# ---------------------------------------------------------------------------------------------------
# ±1 codes: cos = 1 - 2 d_H / bits, so the ranking is the Hamming ranking (ties by index in both).


@pytest.mark.parametrize("bits", [4, 8, 13, 32, 64])
@pytest.mark.parametrize("multi", [False, True])
def test_pm1_codes_agree_with_hamming_evaluator(bits, multi):
  rng = np.random.default_rng(bits + 100 * multi)
  nq, ndb = 40, 700
  proto = rng.choice([-1.0, 1.0], size=(4, bits))
  which = rng.integers(0, 4, nq + ndb)
  codes = proto[which] * np.where(rng.random((nq + ndb, bits)) < 0.25, -1.0, 1.0)
  qc, dbc = codes[:nq], codes[nq:]
  ql, dl = labels(rng, nq, ndb, multi)
  if not multi:
    ql[1:], dl = which[1:nq], which[nq:]
  for k in (1, 10, 100, 699, None):
    want = retrieval.average_precision(qc, dbc, ql, dl, topk=k)
    got = cosine_retrieval.cosine_average_precision(qc, dbc, ql, dl, topk=k, block=16)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"k={k}")
    assert cosine_retrieval.cosine_mean_average_precision(qc, dbc, ql, dl, topk=k) == pytest.approx(
        retrieval.mean_average_precision(qc, dbc, ql, dl, topk=k), abs=1e-12)
  # int8 codes (ops.binarize) are accepted as features too.
  got = cosine_retrieval.cosine_average_precision(ops.binarize(qc), np.asarray(ops.binarize(dbc)), ql, dl)
  np.testing.assert_allclose(got, retrieval.average_precision(qc, dbc, ql, dl), atol=1e-12)


def test_larger_database_default_blocks_agree_with_hamming(monkeypatch):
  rng = np.random.default_rng(5)
  bits, nq, ndb = 48, 130, 6000
  qc = rng.choice([-1.0, 1.0], (nq, bits)).astype(np.float32)
  dbc = rng.choice([-1.0, 1.0], (ndb, bits)).astype(np.float32)
  dbc[::7] = qc[rng.integers(0, nq, len(dbc[::7]))]  # many near neighbours
  ql, dl = rng.integers(0, 10, nq), rng.integers(0, 10, ndb)
  seen = []
  real = cosine_retrieval._cosine_block

  def spy(q, inv_q, db, inv_db):
    seen.append(q.shape[0] * db.shape[0])
    return real(q, inv_q, db, inv_db)

  monkeypatch.setattr(cosine_retrieval, "DEFAULT_BLOCK_PAIRS", 1 << 17)
  monkeypatch.setattr(cosine_retrieval, "_cosine_block", spy)
  for k in (1000, None):
    got = cosine_retrieval.cosine_mean_average_precision(qc, dbc, ql, dl, topk=k)
    assert got == pytest.approx(retrieval.mean_average_precision(qc, dbc, ql, dl, topk=k), abs=1e-12)
  assert max(seen) <= 1 << 17 and len(seen) == 2 * -(-nq // ((1 << 17) // ndb))


# ---------------------------------------------------------------------------------------------------
# Errors and documentation.

F = np.random.default_rng(0).standard_normal((6, 4))
L = np.arange(6) % 2


@pytest.mark.parametrize("kwargs,match", [
    (dict(query_features=F[0]), r"query_features must have shape \[n, dim\]"),
    (dict(database_features=F[None]), r"database_features must have shape \[n, dim\]"),
    (dict(database_features=F[:, :3]), "dim 4 but database_features dim 3"),
    (dict(query_features=np.where(F > 1, np.nan, F)), "query_features contains NaN"),
    (dict(database_features=np.full((6, 4), np.inf)), "database_features contains NaN"),
    (dict(query_features=np.zeros((0, 4))), "query_features is empty"),
    (dict(query_features=F > 0), "query_features must be real"),
    (dict(topk=0), "topk must be >= 1"),
    (dict(topk=2.5), "topk must be a positive int"),
    (dict(topk=True), "topk must be a positive int"),
    (dict(block=0), "block must be a positive int"),
    (dict(block=1.5), "block must be a positive int"),
    (dict(query_labels=L[:5]), "query_labels has 5 rows"),
    (dict(query_labels=np.eye(6, 2)), "rank"),
    (dict(database_labels=L.astype(np.float32)), "integer class ids"),
])
def test_argument_errors(kwargs, match):
  args = dict(query_features=F, database_features=F, query_labels=L, database_labels=L)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    cosine_retrieval.cosine_mean_average_precision(
        args.pop("query_features"), args.pop("database_features"), args.pop("query_labels"),
        args.pop("database_labels"), **args)


@pytest.mark.parametrize("k", [0, -1, 1.0, True, None])
def test_topk_k_errors(k):
  with pytest.raises(ValueError, match="k must be a positive int"):
    cosine_retrieval.cosine_topk(F, F, k)


def test_jax_inputs_and_docstring_examples():
  q = jnp.asarray(F, jnp.float32)
  np.testing.assert_array_equal(cosine_retrieval.cosine_topk(q, q, 1)[:, 0], np.arange(6))
  result = doctest.testmod(cosine_retrieval, extraglobs={"jax": jax, "jnp": jnp},
                           optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0
