"""Arrays cached on disk under a digest of everything they depend on (method tables, fitted codes).

``cached_array(directory, name, key, build)`` returns ``build()``'s array, stored as
``directory/<name>-<digest>.npy`` where the digest is the SHA-256 of ``key`` as canonical JSON; the
same key reuses the file (later runs, resumes), another key builds another file. Files are written
atomically (a temporary file, fsync, rename), so a killed build leaves no partial file that could be
mistaken for a whole one; a file that fails to load is rebuilt. Large arrays load memory-mapped.

Multi-host: process 0 builds and writes, every process waits at a barrier and then reads (the
directory must be shared, like the data directory). On one process the barrier is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any, Callable, Mapping

import numpy as np

# Arrays at least this large are opened memory-mapped instead of read into memory.
MMAP_BYTES = 64 << 20


def digest(key: Mapping[str, Any]) -> str:
  """SHA-256 hex digest of ``key`` as canonical JSON (sorted keys; tuples and lists alike)."""
  text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
  return hashlib.sha256(text.encode()).hexdigest()


def cached_array(directory: str, name: str, key: Mapping[str, Any],
                 build: Callable[[], np.ndarray]) -> np.ndarray:
  """``build()``'s array, cached in ``directory`` under ``name`` and the digest of ``key``."""
  if not name or os.sep in name:
    raise ValueError(f"cache name must be a plain file-name stem, got {name!r}.")
  path = os.path.join(directory, f"{name}-{digest(key)[:16]}.npy")
  multihost = _process_count() > 1
  if not multihost or _process_index() == 0:
    array = _load(path)
    if array is None:
      t0 = time.perf_counter()
      array = np.asarray(build())
      _save(path, array, key)
      logging.info("Built %s %s %s in %.1f s -> %s", name, array.shape, array.dtype,
                   time.perf_counter() - t0, path)
    else:
      logging.info("Reusing %s %s from %s", name, array.shape, path)
  if multihost:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"unhash_jax cache {name}")
    if _process_index() != 0:
      array = _load(path)
      if array is None:
        raise RuntimeError(f"process {_process_index()} cannot read {path} written by process 0; "
                           f"the cache directory must be shared by every host.")
  return array


def _load(path: str) -> np.ndarray | None:
  if not os.path.exists(path):
    return None
  try:
    big = os.path.getsize(path) >= MMAP_BYTES
    return np.load(path, mmap_mode="r" if big else None, allow_pickle=False)
  except (OSError, ValueError) as e:
    logging.warning("Cache file %s is unreadable (%s); rebuilding it.", path, e)
    return None


def _save(path: str, array: np.ndarray, key: Mapping[str, Any]) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    np.save(f, array, allow_pickle=False)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  with open(path[:-len(".npy")] + ".json", "w", encoding="utf-8") as f:
    json.dump(key, f, indent=1, sort_keys=True, default=str)


def _process_count() -> int:
  import jax
  return jax.process_count()


def _process_index() -> int:
  import jax
  return jax.process_index()
