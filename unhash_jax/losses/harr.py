"""HARR loss (Ma, Wang, Luo, Gu, Chen, Li, Hua, Lu, "Harr: Learning Discriminative and
High-quality Hash Codes for Image Retrieval", ACM TOMM 2024, DOI 10.1145/3627162).

**Project formulation** (docs/methods.md §2.4): the paper's abstract is all that is public, so the
formulation follows the paper's description; constants chosen by this project. A ±1/0 similarity
structure reconstructed from WTA-hash similarities of the frozen features is preserved by the
cosines between the two views' codes, plus a Barlow-Twins bit-correlation reduction and a cosine
quantization term.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp

from unhash_jax.losses import _common


def _top_count(fn: str, top_fraction, n: int) -> int:
  if (isinstance(top_fraction, bool) or not isinstance(top_fraction, numbers.Real)
      or not 0 <= top_fraction <= 1):
    raise ValueError(f"{fn}: top_fraction must be a Python number in [0, 1], got "
                     f"{top_fraction!r}.")
  # ⌈p·N⌉ after rounding p·N to 9 decimals, so that 0.1·70 = 7.000000000000001 counts as 7.
  return min(n - 1, math.ceil(round(float(top_fraction) * n, 9)))


def harr_structure(wta_sim: jax.Array, *, top_fraction=0.1) -> jax.Array:
  """HARR's reconstructed similarity structure ``S ∈ {+1, −1, 0}^{N×N}`` (§2.4 step 2).

  **Ranking.** Row ``i`` ranks the ``N − 1`` other images of the batch by descending
  ``wta_sim[i, j]``, **ties broken by the lower index** ``j``; ``rank_i(j) ∈ {0, …, N − 2}``.

  * ``T(i)`` = the first ``t = ⌈p·N⌉`` of that ranking (``p = top_fraction``; ``p·N`` is rounded
    to 9 decimals before the ceiling, and ``t`` is capped at ``N − 1``).
  * The **bottom half** of ``i``'s ranking = its last ``⌊(N − 1)/2⌋`` positions, i.e.
    ``rank_i(j) >= (N − 1) − ⌊(N − 1)/2⌋``; for an odd number of others the middle image is in
    neither half.

  **Structure.** ``S_ii = +1``; ``S_ij = +1`` if ``j ∈ T(i)`` or ``i ∈ T(j)`` (symmetrised by
  OR); otherwise ``S_ij = −1`` if ``j`` is in the bottom half of ``i``'s ranking **and** ``i`` in
  the bottom half of ``j``'s; otherwise ``0`` (ignored). ``S`` is symmetric even if ``wta_sim``
  is not. The positives win over the negatives (a pair in both sets is ``+1``).

  Formulation follows the paper's description; constants chosen by this project.

  Args:
    wta_sim: ``[N, N]`` WTA similarities of the batch (:func:`~unhash_jax.ops.wta_similarity` of
      the batch's cached codes with themselves); expected finite. No gradient flows through it.
    top_fraction: ``p`` in [0, 1] (HARR: 0.10).

  Returns:
    ``int8[N, N]``.

  Raises:
    ValueError: if ``wta_sim`` is not a floating ``[N, N]`` array with N >= 2, or ``p`` is not in
      [0, 1].

  Examples:
    >>> s = jnp.array([[1.0, 0.9, 0.1, 0.2],
    ...                [0.9, 1.0, 0.3, 0.3],
    ...                [0.1, 0.3, 1.0, 0.5],
    ...                [0.2, 0.3, 0.5, 1.0]])
    >>> harr_structure(s, top_fraction=0.25).tolist()  # t = 1; bottom half = the last one of 3
    [[1, 1, -1, 0], [1, 1, 0, 0], [-1, 0, 1, 1], [0, 0, 1, 1]]
  """
  fn = "harr_structure"
  s = _common.floating_input(fn, "wta_sim", wta_sim, shape="[batch, batch]")
  n = s.shape[0]
  if s.shape != (n, n) or n < 2:
    raise ValueError(f"{fn}: wta_sim must be a square [batch, batch] array with batch >= 2, got "
                     f"shape {tuple(s.shape)}.")
  top = _top_count(fn, top_fraction, n)
  s = jax.lax.stop_gradient(s)
  eye = jnp.eye(n, dtype=bool)
  iota = jax.lax.broadcasted_iota(jnp.int32, (n, n), 1)
  # Sort key per row: others before self, then descending similarity, then ascending index.
  # (+0.0 turns −0.0 into +0.0 so the two zeros tie.)
  order = jax.lax.sort((eye.astype(jnp.int32), -s + 0.0, iota), dimension=1, num_keys=3)[2]
  rows = jax.lax.broadcasted_iota(jnp.int32, (n, n), 0)
  rank = jnp.zeros((n, n), jnp.int32).at[rows, order].set(iota)   # self gets rank N − 1
  others = n - 1
  in_top = (rank < top) & ~eye
  positive = in_top | in_top.T | eye
  bottom = (rank >= others - others // 2) & ~eye
  negative = bottom & bottom.T & ~positive
  return jnp.where(positive, jnp.int8(1), jnp.where(negative, jnp.int8(-1), jnp.int8(0)))


def harr_loss_with_aux(u1: jax.Array, u2: jax.Array, wta_sim: jax.Array, *, top_fraction=0.1,
                       bc_weight=0.01, quantization_weight=0.1, lambda_off=None, eps=1e-5,
                       similarity_weight=1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """:func:`harr_loss` plus its terms (float32 scalars).

  Aux keys: ``"similarity"`` (``L_sim``), ``"bit_correlation"`` (``L_bc``), ``"quantization"``
  (``L_q``); the loss is ``w_sim·L_sim + α·L_bc + β·L_q``.
  """
  fn = "harr_loss"
  u1 = _common.floating_input(fn, "u1", u1)
  u2 = _common.floating_input(fn, "u2", u2)
  _common.same_shape(fn, ("u1", "u2"), u1, u2)
  _common.min_batch(fn, "u1", u1)
  n, k = u1.shape
  sim = _common.floating_input(fn, "wta_sim", wta_sim, shape="[batch, batch]")
  if sim.shape != (n, n):
    raise ValueError(f"{fn}: wta_sim must have shape [batch, batch] = ({n}, {n}) for u1 of shape "
                     f"{tuple(u1.shape)}, got {tuple(sim.shape)}.")
  for name, value in (("bc_weight", bc_weight), ("quantization_weight", quantization_weight),
                      ("similarity_weight", similarity_weight)):
    _common.check_number(fn, name, value, nonnegative=True)
  if lambda_off is not None:
    _common.check_number(fn, "lambda_off", lambda_off, nonnegative=True)
  _common.check_number(fn, "eps", eps, nonnegative=True)
  structure = harr_structure(sim, top_fraction=top_fraction)
  cos = _common.l2_normalize(u1) @ _common.l2_normalize(u2).T       # cos(u¹_i, u²_j)
  kept = structure != 0
  err = jnp.where(kept, jnp.square(cos - structure.astype(cos.dtype)), 0.0)
  similarity = jnp.sum(err) / jnp.sum(kept)                         # >= N kept (the diagonal)
  bit_corr = _common.barlow_cross_corr(u1, u2, lambda_off=1.0 / k if lambda_off is None
                                       else lambda_off, eps=eps)
  quant = 0.5 * (_common.quant_cosine(u1) + _common.quant_cosine(u2))
  total = similarity_weight * similarity + bc_weight * bit_corr + quantization_weight * quant
  return total, {"similarity": similarity, "bit_correlation": bit_corr, "quantization": quant}


def harr_loss(u1: jax.Array, u2: jax.Array, wta_sim: jax.Array, *, top_fraction=0.1,
              bc_weight=0.01, quantization_weight=0.1, lambda_off=None, eps=1e-5,
              similarity_weight=1.0) -> jax.Array:
  """HARR objective ``L = L_sim + α·L_bc + β·L_q`` (docs/methods.md §2.4, project formulation).

  Formulation follows the paper's description; constants chosen by this project.

  1. ``S`` = :func:`harr_structure` of the batch's WTA similarities (±1/0, ties to lower index).
  2. ``L_sim = mean_{(i,j): S_ij ≠ 0} (cos(u¹_i, u²_j) − S_ij)²`` (cosines with the norms in the
     graph; the ``i = j`` pairs enforce invariance to augmentation).
  3. ``L_bc = Σ_k (1 − C_kk)² + λ_off·Σ_{k≠l} C_kl²``, ``C = ẑ¹ᵀẑ²/N`` of the per-bit
     standardised views ``ẑ = (u − μ)/(σ + ε)`` (biased σ) — Barlow Twins' bit-correlation
     reduction.
  4. ``L_q = ½ Σ_v mean_n (1 − cos(u^v_n, sign₀ u^v_n))``.

  Non-finite inputs are not checked (values are unknown under ``jit``): an inf or NaN in ``u``
  propagates to a non-finite loss, and the trainer stops at a non-finite loss. ``wta_sim`` must
  be finite (a NaN ranks last).

  Args:
    u1: ``[batch, bits]`` tanh outputs of view 1 (any float dtype; computed in float32).
    u2: ``[batch, bits]`` tanh outputs of view 2.
    wta_sim: ``[batch, batch]`` WTA similarities of the batch (no gradient).
    top_fraction: ``p`` of the structure (0.10).
    bc_weight: α (0.01).
    quantization_weight: β (0.1).
    lambda_off: off-diagonal weight of ``L_bc``; ``None`` means ``1/K``.
    eps: ε of the standardisation (1e-5).
    similarity_weight: weight of ``L_sim`` (1; 0 for the ablation without the WTA structure).

  Returns:
    float32 scalar (float64 under x64 with float64 inputs).

  Raises:
    ValueError: on non-floating inputs, wrong ranks or shapes, a batch below 2, ``p`` outside
      [0, 1], or negative weights.

  Examples:
    >>> u = jnp.array([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    >>> s = jnp.eye(4) + 0.5  # every pair ties: T(i) = the lowest-indexed other
    >>> loss, aux = harr_loss_with_aux(u, u, s, top_fraction=0.25)
    >>> {k: round(float(v), 4) for k, v in aux.items()}
    {'similarity': 1.1667, 'bit_correlation': 0.0, 'quantization': 0.0}

    There ``S`` keeps the diagonal (error 0), the positives (0, 1), (0, 2) (cosine 0, error 1) and
    (0, 3) (cosine −1, error 4), each both ways, and the negative pair (2, 3) (cosine 0, error 1):
    ``L_sim = 14/12``.

  References:
    Ma, Wang, Luo, Gu, Chen, Li, Hua, Lu. Harr: Learning Discriminative and High-quality Hash
    Codes for Image Retrieval. ACM TOMM 2024 (DOI 10.1145/3627162); docs/methods.md §2.4.
    Zbontar, Jing, Misra, LeCun, Deny. Barlow Twins. ICML 2021. Yagnik, Strelow, Ross, Lin.
    The Power of Comparative Reasoning (WTA hashing). ICCV 2011.
  """
  return harr_loss_with_aux(u1, u2, wta_sim, top_fraction=top_fraction, bc_weight=bc_weight,
                            quantization_weight=quantization_weight, lambda_off=lambda_off,
                            eps=eps, similarity_weight=similarity_weight)[0]
