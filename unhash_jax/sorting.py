"""Differentiable sorting and ranking operators in pure JAX (docs/methods.md §2.2).

References: Blondel, Teboul, Berthet, Djolonga, "Fast Differentiable Sorting and Ranking", ICML 2020;
Prillo & Eisenschlos, "SoftSort: A Continuous Relaxation for the argsort Operator", ICML 2020.

Imports only ``jax``, ``jax.numpy`` and ``numpy``; every operator is jittable, vmappable and
runs on CPU/GPU/TPU without host callbacks.

Operators:
  * :func:`softsort` — SoftSort relaxed permutation matrices (Prillo & Eisenschlos, ICML 2020),
    the sorter used by NSH.
  * :func:`neuralsort` — NeuralSort relaxed permutation matrices (Grover et al., ICLR 2019).
  * :func:`soft_sort` / :func:`soft_rank` — Blondel et al., "Fast Differentiable Sorting and
    Ranking" (ICML 2020): projections onto the permutahedron by isotonic regression with
    pool-adjacent-violators (PAV), O(n log n) forward and O(n) backward, L2 or KL regularization.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np


# ----------------------------------------------------------------------------------------------
# Input checks.


def _check_positive(name: str, value, fn: str) -> None:
  """Raises ValueError if a concrete ``value`` is not a finite positive number."""
  try:
    v = float(np.asarray(value))
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    return  # traced (e.g. a learned temperature under jit): cannot be checked here.
  except (TypeError, ValueError) as e:
    raise ValueError(f"{fn}: {name} must be a positive scalar, got {value!r}.") from e
  if not np.isfinite(v) or v <= 0:
    raise ValueError(f"{fn}: {name} must be a finite positive number, got {value!r}.")


def _as_float(x, fn: str, name: str = "values") -> jax.Array:
  """Checks ``x`` is a floating array with ≥1 axis; promotes to at least float32."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(
        f"{fn}: {name} must be a floating-point array, got dtype {x.dtype} "
        f"(cast integers explicitly, e.g. x.astype(jnp.float32)).")
  if x.ndim < 1:
    raise ValueError(f"{fn}: {name} must have at least one axis, got a scalar.")
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_last_axis(x: jax.Array, fn: str, name: str = "scores") -> None:
  """Raises ValueError if the last axis (the one sorted) is empty."""
  if x.shape[-1] == 0:
    raise ValueError(f"{fn}: {name} must have at least one element along the last axis (the "
                     f"axis to sort), got shape {tuple(x.shape)}.")


def _straight_through(soft: jax.Array, perm: jax.Array) -> jax.Array:
  """``soft + sg(one_hot(perm) − soft)``: forward the exact permutation matrix, backward ``soft``."""
  hard = jax.nn.one_hot(perm, soft.shape[-1], dtype=soft.dtype)
  return soft + jax.lax.stop_gradient(hard - soft)


def _sort_order(x: jax.Array, descending: bool) -> jax.Array:
  """Stable argsort along the last axis: equal values keep their index order (lower first)."""
  return jnp.argsort(x, axis=-1, stable=True, descending=descending)


# ----------------------------------------------------------------------------------------------
# SoftSort and NeuralSort: relaxed permutation matrices.


