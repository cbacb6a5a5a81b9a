"""DDH's self-supervised pairwise labels: a kNN ranking and its shared-nearest-neighbour expansion.

docs/methods.md §2.5 (Song, He, Fan, Gao, "Deep Discrete Hashing with Self-supervised Pairwise
Labels", ECML-PKDD 2017). Host-side preprocessing, run once per training set: NumPy only (no
scipy), vectorised and blocked over rows, so memory stays ``O(block · N)`` besides the int8
``[N, N]`` result and no Python loop runs over pairs. Re-exported by :mod:`unhash_jax.ops`.
"""

from __future__ import annotations


import numpy as np

from unhash_jax._checks import count

# Upper bound on the (row, candidate) pairs one block of :func:`snn_pseudo_labels` handles at once
# (int64 each; a few arrays of this length are alive together, ~0.5 GB peak).
_PAIR_BUDGET = 1 << 23


def knn_indices(features, k: int, *, block: int = 512) -> np.ndarray:
  """Nearest neighbours of every row by cosine similarity, self first (docs/methods.md §2.5).

  The rows are L2-normalised (an all-zero row stays zero: cosine 0 with everything) and every
  row ``i`` ranks the other ``N − 1`` rows by descending cosine, **ties broken by the lower
  index**; ``i`` itself is always placed first, even when another row is an exact duplicate.
  Cosines are computed in float32, ``block`` rows at a time (a ``[block, N]`` matrix; never
  ``[N, N]``), and the top ``k`` are selected with a partition (O(N) per row), not a full sort.

  Args:
    features: ``[N, d]`` real array-like (e.g. VGG-19 fc7 features); must be finite.
    k: number of neighbours besides self, ``1 <= k <= N − 1`` (DDH: ``K1 = 20``).
    block: rows per block (memory ``≈ 12·block·N`` bytes).

  Returns:
    ``int32[N, k + 1]``: column 0 is ``i``, columns ``1..k`` its ``k`` nearest other rows in
    order — the input of :func:`snn_pseudo_labels`.

  Raises:
    ValueError: on a non-2-D, non-numeric or non-finite ``features``, or ``k`` out of range.

  Examples:
    >>> f = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [1.0, 0.0]])
    >>> knn_indices(f, 2).tolist()  # rows 0 and 3 are duplicates: the tie goes to the lower index
    [[0, 3, 1], [1, 0, 3], [2, 1, 0], [3, 0, 1]]

  References:
    Song, He, Fan, Gao. Deep Discrete Hashing with Self-supervised Pairwise Labels. ECML-PKDD 2017
    (arXiv 1707.02112); docs/methods.md §2.5.
  """
  fn = "knn_indices"
  f = np.asarray(features)
  if f.ndim != 2 or not (np.issubdtype(f.dtype, np.floating) or np.issubdtype(f.dtype, np.integer)):
    raise ValueError(f"{fn}: features must be a real 2-D array [N, d], got shape {f.shape} and "
                     f"dtype {f.dtype}.")
  n = f.shape[0]
  k = count(fn, "k", k, 1)
  if k > n - 1:
    raise ValueError(f"{fn}: k = {k} needs at least k + 1 = {k + 1} rows, got N = {n}.")
  block = count(fn, "block", block, 1)
  unit = np.empty(f.shape, np.float32)
  for r0 in range(0, n, 4096):  # normalise in float64, a slab at a time
    x = f[r0:r0 + 4096].astype(np.float64)
    if not np.isfinite(x).all():
      raise ValueError(f"{fn}: features must be finite; rows {r0}..{r0 + len(x) - 1} hold "
                       f"inf or NaN.")
    norm = np.sqrt(np.sum(x * x, axis=1, keepdims=True))
    unit[r0:r0 + 4096] = x / np.where(norm > 0, norm, 1.0)
  out = np.empty((n, k + 1), np.int32)
  out[:, 0] = np.arange(n)
  for r0 in range(0, n, block):
    r1 = min(n, r0 + block)
    b = r1 - r0
    rows = np.arange(b)
    sim = unit[r0:r1] @ unit.T                                  # [b, N] float32
    sim[rows, r0 + rows] = -np.inf                              # self goes first, separately
    kth = np.partition(sim, n - k, axis=1)[:, n - k]            # k-th largest of each row
    greater = sim > kth[:, None]
    equal = sim == kth[:, None]
    need = k - greater.sum(axis=1)                              # >= 1 ties to take at kth
    chosen = greater | equal
    tied = np.flatnonzero(equal.sum(axis=1) > need)             # more ties than places
    if tied.size:                                               # keep the lowest indices
      eq = equal[tied]
      keep = np.cumsum(eq, axis=1, dtype=np.int32) <= need[tied, None]
      chosen[tied] = greater[tied] | (eq & keep)
    cols = np.nonzero(chosen)[1].reshape(b, k)                  # ascending index in each row
    vals = np.take_along_axis(sim, cols, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")            # stable: ties by lower index
    out[r0:r1, 1:] = np.take_along_axis(cols, order, axis=1)
  return out


def _check_knn(fn: str, knn_idx, k1: int) -> np.ndarray:
  idx = np.asarray(knn_idx)
  if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
    raise ValueError(f"{fn}: knn_idx must be an integer array [N, >= k1 + 1], got shape "
                     f"{idx.shape} and dtype {idx.dtype}.")
  n = idx.shape[0]
  if idx.shape[1] < k1 + 1:
    raise ValueError(f"{fn}: knn_idx has {idx.shape[1]} columns; k1 = {k1} needs k1 + 1 = "
                     f"{k1 + 1} (self first, then k1 neighbours).")
  t = idx[:, :k1 + 1].astype(np.int64)
  if n < k1 + 1:
    raise ValueError(f"{fn}: k1 = {k1} needs at least k1 + 1 = {k1 + 1} images, got N = {n}.")
  if t.min() < 0 or t.max() >= n:
    raise ValueError(f"{fn}: knn_idx entries must lie in [0, N) = [0, {n}).")
  if not np.array_equal(t[:, 0], np.arange(n)):
    bad = int(np.flatnonzero(t[:, 0] != np.arange(n))[0])
    raise ValueError(f"{fn}: knn_idx[i, 0] must be i itself (T_i includes i, placed first; see "
                     f"knn_indices), but knn_idx[{bad}, 0] = {int(t[bad, 0])}.")
  srt = np.sort(t, axis=1)
  if (srt[:, 1:] == srt[:, :-1]).any():
    bad = int(np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))[0])
    raise ValueError(f"{fn}: the first k1 + 1 entries of knn_idx row {bad} repeat an index.")
  return t


