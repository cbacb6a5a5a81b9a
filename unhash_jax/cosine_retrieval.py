"""Real-valued retrieval reference: ranks a database by the cosine similarity of raw features.

The upper reference for a hashing method is the retrieval quality of the features it hashes. This module
ranks by ``cos(q, x_j)`` (descending) and scores with exactly the semantics of
:func:`unhash_jax.retrieval.mean_average_precision` in its default ``tie_policy="index"``,
``mode="standard"`` (docs/methods.md §1):

* relevance: sharing at least one label (class ids ``[n]`` or multi-hot ``[n, classes]``);
* ties (equal computed similarities) are broken by the lower database index;
* ``AP@k(q) = (1/T_k) Σ_{p≤k} r_p·prec(p)`` with ``T_k`` the relevant items retrieved in the top k,
  ``AP@k = 0`` when ``T_k = 0`` (such queries stay in the mean); ``topk=None`` is the whole database and a
  ``topk`` above the database size is clipped to it.

For ±1 codes ``cos(q, x) = 1 - 2·d_H(q, x)/bits``, so the ranking, and hence the mAP, equals the Hamming
ranking's exactly.

Implementation. Queries are processed in blocks (``block`` queries at a time, by default as many as keep
``2^22`` query×database pairs), so no ``[num_queries, num_database]`` array exists: 1,000 queries
against 54,000 1,280-d features hold the float32 database (276 MB) once on the device (on a CPU backend
that is a second host copy) and about 100 MB of per-block scratch on the host (measured: peak RSS
+470 MB over the inputs on CPU, 5-8 s on two busy cores). Per block the device (jit, float32, ``precision="highest"``) computes
``cos = (q·x_j) · (1/‖q‖) · (1/‖x_j‖)``, with the inverse norms taken in float64 and rounded once, so
that equal dot products with equal norms (duplicates, ±1 codes) give exactly equal similarities. The host
orders each row by the unique uint64 key ``(order-preserving bits of -cos) · 2^32 + j``, with
``np.partition`` + ``np.sort`` for ``k < num_database`` (ties go to the lower index without relying on a
stable sort), and the AP sums come from :mod:`unhash_jax.retrieval`'s float64 arithmetic. A row of zeros
has cosine 0 with everything.

Examples:
  The second database item is nearest (cosine 1), the first is orthogonal, the third opposite.

  >>> q = np.array([[1.0, 0.0]]); db = np.array([[0.0, 2.0], [3.0, 0.0], [-1.0, 0.0]])
  >>> cosine_topk(q, db, 3).tolist()
  [[1, 0, 2]]
  >>> cosine_average_precision(q, db, np.array([0]), np.array([0, 1, 0])).round(4).tolist()
  [0.5833]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unhash_jax import retrieval

__all__ = ["cosine_topk", "cosine_average_precision", "cosine_mean_average_precision"]

# Default bound on query×database pairs per block (float32 similarities + uint64 keys: ~100 MB).
DEFAULT_BLOCK_PAIRS = 1 << 22
_ROWS = 4096  # rows per block of the host-side float64 norm computation
_SIGN = np.uint32(0x80000000)
_LOW32 = np.uint64(0xFFFFFFFF)


def _check_features(x: Any, name: str) -> np.ndarray:
  """float32 ``[n, dim]`` host copy of real, finite, non-empty features; raises ``ValueError``."""
  a = np.asarray(x)
  if a.ndim != 2:
    raise ValueError(f"{name} must have shape [n, dim], got shape {a.shape}.")
  dt = a.dtype
  if dt == np.bool_ or not (np.issubdtype(dt, np.floating) or np.issubdtype(dt, np.integer)
                            or dt == jnp.bfloat16):
    raise ValueError(f"{name} must be real numbers (float or integer), got dtype {dt}.")
  if a.shape[0] == 0 or a.shape[1] == 0:
    raise ValueError(f"{name} is empty (shape {a.shape}).")
  a = np.asarray(a, np.float32)
  if not np.isfinite(a).all():
    raise ValueError(f"{name} contains NaN or infinite values (after conversion to float32).")
  return a


def _inverse_norms(x: np.ndarray) -> np.ndarray:
  """``1/‖x_i‖`` computed in float64 and rounded to float32 (0 for a zero row), ``[n]``."""
  sq = np.concatenate([np.einsum("ij,ij->i", b, b) for b in
                       (x[s:s + _ROWS].astype(np.float64) for s in range(0, x.shape[0], _ROWS))])
  with np.errstate(divide="ignore"):
    inv = np.where(sq > 0, 1.0 / np.sqrt(sq), 0.0)
  return inv.astype(np.float32)


@jax.jit
def _cosine_block(q: jax.Array, inv_q: jax.Array, db: jax.Array, inv_db: jax.Array) -> jax.Array:
  """``float32[B, n]`` cosines of a query block against the whole database."""
  dots = jnp.matmul(q, db.T, precision=jax.lax.Precision.HIGHEST)
  return (dots * inv_q[:, None]) * inv_db[None, :]


def _descending_keys(s: np.ndarray) -> np.ndarray:
  """Unique ``uint64[B, n]`` keys, ascending in (descending ``s``, then index)."""
  s = s + np.float32(0.0)  # -0.0 -> +0.0: equal values, equal keys
  u = s.view(np.uint32)
  asc = np.where(u >= _SIGN, ~u, u | _SIGN)  # IEEE order -> unsigned order
  np.invert(asc, out=asc)  # descending
  keys = asc.astype(np.uint64)
  keys <<= np.uint64(32)
  keys |= np.arange(s.shape[1], dtype=np.uint64)
  return keys


def _check_block(block: Any) -> None:
  if block is not None and (isinstance(block, (bool, np.bool_))
                            or not isinstance(block, (int, np.integer)) or block < 1):
    raise ValueError(f"block must be a positive int (queries per block) or None, got {block!r}.")


def _ranked_blocks(q: np.ndarray, db: np.ndarray, k: int, block: int | None):
  """Yields ``(start, stop, idx int64[stop - start, k])``: each query's top-k database indices."""
  nq, ndb = q.shape[0], db.shape[0]
  if ndb >= 1 << 32:
    raise ValueError(f"database_features has {ndb} rows; at most 2^32 - 1 are supported.")
  bq = int(block) if block is not None else max(1, DEFAULT_BLOCK_PAIRS // ndb)
  bq = min(bq, nq)
  db_dev = jax.device_put(db)
  inv_db = jax.device_put(_inverse_norms(db))
  inv_q = _inverse_norms(q)
  for start in range(0, nq, bq):
    stop = min(start + bq, nq)
    pad = bq - (stop - start)  # one block shape, one compilation
    qb = np.pad(q[start:stop], ((0, pad), (0, 0)))
    ib = np.pad(inv_q[start:stop], (0, pad))
    s = np.asarray(_cosine_block(qb, ib, db_dev, inv_db))[: stop - start]
    keys = _descending_keys(s)
    del s
    if k < ndb:
      keys = np.partition(keys, k - 1, axis=1)[:, :k]
    keys.sort(axis=1)
    yield start, stop, (keys & _LOW32).astype(np.int64)


def _prepare(query_features, database_features):
  q = _check_features(query_features, "query_features")
  db = _check_features(database_features, "database_features")
  if q.shape[1] != db.shape[1]:
    raise ValueError(f"query_features have dim {q.shape[1]} but database_features dim {db.shape[1]}.")
  return q, db


def cosine_topk(query_features: Any, database_features: Any, k: int, *,
                block: int | None = None) -> np.ndarray:
  """Indices of each query's ``k`` most cosine-similar database items, in rank order.

  Args:
    query_features: ``[num_queries, dim]`` real features (used in float32).
    database_features: ``[num_database, dim]`` real features.
    k: neighbours per query (``k >= 1``; above ``num_database`` it is clipped to it).
    block: queries per block (default: as many as keep ``2^22`` query×database pairs).

  Returns:
    ``int64[num_queries, min(k, num_database)]``; equal similarities are ordered by lower index.

  Raises:
    ValueError: features not finite real ``[n, dim]`` matrices with equal ``dim``, empty, ``k < 1`` or a
      bad ``block``.
  """
  q, db = _prepare(query_features, database_features)
  if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"k must be a positive int, got {k!r}.")
  _check_block(block)
  kk = min(int(k), db.shape[0])
  out = np.empty((q.shape[0], kk), np.int64)
  for start, stop, idx in _ranked_blocks(q, db, kk, block):
    out[start:stop] = idx
  return out