def softsort(scores: jax.Array, *, temperature=1.0, hard: bool = False,
             descending: bool = True) -> jax.Array:
  r"""SoftSort relaxed permutation matrices (Prillo & Eisenschlos, ICML 2020).

  For each row ``s`` of ``scores`` (last axis, length ``n``), with ``ŝ = sort(s)`` (descending by
  default):

  .. math:: P_{rj} = \operatorname{softmax}_j\bigl(-|\hat s_r - s_j| / \tau\bigr),

  so row ``r`` of ``P`` is a distribution over items that concentrates on the item at rank ``r``
  (rank 0 = largest score when ``descending``), and ``P @ s ≈ ŝ``. Gradients flow through both
  ``ŝ`` and ``s`` (``jnp.sort`` is differentiable). This is the sorter of NSH (docs/methods.md §2.2).

  With ``hard=True`` the forward value is the exact permutation matrix
  ``one_hot(argsort(s))`` (``P_hard[r, j] = 1`` iff item ``j`` has rank ``r``), which is the
  row-wise argmax of the soft ``P`` with ties between equal scores broken by lower index first (so
  it is always a permutation); the backward pass is that of the soft ``P``
  (``P + sg(P_hard − P)``, straight-through).

  Args:
    scores: ``[..., n]`` floating scores, ``n >= 1`` (an empty last axis raises ``ValueError``);
      leading axes are batch axes (they may be empty).
    temperature: ``τ > 0``. Small ``τ`` → nearly hard permutation.
    hard: straight-through one-hot forward.
    descending: sort largest first (rank 0 = max). ``False`` sorts ascending.

  Returns:
    ``[..., n, n]`` row-stochastic matrices ``P[..., rank, item]`` with the dtype of ``scores``
    promoted to at least float32.

  Examples:
    >>> p = softsort(jnp.array([0.1, 0.9, 0.5]), temperature=0.01)
    >>> jnp.round(p, 3).tolist()
    [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    >>> softsort(jnp.array([0.1, 0.9, 0.5]), hard=True).argmax(-1).tolist()
    [1, 2, 0]
  """
  s = _as_float(scores, "softsort", "scores")
  _check_last_axis(s, "softsort")
  _check_positive("temperature", temperature, "softsort")
  sorted_s = jnp.sort(s, axis=-1, descending=descending)
  logits = -jnp.abs(sorted_s[..., :, None] - s[..., None, :]) / temperature
  p = jax.nn.softmax(logits, axis=-1)
  if hard:
    p = _straight_through(p, _sort_order(s, descending))
  return p


def neuralsort(scores: jax.Array, *, temperature=1.0, hard: bool = False,
               descending: bool = True) -> jax.Array:
  r"""NeuralSort relaxed permutation matrices (Grover et al., ICLR 2019).

  For a row ``s`` of length ``n`` (sorted descending), with ``A_{jk} = |s_j − s_k|`` and
  ``r = 1..n``:

  .. math:: P_{rj} = \operatorname{softmax}_j\bigl(((n + 1 - 2r)\, s_j - (A\mathbf 1)_j) / \tau\bigr).

  Row ``r`` concentrates on the item of rank ``r`` as ``τ → 0``. ``descending=False`` applies the
  same formula to ``−s``. O(n²) time and memory per row. ``hard=True`` gives the straight-through
  exact permutation matrix (ties broken by lower index first), as in :func:`softsort`.

  Args:
    scores: ``[..., n]`` floating scores, ``n >= 1`` (an empty last axis raises ``ValueError``).
    temperature: ``τ > 0``.
    hard: straight-through one-hot forward.
    descending: rank 0 = largest score.

  Returns:
    ``[..., n, n]`` row-stochastic matrices ``P[..., rank, item]``.

  Examples:
    >>> neuralsort(jnp.array([0.1, 0.9, 0.5]), temperature=0.01).argmax(-1).tolist()
    [1, 2, 0]
  """
  s = _as_float(scores, "neuralsort", "scores")
  _check_last_axis(s, "neuralsort")
  _check_positive("temperature", temperature, "neuralsort")
  n = s.shape[-1]
  z = s if descending else -s
  a1 = jnp.abs(z[..., :, None] - z[..., None, :]).sum(-1)  # [..., n]
  scale = (n + 1 - 2 * jnp.arange(1, n + 1, dtype=z.dtype))  # [n]
  logits = (scale[:, None] * z[..., None, :] - a1[..., None, :]) / temperature
  p = jax.nn.softmax(logits, axis=-1)
  if hard:
    p = _straight_through(p, _sort_order(s, descending))
  return p


# ----------------------------------------------------------------------------------------------
# Fast differentiable sorting and ranking (Blondel et al., ICML 2020).
#
# Layout: the public functions move ``axis`` last and flatten the leading axes into one batch
# axis ``[B, n]``. The isotonic regressions then run on the transposed ``[n, B]`` layout, in which
# XLA:CPU scans (cumsum) along axis 0 are vectorised over the batch (≈5× faster than along the
# minor axis).
#
# Differentiation: the PAV partition (which entries are pooled) is piecewise constant in the
# inputs, so it is computed on stop-gradient inputs and the output is then written as a closed
# form given the partition (block means for L2, block log-sum-exps for KL). Autodiff of that
# closed form *is* the block-wise Jacobian of Blondel et al. (§5: within a block, the L2
# Jacobian is the block average, the KL one a softmax over the block): O(n) memory and time,
# forward and reverse mode, and higher orders.

