"""Loader: per-epoch shuffles, drop remainder, eval padding + mask, resume, sharded global arrays."""

import threading

import jax
import numpy as np
import pytest

from unhash_jax import parallel
from unhash_jax.data import builders
from unhash_jax.data import loader


def _source(n=103, multilabel=False):
  """Images encode their own index: pixel (0, 0) = i // 256, pixel (0, 1) = i % 256."""
  i = np.arange(n)
  images = np.zeros((n, 2, 3, 1), np.uint8)
  images[:, 0, 0, 0] = i // 256
  images[:, 0, 1, 0] = i % 256
  images[:, 1, :, 0] = 7
  if multilabel:
    labels = ((i[:, None] >> np.arange(4)) & 1).astype(np.int8)
  else:
    labels = (i % 10).astype(np.int32)
  return builders.Source(name="fake", images=images, labels=labels,
                         official_split=np.full(n, "train"), class_names=tuple("abcdefghij"),
                         image_shape=(2, 3, 1))


def _decode(images):
  return images[:, 0, 0, 0].astype(np.int64) * 256 + images[:, 0, 1, 0]


def _take(it, k):
  out = [next(it) for _ in range(k)]
  it.close()
  return out


def test_batches_are_consistent_and_cover_an_epoch_without_repeats():
  src = _source(103)
  indices = np.arange(3, 103, dtype=np.int64)  # 100 training images
  batches = _take(loader.train_batches(src, indices, batch_size=16, seed=0), 6)  # 6 steps / epoch
  seen = []
  for b in batches:
    assert b["image"].shape == (16, 2, 3, 1) and b["image"].dtype == np.uint8
    assert b["label"].dtype == np.int32 and b["index"].dtype == np.int32
    assert np.array_equal(_decode(b["image"]), b["index"])
    assert np.array_equal(b["label"], b["index"] % 10)
    seen.extend(b["index"].tolist())
  assert len(seen) == len(set(seen)) == 96  # remainder of 4 dropped, no repeats
  assert set(seen) <= set(indices.tolist())


def test_epoch_order_is_the_documented_permutation():
  src = _source(50)
  indices = np.arange(50, dtype=np.int64)[::-1].copy()
  it = loader.train_batches(src, indices, batch_size=10, seed=4)
  got = np.concatenate([b["index"] for b in _take(it, 10)])
  expected = np.concatenate([indices[np.random.default_rng([4, e]).permutation(50)]
                             for e in range(2)])
  assert np.array_equal(got, expected)


def test_shuffle_deterministic_per_seed_and_differs_per_epoch_and_seed():
  src = _source(103)
  idx = np.arange(103)
  a = [b["index"] for b in _take(loader.train_batches(src, idx, batch_size=10, seed=1), 20)]
  b = [b["index"] for b in _take(loader.train_batches(src, idx, batch_size=10, seed=1), 20)]
  c = [b["index"] for b in _take(loader.train_batches(src, idx, batch_size=10, seed=2), 20)]
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))
  epoch0, epoch1 = np.concatenate(a[:10]), np.concatenate(a[10:])
  assert not np.array_equal(epoch0, epoch1)
  # each epoch drops exactly 3 of the 103 images (a different 3 per epoch here)
  assert len(set(epoch0.tolist())) == len(set(epoch1.tolist())) == 100


def test_drop_remainder_steps_per_epoch():
  assert loader.steps_per_epoch(103, 10) == 10
  assert loader.steps_per_epoch(100, 10) == 10
  with pytest.raises(ValueError, match="exceeds"):
    loader.train_batches(_source(5), np.arange(5), batch_size=8, seed=0)


@pytest.mark.parametrize("start", [0, 3, 10, 17, 25])
def test_resume_from_step_matches_uninterrupted_run(start):
  src = _source(103)
  idx = np.arange(103)
  full = _take(loader.train_batches(src, idx, batch_size=10, seed=9), 30)
  resumed = _take(loader.train_batches(src, idx, batch_size=10, seed=9, start_step=start),
                  30 - start)
  for x, y in zip(full[start:], resumed):
    for k in ("image", "label", "index"):
      assert np.array_equal(x[k], y[k])