def cosine_average_precision(query_features: Any, database_features: Any, query_labels: Any,
                             database_labels: Any, *, topk: int | None = None,
                             block: int | None = None) -> np.ndarray:
  """Per-query AP@k under cosine ranking of raw features.

  The semantics are those of :func:`unhash_jax.retrieval.average_precision` with
  ``tie_policy="index"``, ``mode="standard"``, with ``cos(q, x_j)`` (descending) in place of the Hamming
  distance.

  Args:
    query_features: ``[num_queries, dim]`` real features (used in float32).
    database_features: ``[num_database, dim]`` real features.
    query_labels: int class ids ``[num_queries]`` or multi-hot ``[num_queries, classes]``.
    database_labels: same form as ``query_labels``; relevant = shares at least one label.
    topk: cut-off k (``None`` = whole database; clipped to ``num_database``).
    block: queries per block (default: as many as keep ``2^22`` query×database pairs).

  Returns:
    float64 numpy array ``[num_queries]``.

  Raises:
    ValueError: features not finite real ``[n, dim]`` matrices with equal ``dim`` or empty; labels of the
      wrong rank, dtype or length; ``topk < 1``; a bad ``block``.
  """
  q, db = _prepare(query_features, database_features)
  retrieval._check_options(topk, "index", "standard")
  _check_block(block)
  kind, ql, dbl = retrieval._prepare_labels(query_labels, database_labels, q.shape[0], db.shape[0])
  ndb = db.shape[0]
  k = ndb if topk is None else min(int(topk), ndb)
  ap = np.zeros(q.shape[0], np.float64)
  for start, stop, idx in _ranked_blocks(q, db, k, block):
    if kind == "single":
      rel = ql[start:stop, None] == dbl[idx]
    else:
      rel = np.any((ql[start:stop, None, :] & dbl[idx]) != 0, axis=-1)
    num, tk = retrieval._sorted_curves(rel, k)
    ap[start:stop] = retrieval._ap_from(num, tk)
  return ap


def cosine_mean_average_precision(query_features: Any, database_features: Any, query_labels: Any,
                                  database_labels: Any, *, topk: int | None = None,
                                  block: int | None = None) -> float:
  """mAP@k under cosine ranking: the mean of :func:`cosine_average_precision` (same arguments).

  Every query counts in the mean (AP 0 when nothing relevant is in its top k), as in
  :func:`unhash_jax.retrieval.mean_average_precision`.

  Examples:
    The second query has no relevant item: AP 0, still counted.

    >>> q = np.array([[1.0, 0.0], [0.0, 1.0]]); db = np.array([[0.0, 2.0], [3.0, 0.0], [-1.0, 0.0]])
    >>> round(cosine_mean_average_precision(q, db, np.array([0, 2]), np.array([0, 1, 0])), 4)
    0.2917
  """
  return float(cosine_average_precision(query_features, database_features, query_labels,
                                        database_labels, topk=topk, block=block).mean())