_REGULARIZATIONS = ("l2", "kl")
_DIRECTIONS = ("ascending", "descending")


def _check_args(fn, values, regularization_strength, regularization, direction):
  x = _as_float(values, fn)
  _check_positive("regularization_strength", regularization_strength, fn)
  if regularization not in _REGULARIZATIONS:
    raise ValueError(
        f"{fn}: regularization must be one of {_REGULARIZATIONS}, got {regularization!r}.")
  d = direction.lower() if isinstance(direction, str) else direction
  if d not in _DIRECTIONS:
    raise ValueError(f"{fn}: direction must be 'ascending' or 'descending', got {direction!r}.")
  return x, d


def _to_rows(x: jax.Array, axis: int, fn: str = "soft_rank"):
  """``[..., n, ...]`` → (``[B, n]``, restore-function); ``n`` must be at least 1."""
  shape = x.shape
  try:
    x = jnp.moveaxis(x, axis, -1)
  except (ValueError, np.exceptions.AxisError) as e:
    raise ValueError(f"axis {axis} is out of range for values of shape {x.shape}.") from e
  if x.shape[-1] == 0:
    raise ValueError(f"{fn}: values must have at least one element along axis {axis} (the axis "
                     f"to sort or rank), got shape {tuple(shape)}.")
  lead = x.shape[:-1]
  rows = x.reshape(-1, x.shape[-1])
  return rows, lambda y: jnp.moveaxis(y.reshape(*lead, y.shape[-1]), -1, axis)


def _along_axis(rows_fn, fn, values, regularization_strength, regularization, direction, axis):
  """Checks the arguments, applies ``rows_fn([B, n], ε, kl, descending)`` along ``axis``."""
  x, d = _check_args(fn, values, regularization_strength, regularization, direction)
  rows, restore = _to_rows(x, axis, fn)
  if rows.shape[0] == 0:  # empty leading axes: nothing to sort
    return x
  return restore(rows_fn(rows, regularization_strength, regularization == "kl", d == "descending"))


# -- Sorting permutation. ----------------------------------------------------------------------


def _argsort_desc(x: jax.Array) -> jax.Array:
  """``[B, n]`` → permutation ``int32[B, n]`` sorting each row in descending order.

  Ties keep index order (lower index first), so the result is deterministic. Not differentiable
  (integers). For float32, the keys are mapped to order-preserving uint32 and sorted by an LSD
  radix over packed ``(digit, index)`` uint32 words: XLA:CPU sorts a single uint32 operand with a
  plain comparison, ~3–6× faster than a float sort carrying an index operand (two passes for
  n ≤ 65,536). Other dtypes use a stable two-operand ``lax.sort``.
  """
  x = jax.lax.stop_gradient(x)
  n = x.shape[-1]
  iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  bits = max(1, (n - 1).bit_length())
  if x.dtype != jnp.float32 or bits > 24:
    return jax.lax.sort((-x, iota), dimension=x.ndim - 1, num_keys=1, is_stable=True)[1]
  x = x + jnp.float32(0.0)  # -0.0 → +0.0, so that the two zeros tie.
  u = jax.lax.bitcast_convert_type(x, jnp.uint32)
  neg = (u >> 31) == 1
  # Order-preserving float → uint32 map, complemented so that ascending keys = descending x.
  key = ~jnp.where(neg, ~u, u | jnp.uint32(0x80000000))
  digit_bits = 32 - bits
  index_mask = jnp.uint32((1 << bits) - 1)
  uiota = iota.astype(jnp.uint32)
  perm = None
  for shift in range(0, 32, digit_bits):  # least significant digit first
    width = min(digit_bits, 32 - shift)
    cur = key if perm is None else jnp.take_along_axis(key, perm, axis=-1)
    digit = (cur >> shift) & jnp.uint32((1 << width) - 1)
    # Sorting (digit, position) words is a stable sort by digit of the current order.
    pos = (jax.lax.sort(digit << bits | uiota, dimension=x.ndim - 1) & index_mask).astype(jnp.int32)
    perm = pos if perm is None else jnp.take_along_axis(perm, pos, axis=-1)
  return perm


