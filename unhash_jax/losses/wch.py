"""WCH loss (Yu, Qiu, Chen, Zhang, "Weighted Contrastive Hashing", ACCV 2022).

Exactly docs/methods.md §2.3 (the official code's objective): patch-level max-mean similarities of
the mutually-attended tokens become soft contrastive targets ``W`` for the code logits
``Λ = h¹h²ᵀ/(K·τ)``, plus the bit-balance/quantization regulariser on view 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from unhash_jax import patch_similarity
from unhash_jax.losses import _common

_FN = "wch_loss"


def wch_weights(similarity: jax.Array, *, weight_temperature=0.2, detach: bool = False,
                normalize: bool = False) -> jax.Array:
  """``W[n, m] = Q[n, m]/Q[n, n]`` with ``Q = softmax_row(Ŝ/T_w)`` (§2.3 step 2).

  The diagonal is exactly 1 and off-diagonal entries may exceed 1. ``normalize=True`` rescales
  every row to sum to 1 (which gives ``W = Q``); ``detach=True`` stops its gradient. The
  official code does neither.

  Computed as ``exp((Ŝ[n, m] − Ŝ[n, n])/T_w)`` (and ``W = Q`` when normalised), never as the
  quotient: at a sharp ``T_w`` a row's ``Q[n, n]`` underflows to 0 once another image is more
  similar by about ``87·T_w``, and ``Q/Q[n, n]`` would turn the loss into NaN.
  """
  logits = similarity / weight_temperature
  if normalize:
    w = jax.nn.softmax(logits, axis=-1)
  else:
    w = jnp.exp(logits - jnp.diagonal(logits)[:, None])
  return jax.lax.stop_gradient(w) if detach else w


def wch_loss_with_aux(t1: jax.Array, t2: jax.Array, x1: jax.Array, x2: jax.Array, *,
                      temperature=0.3, weight_temperature=0.2, detach_weights: bool = False,
                      normalize_weights: bool = False, regularizer_weight=1.0,
                      chunk: int | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """:func:`wch_loss` plus its terms (float32 scalars).

  Aux keys: ``"weighted_contrastive"`` (``L_wc``) and ``"regularizer"`` (``R``, unweighted); the
  loss is ``L_wc + regularizer_weight·R``.
  """
  t1 = _common.floating_input(_FN, "t1", t1)
  t2 = _common.floating_input(_FN, "t2", t2)
  tokens = "[batch, patches, dim]"
  x1 = _common.floating_input(_FN, "x1", x1, shape=tokens, ndim=3)
  x2 = _common.floating_input(_FN, "x2", x2, shape=tokens, ndim=3)
  _common.same_shape(_FN, ("t1", "t2"), t1, t2)
  _common.same_shape(_FN, ("x1", "x2"), x1, x2, shape=tokens)
  _common.min_batch(_FN, "t1", t1)
  if x1.shape[0] != t1.shape[0]:
    raise ValueError(f"{_FN}: t1 has {t1.shape[0]} rows but x1 has {x1.shape[0]}; codes [batch, "
                     f"bits] and tokens [batch, patches, dim] must share the batch.")
  _common.check_number(_FN, "temperature", temperature, positive=True)
  _common.check_number(_FN, "weight_temperature", weight_temperature, positive=True)
  _common.check_number(_FN, "regularizer_weight", regularizer_weight, nonnegative=True)
  k = t1.shape[1]
  h1 = t1 + jax.lax.stop_gradient(_common._sign0(t1) - t1)    # straight-through sign
  h2 = t2 + jax.lax.stop_gradient(_common._sign0(t2) - t2)
  sim = patch_similarity.patch_max_mean_similarity(x1, x2, chunk=chunk)          # Ŝ [N, N]
  weights = wch_weights(sim, weight_temperature=weight_temperature, detach=detach_weights,
                        normalize=normalize_weights).astype(h1.dtype)
  logits = h1 @ h2.T / (k * temperature)                                          # Λ
  contrastive = _common.soft_target_ce(logits, weights)
  regularizer = _common.bit_balance(h1) - jnp.mean(jnp.square(h1))
  return contrastive + regularizer_weight * regularizer, {"weighted_contrastive": contrastive,
                                     "regularizer": regularizer}


def wch_loss(t1: jax.Array, t2: jax.Array, x1: jax.Array, x2: jax.Array, *, temperature=0.3,
             weight_temperature=0.2, detach_weights: bool = False, normalize_weights: bool = False,
             regularizer_weight=1.0, chunk: int | None = None) -> jax.Array:
  """WCH objective ``L = L_wc + λ_R·R`` (docs/methods.md §2.3; the official λ_R is 1).

  For a batch of N images under two views, with tanh outputs ``t^v`` and mutually-attended patch
  tokens ``x̃^v`` (:func:`~unhash_jax.ops.mutual_attention`):

  1. Codes ``h^v = t^v + sg(sign₀ t^v − t^v)`` (straight-through sign; 0 maps to +1).
  2. ``Ŝ[n, m] = (1/P) Σ_i max_j cos(x̃¹_n[i], x̃²_m[j])`` ``[N, N]``, chunked over ``m``
     (:func:`~unhash_jax.ops.patch_max_mean_similarity`), never ``[N, N, P, P]``.
  3. ``W[n, m] = Q[n, m]/Q[n, n]``, ``Q = softmax_row(Ŝ/T_w)``: unit diagonal, rows not
     renormalised and **not detached** by default (the official objective; gradients reach the
     tokens through ``W``). ``normalize_weights=True`` rescales rows to sum 1 (``W = Q``),
     ``detach_weights=True`` stops ``W``'s gradient.
  4. ``Λ = h¹h²ᵀ/(K·τ)`` (a plain inner product).
  5. ``L_wc = (1/N) Σ_n Σ_m −W[n, m]·log softmax_m(Λ[n, :])``, soft targets used as given.
  6. ``R = mean_k (mean_n h¹_nk)² − mean_{n,k} (h¹_nk)²`` on view 1 only (bit balance; the second
     part is −1 in the forward pass but pushes ``|t|`` up through the STE).
  7. ``L = L_wc + λ_R·R``; the official objective has no coefficients (``λ_R = 1``). Through the
     STE the second part of ``R`` keeps pushing ``|t|`` up whatever the codes, so a smaller
     ``λ_R`` slows the tanh's saturation (a project option, not in the paper).

  Non-finite inputs are not checked (values are unknown under ``jit``): an inf or NaN in the codes
  or tokens propagates to a non-finite loss (e.g. an all-inf token row gives NaN cosines), and
  the trainer stops at a non-finite loss.

  Args:
    t1: ``[batch, bits]`` tanh outputs of view 1 (any float dtype; computed in float32).
    t2: ``[batch, bits]`` tanh outputs of view 2.
    x1: ``[batch, patches, dim]`` mutually-attended tokens x̃¹ (ViT-B/16: 196 × 768).
    x2: ``[batch, patches, dim]`` mutually-attended tokens x̃².
    temperature: τ of the code logits (0.3).
    weight_temperature: ``T_w`` of the weights (0.2).
    detach_weights: stop the gradient of ``W`` (official: no).
    normalize_weights: rescale ``W``'s rows to sum to 1 (official: no).
    regularizer_weight: ``λ_R >= 0``, the weight of ``R`` (official: 1).
    chunk: rows of view 2 per step of ``Ŝ`` (``None``: a 32 MB slab).

  Returns:
    float32 scalar (float64 under x64 with float64 inputs).

  Raises:
    ValueError: on non-floating inputs, wrong ranks, empty axes, mismatched shapes, a batch below
      2, non-positive temperatures or a negative ``regularizer_weight``.

  Examples:
    >>> t = jnp.array([[0.9, 0.8], [-0.7, 0.9]])
    >>> x = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # one patch per image, orthogonal images
    >>> loss, aux = wch_loss_with_aux(t, t, x, x)
    >>> round(float(aux["weighted_contrastive"]), 4), round(float(aux["regularizer"]), 4)
    (0.0577, -0.5)

    Here ``Ŝ = I``, so ``W = [[1, e⁻⁵], [e⁻⁵, 1]]``, ``Λ = (2/0.6)·I`` and each row costs
    ``log(1 + e^{−a}) + e⁻⁵·(a + log(1 + e^{−a}))`` with ``a = 2/0.6``.

  References:
    Yu, Qiu, Chen, Zhang. Weighted Contrastive Hashing. ACCV 2022 (arXiv 2209.14099);
    docs/methods.md §2.3.
  """
  return wch_loss_with_aux(t1, t2, x1, x2, temperature=temperature,
                           weight_temperature=weight_temperature, detach_weights=detach_weights,
                           normalize_weights=normalize_weights,
                           regularizer_weight=regularizer_weight, chunk=chunk)[0]
