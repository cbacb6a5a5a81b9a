"""FDBH loss ("Unsupervised Contrastive Learning Hashing with Adaptive Distribution Balanced
Feature Learning for Image Retrieval"; anonymous manuscript, venue and authors not confirmed).

**Project formulation** (docs/methods.md §2.6): only the abstract and introduction are public, so
the formulation follows the paper's description; constants chosen by this project. Contrastive
hashing on polarized straight-through codes of the standardised encoder output (FDO), a
distribution term (bit balance + polarization) and a reconstruction of the frozen features.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from unhash_jax.losses import _common

_FN = "fdbh_loss"


def fdbh_codes(h_hat: jax.Array, *, gamma) -> jax.Array:
  """Polarized straight-through codes ``b = t + sg(sign₀ t − t)``, ``t = tanh(γ·ĥ)`` (§2.6).

  The forward value is ``sign₀(ĥ)`` (for γ > 0; exact zeros map to +1), the backward that of
  ``tanh(γ·ĥ)``. ``gamma`` may be a traced scalar (annealed inside ``jit``).

  Args:
    h_hat: ``[batch, bits]`` standardised encoder output ĥ (:func:`~unhash_jax.ops.batch_standardize`).
    gamma: γ > 0 (annealed 1 → 10).

  Returns:
    ``[batch, bits]`` ±1 codes with gradients (float32 for bf16/f16/f32 inputs).

  Examples:
    >>> fdbh_codes(jnp.array([[-0.2, 0.0, 3.0]]), gamma=2.0).tolist()
    [[-1.0, 1.0, 1.0]]
    >>> jax.grad(lambda h: fdbh_codes(h, gamma=2.0).sum())(jnp.zeros((1, 1))).tolist()  # γ·(1 − 0²)
    [[2.0]]
  """
  h_hat = _common.floating_input("fdbh_codes", "h_hat", h_hat)
  _common.check_number("fdbh_codes", "gamma", gamma, positive=True)
  t = jnp.tanh(gamma * h_hat)
  return t + jax.lax.stop_gradient(_common._sign0(t) - t)


def fdbh_loss_with_aux(h_hat1: jax.Array, h_hat2: jax.Array, features1: jax.Array,
                       features2: jax.Array, *, decode: Callable[[jax.Array], jax.Array], gamma,
                       temperature=0.3, rec_weight=1.0, fdo_weight=0.1, contrastive_weight=1.0
                       ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """:func:`fdbh_loss` plus its terms (float32 scalars).

  Aux keys: ``"contrastive"`` (``L_con``), ``"reconstruction"`` (``L_rec``), ``"distribution"``
  (``L_fdo``); the loss is ``w_con·L_con + λ_rec·L_rec + λ_fdo·L_fdo``.
  """
  h1 = _common.floating_input(_FN, "h_hat1", h_hat1)
  h2 = _common.floating_input(_FN, "h_hat2", h_hat2)
  f1 = _common.floating_input(_FN, "features1", features1, shape="[batch, feature_dim]")
  f2 = _common.floating_input(_FN, "features2", features2, shape="[batch, feature_dim]")
  _common.same_shape(_FN, ("h_hat1", "h_hat2"), h1, h2)
  _common.same_shape(_FN, ("features1", "features2"), f1, f2, shape="[batch, feature_dim]")
  _common.min_batch(_FN, "h_hat1", h1)
  if f1.shape[0] != h1.shape[0]:
    raise ValueError(f"{_FN}: h_hat1 has {h1.shape[0]} rows but features1 has {f1.shape[0]}; "
                     f"both must be [batch, ...] of the same batch.")
  if not callable(decode):
    raise ValueError(f"{_FN}: decode must be a callable mapping codes [batch, bits] to "
                     f"[batch, feature_dim], got {type(decode).__name__}.")
  _common.check_number(_FN, "gamma", gamma, positive=True)
  _common.check_number(_FN, "temperature", temperature, positive=True)
  _common.check_number(_FN, "rec_weight", rec_weight, nonnegative=True)
  _common.check_number(_FN, "fdo_weight", fdo_weight, nonnegative=True)
  _common.check_number(_FN, "contrastive_weight", contrastive_weight, nonnegative=True)

  codes = [fdbh_codes(h, gamma=gamma) for h in (h1, h2)]
  contrastive = _common.nt_xent(codes[0], codes[1], temperature=temperature)
  distribution = 0.0
  for h in (h1, h2):
    t = jnp.tanh(h)                                                     # γ = 1
    distribution = distribution + 0.5 * (_common.bit_balance(t) + _common.polarization(t))
  reconstruction = 0.0
  for name, b, f in (("1", codes[0], f1), ("2", codes[1], f2)):
    recon = decode(b)
    if getattr(recon, "shape", None) != f.shape or not jnp.issubdtype(recon.dtype, jnp.floating):
      raise ValueError(f"{_FN}: decode(codes{name}) must return a floating array of the features' "
                       f"shape {tuple(f.shape)}, got {getattr(recon, 'shape', type(recon))} of "
                       f"{getattr(recon, 'dtype', '?')}.")
    recon = recon.astype(jnp.promote_types(recon.dtype, jnp.float32))
    reconstruction = reconstruction + 0.5 * jnp.mean(
        jnp.square(recon - jax.lax.stop_gradient(f)))                   # mean_n ‖·‖²/d_f
  total = (contrastive_weight * contrastive + rec_weight * reconstruction
           + fdo_weight * distribution)
  return total, {"contrastive": contrastive, "reconstruction": reconstruction,
                 "distribution": distribution}


def fdbh_loss(h_hat1: jax.Array, h_hat2: jax.Array, features1: jax.Array, features2: jax.Array,
              *, decode: Callable[[jax.Array], jax.Array], gamma, temperature=0.3,
              rec_weight=1.0, fdo_weight=0.1, contrastive_weight=1.0) -> jax.Array:
  """FDBH objective ``L = L_con + λ_rec·L_rec + λ_fdo·L_fdo`` (docs/methods.md §2.6).

  Formulation follows the paper's description; constants chosen by this project. For the two
  views' standardised encoder outputs ``ĥ^v`` (:func:`~unhash_jax.ops.batch_standardize`) and
  frozen backbone features ``f^v``:

  1. Codes ``b^v = t^v + sg(sign₀ t^v − t^v)``, ``t^v = tanh(γ·ĥ^v)`` (:func:`fdbh_codes`).
  2. ``L_con = NT-Xent(b¹, b²; τ)`` over the 2N codes, cosine with the norms in the graph — the
     same function as CIBHash's contrastive term (``_common.nt_xent``).
  3. ``L_fdo = ½ Σ_v [mean_k (mean_n tanh(ĥ^v)_nk)² + mean_{n,k} (1 − |tanh(ĥ^v)_nk|)²]`` with
     γ = 1: bit balance plus polarization.
  4. ``L_rec = ½ Σ_v mean_n ‖decode(b^v_n) − sg(f^v_n)‖²/d_f``.

  ``gamma`` may be a traced scalar: pass it as an argument of the jitted step (annealed 1 → 10
  with the step) and changing it does not recompile. ``decode`` is the method's decoder
  (Linear(K→1024) → ReLU → Linear(1024→d_f)), e.g. a closure over its parameters inside the
  traced step; it is called once per view.

  Non-finite inputs are not checked (values are unknown under ``jit``): an inf or NaN in ``ĥ``,
  the features or the decoder's output propagates to a non-finite loss, and the trainer stops at
  a non-finite loss.

  Args:
    h_hat1: ``[batch, bits]`` standardised encoder output of view 1 (any float dtype; computed in
      float32).
    h_hat2: ``[batch, bits]`` of view 2.
    features1: ``[batch, feature_dim]`` frozen features of view 1 (reconstruction targets).
    features2: ``[batch, feature_dim]`` of view 2.
    decode: callable ``[batch, bits] → [batch, feature_dim]``.
    gamma: γ > 0 of the polarization (Python number or traced scalar).
    temperature: τ of NT-Xent (0.3).
    rec_weight: λ_rec (1.0).
    fdo_weight: λ_fdo (0.1).
    contrastive_weight: weight of ``L_con`` (1; 0 for the ablation without it).

  Returns:
    float32 scalar (float64 under x64 with float64 inputs).

  Raises:
    ValueError: on non-floating inputs, wrong ranks or shapes, a batch below 2, a decoder output
      of the wrong shape, a non-callable ``decode``, non-positive γ/τ or negative weights.

  Examples:
    >>> h = jnp.array([[2.0, -2.0], [-2.0, 2.0]])
    >>> f = jnp.zeros((2, 3))
    >>> loss, aux = fdbh_loss_with_aux(h, h, f, f, decode=lambda b: jnp.zeros((2, 3)), gamma=1.0)
    >>> {k: round(float(v), 4) for k, v in aux.items()}
    {'contrastive': 0.0025, 'reconstruction': 0.0, 'distribution': 0.0013}

    Each anchor's positive has cosine 1 and its two negatives −1: ``L_con = log(1 + 2e^{−2/τ})``;
    ``tanh(±2)`` is balanced, so ``L_fdo = (1 − tanh 2)²``.

  References:
    "Unsupervised Contrastive Learning Hashing with Adaptive Distribution Balanced Feature
    Learning for Image Retrieval" (manuscript; venue and authors not confirmed);
    docs/methods.md §2.6. Chen, Kornblith, Norouzi, Hinton. SimCLR (NT-Xent). ICML 2020.
  """
  return fdbh_loss_with_aux(h_hat1, h_hat2, features1, features2, decode=decode, gamma=gamma,
                            temperature=temperature, rec_weight=rec_weight,
                            fdo_weight=fdo_weight, contrastive_weight=contrastive_weight)[0]