# -- PAV partition (non-differentiable part). --------------------------------------------------


def _block_sum(x, flat_ids, n, b):
  """Sums of ``x[n, B]`` over blocks with per-column ids (flattened to ``id * B + column``)."""
  return jax.ops.segment_sum(x.reshape(-1), flat_ids, num_segments=n * b).reshape(n, b)


def _block_lse(x, flat_ids, n, b):
  """Log-sum-exp of ``x[n, B]`` over blocks; empty blocks give -inf (never gathered)."""
  m = jax.ops.segment_max(x.reshape(-1), flat_ids, num_segments=n * b)
  m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
  e = jax.ops.segment_sum(jnp.exp(x.reshape(-1) - m[flat_ids]), flat_ids, num_segments=n * b)
  safe = jnp.where(e > 0, e, 1.0)  # keeps gradients finite for empty blocks
  return jnp.where(e > 0, jnp.log(safe) + m, -jnp.inf).reshape(n, b)


def _flat_ids(is_start):
  """Block id per entry (running count of block starts along axis 0) and its flattened form.

  ``lax.associative_scan`` rather than ``jnp.cumsum``: XLA:CPU runs the latter ~2× slower here.
  """
  n, b = is_start.shape
  ids = jax.lax.associative_scan(jnp.add, is_start.astype(jnp.int32), axis=0) - 1
  return ids, (ids * b + jnp.arange(b, dtype=jnp.int32)).reshape(-1)


def _block_values(p, q, is_start, kl):
  """Per-entry value of its block: mean(p) (L2) or LSE(p) − LSE(q) (KL); ``[n, B]``."""
  n, b = p.shape
  ids, fids = _flat_ids(is_start)
  if kl:
    v = _block_lse(p, fids, n, b) - _block_lse(q, fids, n, b)
  else:
    v = _block_sum(p, fids, n, b) / jnp.maximum(_block_sum(jnp.ones_like(p), fids, n, b), 1.0)
  return jnp.take_along_axis(v, ids, axis=0)


def _pav_partition(p, q, kl, max_rounds=8):
  """Block starts ``bool[n, B]`` of the decreasing isotonic fit, per column, and its values.

  Solves, for each column, ``min_{v_1 ≥ … ≥ v_n}`` of ½‖v − p‖² (L2; ``q`` unused) or
  ``Σ e^{p_i − v_i} + Σ e^{q_i} v_i`` (KL; block value ``LSE(p_B) − LSE(q_B)``), and returns the
  pooled blocks (adjacent blocks of equal value are pooled too, so blocks are strictly
  decreasing) with the per-entry fit ``v`` (``_block_values`` of those blocks; not
  differentiable). Pool-adjacent-violators yields the same solution whatever the order in which
  adjacent violators are pooled, which allows:

  1. up to ``max_rounds`` data-parallel rounds, each pooling every maximal run of non-decreasing
     block values at once (pooling such a run left to right is a valid PAV sequence), O(n) vectorised work per round; typical data converge in 1–5 rounds;
  2. for columns still not converged, the classic sequential stack PAV over the remaining
     blocks (O(#blocks) steps, vectorised over columns), so the worst case stays O(n) steps.

  The round that finds nothing left to pool has computed the final values already; they are
  carried out of the loop, so callers need not compute them again.
  """
  p = jax.lax.stop_gradient(p)
  q = jax.lax.stop_gradient(q)
  n, b = p.shape

  def pool(is_start, v):
    return is_start & jnp.concatenate([jnp.ones((1, b), bool), v[:-1] > v[1:]], axis=0)

  def round_(state):
    # v holds the values of is_start; when nothing changes, they are the final partition's.
    is_start, _, _, r = state
    v = _block_values(p, q, is_start, kl)
    new = pool(is_start, v)
    return new, v, jnp.any(new != is_start, axis=0), r + 1

  ones = jnp.ones((n, b), bool)
  singletons = p - q if kl else p  # _block_values of singleton blocks: p/1, LSE(p_i) − LSE(q_i)
  if max_rounds > 0:
    # Round 1 on singleton blocks, without segment sums and gather.
    first = pool(ones, singletons)
    init = (first, singletons, jnp.any(~first, axis=0), jnp.int32(1))
  else:
    init = (ones, singletons, jnp.ones((b,), bool), jnp.int32(0))
  is_start, v, changed, _ = jax.lax.while_loop(
      lambda s: jnp.any(s[2]) & (s[3] < max_rounds), round_, init)

  def finish(args):
    starts = _sequential_pav(p, q, args[0], changed, kl)
    return starts, _block_values(p, q, starts, kl)

  # Typical inputs converge within the rounds: skip the stack PAV's setup entirely then.
  return jax.lax.cond(jnp.any(changed), finish, lambda a: a, (is_start, v))