@pytest.mark.parametrize("n,bs", [(1, 8), (8, 8), (37, 8), (100, 32)])
def test_eval_padding_and_mask_cover_every_index_once(n, bs):
  src = _source(120)
  indices = np.random.default_rng(n).permutation(120)[:n]
  batches = list(loader.eval_batches(src, indices, batch_size=bs))
  assert len(batches) == -(-n // bs)
  seen = []
  for b in batches:
    assert b["image"].shape == (bs, 2, 3, 1) and b["mask"].dtype == bool
    m = b["mask"]
    assert np.array_equal(_decode(b["image"][m]), b["index"][m])
    assert np.array_equal(b["label"][m], b["index"][m] % 10)
    assert np.all(b["index"][~m] == -1) and np.all(b["image"][~m] == 0)
    assert np.all(b["label"][~m] == 0)
    seen.extend(b["index"][m].tolist())
  assert seen == indices.tolist()  # in order, each exactly once
  assert sum(int(b["mask"].sum()) for b in batches) == n


def test_eval_empty_indices_yields_nothing():
  assert not list(loader.eval_batches(_source(10), np.zeros(0, np.int64), batch_size=4))


def test_multilabel_passthrough():
  src = _source(40, multilabel=True)
  (b,) = _take(loader.train_batches(src, np.arange(40), batch_size=8, seed=0), 1)
  assert b["label"].shape == (8, 4) and b["label"].dtype == np.int8
  expected = (b["index"][:, None] >> np.arange(4)) & 1
  assert np.array_equal(b["label"], expected)
  e = list(loader.eval_batches(src, np.arange(5), batch_size=8))[0]
  assert e["label"].shape == (8, 4) and np.all(e["label"][5:] == 0)


@pytest.mark.multidevice
def test_sharded_global_arrays_on_8_devices():
  if jax.device_count() != 8:
    pytest.skip("needs 8 (fake) devices")
  mesh = parallel.make_data_mesh()
  src = _source(103)
  idx = np.arange(103)
  host = _take(loader.train_batches(src, idx, batch_size=16, seed=3), 4)
  dev = _take(loader.train_batches(src, idx, batch_size=16, seed=3, mesh=mesh), 4)
  for h, d in zip(host, dev):
    for k in ("image", "label", "index"):
      arr = d[k]
      assert isinstance(arr, jax.Array) and arr.shape == h[k].shape
      assert arr.sharding.spec == jax.P("data") and len(arr.addressable_shards) == 8
      for shard in arr.addressable_shards:
        assert shard.data.shape[0] == 2
        assert np.array_equal(np.asarray(shard.data), h[k][shard.index])
      assert np.array_equal(np.asarray(arr), h[k])
  evals = list(loader.eval_batches(src, idx[:21], batch_size=16, mesh=mesh))
  assert len(evals) == 2 and evals[1]["mask"].sharding.spec == jax.P("data")
  assert int(np.asarray(evals[1]["mask"]).sum()) == 5
  with pytest.raises(ValueError, match="divisible"):
    loader.train_batches(src, idx, batch_size=12, seed=0, mesh=mesh)


@pytest.mark.multidevice
def test_parallel_helpers():
  if jax.device_count() != 8:
    pytest.skip("needs 8 (fake) devices")
  mesh = parallel.make_data_mesh()
  assert mesh.axis_names == ("data",) and mesh.devices.size == 8
  assert parallel.host_slice(mesh, 32) == slice(0, 32)
  with pytest.raises(ValueError, match="divisible"):
    parallel.host_slice(mesh, 12)
  sub = parallel.make_data_mesh(jax.devices()[:4])
  assert sub.devices.size == 4
  x = jax.device_put(np.ones(4), parallel.replicated_sharding(sub))
  assert all(s.data.shape == (4,) for s in x.addressable_shards)
  parallel.maybe_initialize_distributed(False)  # no-op
  assert not jax.distributed.is_initialized()


def test_prefetcher_propagates_errors_and_closes():
  def produce(i):
    if i == 3:
      raise RuntimeError("boom at 3")
    return {"i": i}

  it = loader.Prefetcher(produce, iter(range(10)), size=2)
  assert [next(it)["i"] for _ in range(3)] == [0, 1, 2]
  with pytest.raises(RuntimeError, match="boom at 3"):
    next(it)
  with pytest.raises(StopIteration):
    next(it)
  before = threading.active_count()
  inf = loader.train_batches(_source(20), np.arange(20), batch_size=4, seed=0)
  next(inf)
  inf.close()
  assert threading.active_count() <= before


def test_abandoned_iterator_stops_its_thread():
  import gc
  import time as _time
  before = threading.active_count()
  it = loader.train_batches(_source(20), np.arange(20), batch_size=4, seed=0)
  next(it)
  del it
  gc.collect()
  deadline = _time.time() + 5
  while threading.active_count() > before and _time.time() < deadline:
    _time.sleep(0.05)
  assert threading.active_count() <= before


@pytest.mark.parametrize("kind", ["train", "eval"])
def test_per_host_rows_partition_the_global_batch(monkeypatch, kind):
  """Simulated 2 processes without a mesh: each host gets its half of the same global batch."""
  src = _source(103)
  idx = np.arange(103)

  def batches(**kw):
    if kind == "train":
      return _take(loader.train_batches(src, idx, batch_size=10, seed=5, **kw), 12)
    return list(loader.eval_batches(src, idx[:25], batch_size=10, **kw))

  single = batches()
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  parts = []
  for p in range(2):
    monkeypatch.setattr(jax, "process_index", lambda p=p: p)
    parts.append(batches())
  for whole, h0, h1 in zip(single, *parts):
    for k in whole:
      assert h0[k].shape[0] == h1[k].shape[0] == 5
      assert np.array_equal(np.concatenate([h0[k], h1[k]]), whole[k]), k
  with pytest.raises(ValueError, match="process count"):
    loader.train_batches(src, idx, batch_size=9, seed=0).__next__()
