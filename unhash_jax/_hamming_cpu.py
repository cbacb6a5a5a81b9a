"""CPU engine of the Hamming-ranking evaluator: a counting-sort top-k in one pass per query (numba).

XLA:CPU has no fast primitive for the selection step: ``lax.top_k`` runs a single-threaded partial sort
and scatter-add histograms are serial, so the JAX engine reaches about half of faiss on CPU
(performance.md). Distances are integers in ``[0, bits]``, so an exact, stable top-k is a counting sort
(performance.md gives its physical limit, ~1.35e9 query×database pairs/s per core):

1. popcount distances ``d_j`` of the query against every database row, with a histogram of the
   ``bits+1`` values (and of relevant items, when asked);
2. the threshold ``t`` (smallest distance whose cumulative count reaches ``k``) and the start position of
   every distance group;
3. a second pass in database-index order drops each item with ``d_j <= t`` into the next free slot of
   its group: the ranking of ``(d_j, j)`` with ties by lower index, never sorted, never materialised
   beyond ``k``.

Queries run in parallel over the machine's cores (``numba.prange``). This module is imported lazily by
:mod:`unhash_jax.retrieval` (``engine="numba"``; ``"auto"`` on CPU when numba is installed) and returns
exactly what the JAX engine returns, so both share the host-side float64 metric code.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

# numba's "workqueue" threading layer (its fallback when neither TBB nor OpenMP is installed) aborts the
# process when two Python threads launch parallel kernels at once; evaluations take turns instead (each
# uses every core anyway).
_KERNEL_LOCK = threading.Lock()


@intrinsic
def _popcount64(typingctx, x):
  """``llvm.ctpop`` on a uint64 (one ``popcnt`` instruction on x86-64)."""
  if x != types.uint64:
    return None

  def codegen(context, builder, signature, args):
    return builder.ctpop(args[0])

  return types.uint64(types.uint64), codegen


@numba.njit(inline="always")
def _relevant(qi, j, q_single, db_single, q_multi, db_multi, multi):  # pragma: no cover - compiled
  """Query ``qi`` and database item ``j`` share a label (class id, or any common bit of the label words)."""
  if not multi:
    return q_single[qi] == db_single[j]
  for w in range(q_multi.shape[1]):
    if q_multi[qi, w] & db_multi[j, w]:
      return True
  return False


@numba.njit(parallel=True, cache=True, nogil=True)
def _rank_kernel(qw, dbw, q_single, db_single, q_multi, db_multi, multi, bits, k_sel, need_hist,
                 hist_out, rel_out, dist_like):  # pragma: no cover - compiled; tested through retrieval
  nq, words = qw.shape
  n = dbw.shape[0]
  nb = bits + 1
  for qi in numba.prange(nq):
    d = np.empty(n, dist_like.dtype)  # uint8 up to 255 bits, uint16 beyond
    cnt = np.zeros(nb, np.int64)
    # Pass 1: distances and their histogram (specialised for 1 and 2 words: 64 and 128 bits).
    if words == 1:
      a0 = qw[qi, 0]
      for j in range(n):
        d[j] = _popcount64(a0 ^ dbw[j, 0])
    elif words == 2:
      a0 = qw[qi, 0]
      a1 = qw[qi, 1]
      for j in range(n):
        d[j] = _popcount64(a0 ^ dbw[j, 0]) + _popcount64(a1 ^ dbw[j, 1])
    else:
      for j in range(n):
        s = 0
        for w in range(words):
          s += _popcount64(qw[qi, w] ^ dbw[j, w])
        d[j] = s
    if need_hist:
      crel = np.zeros(nb, np.int64)
      for j in range(n):
        v = d[j]
        cnt[v] += 1
        if _relevant(qi, j, q_single, db_single, q_multi, db_multi, multi):
          crel[v] += 1
      for v in range(nb):
        hist_out[qi, v, 0] = cnt[v]
        hist_out[qi, v, 1] = crel[v]
    else:  # a separate loop: without the relevance test it is ~25 % faster
      for j in range(n):
        cnt[d[j]] += 1
    if k_sel > 0:
      # Pass 2: group start positions up to the threshold group, then a stable placement.
      start = np.empty(nb, np.int64)
      acc = 0
      t = nb - 1
      for v in range(nb):
        start[v] = acc
        acc += cnt[v]
        if acc >= k_sel:
          t = v
          break
      placed = 0
      for j in range(n):
        v = d[j]
        if v <= t:
          p = start[v]
          if p < k_sel:
            start[v] = p + 1
            rel_out[qi, p] = _relevant(qi, j, q_single, db_single, q_multi, db_multi, multi)
            placed += 1
            if placed == k_sel:
              break


def _as_u64_words(packed: np.ndarray) -> np.ndarray:
  """``uint32[n, w]`` packed codes → ``uint64[n, ceil(w/2)]`` (zero-padded; XOR/popcount unchanged)."""
  n, w = packed.shape
  if w % 2:
    packed = np.concatenate([packed, np.zeros((n, 1), np.uint32)], axis=1)
  return np.ascontiguousarray(packed).view(np.uint64).reshape(n, -1)


def rank_stats(qp: np.ndarray, ql: np.ndarray, dbp: np.ndarray, dbl: np.ndarray, *, kind: str, bits: int,
               k_sel: int, need_hist: bool):
  """Same contract as the JAX engine's ``retrieval._rank_stats``.

  Args:
    qp, dbp: ``uint32[n, words]`` packed codes (:func:`unhash_jax.ops.pack_bits` layout).
    ql, dbl: ``int32[n]`` class ids (``kind="single"``) or ``uint32[n, label_words]`` packed label bits
      (``kind="multi"``).
    bits: code length; k_sel: number of ranked items to return (0: none); need_hist: return histograms.

  Returns:
    ``(hist int64[nq, bits+1, 2] or None, rel_sorted bool[nq, k_sel] or None)``: ``hist[..., 0]``
    counts all items and ``hist[..., 1]`` relevant items per distance; ``rel_sorted`` is the relevance
    of the top ``k_sel`` items in rank order (distance, then lower database index).
  """
  nq = qp.shape[0]
  qw, dbw = _as_u64_words(qp), _as_u64_words(dbp)
  multi = kind == "multi"
  if multi:
    q_single = np.zeros(1, np.int32)
    db_single = np.zeros(1, np.int32)
    q_multi, db_multi = np.ascontiguousarray(ql), np.ascontiguousarray(dbl)
  else:
    q_single, db_single = np.ascontiguousarray(ql), np.ascontiguousarray(dbl)
    q_multi = np.zeros((1, 1), np.uint32)
    db_multi = np.zeros((1, 1), np.uint32)
  hist = np.zeros((nq if need_hist else 1, bits + 1, 2), np.int64)
  rel = np.zeros((nq if k_sel else 1, max(int(k_sel), 1)), np.bool_)
  with _KERNEL_LOCK:
    _rank_kernel(qw, dbw, q_single, db_single, q_multi, db_multi, multi, int(bits), int(k_sel),
                 bool(need_hist), hist, rel, np.zeros(1, np.uint8 if bits <= 255 else np.uint16))
  return (hist if need_hist else None), (rel if k_sel else None)