def _isotonic_l2(y):
  """Decreasing isotonic regression of each column of ``y[n, B]`` (L2), ``[n, B]``, differentiable.

  The fit is the block mean of ``y`` over its PAV partition, so its derivative is the
  block-averaging of the tangent (Blondel et al. 2020, §4), O(n).
  """
  starts, v = _pav_partition(y, y, kl=False)
  return _block_mean_fit(y, v, starts)


@jax.custom_jvp
def _block_mean_fit(y, v, starts):
  """Returns ``v`` (the block means of ``y`` over ``starts``, already computed by the PAV rounds)
  with the derivative of the block mean: no second pass of segment sums in the forward."""
  del y, starts
  return v


@_block_mean_fit.defjvp
def _block_mean_fit_jvp(primals, tangents):
  # Differentiable itself (linear in dy), so second-order derivatives work.
  y, v, starts = primals
  return _block_mean_fit(y, v, starts), _block_values(tangents[0], tangents[0], starts, kl=False)


def _sequential_pav(p, q, is_start, todo, kl):
  """Finishes PAV on the columns ``todo`` with a stack over their current blocks."""
  n, b = p.shape
  cols = jnp.arange(b)
  ids, fids = _flat_ids(is_start)
  if kl:
    agg1, agg2 = _block_lse(p, fids, n, b), _block_lse(q, fids, n, b)
  else:
    agg1 = _block_sum(p, fids, n, b)
    agg2 = _block_sum(jnp.ones_like(p), fids, n, b)
  num_blocks = jnp.where(todo, ids[-1] + 1, 1)  # columns already solved do no work

  def value(a1, a2):
    return a1 - a2 if kl else a1 / a2

  def merge(x1, x2, y1, y2):
    if kl:
      return jnp.logaddexp(x1, y1), jnp.logaddexp(x2, y2)
    return x1 + y1, x2 + y2

  def step(state):
    s1, s2, sk, t1, t2, tk, t, i, _ = state
    below = jnp.maximum(t - 1, 0)
    u1, u2, uk = s1[below, cols], s2[below, cols], sk[below, cols]
    viol = (t > 0) & (value(u1, u2) <= value(t1, t2))
    push = ~viol & (i < num_blocks)
    # The top block lives in (t1, t2, tk); slot t of the stack is free scratch space.
    s1, s2, sk = s1.at[t, cols].set(t1), s2.at[t, cols].set(t2), sk.at[t, cols].set(tk)
    j = jnp.minimum(i, n - 1)
    m1, m2 = merge(u1, u2, t1, t2)
    n1 = jnp.where(viol, m1, jnp.where(push, agg1[j, cols], t1))
    n2 = jnp.where(viol, m2, jnp.where(push, agg2[j, cols], t2))
    nk = jnp.where(viol, uk + tk, jnp.where(push, 1, tk))
    t = t - viol + push
    return s1, s2, sk, n1, n2, nk, t, i + push, jnp.any(viol | push)

  zeros = jnp.zeros((n, b), p.dtype)
  init = (zeros, zeros, jnp.zeros((n, b), jnp.int32), agg1[0], agg2[0], jnp.ones((b,), jnp.int32),
          jnp.zeros((b,), jnp.int32), jnp.ones((b,), jnp.int32), jnp.any(todo))
  state = jax.lax.while_loop(lambda s: s[-1], step, init)
  sk, tk, t = state[2], state[5], state[6]
  sk = sk.at[t, cols].set(tk)
  live = jnp.arange(n)[:, None] <= t
  sizes = jnp.where(live, sk, 0)  # merged block sizes, counted in old blocks
  first = jnp.where(live, jnp.cumsum(sizes, axis=0) - sizes, n)  # first old block of each
  old_is_first = jnp.zeros((n + 1, b), bool).at[first, cols].set(True)[:n]
  merged = is_start & jnp.take_along_axis(old_is_first, ids, axis=0)
  return jnp.where(todo, merged, is_start)


