"""CIBHash loss (Qiu et al., "Unsupervised Hashing with Contrastive Information Bottleneck", IJCAI 2021).

Exactly docs/methods.md §2.1 (the official code's objective): straight-through sign codes of σ(ℓ) − ½,
NT-Xent on the 2N codes with cosine similarity, and the symmetric stop-gradient Bernoulli KL.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from unhash_jax.losses import _common


def cibhash_codes(logits: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
  """Straight-through codes of CIBHash: forward ``sign₀(ℓ)``, backward identity into ``σ(ℓ) − ½``.

  With ``key`` the paper's stochastic binary layer is used instead: forward ``2·Bernoulli(σ(ℓ)) − 1``.

  Args:
    logits: ``[N, K]`` encoder logits ℓ.
    key: optional PRNG key (stochastic codes).

  Returns:
    ``[N, K]`` ±1 codes with gradients.
  """
  soft = jax.nn.sigmoid(logits) - 0.5
  if key is None:
    # sign₀(σ(ℓ) − ½) = sign₀(ℓ); taken from ℓ so that float32 rounding of σ near 0 cannot flip a bit
    # against the test-time code sign₀(ℓ).
    hard = jnp.where(logits >= 0, 1.0, -1.0).astype(soft.dtype)
  else:
    hard = jax.random.bernoulli(key, soft + 0.5).astype(soft.dtype) * 2 - 1
  return soft + jax.lax.stop_gradient(hard - soft)


def cibhash_loss_with_aux(logits1: jax.Array, logits2: jax.Array, *, temperature: float = 0.3,
                          kl_weight: float = 1e-3, key: jax.Array | None = None
                          ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """:func:`cibhash_loss` plus its terms ``{"contrastive", "kl"}`` (float32 scalars)."""
  fn = "cibhash_loss"
  logits1 = _common.floating_input(fn, "logits1", logits1)
  logits2 = _common.floating_input(fn, "logits2", logits2)
  _common.same_shape(fn, ("logits1", "logits2"), logits1, logits2)
  _common.min_batch(fn, "logits1", logits1)
  _common.check_number(fn, "temperature", temperature, positive=True)
  _common.check_number(fn, "kl_weight", kl_weight, nonnegative=True)
  keys = (None, None) if key is None else tuple(jax.random.split(key))
  z1 = cibhash_codes(logits1, key=keys[0])
  z2 = cibhash_codes(logits2, key=keys[1])
  contrastive = _common.nt_xent(z1, z2, temperature=temperature)
  kl = _common.symmetric_bernoulli_kl(logits1, logits2)
  return contrastive + kl_weight * kl, {"contrastive": contrastive, "kl": kl}


def cibhash_loss(logits1: jax.Array, logits2: jax.Array, *, temperature: float = 0.3,
                 kl_weight: float = 1e-3, key: jax.Array | None = None) -> jax.Array:
  """CIBHash objective ``L = L_con + β·L_kl`` (docs/methods.md §2.1).

  * ``p^v = σ(ℓ^v)``; codes ``z^v = sign₀(p^v − ½)`` with a straight-through estimator (identity into
    ``p − ½``, then through σ).
  * ``L_con``: NT-Xent over the 2N codes, ``s_ab = cos(z_a, z_b)/τ`` with norms inside the graph,
    self excluded, the other view as the positive.
  * ``L_kl = ½[mean_n KL(p¹_n‖sg p²_n) + mean_n KL(p²_n‖sg p¹_n)]`` of Bernoulli vectors, from logits.

  Non-finite inputs are not checked (values are unknown under ``jit``): an inf or NaN logit
  propagates to a non-finite loss (±inf logits give NaN through the KL term), and the trainer
  stops at a non-finite loss.

  Args:
    logits1: ``[batch, bits]`` logits of view 1 (any float array-like; computed in float32).
    logits2: ``[batch, bits]`` logits of view 2.
    temperature: τ of the contrastive term (official 0.3).
    kl_weight: β (official 1e-3).
    key: if given, stochastic Bernoulli codes (the paper's description) instead of thresholding.

  Returns:
    float32 scalar.

  Raises:
    ValueError: naming the argument, on non-floating logits, mismatched or non-2-D shapes, an
      empty axis, a batch below 2, τ <= 0 or β < 0.

  Examples:
    >>> l1 = jnp.array([[2.0, -1.0], [-0.5, 0.3]])
    >>> round(float(cibhash_loss(l1, l1 + 0.1)), 4)
    0.0025

  References:
    Qiu, Su, Ou, Yu, Chen. Unsupervised Hashing with Contrastive Information Bottleneck. IJCAI 2021
    (arXiv 2105.06138); docs/methods.md §2.1.
  """
  return cibhash_loss_with_aux(logits1, logits2, temperature=temperature, kl_weight=kl_weight,
                               key=key)[0]
