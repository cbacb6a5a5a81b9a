"""Host-side batching: seeded per-epoch shuffles, per-host shards, eval padding, device prefetch.

Training (:func:`train_batches`): epoch ``e`` visits ``indices`` in the order
``np.random.default_rng([seed, e]).permutation(len(indices))``; step ``s`` is batch
``s % steps_per_epoch`` of epoch ``s // steps_per_epoch`` (``steps_per_epoch = len(indices) //
batch_size``, the remainder of every epoch is dropped). A batch is therefore a pure function of
``(seed, step)``: starting at ``start_step`` gives exactly the batches an uninterrupted run sees from
that step on (bit-exact resume), on any number of hosts.

Evaluation (:func:`eval_batches`): one pass in ``indices`` order; the last batch is padded to
``batch_size`` with zero images, label 0 and index -1, and ``mask`` is False on padding.

Multi-host: every host computes the same global batch of indices and reads only its own rows
(:func:`unhash_jax.parallel.host_slice`); with a ``mesh`` the rows become global ``jax.Array``s
sharded on ``"data"`` (``jax.make_array_from_process_local_data``). A background thread prepares
the next ``prefetch`` batches (gather + transfer) while the accelerator works.

Why not grain: images live in one in-memory ``uint8`` array, so a batch is one NumPy fancy index.
grain's ``MapDataset.range(n).shuffle().repeat().batch().map(gather)`` delivered about 95 batches/s
of 256 CIFAR-sized images here versus about 3,300 for this module (2 shared CPU cores, medians of 3);
grain's shuffle is also its own algorithm, while the batches here are a documented function of
``(seed, step)``. A single prefetch thread is enough to hide the host work.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np

_END = object()


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full training batches per epoch (the remainder is dropped)."""
  return int(num_examples) // int(batch_size)


def epoch_permutation(num_examples: int, *, seed: int, epoch: int) -> np.ndarray:
  """The visiting order of epoch ``epoch``: ``default_rng([seed, epoch]).permutation(n)``."""
  if seed < 0 or epoch < 0:
    raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}.")
  return np.random.default_rng([int(seed), int(epoch)]).permutation(int(num_examples))


class Prefetcher:
  """Iterates ``produce(i)`` for ``i`` in ``steps`` in a background thread, ``size`` items ahead.

  Exceptions raised by ``produce`` are re-raised by ``next()``. Call :meth:`close` (or exhaust the
  iterator, or use it as a context manager) to stop the thread early; an abandoned iterator stops
  its thread when it is garbage-collected (the thread holds no reference to it).
  """

  def __init__(self, produce: Callable[[int], dict], steps: Iterator[int], *, size: int = 2):
    if size < 1:
      raise ValueError(f"prefetch size must be >= 1, got {size}.")
    self._queue: queue.Queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._done = False
    self._thread = threading.Thread(target=_produce_into, daemon=True, name="unhash_jax-prefetch",
                                    args=(produce, steps, self._queue, self._stop))
    self._thread.start()

  def __iter__(self):
    return self

  def __next__(self):
    if self._done:
      raise StopIteration
    item = self._queue.get()
    if item is _END:
      self._done = True
      raise StopIteration
    if isinstance(item, _Failure):
      self.close()
      raise item.error
    return item

  def close(self) -> None:
    self._stop.set()
    self._done = True
    self._thread.join(timeout=5)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __del__(self):
    self._stop.set()


class _Failure:

  def __init__(self, error: BaseException):
    self.error = error


def _produce_into(produce, steps, q: queue.Queue, stop: threading.Event) -> None:
  """The prefetch thread's body (module-level: it must not keep the Prefetcher alive)."""

  def put(item) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  try:
    for i in steps:
      if stop.is_set() or not put(produce(i)):
        return
    put(_END)
  except BaseException as e:  # pylint: disable=broad-except
    put(_Failure(e))


def _rows_for_host(global_rows: np.ndarray, mesh, batch_size: int) -> np.ndarray:
  """This process's part of a global batch (all of it on one process without a mesh)."""
  if mesh is not None:
    from unhash_jax import parallel  # pylint: disable=g-import-not-at-top
    return global_rows[parallel.host_slice(mesh, batch_size)]
  import jax  # pylint: disable=g-import-not-at-top
  count = jax.process_count()
  if count == 1:
    return global_rows
  if batch_size % count:
    raise ValueError(f"batch_size {batch_size} must be divisible by the process count {count}.")
  per = batch_size // count
  return global_rows[jax.process_index() * per:(jax.process_index() + 1) * per]


def _finish(local: dict, mesh, batch_size: int) -> dict:
  if mesh is None:
    return local
  from unhash_jax import parallel  # pylint: disable=g-import-not-at-top
  return parallel.global_batch(mesh, local, batch_size)


def _check_batch(batch_size: int, mesh) -> None:
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if mesh is not None and batch_size % mesh.devices.size:
    raise ValueError(f"batch_size {batch_size} must be divisible by the number of devices in the "
                     f"mesh ({mesh.devices.size}).")
  if mesh is None:
    import jax  # pylint: disable=g-import-not-at-top
    if batch_size % jax.process_count():
      raise ValueError(f"batch_size {batch_size} must be divisible by the process count "
                       f"{jax.process_count()}.")


TABLE_PREFIX = "table:"


