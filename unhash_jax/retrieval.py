"""Hamming ranking evaluator: packed codes, vmapped popcount ranking, every retrieval metric.

The semantics follow docs/methods.md §1 exactly:

* Codes are binarized with ``sign₀`` (``0 -> +1``, :func:`binarize`) and packed into ``uint32`` words
  (:func:`pack_bits`); the Hamming distance is ``popcount(x_q XOR x_j)``, an integer in ``[0, bits]``.
* Relevance: two items are relevant when they share at least one label (integer class ids ``[n]`` or
  multi-hot ``[n, classes]``), computed with integer/bit operations.
* Ranking: ascending distance. ``tie_policy`` decides the order inside a group of equal distances:
  ``"index"`` (default; lower database index first, a stable order), ``"average"`` (expectation over a
  uniformly random order inside every tie group; McSherry & Najork, ECIR 2008; He et al., "Hashing as
  Tie-Aware Learning to Rank", CVPR 2018), ``"optimistic"`` / ``"pessimistic"`` (relevant items first /
  last inside every tie group; diagnostics). They bound the ``index``/``average`` AP when k is a
  tie-group boundary (e.g. ``topk=None``); for k inside a group they need not, because one more relevant
  item retrieved at low precision can lower AP@k.
* ``AP@k(q) = (1/T_k) Σ_{p≤k} r_p·prec(p)`` with ``T_k`` the number of relevant items *retrieved in the top
  k*; ``AP@k = 0`` when ``T_k = 0`` and such queries stay in the mAP denominator. ``topk=None`` is the
  whole database; a ``topk`` above the database size is clipped to it.
* ``mode="ddh_full"``: DDH's protocol (Song et al., ECML-PKDD 2017): ``k = n_db``, AP normalised by all
  relevant items, queries without any relevant database item are excluded from the mean (their per-query
  AP is NaN).

Engines. Two implementations return identical results (``engine=``):

* ``"numba"`` (the default on one CPU, when numba is installed; :mod:`unhash_jax._hamming_cpu`): an exact
  counting sort per query, parallel over queries. XLA:CPU has no fast selection primitive
  (``lax.top_k`` is a single-threaded partial sort, scatter-add histograms are serial), so on CPU this
  engine is several times faster than both the JAX engine and faiss (README, performance section).
* ``"jax"`` (the default on accelerators and whenever several devices are asked for): described next.

Implementation of the JAX engine. The database is stored packed and transposed (``uint32[words, n_db]``) so the popcount
loop vectorises over database items. Queries are processed in blocks (vmapped over queries, jit-compiled)
and, when large, the database in chunks, so no ``[num_queries, num_database]`` array ever exists: a block
holds at most ``block_pairs`` query×database pairs. Per block the device returns

* per-query histograms of the ``bits+1`` distance values over all and over relevant items (a counting
  sort's first pass). Everything except the ``"index"`` tie order is a closed form over these histograms,
  evaluated on the host in float64 (harmonic-number differences in extended precision), so the
  ``average``/``optimistic``/``pessimistic`` policies and the radius PR curve never sort;
* for the ``"index"`` policy only, the relevance bits of the top-k items in rank order. Selection is
  exact and two-stage (:func:`_select`): block minima over contiguous blocks of ``g ≈ sqrt(n/k)`` items
  are computed fused with the popcount, ``lax.top_k`` picks the k best blocks, then the k best of their
  ``k·g`` items, always on the unique composite key ``d·n + j`` so the result does not depend on whether
  a backend's top-k is stable (float32 is exact while ``(bits+2)·n < 2^24``; the database is chunked so
  that this holds). Candidates are merged across chunks and devices on the same kind of key, and the AP
  sums are accumulated in float64 on the host from integer cumulative counts.

With more than one device the database rows are sharded over a 1-D mesh (``jax.NamedSharding``) and each
device ranks its shard inside ``jax.shard_map``: histograms are summed with ``psum`` and per-shard top-k
candidates (with global indices) are merged, so the result is identical to one device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from unhash_jax.ops import binarize, num_words, pack_bits, unpack_bits

__all__ = [
    "TIE_POLICIES",
    "MODES",
    "ENGINES",
    "TOPK_GRID",
    "binarize",
    "pack_bits",
    "unpack_bits",
    "hamming_distances",
    "average_precision",
    "mean_average_precision",
    "evaluate",
    "plot_pr_curve",
]

TIE_POLICIES = ("index", "average", "optimistic", "pessimistic")
MODES = ("standard", "ddh_full")
ENGINES = ("auto", "jax", "numba")
# Top-k cut-offs of the top-k PR curve (docs/methods.md §1.5, the grid of the official WCH code).
TOPK_GRID = (1,) + tuple(range(500, 10001, 500))
# Default bound on query×database pairs held at once by one block (int32 distances: 64 MiB).
DEFAULT_BLOCK_PAIRS = 1 << 24
# Largest integer below which every float32 integer is exact.
_F32_EXACT = 1 << 24
_AXIS = "db"


# --------------------------------------------------------------------------------------------------
# Distances.


def _popcount_distances(qp: jax.Array, db_t: jax.Array) -> jax.Array:
  """``uint32[B, words]`` × ``uint32[words, n]`` (transposed database) → ``int32[B, n]`` distances."""

  def one_query(q):
    d = lax.population_count(q[0] ^ db_t[0]).astype(jnp.int32)
    for w in range(1, db_t.shape[0]):
      d = d + lax.population_count(q[w] ^ db_t[w]).astype(jnp.int32)
    return d

  return jax.vmap(one_query)(qp)


@jax.jit
def _hamming_packed(qp: jax.Array, dbp: jax.Array) -> jax.Array:
  return _popcount_distances(qp, dbp.T)


def hamming_distances(query_codes: Any, database_codes: Any) -> jax.Array:
  """All pairwise Hamming distances, by popcount on packed words (jit-compiled, vmapped over queries).

  This materialises the full ``[num_queries, num_database]`` matrix; the metric functions below never
  do and should be used for evaluation.

  Args:
    query_codes: ``[num_queries, bits]`` real or ±1 codes (binarized with ``0 -> +1``), or already packed
      ``uint32[num_queries, ceil(bits/32)]`` words as produced by :func:`pack_bits`.
    database_codes: ``[num_database, bits]`` codes, in the same form as ``query_codes``.

  Returns:
    ``int32[num_queries, num_database]``, entry ``(q, j)`` = number of differing bits, in ``[0, bits]``.

  Raises:
    ValueError: on rank/size mismatches or empty inputs.

  Examples:
    >>> hamming_distances(jnp.array([[1, -1, 1]]), jnp.array([[1, 1, 1], [-1, 1, -1]])).tolist()
    [[1, 3]]
  """
  q = jnp.asarray(query_codes)
  db = jnp.asarray(database_codes)
  if (q.dtype == jnp.uint32) != (db.dtype == jnp.uint32):
    raise ValueError("hamming_distances: pass both query and database codes packed (uint32) or neither.")
  if q.dtype != jnp.uint32:
    _check_code_array(q, "query_codes")
    _check_code_array(db, "database_codes")
    if q.shape[1] != db.shape[1]:
      raise ValueError(
          f"hamming_distances: query codes have {q.shape[1]} bits but database codes {db.shape[1]}.")
    q, db = pack_bits(q), pack_bits(db)
  elif q.ndim != 2 or db.ndim != 2 or q.shape[1] != db.shape[1]:
    raise ValueError(f"hamming_distances: packed codes must be [n, words] with equal words, got "
                     f"{q.shape} and {db.shape}.")
  return _hamming_packed(q, db)


# --------------------------------------------------------------------------------------------------
# Input checking and preparation (host side).


def _check_code_array(x: Any, name: str) -> None:
  if x.ndim != 2:
    raise ValueError(f"{name} must have shape [n, bits], got shape {tuple(x.shape)}.")
  if x.shape[0] == 0:
    raise ValueError(f"{name} is empty (0 rows).")
  if x.shape[1] == 0:
    raise ValueError(f"{name} has 0 bits.")
  dt = np.dtype(x.dtype)
  if dt == np.bool_ or np.issubdtype(dt, np.unsignedinteger):
    raise ValueError(
        f"{name} has dtype {dt}: codes must be real or ±1 values (sign₀ is applied, so 0/1 bits would "
        "all map to +1); convert {{0,1}} bits with 2*b-1 first.")
  if not (np.issubdtype(dt, np.number) or dt == jnp.bfloat16):
    raise ValueError(f"{name} must be numeric, got dtype {dt}.")
  if np.issubdtype(dt, np.floating) or dt == jnp.bfloat16:
    _check_finite(x, name)


_FINITE_CHECK_ROWS = 1 << 16  # rows per chunk of the non-finite scan (bounded extra memory)


def _check_finite(x: Any, name: str) -> None:
  """Raises ValueError on NaN/±inf codes: ``sign₀(NaN)`` would silently rank them as −1 bits.

  Skipped for traced arrays (inside a user's ``jax.jit``), whose values are unknown.
  """
  try:
    host = np.asarray(x)
  except jax.errors.TracerArrayConversionError:
    return
  for start in range(0, host.shape[0], _FINITE_CHECK_ROWS):
    block = np.asarray(host[start:start + _FINITE_CHECK_ROWS], dtype=np.float32)
    bad = ~np.isfinite(block)
    if bad.any():
      row, col = np.argwhere(bad)[0]
      total = int(bad.sum()) + sum(
          int((~np.isfinite(np.asarray(host[s:s + _FINITE_CHECK_ROWS], np.float32))).sum())
          for s in range(start + _FINITE_CHECK_ROWS, host.shape[0], _FINITE_CHECK_ROWS))
      raise ValueError(
          f"{name} holds {total} non-finite value(s) (NaN or ±inf; the first at row "
          f"{start + row}, bit {col}). Codes must be finite: sign₀ would rank NaN as -1. A NaN "
          f"usually means the model diverged (a lower learning rate helps).")


def _prepare_codes(query_codes: Any, database_codes: Any) -> tuple[np.ndarray, np.ndarray, int]:
  q = query_codes if isinstance(query_codes, jax.Array) else np.asarray(query_codes)
  db = database_codes if isinstance(database_codes, jax.Array) else np.asarray(database_codes)
  _check_code_array(q, "query_codes")
  _check_code_array(db, "database_codes")
  if q.shape[1] != db.shape[1]:
    raise ValueError(f"query codes have {q.shape[1]} bits but database codes have {db.shape[1]} bits.")
  bits = int(q.shape[1])
  return _pack_host(q), _pack_host(db), bits


def _pack_host(x: Any) -> np.ndarray:
  """Host (numpy) version of :func:`pack_bits` with the same layout; light on memory for big databases."""
  on = np.asarray(x) >= 0  # sign₀: 0 -> +1 (bit set)
  n, bits = on.shape
  b = np.packbits(on, axis=1, bitorder="little")
  buf = np.zeros((n, num_words(bits) * 4), np.uint8)
  buf[:, : b.shape[1]] = b
  return buf.view("<u4").astype(np.uint32)


def _prepare_labels(query_labels: Any, database_labels: Any, nq: int, ndb: int):
  """Returns ``(kind, q, db)``: ``kind`` 'single' (int32 ids) or 'multi' (uint32 packed label bits)."""
  out = []
  for name, labels, n in (("query_labels", query_labels, nq), ("database_labels", database_labels, ndb)):
    y = np.asarray(labels)
    if y.ndim not in (1, 2):
      raise ValueError(f"{name} must be class ids [n] or multi-hot [n, classes], got rank {y.ndim} "
                       f"(shape {y.shape}).")
    if y.shape[0] != n:
      raise ValueError(f"{name} has {y.shape[0]} rows but the codes have {n}.")
    if y.ndim == 1:
      if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise ValueError(f"{name} of rank 1 must be integer class ids, got dtype {y.dtype}.")
      if y.size and (y.min() < np.iinfo(np.int32).min or y.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{name} class ids do not fit in int32.")
    else:
      if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
              or y.dtype == np.bool_):
        raise ValueError(f"{name} multi-hot labels must be bool, integer or float, got dtype {y.dtype}.")
      if y.shape[1] == 0:
        raise ValueError(f"{name} has 0 classes.")
    out.append(y)
  yq, ydb = out
  if yq.ndim != ydb.ndim:
    raise ValueError(f"query_labels has rank {yq.ndim} but database_labels rank {ydb.ndim}; use class ids "
                     "[n] for both or multi-hot [n, classes] for both.")
  if yq.ndim == 1:
    return "single", yq.astype(np.int32), ydb.astype(np.int32)
  if yq.shape[1] != ydb.shape[1]:
    raise ValueError(f"query_labels have {yq.shape[1]} classes but database_labels {ydb.shape[1]}.")
  # Multi-hot -> packed label bits: relevance = any(q_word & db_word).
  return "multi", _pack_label_bits(yq > 0), _pack_label_bits(ydb > 0)


def _pack_label_bits(on: np.ndarray) -> np.ndarray:
  n, c = on.shape
  words = num_words(c)
  padded = np.zeros((n, words * 32), np.uint64)
  padded[:, :c] = on
  shifts = np.arange(32, dtype=np.uint64)
  packed = (padded.reshape(n, words, 32) << shifts).sum(-1)
  return packed.astype(np.uint32)


def _check_options(topk, tie_policy, mode) -> None:
  if tie_policy not in TIE_POLICIES:
    raise ValueError(f"unknown tie_policy {tie_policy!r}; expected one of {TIE_POLICIES}.")
  if mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}.")
  if topk is not None:
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)):
      raise ValueError(f"topk must be a positive int or None (whole database), got {topk!r}.")
    if topk < 1:
      raise ValueError(f"topk must be >= 1 (or None for the whole database), got {topk}.")
  if mode == "ddh_full" and topk is not None:
    raise ValueError("mode='ddh_full' ranks the whole database; pass topk=None.")


def _resolve_devices(devices) -> list:
  if devices is None:
    return list(jax.local_devices())
  if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
    avail = jax.local_devices()
    if not 1 <= devices <= len(avail):
      raise ValueError(f"devices={devices} but {len(avail)} local devices are available.")
    return list(avail[:devices])
  devs = list(devices)
  if not devs:
    raise ValueError("devices is an empty sequence.")
  return devs


def _numba_available() -> bool:
  try:
    import numba  # noqa: F401, PLC0415
  except ImportError:
    return False
  return True


def _resolve_engine(engine: str, devices: Any) -> str:
  """``"auto"``: the numba CPU engine when the ranking would run on one CPU (``devices`` None or a
  single CPU device) and numba is installed; the JAX engine otherwise (accelerators, sharding)."""
  if engine not in ENGINES:
    raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}.")
  if engine == "jax":
    return engine
  devs = _resolve_devices(devices)
  on_one_cpu = all(d.platform == "cpu" for d in devs) and (devices is None or len(devs) == 1)
  if engine == "numba":
    if not _numba_available():
      raise ValueError("engine='numba' needs numba (pip install numba); or pass engine='jax'.")
    # None or a count names no device, so on a GPU/TPU host the numba engine simply runs on the host
    # CPU; only an explicit list of accelerator devices contradicts it.
    explicit = devices is not None and not isinstance(devices, (int, np.integer))
    if explicit and not all(d.platform == "cpu" for d in devs):
      raise ValueError("engine='numba' runs on the host CPU; it cannot use the devices "
                       f"{[str(d) for d in devs]}. Pass engine='jax' (or 'auto').")
    return engine
  return "numba" if on_one_cpu and _numba_available() else "jax"


# --------------------------------------------------------------------------------------------------
# Device kernels.


def _relevance(kind: str, ql: jax.Array, dbl: jax.Array) -> jax.Array:
  """``bool[B, n]``: shares at least one label. ``dbl`` is ``[n]`` ids or ``uint32[L, n]`` bits."""
  if kind == "single":
    return ql[:, None] == dbl[None, :]
  hit = (ql[:, 0, None] & dbl[0][None, :]) != 0
  for w in range(1, dbl.shape[0]):
    hit = hit | ((ql[:, w, None] & dbl[w][None, :]) != 0)
  return hit


def _exact_smallest(key_d: jax.Array, width: int, k: int, max_d: int):
  """Indices of the ``k`` smallest ``(d, position)`` pairs along the last axis, in that order.

  The composite key ``d·width + position`` is unique, so the result does not depend on whether the
  backend's top-k is stable. float32 is used when exact (fast on XLA:CPU), int32 otherwise.
  """
  pos = lax.broadcasted_iota(jnp.int32, key_d.shape, key_d.ndim - 1)
  key = key_d * width + pos
  if (max_d + 1) * width < _F32_EXACT:
    _, idx = lax.top_k(-key.astype(jnp.float32), k)
  else:
    _, idx = lax.top_k(-key, k)
  return idx


def _shard_kernel(qp, ql, db_t, dbl, nvalid, *, kind, bits, k, need_hist, sharded):
  """Per-shard work: histograms and (optionally) the shard's top-k candidates.

  Args:
    qp: ``uint32[B, words]`` query block. ``ql``: its labels (``[B]`` ids or ``uint32[B, L]``).
    db_t: ``uint32[words, n]`` this shard's database rows (transposed). ``dbl``: ``[n]`` or
      ``uint32[L, n]``.
    nvalid: int32 scalar, number of real (unpadded) rows in the whole database chunk.

  Returns:
    ``hist int32[B, bits+1, 2]`` (counts of irrelevant / relevant items per distance; summed over
    shards),
    and, when ``k``: ``d int32[B, kk]`` and ``rel bool[B, kk]`` of the shard's best ``kk = min(k, n)``
    items in rank order (rank order within a shard is also index order among equal distances).
  """
  n = db_t.shape[1]
  offset = lax.axis_index(_AXIS) * n if sharded else 0
  nvalid_local = nvalid - offset  # rows j < nvalid_local of this shard are real
  outs = []
  d = rel = None
  if need_hist:
    valid = lax.broadcasted_iota(jnp.int32, (1, n), 1) < nvalid_local
    d = jnp.where(valid, _popcount_distances(qp, db_t), bits + 1)  # padding sorts after real items
    rel = _relevance(kind, ql, dbl) & valid
    b = qp.shape[0]
    nb = 2 * (bits + 2)
    flat = (lax.broadcasted_iota(jnp.int32, d.shape, 0) * nb + 2 * d + rel.astype(jnp.int32)).reshape(-1)
    hist = jnp.zeros((b * nb,), jnp.int32).at[flat].add(1, mode="promise_in_bounds")
    hist = hist.reshape(b, bits + 2, 2)[:, : bits + 1]
    if sharded:
      hist = lax.psum(hist, _AXIS)
    outs.append(hist)
  if k:
    kk = min(k, n)
    g = _block_size(n, kk)
    if d is not None and g == 1:
      idx = _exact_smallest(d, n, kk, bits + 1)
      sel_d, sel_j = jnp.take_along_axis(d, idx, axis=1), idx
    else:
      sel_d, sel_j = _select(qp, db_t, nvalid_local, kk, bits, g)
    if rel is not None:
      sel_rel = jnp.take_along_axis(rel, sel_j, axis=1)
    elif kind == "single":  # relevance of the selected items only
      sel_rel = ql[:, None] == dbl[sel_j]
    else:
      sel_rel = jnp.any((ql[:, :, None] & jnp.moveaxis(dbl[:, sel_j], 0, 1)) != 0, axis=1)
    outs += [sel_d, sel_rel]
  return tuple(outs)


def _block_size(n: int, k: int) -> int:
  """Power-of-two block size G ≈ sqrt(n/k) for the two-stage selection (1 = single stage).

  Each ``lax.top_k`` also pays ~``k log k`` to sort its output, so two stages only pay off when
  ``n ≫ k`` (measured on XLA:CPU: a win at n = 59,000, k = 1,000; a loss at k = 5,000).
  """
  g = 1
  if n < 32 * k:
    return 1
  while g < 64 and n % (2 * g) == 0 and (2 * g) ** 2 * k <= n:
    g *= 2
  return g


def _select(qp: jax.Array, db_t: jax.Array, nvalid: jax.Array, k: int, bits: int, g: int):
  """The ``k`` smallest ``(d, j)`` over a database shard, in rank order: ``(d_sel, j_sel) int32[B, k]``.

  Args:
    qp: ``uint32[B, words]`` queries; db_t: ``uint32[words, n]`` database (transposed); nvalid: rows
      ``j >= nvalid`` are padding (distance ``bits + 1``); g: block size (``n % g == 0``).

  Two-stage exact selection: with contiguous blocks of ``g`` items, the top-k items all lie in the ``k``
  blocks with the smallest ``(block minimum, block index)``. (If an item x of the top k were in another
  block, each of those k blocks would hold an item that precedes x: a smaller distance, or the same
  distance in a block of lower index.) Block minima are computed fused with the popcount (the
  ``[B, n]`` distances are never written to memory); top-k then runs on ``n/g`` block keys and on the
  ``k·g`` candidates, whose distances are recomputed from gathered codes.
  """
  b = qp.shape[0]
  words, n = db_t.shape
  max_d = bits + 1

  def dist_cols(cols_t, valid, per_query=False):
    """cols_t ``[words, m]`` shared by all queries, or ``[words, B, m]`` one row per query."""
    dd = None
    for w in range(words):
      col = cols_t[w] if per_query else cols_t[w][None, :]
      pw = lax.population_count(qp[:, w, None] ^ col).astype(jnp.int32)
      dd = pw if dd is None else dd + pw
    return jnp.where(valid, dd, max_d)

  if g == 1:
    d = dist_cols(db_t, lax.broadcasted_iota(jnp.int32, (1, n), 1) < nvalid)
    idx = _exact_smallest(d, n, k, max_d)
    return jnp.take_along_axis(d, idx, axis=1), idx
  nblk = n // g
  db3 = db_t.reshape(words, nblk, g)
  first = lax.broadcasted_iota(jnp.int32, (1, nblk), 1) * g
  bmin = None
  for i in range(g):
    di = dist_cols(db3[:, :, i], first + i < nvalid)
    bmin = di if bmin is None else jnp.minimum(bmin, di)
  kb = min(k, nblk)
  blk = _exact_smallest(bmin, nblk, kb, max_d)  # [B, kb] block ids in (min, id) order
  cand_j = (blk[:, :, None] * g + lax.broadcasted_iota(jnp.int32, (1, 1, g), 2)).reshape(b, kb * g)
  cand_d = dist_cols(db_t[:, cand_j], cand_j < nvalid, per_query=True)
  key = cand_d * n + cand_j
  if (max_d + 1) * n < _F32_EXACT:
    _, pos = lax.top_k(-key.astype(jnp.float32), k)
  else:
    _, pos = lax.top_k(-key, k)
  return jnp.take_along_axis(cand_d, pos, axis=1), jnp.take_along_axis(cand_j, pos, axis=1)


@functools.partial(jax.jit, static_argnames=("k", "max_d"))
def _merge(d_a, r_a, d_b, r_b, *, k, max_d):
  """Merges two candidate lists already in rank order; every row of ``a`` precedes every row of ``b``."""
  d = jnp.concatenate([d_a, d_b], axis=1)
  r = jnp.concatenate([r_a, r_b], axis=1)
  idx = _exact_smallest(d, d.shape[1], k, max_d)
  return jnp.take_along_axis(d, idx, axis=1), jnp.take_along_axis(r, idx, axis=1)


@functools.lru_cache(maxsize=64)
def _compiled_kernel(kind, bits, k, need_hist, devices: tuple):
  """jit(shard_map(kernel)) over a 1-D mesh of ``devices`` (plain jit for one device)."""
  sharded = len(devices) > 1
  kern = functools.partial(_shard_kernel, kind=kind, bits=bits, k=k, need_hist=need_hist,
                           sharded=sharded)
  if not sharded:
    return jax.jit(kern), None
  mesh = jax.sharding.Mesh(np.array(devices), (_AXIS,))
  P = jax.P
  db_lab_spec = P(_AXIS) if kind == "single" else P(None, _AXIS)
  out_specs = ((P(),) if need_hist else ()) + ((P(None, _AXIS),) * 2 if k else ())
  fn = jax.shard_map(kern, mesh=mesh, in_specs=(P(), P(), P(None, _AXIS), db_lab_spec, P()),
                     out_specs=out_specs, check_vma=False)
  return jax.jit(fn), mesh


# --------------------------------------------------------------------------------------------------
# Driver: blocks of queries × chunks of the database.


def _rank_stats(qp, ql, dbp, dbl, *, kind, bits, k_sel, need_hist, devices, block_pairs,
                database_chunk=None):
  """Runs the kernels over all query blocks and database chunks.

  Returns ``(hist int64[nq, bits+1, 2] or None, rel_sorted bool[nq, k_sel] or None)``; ``hist[..., 0]``
  counts all items and ``hist[..., 1]`` relevant items per distance.
  """
  nq, ndb = qp.shape[0], dbp.shape[0]
  devs = tuple(_resolve_devices(devices))
  ndev = len(devs)
  # Per-device chunk rows: the float32 composite key d·n + j must stay exact.
  max_local = max(1, (_F32_EXACT - 1) // (bits + 2))
  local = min(-(-ndb // ndev), max_local)
  if database_chunk is not None:
    local = min(local, max(1, -(-int(database_chunk) // ndev)))
  # Round shapes up (padding rows are never selected and not counted) so that calls with similar sizes
  # reuse one compiled kernel, and the two-stage selection gets whole blocks.
  if local >= 4096:
    local = min(-(-local // 64) * 64, max_local // 64 * 64)
  else:
    local = min(1 << (local - 1).bit_length(), max_local)
  chunk = local * ndev
  nchunks = -(-ndb // chunk)
  width = max(chunk, k_sel or 0)
  qcap = max(1, block_pairs // width)
  qblock = int(min(qcap, 1 << (nq - 1).bit_length()))  # power of two: fewer distinct compilations
  kern, mesh = _compiled_kernel(kind, bits, int(k_sel or 0), bool(need_hist), devs)

  # Database: pad to whole chunks, transpose, place once (sharded by rows over the mesh).
  pad = nchunks * chunk - ndb
  db_t = np.pad(dbp, ((0, pad), (0, 0))).T.copy()
  dbl_p = np.pad(dbl, ((0, pad),) + ((0, 0),) * (dbl.ndim - 1))
  dbl_t = dbl_p if kind == "single" else dbl_p.T.copy()
  if mesh is not None:
    P = jax.P
    s_rows = jax.NamedSharding(mesh, P(None, _AXIS))
    s_lab = jax.NamedSharding(mesh, P(_AXIS) if kind == "single" else P(None, _AXIS))
    rep = jax.NamedSharding(mesh, P())
    put_db = lambda a: jax.device_put(a, s_rows)  # noqa: E731
    put_lab = lambda a: jax.device_put(a, s_lab)  # noqa: E731
    put_rep = lambda a: jax.device_put(a, rep)  # noqa: E731
  else:
    put_db = put_lab = put_rep = lambda a: jax.device_put(a, devs[0])  # noqa: E731
  chunks = []
  for c in range(nchunks):
    sl = slice(c * chunk, (c + 1) * chunk)
    nvalid = np.int32(min(ndb - c * chunk, chunk))
    chunks.append((put_db(db_t[:, sl]), put_lab(dbl_t[..., sl]), put_rep(nvalid)))

  hist_out = np.zeros((nq, bits + 1, 2), np.int64) if need_hist else None
  rel_out = np.zeros((nq, k_sel), np.bool_) if k_sel else None
  for start in range(0, nq, qblock):
    stop = min(start + qblock, nq)
    qb = np.pad(qp[start:stop], ((0, qblock - (stop - start)), (0, 0)))
    lb = np.pad(ql[start:stop], ((0, qblock - (stop - start)),) + ((0, 0),) * (ql.ndim - 1))
    qb, lb = put_rep(qb), put_rep(lb)
    hist = None
    cand = None
    for c, (db_c, lab_c, nv) in enumerate(chunks):
      outs = kern(qb, lb, db_c, lab_c, nv)
      if need_hist:
        hist = outs[0] if hist is None else hist + outs[0]
        outs = outs[1:]
      if k_sel:
        d_c, r_c = outs
        # Chunk offsets make candidates of later chunks follow earlier ones: the row index is implicit.
        if cand is None and ndev == 1 and d_c.shape[1] == k_sel:
          cand = (d_c, r_c)  # one device: already in rank order (several shards must be merged)
        elif cand is None:
          cand = _merge(d_c[:, :0], r_c[:, :0], d_c, r_c, k=min(k_sel, d_c.shape[1]), max_d=bits + 1)
        else:
          cand = _merge(cand[0], cand[1], d_c, r_c, k=min(k_sel, cand[0].shape[1] + d_c.shape[1]),
                        max_d=bits + 1)
    if need_hist:
      h = np.asarray(hist)[: stop - start]
      hist_out[start:stop, :, 0] = h[..., 0] + h[..., 1]  # kernel bins: (irrelevant, relevant)
      hist_out[start:stop, :, 1] = h[..., 1]
    if k_sel:
      rel_out[start:stop] = np.asarray(cand[1])[: stop - start, :k_sel]
  return hist_out, rel_out


# --------------------------------------------------------------------------------------------------
# Host-side float64 metric arithmetic.


@functools.lru_cache(maxsize=8)
def _harmonic(n: int) -> np.ndarray:
  """``H[i] = Σ_{j≤i} 1/j`` for ``i = 0..n`` in extended precision (differences stay accurate)."""
  h = np.zeros(n + 1, np.longdouble)
  h[1:] = np.cumsum(1.0 / np.arange(1, n + 1, dtype=np.longdouble))
  return h


def _hdiff(h: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """``Σ_{i=a+1}^{b} 1/i`` as float64."""
  return (h[b] - h[a]).astype(np.float64)


def _hist_curves(h_all: np.ndarray, h_rel: np.ndarray, k: np.ndarray, policy: str):
  """Tie-policy closed forms over per-distance histograms.

  Args:
    h_all, h_rel: ``int64[nq, bits+1]`` counts of all / relevant database items per distance.
    k: ``int64[nq]`` cut-offs (already clipped to ``n_db``).
    policy: "average", "optimistic" or "pessimistic".

  Returns:
    ``(sum_terms, t_k)`` float64 ``[nq]``: ``Σ_{p≤k} r_p·prec(p)`` and ``T_k`` (expectations for
    "average", docs/methods.md §1.3).
  """
  ndb = int(h_all[0].sum())
  hn = _harmonic(ndb)
  nq = h_all.shape[0]
  num = np.zeros(nq, np.float64)
  tk = np.zeros(nq, np.float64)
  s = np.zeros(nq, np.int64)  # items ranked before the group
  rb = np.zeros(nq, np.int64)  # relevant items before the group
  for v in range(h_all.shape[1]):
    n, rho = h_all[:, v], h_rel[:, v]
    length = np.clip(k - s, 0, n)  # slots of this group inside the top k
    if policy == "average":
      dh = _hdiff(hn, s, s + length)
      nz = n > 0
      frac = np.where(nz, rho / np.maximum(n, 1), 0.0)
      pair = np.where(n > 1, (rho - 1) / np.maximum(n - 1, 1), 0.0)
      num += frac * ((rb + 1) * dh + pair * (length - (s + 1) * dh))
      tk += frac * length
    elif policy == "optimistic":
      m = np.minimum(rho, length)
      num += m - (s - rb) * _hdiff(hn, s, s + m)
      tk += m
    elif policy == "pessimistic":
      c = np.maximum(0, length - (n - rho))
      s2 = s + n - rho
      num += c - (s2 - rb) * _hdiff(hn, s2, np.minimum(s2 + c, ndb))
      tk += c
    else:
      raise AssertionError(policy)
    s = s + n
    rb = rb + rho
  return num, tk


def _sorted_curves(rel_sorted: np.ndarray, k: int):
  """``(Σ_{p≤k} r_p·prec(p), T_k)`` from relevance bits in rank order (integer counts, float64 sum)."""
  r = rel_sorted[:, :k]
  cum = np.cumsum(r, axis=1, dtype=np.int64)
  terms = np.where(r, cum / np.arange(1, k + 1, dtype=np.float64), 0.0)
  return terms.sum(axis=1), cum[:, -1].astype(np.float64) if k else np.zeros(len(r))


def _ap_from(num: np.ndarray, tk: np.ndarray) -> np.ndarray:
  return np.where(tk > 0, num / np.where(tk > 0, tk, 1.0), 0.0)


# --------------------------------------------------------------------------------------------------
# Public metrics.


def _run(query_codes, database_codes, query_labels, database_labels, *, topk, tie_policy, mode,
         devices, block_pairs, database_chunk, need_hist, engine, extra_k=0):
  _check_options(topk, tie_policy, mode)
  engine = _resolve_engine(engine, devices)
  if not isinstance(block_pairs, (int, np.integer)) or block_pairs < 1:
    raise ValueError(f"block_pairs must be a positive int, got {block_pairs!r}.")
  if database_chunk is not None and (not isinstance(database_chunk, (int, np.integer))
                                     or database_chunk < 1):
    raise ValueError(f"database_chunk must be a positive int or None, got {database_chunk!r}.")
  qp, dbp, bits = _prepare_codes(query_codes, database_codes)
  kind, ql, dbl = _prepare_labels(query_labels, database_labels, qp.shape[0], dbp.shape[0])
  ndb = dbp.shape[0]
  k = ndb if topk is None else min(int(topk), ndb)
  k_sel = max(k, extra_k) if tie_policy == "index" else 0
  k_sel = min(k_sel, ndb)
  need_hist = need_hist or tie_policy != "index" or mode == "ddh_full"
  if engine == "numba":
    from unhash_jax import _hamming_cpu  # noqa: PLC0415  (numba: imported only when used)

    hist, rel_sorted = _hamming_cpu.rank_stats(qp, ql, dbp, dbl, kind=kind, bits=bits, k_sel=k_sel,
                                               need_hist=need_hist)
  else:
    hist, rel_sorted = _rank_stats(qp, ql, dbp, dbl, kind=kind, bits=bits, k_sel=k_sel,
                                   need_hist=need_hist, devices=devices, block_pairs=int(block_pairs),
                                   database_chunk=database_chunk)
  return bits, ndb, k, hist, rel_sorted


def _curves_at(k: int, hist, rel_sorted, tie_policy, nq):
  if tie_policy == "index":
    return _sorted_curves(rel_sorted, k)
  return _hist_curves(hist[..., 0], hist[..., 1], np.full(nq, k, np.int64), tie_policy)


def average_precision(query_codes: Any, database_codes: Any, query_labels: Any, database_labels: Any, *,
                      topk: int | None = None, tie_policy: str = "index", mode: str = "standard",
                      devices: Any = None, block_pairs: int = DEFAULT_BLOCK_PAIRS,
                      database_chunk: int | None = None, engine: str = "auto") -> np.ndarray:
  """Per-query average precision AP@k under Hamming ranking (docs/methods.md §1.3–1.4).

  Args:
    query_codes: ``[num_queries, bits]`` real or ±1 codes (binarized inside with ``0 -> +1``).
    database_codes: ``[num_database, bits]`` codes with the same ``bits``.
    query_labels: int class ids ``[num_queries]`` or multi-hot ``[num_queries, classes]``.
    database_labels: same form as ``query_labels``, ``[num_database]`` or ``[num_database, classes]``.
      An item is relevant to a query when they share at least one label.
    topk: cut-off k (``None`` = whole database; values above ``num_database`` are clipped to it).
    tie_policy: order inside groups of equal distance: ``"index"`` (lower database index first),
      ``"average"`` (tie-aware expectation, computed from per-distance histograms without sorting),
      ``"optimistic"`` or ``"pessimistic"`` (relevant items first / last).
    mode: ``"standard"`` (AP normalised by the relevant items retrieved in the top k; 0 when none) or
      ``"ddh_full"`` (DDH: whole database, normalised by all relevant items; NaN for queries with no
      relevant database item, which :func:`mean_average_precision` then excludes).
    devices: ``None`` (all local devices; the database is sharded by rows when there are several), an
      int (the first n local devices; ``1`` forces one device) or a sequence of devices.
    block_pairs: bound on query×database pairs processed at once (memory knob).
    database_chunk: at most this many database rows are ranked at once (over all devices); chunks are
      merged exactly. Default: as many as the exact float32 composite key allows (``2^24/(bits+2)`` per
      device).
    engine: ``"jax"`` (jit-compiled kernels on ``devices``, sharded when there are several),
      ``"numba"`` (the host-CPU counting-sort engine of :mod:`unhash_jax._hamming_cpu`, parallel over
      queries; ignores ``block_pairs``/``database_chunk``: it holds ``O(threads·num_database)`` bytes of
      scratch; with ``devices`` None or an int it runs on the host CPU whatever the default backend)
      or ``"auto"`` (default: numba when the ranking would run on one CPU device and numba is
      installed, JAX otherwise). Both return identical results.

  Returns:
    float64 numpy array ``[num_queries]``.

  Raises:
    ValueError: bit-length mismatch, label/code length mismatch, labels of wrong rank or dtype, empty
      query or database set, unknown ``tie_policy``/``mode``/``engine``, ``topk < 1``, or
      ``engine="numba"`` without numba or with an explicit list of non-CPU devices.

  References:
    Tie-aware AP: McSherry & Najork, ECIR 2008; He et al., CVPR 2018. Protocol: docs/methods.md §1.

  Examples:
    Distances 1, 0, 2 and relevance 1, 0, 1 rank as [0, 1, 1]: AP = (1/2 + 2/3) / 2.

    >>> q = np.array([[1, 1]]); db = np.array([[1, -1], [1, 1], [-1, -1]])
    >>> average_precision(q, db, np.array([0]), np.array([0, 1, 0])).round(4).tolist()
    [0.5833]
  """
  bits, ndb, k, hist, rel_sorted = _run(
      query_codes, database_codes, query_labels, database_labels, topk=topk, tie_policy=tie_policy,
      mode=mode, devices=devices, block_pairs=block_pairs, database_chunk=database_chunk,
      need_hist=False, engine=engine)
  nq = (hist if hist is not None else rel_sorted).shape[0]
  num, tk = _curves_at(k, hist, rel_sorted, tie_policy, nq)
  ap = _ap_from(num, tk)
  if mode == "ddh_full":
    ap = np.where(hist[..., 1].sum(axis=1) > 0, ap, np.nan)
  return ap


def mean_average_precision(query_codes: Any, database_codes: Any, query_labels: Any,
                           database_labels: Any, *, topk: int | None = None, tie_policy: str = "index",
                           mode: str = "standard", devices: Any = None,
                           block_pairs: int = DEFAULT_BLOCK_PAIRS,
                           database_chunk: int | None = None, engine: str = "auto") -> float:
  """mAP@k: the mean of :func:`average_precision` over all queries (same arguments).

  In ``"standard"`` mode every query counts in the denominator (AP 0 when nothing relevant is in the
  top k); in ``"ddh_full"`` mode queries without any relevant database item are excluded (0.0 if all
  are excluded).

  Examples:
    The second query has no relevant item: AP 0, still counted.

    >>> q = np.array([[1, 1], [-1, -1]]); db = np.array([[1, -1], [1, 1], [-1, -1]])
    >>> round(mean_average_precision(q, db, np.array([0, 2]), np.array([0, 1, 0])), 4)
    0.2917
  """
  ap = average_precision(query_codes, database_codes, query_labels, database_labels, topk=topk,
                         tie_policy=tie_policy, mode=mode, devices=devices, block_pairs=block_pairs,
                         database_chunk=database_chunk, engine=engine)
  if mode == "ddh_full":
    ap = ap[~np.isnan(ap)]
    return float(ap.mean()) if ap.size else 0.0
  return float(ap.mean())


def evaluate(query_codes: Any, database_codes: Any, query_labels: Any, database_labels: Any, *,
             topk: int | None = None, tie_policy: str = "index", mode: str = "standard",
             topk_grid: Sequence[int] = TOPK_GRID, radius: int = 2, per_query: bool = False,
             devices: Any = None, block_pairs: int = DEFAULT_BLOCK_PAIRS,
             database_chunk: int | None = None, engine: str = "auto") -> dict[str, Any]:
  """Every retrieval metric of docs/methods.md §1.4–1.5 in one pass over the database.

  Args:
    query_codes, database_codes, query_labels, database_labels, topk, tie_policy, mode, devices,
      block_pairs, database_chunk, engine: as in :func:`average_precision`.
    topk_grid: cut-offs of the top-k precision/recall curve (clipped to ``num_database``, deduplicated).
    radius: Hamming radius of the ``p@h<=r`` metric (default 2).
    per_query: also return per-query numpy arrays (AP, relevant counts, ball sizes).

  Returns:
    A dict with plain Python scalars (JSON-ready) and lists:

    * ``"map"``: mAP at the requested ``topk`` (``ddh_full`` semantics in that mode), ``"topk"`` the
      effective k (int), ``"map@{k}"`` (or ``"map@all"`` when ``topk=None``) the same value;
    * ``"p@{k}"``, ``"r@{k}"`` for every k of the grid and the requested k: macro-averaged P@k = T_k/k and
      R@k = T_k/R_q (0 when R_q = 0), following ``tie_policy``;
    * ``"pr_topk_k"``, ``"pr_topk_precision"``, ``"pr_topk_recall"``: the same as lists (top-k curve);
    * ``"pr_radius"`` (0..bits), ``"pr_radius_precision"``, ``"pr_radius_recall"``: PR by Hamming radius
      from per-query histograms (P = 0 for an empty ball; macro-averaged);
    * ``"p@h<=2"`` (P(2), empty balls count 0) and ``"p@h<=2_empty_fraction"`` (fraction of queries whose
      radius-2 ball is empty); keys follow ``radius``;
    * ``"bits"``, ``"num_queries"``, ``"num_database"``, ``"tie_policy"``, ``"mode"``;
    * with ``per_query=True``: ``"per_query_ap"``, ``"per_query_num_relevant"`` (R_q),
      ``"per_query_ball_size"`` and ``"per_query_ball_relevant"`` (radius ball) as numpy arrays.
  """
  grid_arg = [int(g) for g in topk_grid]
  if any(g < 1 for g in grid_arg):
    raise ValueError(f"topk_grid values must be >= 1, got {list(topk_grid)}.")
  if not isinstance(radius, (int, np.integer)) or radius < 0:
    raise ValueError(f"radius must be a non-negative int, got {radius!r}.")
  db_rows = np.shape(database_codes)[0] if np.ndim(database_codes) >= 1 else 0
  extra = min(max(grid_arg, default=0), db_rows) if db_rows else 0
  bits, ndb, k, hist, rel_sorted = _run(
      query_codes, database_codes, query_labels, database_labels, topk=topk, tie_policy=tie_policy,
      mode=mode, devices=devices, block_pairs=block_pairs, database_chunk=database_chunk,
      need_hist=True, engine=engine, extra_k=extra)
  nq = hist.shape[0]
  h_all, h_rel = hist[..., 0], hist[..., 1]
  n_rel = h_rel.sum(axis=1)
  res: dict[str, Any] = {"bits": bits, "num_queries": int(nq), "num_database": int(ndb),
                         "tie_policy": tie_policy, "mode": mode, "topk": int(k)}

  num, tk = _curves_at(k, hist, rel_sorted, tie_policy, nq)
  ap = _ap_from(num, tk)
  if mode == "ddh_full":
    ap = np.where(n_rel > 0, ap, np.nan)
    kept = ap[~np.isnan(ap)]
    res["map"] = float(kept.mean()) if kept.size else 0.0
    res["map@ddh_full"] = res["map"]
  else:
    res["map"] = float(ap.mean())
    res["map@all" if topk is None else f"map@{k}"] = res["map"]

  if tie_policy == "index":
    cum_sorted = np.cumsum(rel_sorted, axis=1, dtype=np.int64)
    t_at = lambda kk: cum_sorted[:, kk - 1].astype(np.float64)  # noqa: E731
  else:
    t_at = lambda kk: _hist_curves(h_all, h_rel, np.full(nq, kk, np.int64), tie_policy)[1]  # noqa: E731
  ks = sorted({min(g, ndb) for g in grid_arg} | {k})
  pk, rk = [], []
  for kk in ks:
    t = tk if kk == k else t_at(kk)
    p = float(np.mean(t / kk))
    r = float(np.mean(np.where(n_rel > 0, t / np.maximum(n_rel, 1), 0.0)))
    res[f"p@{kk}"], res[f"r@{kk}"] = p, r
    pk.append(p)
    rk.append(r)
  res["pr_topk_k"], res["pr_topk_precision"], res["pr_topk_recall"] = ks, pk, rk

  c_all = np.cumsum(h_all, axis=1)
  c_rel = np.cumsum(h_rel, axis=1)
  prec_r = np.where(c_all > 0, c_rel / np.maximum(c_all, 1), 0.0)
  rec_r = np.where(n_rel[:, None] > 0, c_rel / np.maximum(n_rel, 1)[:, None], 0.0)
  res["pr_radius"] = list(range(bits + 1))
  res["pr_radius_precision"] = prec_r.mean(axis=0).tolist()
  res["pr_radius_recall"] = rec_r.mean(axis=0).tolist()
  rr = min(int(radius), bits)
  res[f"p@h<={radius}"] = float(prec_r[:, rr].mean())
  res[f"r@h<={radius}"] = float(rec_r[:, rr].mean())
  res[f"p@h<={radius}_empty_fraction"] = float(np.mean(c_all[:, rr] == 0))
  if per_query:
    res["per_query_ap"] = ap
    res["per_query_num_relevant"] = n_rel
    res["per_query_ball_size"] = c_all[:, rr]
    res["per_query_ball_relevant"] = c_rel[:, rr]
  return res


def plot_pr_curve(results: dict[str, Any], path: str, *, title: str | None = None) -> str:
  """Writes a PNG with the PR curve by Hamming radius and the top-k precision/recall curves.

  Args:
    results: a dict returned by :func:`evaluate` (or its JSON round trip).
    path: output PNG path.
    title: optional figure title (default: bits, tie policy and mAP).

  Returns:
    ``path``.
  """
  import matplotlib  # noqa: PLC0415  (heavy; only needed here)

  matplotlib.use("Agg", force=False)
  import matplotlib.pyplot as plt  # noqa: PLC0415

  for key in ("pr_radius_precision", "pr_radius_recall", "pr_topk_k", "pr_topk_precision",
              "pr_topk_recall"):
    if key not in results:
      raise ValueError(f"plot_pr_curve: results lack {key!r}; pass the dict returned by evaluate().")
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
  ax1.plot(results["pr_radius_recall"], results["pr_radius_precision"], marker=".")
  ax1.set_xlabel("recall")
  ax1.set_ylabel("precision")
  ax1.set_title("PR by Hamming radius")
  ax1.set_xlim(0, 1.02)
  ax1.set_ylim(0, 1.02)
  ax2.plot(results["pr_topk_k"], results["pr_topk_precision"], marker=".", label="P@k")
  ax2.plot(results["pr_topk_k"], results["pr_topk_recall"], marker=".", label="R@k")
  ax2.set_xlabel("k (top-k)")
  ax2.set_title("precision / recall at top k")
  ax2.set_ylim(0, 1.02)
  ax2.legend()
  if title is None:
    title = (f"{results.get('bits', '?')} bits, tie policy {results.get('tie_policy', '?')}, "
             f"mAP@{results.get('topk', '?')} = {results.get('map', float('nan')):.4f}")
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