# -- Differentiable closed forms given the partition. ------------------------------------------


# jit: an eager call (notebooks, tests) compiles once per shape instead of dispatching each
# primitive of the PAV loops on its own; inside a user's jit it is inlined.
@functools.partial(jax.jit, static_argnames=("kl", "descending"))
def _soft_rank_rows(x, eps, kl, descending):
  """Soft ranks of each row of ``x[B, n]`` (1-based)."""
  b, n = x.shape
  theta = x * ((-1.0 if descending else 1.0) / eps)
  perm = _argsort_desc(theta)
  s = jnp.take_along_axis(theta, perm, axis=1).T  # [n, B], decreasing along axis 0
  w = jnp.broadcast_to((n - jnp.arange(n, dtype=x.dtype))[:, None], (n, b))  # ρ = (n, …, 1)
  if kl:
    # r = exp(P_KL(θ/ε, log ρ)); dual v = argmin_{v decreasing} <e^{s−v}, 1> + <ρ, v>.
    logw = jnp.log(w)
    starts = _pav_partition(s, logw, kl=True)[0]
    out = jnp.exp(s - _block_values(s, logw, starts, kl=True))
  else:
    # r = P_L2(θ/ε, ρ) = s − isotonic(s − ρ), un-permuted.
    out = s - _isotonic_l2(s - w)
  rows = jnp.arange(b)[:, None]
  return jnp.zeros_like(x).at[rows, perm].set(out.T, unique_indices=True)


@functools.partial(jax.jit, static_argnames=("kl", "descending"))
def _soft_sort_rows(x, eps, kl, descending):
  """Soft-sorted rows of ``x[B, n]`` in the requested order."""
  b, n = x.shape
  sign = 1.0 if descending else -1.0
  z = sign * x
  perm = _argsort_desc(z)
  s = jnp.take_along_axis(z, perm, axis=1).T  # [n, B]
  w = jnp.broadcast_to(((n - jnp.arange(n, dtype=x.dtype)) / eps)[:, None], (n, b))  # ρ/ε
  if kl:
    # dual v = argmin_{v decreasing} <e^{ρ/ε − v}, 1> + <e^s, v>: block value LSE(ρ/ε) − LSE(s).
    starts = _pav_partition(w, s, kl=True)[0]
    res = _block_values(w, s, starts, kl=True)
  else:
    # P_L2(ρ/ε, s) = ρ/ε − isotonic(ρ/ε − s).
    res = _isotonic_l2(w - s)
  return (sign * (w - res)).T


