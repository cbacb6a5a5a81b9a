"""A frozen-feature cache: a frozen backbone's features computed once, memory-mapped, resumable.

With a frozen backbone every training step recomputes the same network on every view. The cache
computes it once:

* ``test``: the test transform's pooled features of every image a protocol ranks or trains on
  (query, database, training split), ``[n, D]``;
* ``views:<recipe>``: ``E`` augmented views of every training image for each augmenting recipe a
  method has asked for (a part is added the first time a method needs it), pooled ``[N_train, E, D]`` and, for methods that train on patch tokens (WCH), the
  tokens ``[N_train, E, P, D_t]``;
* ``clean_train``: the test transform's pooled features and tokens of the training images,
  ``[N_train, 1, ...]``, for a method on patch tokens that takes an un-augmented view (the test part
  holds pooled features only).

  View ``e`` of image ``i`` uses the key
  ``fold_in(fold_in(fold_in(key(seed), recipe id), i), e)`` (``i`` its source index), so it does not
  depend on how the extraction was chunked or interrupted.

Everything lives in ``<root>/<name>-<digest>/``, the digest being that of the cache key: data set,
image count, index lists, backbone, weights digest, image size, test transform, ``E``, seed, storage
dtype and this module's format version; each part records the definition of its transform. Arrays are ``.npy`` files opened memory-mapped (float16 by
default), so training reads only the rows of each batch.

**Resumable, never silently partial.** Extraction runs in chunks; each chunk's rows are written,
flushed to disk, and only then recorded (with a CRC-32 of its bytes) in ``progress.json``, which is
replaced atomically. A killed extraction resumes at the first unrecorded chunk; opening a cache
re-checks every recorded chunk's checksum and recomputes those that no longer match (a truncated or
damaged file), so a corrupt or partial cache is rebuilt where needed, never used. A lock file
serialises processes building the same cache (a second one waits). Files are plain NumPy: a cache
built on an accelerator machine is used unchanged on a CPU one.

Progress: a log line with images/s and the ETA every ``log_every_s`` seconds (and a tqdm bar on an
interactive terminal).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
import zlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from unhash_jax import cache as keyed_cache

FORMAT = 2   # 2: parts are added to a cache as methods need them (recipes left the key)
PROGRESS_FILE = "progress.json"
KEY_FILE = "key.json"
LOCK_FILE = ".lock"
TEST_PART = "test"
CLEAN_TRAIN_PART = "clean_train"

# (pooled [B, D], tokens [B, P, Dt] or None) of a batch of preprocessed images, e.g. a jitted backbone.
ExtractFn = Callable[[Any], tuple[np.ndarray, np.ndarray | None]]


class FeatureCacheError(ValueError):
  """The cache cannot be built or used (the message names the path and the problem)."""


@dataclasses.dataclass(frozen=True)
class Job:
  """One part of the cache to extract.

  Attributes:
    name: ``"test"`` or ``"views:<recipe>"``.
    indices: source indices of the images (rows of the part).
    num_views: views per image (1 for the test part).
    preprocess: ``preprocess(images uint8 [B, H, W, C], source_indices [B], view e) -> float
      [B, S, S, C]`` (the test transform, or the augmentation with the per-image keys).
    tokens: store the tokens as well (a part stored with tokens also serves runs that do not
      need them; one stored without them is extracted again when they are asked for).
    spec: what ``preprocess`` does (e.g. the recipe's repr), recorded with the part: a part
      recorded under another spec is extracted again.
  """

  name: str
  indices: np.ndarray
  num_views: int
  preprocess: Callable[[np.ndarray, np.ndarray, int], Any]
  tokens: bool = False
  spec: str = ""


class FeatureCache:
  """An opened cache (read-only memory maps); build one with :func:`open_or_build`.

  Attributes:
    directory: the cache's folder.
    key: its key (JSON-able dict).
    test_index: ``int64 [n]`` sorted source indices of the test part.
    train_index: ``int64 [N_train]`` source indices of the view parts' rows (the training split).
  """

  def __init__(self, directory: str, key: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
               test_index: np.ndarray, train_index: np.ndarray):
    self.directory = directory
    self.key = dict(key)
    self._arrays = dict(arrays)
    self.test_index = np.asarray(test_index, np.int64)
    self.train_index = np.asarray(train_index, np.int64)

  @property
  def feature_dim(self) -> int:
    return int(self._arrays["test:pooled"].shape[-1])

  def token_shape(self, recipe: str | None = None) -> tuple[int, int] | None:
    """``(P, D_t)`` of the tokens of ``views:<recipe>`` (``None``: of any part that has tokens;
    they share the backbone), or None when there are none."""
    names = ([f"views:{recipe}:tokens"] if recipe is not None else
             sorted(k for k in self._arrays if k.endswith(":tokens")))
    a = next((self._arrays[k] for k in names if k in self._arrays), None)
    return None if a is None else tuple(int(s) for s in a.shape[2:])

  @property
  def num_views(self) -> int:
    return int(self.key["num_views"])

  def test_features(self, source_indices) -> np.ndarray:
    """float32 ``[n, D]`` test-transform features of the given source indices."""
    idx = np.asarray(source_indices, np.int64)
    rows = np.searchsorted(self.test_index, idx)
    if len(idx) and (rows.max() >= len(self.test_index) or np.any(self.test_index[rows] != idx)):
      missing = idx[(rows >= len(self.test_index)) |
                    (self.test_index[np.minimum(rows, len(self.test_index) - 1)] != idx)]
      raise FeatureCacheError(f"the feature cache {self.directory} has no features of source "
                              f"indices {missing[:5].tolist()}...; it was built for other splits.")
    return np.asarray(self._arrays["test:pooled"][rows, 0], np.float32)

  def clean_train_tokens(self, positions) -> np.ndarray:
    """float32 ``[n, P, D_t]`` test-transform tokens of training rows ``positions[n]``."""
    positions = np.asarray(positions)
    return self._read(f"{CLEAN_TRAIN_PART}:tokens", positions, np.zeros(len(positions), np.int64))

  def view_features(self, recipe: str, positions, views, *, tokens: bool = False) -> np.ndarray:
    """float32 views ``views[n]`` of training rows ``positions[n]``: ``[n, D]`` or ``[n, P, D_t]``."""
    return self._read(f"views:{recipe}:{'tokens' if tokens else 'pooled'}", positions, views)

  def _read(self, name: str, positions, views) -> np.ndarray:
    """float32 rows ``positions[n]``, views ``views[n]`` of the stored array ``name``
    (``"<part>:<pooled|tokens>"``); FeatureCacheError naming it when the cache has no such part."""
    if name not in self._arrays:
      raise FeatureCacheError(f"the feature cache {self.directory} holds no {name!r}; it holds "
                              f"{sorted(self._arrays)}.")
    table = self._arrays[name]
    positions, views = np.asarray(positions), np.asarray(views)
    order = np.argsort(positions, kind="stable")   # sorted reads are kinder to the page cache
    out = np.empty((len(positions),) + table.shape[2:], np.float32)
    out[order] = table[positions[order], views[order]]
    return out


def cache_directory(root: str, name: str, key: Mapping[str, Any]) -> str:
  return os.path.join(root, f"{name}-{keyed_cache.digest({**key, 'format': FORMAT})[:16]}")


def open_or_build(root: str, name: str, key: Mapping[str, Any], *, jobs: Sequence[Job],
                  source, extract: ExtractFn, batch_size: int = 64, dtype: str = "float16",
                  chunk_images: int = 512, log_every_s: float = 30.0, verify: bool = True,
                  train_index: np.ndarray | None = None) -> FeatureCache:
  """Opens the cache of ``key`` under ``root``, extracting whatever is missing or damaged first.

  Args:
    root: folder holding caches (one sub-folder per key).
    name: a readable stem of the sub-folder (e.g. ``"cifar10-mobilenet_v2-224"``).
    key: JSON-able dict of everything the features depend on.
    jobs: the parts; one ``test`` job and any number of ``views:<recipe>`` jobs (same indices).
    source: a :class:`~unhash_jax.data.builders.Source` (``get_images``).
    extract: maps a preprocessed float batch ``[batch_size, S, S, C]`` to host arrays
      ``(pooled [B, D], tokens [B, P, D_t] or None)``.
    batch_size: images per ``extract`` call (the last batch of a chunk is padded to it).
    dtype: storage dtype (``float16`` halves the disk; features are read back as float32).
    chunk_images: images (test) or training images times views per committed chunk.
    log_every_s: seconds between progress lines.
    verify: re-check the recorded chunks' CRC-32 when opening.
    train_index: source indices of the training split (default: the view jobs' indices); needed
      when there is no view job (a method trained on un-augmented views only reads the test part).

  Raises:
    FeatureCacheError: the jobs do not fit a cache that exists under the same key.
  """
  directory = cache_directory(root, name, key)
  os.makedirs(directory, exist_ok=True)
  full_key = {**key, "format": FORMAT, "dtype": dtype, "chunk_images": chunk_images}
  with _Lock(os.path.join(directory, LOCK_FILE)):
    _check_key(directory, full_key)
    progress = _read_progress(directory)
    for job in jobs:
      _run_job(directory, job, progress, source=source, extract=extract, batch_size=batch_size,
               dtype=np.dtype(dtype), chunk_images=chunk_images, log_every_s=log_every_s,
               verify=verify)
    arrays = {}
    for job in jobs:
      for kind in ("pooled", "tokens") if progress[job.name]["tokens"] else ("pooled",):
        arrays[f"{job.name}:{kind}"] = np.load(os.path.join(directory, _file(job.name, kind)),
                                               mmap_mode="r")
  logging.info("Feature cache %s: %s.", directory,
               ", ".join(f"{k} {tuple(a.shape)}" for k, a in arrays.items()))
  test = next(j for j in jobs if j.name == TEST_PART)
  views = [j for j in jobs if j.name != TEST_PART]
  if train_index is None:
    train_index = views[0].indices if views else np.zeros(0, np.int64)
  return FeatureCache(directory, full_key, arrays, test.indices, train_index)


def _file(job_name: str, kind: str) -> str:
  return f"{job_name.replace(':', '_')}_{kind}.npy"


def _check_key(directory: str, key: Mapping[str, Any]) -> None:
  path = os.path.join(directory, KEY_FILE)
  text = json.dumps(key, sort_keys=True, indent=1, default=str)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = f.read()
    if json.loads(saved) != json.loads(text):
      raise FeatureCacheError(f"{path} describes another cache than this run's key (a digest "
                              f"collision or a hand-edited file); move the folder aside.")
    return
  _atomic_write(path, text)


def _read_progress(directory: str) -> dict:
  path = os.path.join(directory, PROGRESS_FILE)
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    logging.warning("Feature cache progress %s is unreadable; recomputing every chunk.", path)
    return {}


def _write_progress(directory: str, progress: dict) -> None:
  _atomic_write(os.path.join(directory, PROGRESS_FILE), json.dumps(progress, sort_keys=True))


def _atomic_write(path: str, text: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _crc(arrays: Sequence[np.ndarray]) -> int:
  crc = 0
  for a in arrays:
    crc = zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1), crc)
  return crc


def _run_job(directory, job: Job, progress: dict, *, source, extract, batch_size, dtype,
             chunk_images, log_every_s, verify) -> None:
  n = len(job.indices)
  per_chunk = max(1, chunk_images // job.num_views)
  num_chunks = -(-n // per_chunk)
  state = progress.setdefault(job.name, {})
  if state.get("num_images") not in (None, n) or state.get("num_views") not in (None, job.num_views):
    raise FeatureCacheError(f"the feature cache {directory} part {job.name!r} was started for "
                            f"{state.get('num_images')} images x {state.get('num_views')} views, "
                            f"this run needs {n} x {job.num_views}; move the folder aside.")
  state.update(num_images=n, num_views=job.num_views, num_chunks=num_chunks)
  done: dict[str, int] = state.setdefault("done", {})
  if state.get("spec", job.spec) != job.spec:
    logging.warning("Feature cache %s part %s was extracted with another transform (%s; now %s): "
                    "extracting it again.", directory, job.name, state["spec"], job.spec)
    done.clear()
  state["spec"] = job.spec
  if job.tokens and not state.get("tokens"):
    # A part extracted without tokens is extracted again, with them (one pass gives both).
    if done:
      logging.info("Feature cache %s part %s: extracting it again with tokens.", directory,
                   job.name)
    done.clear()
    state.pop("shapes", None)
    state["tokens"] = True
  state.setdefault("tokens", False)
  kinds = ("pooled", "tokens") if state["tokens"] else ("pooled",)
  arrays = _open_arrays(directory, job, state, kinds, dtype)
  if arrays is not None and verify and done:
    bad = [c for c, crc in done.items() if _crc(_chunk_rows(arrays, int(c), per_chunk, kinds)) != crc]
    for c in bad:
      del done[c]
    if bad:
      logging.warning("Feature cache %s part %s: %d damaged chunk(s) will be recomputed.",
                      directory, job.name, len(bad))
  todo = [c for c in range(num_chunks) if str(c) not in done]
  if not todo:
    return
  images_total = len(todo) * per_chunk * job.num_views
  logging.info("Feature cache %s: extracting %s, %d of %d chunks (about %d images)...", directory,
               job.name, len(todo), num_chunks, images_total)
  meter = _Meter(job.name, images_total, log_every_s)
  try:
    for c in todo:
      rows = job.indices[c * per_chunk:(c + 1) * per_chunk]
      out = _extract_chunk(source, rows, dataclasses.replace(job, tokens=state["tokens"]), extract,
                           batch_size)
      if arrays is None:   # the first chunk tells the shapes
        state["shapes"] = {k: list(v.shape[2:]) for k, v in out.items()}
        arrays = _open_arrays(directory, job, state, kinds, dtype, create=True)
      for k in kinds:
        arrays[k][c * per_chunk:c * per_chunk + len(rows)] = out[k]
        arrays[k].flush()
      done[str(c)] = _crc(_chunk_rows(arrays, c, per_chunk, kinds))
      _write_progress(directory, progress)
      meter.update(len(rows) * job.num_views)
  finally:
    meter.close()


def _open_arrays(directory, job, state, kinds, dtype, *, create=False):
  """The part's memory maps (None before the first chunk has told the shapes).

  A file that is missing, unreadable (e.g. truncated) or of another shape is created anew, and the
  part's recorded chunks are forgotten so that they are all recomputed.
  """
  if "shapes" not in state:
    return None
  arrays = {}
  for k in kinds:
    path = os.path.join(directory, _file(job.name, k))
    shape = (state["num_images"], job.num_views, *state["shapes"][k])
    a = None
    if not create and os.path.exists(path):
      try:
        a = np.load(path, mmap_mode="r+")
      except (OSError, ValueError):
        a = None
      if a is None or a.shape != shape or a.dtype != dtype:
        logging.warning("Feature cache file %s is damaged or of another shape; rebuilding it.", path)
        a = None
    if a is None:
      a = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
      if not create:
        state["done"].clear()
    arrays[k] = a
  return arrays


def _chunk_rows(arrays, c: int, per_chunk: int, kinds) -> list[np.ndarray]:
  return [arrays[k][c * per_chunk:(c + 1) * per_chunk] for k in kinds]


def _extract_chunk(source, rows: np.ndarray, job: Job, extract, batch_size: int) -> dict:
  """``{"pooled": [n, E, D], "tokens": [n, E, P, Dt]}`` of the chunk's images."""
  images = source.get_images(rows)
  out: dict[str, list] = {"pooled": [], "tokens": []}
  for e in range(job.num_views):
    pooled, tokens = [], []
    for start in range(0, len(rows), batch_size):
      batch, idx = images[start:start + batch_size], rows[start:start + batch_size]
      pad = batch_size - len(batch)
      if pad:   # one compiled shape for every batch
        batch = np.concatenate([batch, np.repeat(batch[-1:], pad, axis=0)])
        idx = np.concatenate([idx, np.repeat(idx[-1:], pad)])
      p, t = extract(job.preprocess(batch, idx, e))
      pooled.append(np.asarray(p)[:len(batch) - pad])
      if job.tokens:
        if t is None:
          raise FeatureCacheError(f"the backbone gave no tokens for part {job.name!r}.")
        tokens.append(np.asarray(t)[:len(batch) - pad])
    out["pooled"].append(np.concatenate(pooled))
    if job.tokens:
      out["tokens"].append(np.concatenate(tokens))
  result = {"pooled": np.stack(out["pooled"], axis=1)}
  if job.tokens:
    result["tokens"] = np.stack(out["tokens"], axis=1)
  for k, v in result.items():
    if not np.isfinite(v).all():
      raise FeatureCacheError(f"the backbone gave non-finite {k} features for part {job.name!r}.")
  return result


class _Meter:
  """Images/s and ETA: a log line every ``every_s`` seconds, a tqdm bar on a terminal."""

  def __init__(self, name: str, total: int, every_s: float):
    self.name, self.total, self.every_s = name, total, every_s
    self.done, self.t0, self.last = 0, time.perf_counter(), time.perf_counter()
    self.bar = None
    if sys.stderr.isatty():
      try:
        from tqdm import tqdm
        self.bar = tqdm(total=total, unit="img", desc=name, dynamic_ncols=True)
      except ImportError:
        pass

  def update(self, n: int) -> None:
    self.done += n
    if self.bar is not None:
      self.bar.update(n)
    now = time.perf_counter()
    if now - self.last >= self.every_s or self.done >= self.total:
      rate = self.done / max(now - self.t0, 1e-9)
      eta = (self.total - self.done) / rate if rate > 0 else float("inf")
      from unhash_jax.run_logging import format_eta
      logging.info("Feature cache %s: %d/%d images (%.1f%%), %.1f images/s, ETA %s", self.name,
                   self.done, self.total, 100.0 * self.done / max(self.total, 1), rate,
                   format_eta(eta))
      self.last = now

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


class _Lock:
  """Blocking exclusive ``flock``: a second process building the same cache waits for the first."""

  def __init__(self, path: str):
    self.path = path
    self.fd = None

  def __enter__(self):
    import fcntl
    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      logging.info("Feature cache %s is being built by another process; waiting for it.",
                   os.path.dirname(self.path))
      fcntl.flock(self.fd, fcntl.LOCK_EX)
    return self

  def __exit__(self, *exc):
    import fcntl
    fcntl.flock(self.fd, fcntl.LOCK_UN)
    os.close(self.fd)