def train_batches(source, indices, *, batch_size: int, seed: int, start_step: int = 0, mesh=None,
                  prefetch: int = 2, tables=None, view_sampler=None) -> Prefetcher:
  """Infinite iterator of shuffled training batches (remainder of each epoch dropped).

  Args:
    source: a :class:`~unhash_jax.data.builders.Source`.
    indices: ``int[n]`` source indices to train on (e.g. ``splits.train``).
    batch_size: global batch size ``B`` (divisible by the mesh size when ``mesh`` is given).
    seed: shuffle seed; epoch ``e`` uses ``default_rng([seed, e])``.
    start_step: first step to produce; gives the same batches an uninterrupted run sees from there.
    mesh: a mesh with axis ``"data"``: batches are global ``jax.Array``s sharded on the batch axis;
      ``None``: NumPy arrays (this process's rows only when there are several processes).
    prefetch: how many batches to prepare ahead in a background thread.
    tables: optional ``{name: array [len(indices), ...]}`` of per-example rows (a method's tables,
      NumPy arrays or memory maps); each batch carries its rows under ``"table:<name>"``.
    view_sampler: optional ``sample(positions, step) -> {name: [B_host, ...]}`` of per-step inputs
      computed on the host (cached feature views); when given, the batch carries its arrays instead
      of ``"image"``.

  Yields:
    ``{"image": uint8[B, H, W, C], "label": int32[B] (or int8[B, C]), "index": int32[B],
    "position": int32[B], "table:<name>": [B, ...]}`` where ``index`` holds the source indices and
    ``position`` the rows of ``indices`` (``indices[position] == index``).

  Raises:
    ValueError: fewer than ``batch_size`` indices, bad sizes or a negative seed/step.
  """
  indices = np.asarray(indices, dtype=np.int64)
  _check_batch(batch_size, mesh)
  spe = steps_per_epoch(len(indices), batch_size)
  if spe == 0:
    raise ValueError(f"batch_size {batch_size} exceeds the {len(indices)} training examples.")
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  tables = dict(tables or {})
  for name, table in tables.items():
    if np.shape(table)[:1] != (len(indices),):
      raise ValueError(f"table {name!r} has shape {np.shape(table)}; it needs one row per training "
                       f"index ({len(indices)}).")
  epoch_perm = {}

  def produce(step: int) -> dict:
    epoch, pos = divmod(step, spe)
    if epoch not in epoch_perm:
      epoch_perm.clear()
      epoch_perm[epoch] = epoch_permutation(len(indices), seed=seed, epoch=epoch)
    positions = _rows_for_host(epoch_perm[epoch][pos * batch_size:(pos + 1) * batch_size], mesh,
                               batch_size)
    rows = indices[positions]
    local = {"label": np.asarray(source.labels[rows]), "index": rows.astype(np.int32),
             "position": positions.astype(np.int32)}
    if view_sampler is None:
      local["image"] = source.get_images(rows)
    else:
      local.update(view_sampler(positions, step))
    for name, table in tables.items():
      local[TABLE_PREFIX + name] = np.asarray(table[positions])
    return _finish(local, mesh, batch_size)

  def steps():
    step = start_step
    while True:
      yield step
      step += 1

  return Prefetcher(produce, steps(), size=prefetch)


def eval_batches(source, indices, *, batch_size: int, mesh=None, prefetch: int = 2) -> Prefetcher:
  """One pass over ``indices`` in order, the last batch padded, with a validity mask.

  Args:
    source: a :class:`~unhash_jax.data.builders.Source`.
    indices: ``int[n]`` source indices (e.g. ``splits.query``).
    batch_size: global batch size ``B`` (divisible by the mesh size when ``mesh`` is given).
    mesh: as in :func:`train_batches`.
    prefetch: batches prepared ahead.

  Yields:
    ``ceil(n / B)`` dicts ``{"image", "label", "index", "mask"}`` of leading size ``B``; ``image``
    has the dtype of ``source.get_images`` (uint8 images, float32 cached features); padding rows
    have zero images, label 0, index -1 and ``mask`` False.
  """
  indices = np.asarray(indices, dtype=np.int64)
  _check_batch(batch_size, mesh)
  num_batches = -(-len(indices) // batch_size)
  label_shape = np.shape(source.labels)[1:]
  label_dtype = np.asarray(source.labels[:0]).dtype
  # uint8 images, or float32 features from a feature cache: the batch keeps the source's dtype.
  image_dtype = np.asarray(source.get_images(indices[:0])).dtype

  def produce(b: int) -> dict:
    rows = indices[b * batch_size:(b + 1) * batch_size]
    valid = len(rows)
    padded = np.full((batch_size,), -1, np.int64)
    padded[:valid] = rows
    mask = np.arange(batch_size) < valid
    padded = _rows_for_host(padded, mesh, batch_size)
    mask = _rows_for_host(mask, mesh, batch_size)
    real = padded[mask]
    images = np.zeros((len(padded),) + tuple(source.image_shape), image_dtype)
    labels = np.zeros((len(padded),) + label_shape, label_dtype)
    if len(real):
      images[mask] = source.get_images(real)
      labels[mask] = np.asarray(source.labels[real])
    local = {"image": images, "label": labels, "index": padded.astype(np.int32), "mask": mask}
    return _finish(local, mesh, batch_size)

  return Prefetcher(produce, iter(range(num_batches)), size=prefetch)