def soft_rank(values: jax.Array, *, regularization_strength=1.0, regularization: str = "l2",
              direction: str = "ascending", axis: int = -1) -> jax.Array:
  r"""Differentiable ranks (Blondel et al., "Fast Differentiable Sorting and Ranking", ICML 2020).

  With ``ρ = (n, n−1, …, 1)``, ``θ = values/ε`` (``−values/ε`` for ``"descending"``) and
  ``ε = regularization_strength``:

  * ``"l2"``: ``r = P(θ, ρ) = argmin_{μ ∈ 𝒫(ρ)} ½‖μ − θ‖²``, the Euclidean projection of ``θ``
    onto the permutahedron of ``ρ`` (convex hull of its permutations);
  * ``"kl"``: ``r = exp P_KL(θ, log ρ)``, the KL projection ``argmin_{μ ∈ 𝒫(ρ)} KL(μ, e^θ)``.

  Both are solved exactly in O(n log n) by sorting ``θ`` and one isotonic regression (pool
  adjacent violators); the Jacobian is block-wise (block averages for L2, block softmaxes for KL),
  so the backward pass is O(n). These are the definitions (and defaults) of google-research's
  fast-soft-sort ``soft_rank`` and of torchsort's ``soft_rank``. Ranks are 1-based like
  ``scipy.stats.rankdata``: as ``ε → 0`` the output tends to the hard ranks (rank n = largest
  value for ``"ascending"``); tied values get equal soft ranks (the average rank, like
  ``rankdata``'s default) at every ``ε``; as ``ε → ∞`` every rank tends to (n + 1)/2. Every
  output row sums to n(n + 1)/2 (L2).

  Pure JAX (no host callback): works under ``jit``, ``vmap``, ``grad``/``jvp`` (also higher
  order), on CPU/GPU/TPU, for any leading batch shape, in float32 and float64 (lower precisions
  are computed in float32).

  Args:
    values: ``[..., n, ...]`` floating array; ranked along ``axis``, which must be non-empty
      (``n >= 1``; an empty axis raises ``ValueError``, other axes may be empty).
    regularization_strength: ``ε > 0``; smaller is closer to hard ranks.
    regularization: ``"l2"`` or ``"kl"``.
    direction: ``"ascending"`` (rank 1 = smallest) or ``"descending"`` (rank 1 = largest).
    axis: the axis to rank along.

  Returns:
    Soft ranks with the shape of ``values``.

  Examples:
    >>> soft_rank(jnp.array([[2.0, 0.0, 5.0]]), regularization_strength=0.1).tolist()
    [[2.0, 1.0, 3.0]]
    >>> soft_rank(jnp.array([0.0, 5.0, 10.0]), regularization_strength=10.0).tolist()
    [1.5, 2.0, 2.5]
  """
  return _along_axis(_soft_rank_rows, "soft_rank", values, regularization_strength, regularization,
                     direction, axis)


def soft_sort(values: jax.Array, *, regularization_strength=1.0, regularization: str = "l2",
              direction: str = "ascending", axis: int = -1) -> jax.Array:
  r"""Differentiable sorting (Blondel et al., "Fast Differentiable Sorting and Ranking", ICML 2020).

  With ``ρ = (n, …, 1)``, ``ε = regularization_strength`` and ``z = values`` (``−values`` for
  ``"ascending"``), the soft sort of ``z`` in descending order is the projection of ``ρ/ε`` onto
  the permutahedron of ``z``:

  * ``"l2"``: ``s = argmin_{μ ∈ 𝒫(z)} ½‖μ − ρ/ε‖² = ρ/ε − v``, where ``v`` is the decreasing
    isotonic regression of ``ρ/ε − sort↓(z)``;
  * ``"kl"``: ``s = ρ/ε − v`` with ``v = argmin_{v_1≥…≥v_n} <e^{ρ/ε − v}, 1> + <e^{sort↓(z)}, v>``
    (block values ``LSE(ρ/ε) − LSE(z)``), as in fast-soft-sort / torchsort.

  The result is returned in the requested ``direction`` (ascending = smallest first, the
  default, as in fast-soft-sort and torchsort). As ``ε → 0`` it equals ``jnp.sort`` (reversed for
  ``"descending"``); as ``ε`` grows the L2 output tends to the mean of the values. O(n log n)
  forward, O(n) block-wise backward (the Jacobian averages within pooled blocks: L2 — or takes a
  softmax of the values within them: KL).

  Args:
    values: ``[..., n, ...]`` floating array; sorted along ``axis``, which must be non-empty
      (``n >= 1``; an empty axis raises ``ValueError``, other axes may be empty).
    regularization_strength: ``ε > 0``.
    regularization: ``"l2"`` or ``"kl"``.
    direction: ``"ascending"`` or ``"descending"``.
    axis: the axis to sort along.

  Returns:
    Soft-sorted values with the shape of ``values``.

  Examples:
    >>> soft_sort(jnp.array([2.0, 1.0, 5.0]), regularization_strength=0.1).tolist()
    [1.0, 2.0, 5.0]
    >>> soft_sort(jnp.array([10.0, 0.0, 5.0]), regularization_strength=2.0).tolist()
    [4.5, 5.0, 5.5]
  """
  return _along_axis(_soft_sort_rows, "soft_sort", values, regularization_strength, regularization,
                     direction, axis)
