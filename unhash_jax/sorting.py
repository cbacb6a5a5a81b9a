"""Differentiable sorting and ranking operators in pure JAX (methods.md §2.2, style.md §2.3).

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
  ``ŝ`` and ``s`` (``jnp.sort`` is differentiable). This is the sorter of NSH (methods.md §2.2).

  With ``hard=True`` the forward value is the exact permutation matrix
  ``one_hot(argsort(s))`` (``P_hard[r, j] = 1`` iff item ``j`` has rank ``r``), which is the
  row-wise argmax of the soft ``P`` with ties between equal scores broken by lower index first (so
  it is always a permutation); the backward pass is that of the soft ``P``
  (``P + sg(P_hard − P)``, straight-through).

  Args:
    scores: ``[..., n]`` floating scores; leading axes are batch axes.
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
    scores: ``[..., n]`` floating scores.
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