def snn_pseudo_labels(knn_idx, k1: int = 20, k2: int = 30, *, block: int = 4096) -> np.ndarray:
  """DDH's pseudo pairwise labels ``S ∈ {±1}^{N×N}`` from a kNN ranking (docs/methods.md §2.5).

  For every image ``i``:

  1. ``T_i`` = the first ``k1 + 1`` entries of ``knn_idx[i]`` (``i`` itself, then its ``k1``
     nearest neighbours).
  2. Overlaps ``o_ij = |T_i ∩ T_j|`` (``O = A·Aᵀ`` for the neighbourhood indicator ``A``).
  3. ``J_i`` = the ``k2`` images with the largest overlap, **ties broken by the lower index**.
     Only images with ``o_ij > 0`` may join: an image sharing no neighbour with ``i`` never joins,
     so ``J_i`` has fewer than ``k2`` members when fewer than ``k2`` images overlap ``T_i``.
  4. ``P_i = ∪_{j ∈ J_i} T_j``.
  5. ``S_ij = S_ji = +1`` for ``j ∈ P_i``; every other pair is ``−1``. ``S`` is symmetric.

  The diagonal is ``+1``: ``i`` has the largest possible overlap ``o_ii = k1 + 1``, and if ``k2``
  lower-indexed images tie with it they all have ``T_j = T_i ∋ i``; either way ``i ∈ P_i``.

  Computation: overlaps are counted sparsely through the reverse neighbour lists (the images
  ``j`` with ``t ∈ T_j``, for each ``t ∈ T_i``), so the work is ``Σ_i Σ_{t ∈ T_i} |{j : t ∈ T_j}|``
  pairs, about ``N·(k1 + 1)²`` without hubs, processed ``block`` rows (and at most ~8M pairs) at
  a time with sorts; no dense ``N × N`` intermediate, no Python loop over images, NumPy only.

  Args:
    knn_idx: ``int[N, >= k1 + 1]`` kNN ranking with ``knn_idx[i, 0] == i`` (e.g. from
      :func:`knn_indices`); the first ``k1 + 1`` entries of each row must be distinct.
    k1: ``K1`` (DDH: 20), ``>= 1``.
    k2: ``K2`` (DDH: 30), ``>= 1``.
    block: maximum rows per block.

  Returns:
    ``int8[N, N]`` of ±1 (100 MB at N = 10,000; 2.5 GB at N = 50,000).

  Raises:
    ValueError: on a malformed ``knn_idx`` (wrong rank/dtype, too few columns, entries out of
      range, ``knn_idx[i, 0] != i``, repeated entries) or ``k1``/``k2`` below 1.

  Examples:
    >>> knn = np.array([[0, 1], [1, 0], [2, 3], [3, 2]])
    >>> snn_pseudo_labels(knn, k1=1, k2=2).tolist()
    [[1, 1, -1, -1], [1, 1, -1, -1], [-1, -1, 1, 1], [-1, -1, 1, 1]]

  References:
    Song, He, Fan, Gao. Deep Discrete Hashing with Self-supervised Pairwise Labels. ECML-PKDD 2017
    (arXiv 1707.02112); docs/methods.md §2.5.
  """
  fn = "snn_pseudo_labels"
  k1 = count(fn, "k1", k1, 1)
  k2 = count(fn, "k2", k2, 1)
  block = count(fn, "block", block, 1)
  t = _check_knn(fn, knn_idx, k1)
  n, width = t.shape                                           # width = k1 + 1
  # Reverse lists: rev[indptr[v]:indptr[v + 1]] = the rows j with v ∈ T_j (ascending j).
  flat = t.ravel()
  rev = np.argsort(flat, kind="stable") // width
  counts = np.bincount(flat, minlength=n)
  indptr = np.concatenate([[0], np.cumsum(counts)])
  pairs_per_row = counts[t].sum(axis=1)                        # candidate pairs of each row
  cum = np.concatenate([[0], np.cumsum(pairs_per_row)])
  s = np.full((n, n), -1, np.int8)
  flat_s = s.reshape(-1)
  r0 = 0
  while r0 < n:
    # Up to `block` rows, and at most _PAIR_BUDGET pairs (but always at least one row).
    r1 = int(np.searchsorted(cum, cum[r0] + _PAIR_BUDGET, side="right")) - 1
    r1 = min(n, r0 + block, max(r1, r0 + 1))
    b = r1 - r0
    tb = t[r0:r1].ravel()
    lens = counts[tb]
    total = int(lens.sum())
    # Gather the reverse lists of every t ∈ T_i: positions indptr[t] + 0..len−1, concatenated.
    seg_start = np.repeat(indptr[tb] - (np.cumsum(lens) - lens), lens)
    j = rev[seg_start + np.arange(total)]
    i_local = np.repeat(np.arange(b), pairs_per_row[r0:r1])
    # Overlap o_ij = number of times (i, j) occurs.
    key = np.sort(i_local * n + j)
    first = np.concatenate([[True], key[1:] != key[:-1]])
    starts = np.flatnonzero(first)
    overlap = np.diff(np.append(starts, key.size))
    key = key[starts]
    i_u, j_u = key // n, key % n
    # Order by (i ascending, overlap descending, j ascending) with one int64 key; rank in group.
    key2 = np.sort((i_u * (width + 1) + (width - overlap)) * n + j_u)
    i_s, j_s = key2 // ((width + 1) * n), key2 % n
    group = np.concatenate([[True], i_s[1:] != i_s[:-1]])
    group_start = np.maximum.accumulate(np.where(group, np.arange(i_s.size), 0))
    keep = (np.arange(i_s.size) - group_start) < k2            # the k2 best of each row: J_i
    rows = np.repeat(i_s[keep] + r0, width)
    members = t[j_s[keep]].ravel()                             # P_i = ∪_{j ∈ J_i} T_j
    flat_s[rows * n + members] = 1
    flat_s[members * n + rows] = 1
    r0 = r1
  return s
