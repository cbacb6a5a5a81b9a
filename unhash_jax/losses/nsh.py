"""NSH loss (Yu*, Shen*, Wang, Zhang, Torr, "Learning to Hash Naturally Sorts", IJCAI 2022).

Exactly docs/methods.md §2.2: code similarity → descending SoftSort of every row → gather of view-1
latents in sorted order → score against the anchor's view-2 latent → SortedNCE with the top
``num_positives`` ranks as positives, plus the MSE quantization term. No official code is public;
the structure is the consensus of the two third-party ports named in docs/methods.md.

Imports only jax, jax.numpy and numpy (through :mod:`unhash_jax.sorting`).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from unhash_jax import sorting
from unhash_jax.losses import _common

GATHER_MODES = ("auto", "dense", "gram")


def code_similarity(codes1: jax.Array, codes2: jax.Array) -> jax.Array:
  """``S = b¹ b²ᵀ/(2K) + ½`` ``[n, n]``; for ±1 codes ``S_ij = 1 − Hamming(b¹_i, b²_j)/K``."""
  bits = codes1.shape[-1]
  return codes1 @ codes2.T / (2.0 * bits) + 0.5


def sorted_scores(perm: jax.Array, latents1: jax.Array, latents2: jax.Array, *,
                  renormalize: bool = True, gather: str = "auto") -> jax.Array:
  """``C[i,r] = ⟨Ē[i,r], z²_i⟩`` with ``E[i,r] = Σ_j P[i,r,j] z¹_j`` (docs/methods.md §2.2 steps 3–4).

  ``E`` (``[n, n, d]``) is only materialised by ``gather="dense"``. The ``"gram"`` form computes the
  same numbers from ``[n, n]`` Gram matrices: ``⟨E[i,r], z²_i⟩ = Σ_j P[i,r,j]⟨z¹_j, z²_i⟩`` and
  ``‖E[i,r]‖² = P[i,r]ᵀ (z¹z¹ᵀ) P[i,r]``, i.e. ``n³`` memory and ``n⁴`` multiply-adds instead of
  ``n²·d`` memory and ``n³·d``; ``"auto"`` picks ``"gram"`` when ``n <= d`` (the usual case,
  ``d = 1024``), where it is cheaper on both counts.

  Args:
    perm: ``[n, n, n]`` row-stochastic (relaxed) permutation matrices ``P[i, rank, item]``.
    latents1: ``[n, d]`` L2-normalised view-1 latents ``z¹``.
    latents2: ``[n, d]`` L2-normalised view-2 latents ``z²``.
    renormalize: divide ``E`` by its norm (``Ē``); otherwise use ``E`` as is.
    gather: ``"auto"``, ``"dense"`` or ``"gram"``.

  Returns:
    ``[n, n]`` scores ``C[anchor, rank]``.
  """
  n, d = latents1.shape
  if gather not in GATHER_MODES:
    raise ValueError(f"nsh_loss: gather must be one of {GATHER_MODES}, got {gather!r}.")
  if gather == "auto":
    gather = "gram" if n <= d else "dense"
  if gather == "dense":
    e = jnp.einsum("irj,jd->ird", perm, latents1)             # [n, n, d]
    if renormalize:
      e = _common.l2_normalize(e)
    return jnp.einsum("ird,id->ir", e, latents2)
  cross = latents2 @ latents1.T                                # [n, n]: ⟨z²_i, z¹_j⟩
  numer = jnp.einsum("irj,ij->ir", perm, cross)
  if not renormalize:
    return numer
  gram = latents1 @ latents1.T                                 # [n, n]: ⟨z¹_j, z¹_k⟩
  sq_norm = jnp.einsum("irj,irj->ir", perm @ gram, perm)       # ‖E[i, r]‖²
  return numer * jax.lax.rsqrt(jnp.maximum(sq_norm, 1e-24))


def sorted_nce(scores: jax.Array, *, num_positives: int, temperature: float,
               double_softmax: bool = False) -> jax.Array:
  """SortedNCE of docs/methods.md §2.2 step 5 from the score matrix ``C`` ``[n, n]`` → scalar.

  ``(1/m) Σ_{r<m} mean_i −log softmax([C[i,r], C[i,m], …, C[i,n−1]]/τ)₀``: each of the top ``m``
  ranks is a positive against the shared negatives at ranks ``m..n−1``. ``double_softmax=True``
  replicates the ports' ``CE(softmax(C/τ))`` (a second log-softmax over probabilities).
  """
  m = num_positives
  logits = scores / temperature
  pos = logits[:, :m]                                          # [n, m]
  neg = logits[:, m:]                                          # [n, n − m]
  rows = jnp.concatenate(
      [pos[:, :, None], jnp.broadcast_to(neg[:, None, :], (neg.shape[0], m, neg.shape[1]))],
      axis=-1)                                                 # [n, m, 1 + n − m]
  if double_softmax:
    rows = jax.nn.softmax(rows, axis=-1)
  return -jnp.mean(jax.nn.log_softmax(rows, axis=-1)[..., 0])


def _check_hparams(sort_temperature, nce_temperature, num_positives, quantization_weight,
                   n: int) -> None:
  if (not isinstance(num_positives, numbers.Integral) or isinstance(num_positives, bool)
      or num_positives < 1):
    raise ValueError(f"nsh_loss: num_positives must be an integer >= 1, got {num_positives!r}.")
  if n <= num_positives:
    raise ValueError(
        f"nsh_loss: a batch of {n} images leaves no negatives for num_positives={num_positives}; "
        f"the batch must be larger than num_positives.")
  for name, value in (("sort_temperature", sort_temperature), ("nce_temperature", nce_temperature)):
    if value is not None and isinstance(value, numbers.Real) and not value > 0:
      raise ValueError(f"nsh_loss: {name} must be > 0, got {value!r}.")
  if isinstance(quantization_weight, numbers.Real) and quantization_weight < 0:
    raise ValueError(f"nsh_loss: quantization_weight must be >= 0, got {quantization_weight!r}.")


def nsh_loss_with_aux(codes1: jax.Array, codes2: jax.Array, latents1: jax.Array,
                      latents2: jax.Array, *, sort_temperature: float | None = None,
                      nce_temperature: float = 0.3, num_positives: int = 2,
                      quantization_weight: float = 1.0, renormalize_gathered: bool = True,
                      strict_double_softmax: bool = False, sort_hard: bool = False,
                      gather: str = "auto") -> tuple[jax.Array, dict[str, jax.Array]]:
  """:func:`nsh_loss` plus its terms and diagnostics (float32 scalars).

  Aux keys: ``"sorted_nce"``, ``"quantization"`` (``L_q``), ``"self_top1"`` (fraction of anchors
  whose hard rank 0 is their own other view, a training diagnostic without gradient).
  """
  fn = "nsh_loss"
  codes1 = _common.floating_input(fn, "codes1", codes1)
  codes2 = _common.floating_input(fn, "codes2", codes2)
  latents1 = _common.floating_input(fn, "latents1", latents1, shape="[batch, latent_dim]")
  latents2 = _common.floating_input(fn, "latents2", latents2, shape="[batch, latent_dim]")
  _common.same_shape(fn, ("codes1", "codes2"), codes1, codes2)
  _common.same_shape(fn, ("latents1", "latents2"), latents1, latents2,
                     shape="[batch, latent_dim]")
  if codes1.shape[0] != latents1.shape[0]:
    raise ValueError(f"nsh_loss: codes have {codes1.shape[0]} rows but latents have "
                     f"{latents1.shape[0]}; both must be [batch, ...] of the same batch.")
  n, bits = codes1.shape
  _check_hparams(sort_temperature, nce_temperature, num_positives, quantization_weight, n)
  tau_sort = 1.0 / bits if sort_temperature is None else sort_temperature
  z1, z2 = _common.l2_normalize(latents1), _common.l2_normalize(latents2)

  sim = code_similarity(codes1, codes2)                        # [n, n]
  perm = sorting.softsort(sim, temperature=tau_sort, hard=sort_hard, descending=True)
  scores = sorted_scores(perm, z1, z2, renormalize=renormalize_gathered, gather=gather)
  snce = sorted_nce(scores, num_positives=num_positives, temperature=nce_temperature,
                    double_softmax=strict_double_softmax)
  quant = 0.5 * (_common.quant_mse(codes1) + _common.quant_mse(codes2))
  top1 = jnp.argmax(jax.lax.stop_gradient(sim), axis=-1) == jnp.arange(n)
  aux = {"sorted_nce": snce, "quantization": quant, "self_top1": jnp.mean(top1.astype(snce.dtype))}
  return snce + quantization_weight * quant, aux


def nsh_loss(codes1: jax.Array, codes2: jax.Array, latents1: jax.Array, latents2: jax.Array, *,
             sort_temperature: float | None = None, nce_temperature: float = 0.3,
             num_positives: int = 2, quantization_weight: float = 1.0,
             renormalize_gathered: bool = True, strict_double_softmax: bool = False,
             sort_hard: bool = False, gather: str = "auto") -> jax.Array:
  r"""NSH objective ``L = L_SNCE + λ_q·L_q`` (docs/methods.md §2.2).

  For a batch of ``n`` images seen under two views:

  1. ``S = b¹b²ᵀ/(2K) + ½`` ``[n, n]`` (``1 − Hamming/K`` for binary codes).
  2. Descending SoftSort of each row ``i``: ``P[i,r,j] = softmax_j(−|ŝ_{i,r} − S_ij|/τ_sort)``
     with ``ŝ_i = sort_desc(S_i)`` (:func:`unhash_jax.sorting.softsort`); gradients flow through
     ``ŝ`` and ``S``. ``sort_hard=True``: forward one-hot permutation, backward the soft ``P``.
  3. ``E[i,r] = Σ_j P[i,r,j] z¹_j``, ``Ē = E/‖E‖`` (``renormalize_gathered``).
  4. ``C[i,r] = ⟨Ē[i,r], z²_i⟩``.
  5. ``L_SNCE = (1/m) Σ_{r<m} mean_i −log softmax([C[i,r], C[i,m:]]/τ_nce)₀`` (a single log-softmax;
     ``strict_double_softmax=True`` applies a softmax first, like the ports' ``CE(softmax(·))``).
  6. ``L_q = ½ Σ_v mean_{n,k} (b^v − sign₀ b^v)²``.

  The hash head learns only through the sorter (via ``S``) and ``L_q``; the latent head only through
  ``L_SNCE``.

  Non-finite inputs are not checked (values are unknown under ``jit``): an inf or NaN in the
  codes or latents propagates to a non-finite loss, and the trainer stops at a non-finite loss.

  Args:
    codes1: ``[n, K]`` continuous codes ``b¹ = tanh(·)`` of view 1 (any float array-like;
      computed in float32).
    codes2: ``[n, K]`` codes of view 2.
    latents1: ``[n, d]`` latent-head outputs of view 1 (L2-normalised inside).
    latents2: ``[n, d]`` latent-head outputs of view 2.
    sort_temperature: ``τ_sort > 0``; ``None`` means ``1/K`` (one Hamming step = an ``e⁻¹`` weight
      ratio). The second port uses ``sort_hard=True`` with ``τ_sort = K``.
    nce_temperature: ``τ_nce`` (0.3, kamwoh/sdc; the second port uses 0.1).
    num_positives: ``m``, the number of top ranks treated as positives (2); needs ``n > m``.
    quantization_weight: ``λ_q`` (1).
    renormalize_gathered: L2-normalise the gathered latents ``E`` (the second port) or not (sdc).
    strict_double_softmax: replicate the ports' double softmax.
    sort_hard: straight-through hard permutation.
    gather: how step 3–4 are computed: ``"dense"`` materialises ``E`` ``[n, n, d]``, ``"gram"``
      works from ``[n, n]`` Gram matrices (identical values); ``"auto"`` picks the cheaper one.

  Returns:
    float32 scalar (float64 under x64 with float64 inputs).

  Raises:
    ValueError: naming the argument: non-floating inputs, mismatched or non-2-D shapes, an empty
      axis, codes and latents with different batch sizes,
      ``n <= num_positives``, non-positive temperatures or a negative ``λ_q``.

  Examples:
    >>> b = jnp.array([[1., 1.], [1., -1.], [-1., 1.]]) * 0.999
    >>> z = jnp.eye(3)
    >>> round(float(nsh_loss(b, b, z, z, num_positives=1)), 3)
    0.195

  References:
    Yu, Shen, Wang, Zhang, Torr. Learning to Hash Naturally Sorts. IJCAI 2022 (arXiv 2201.13322);
    docs/methods.md §2.2.
    Prillo, Eisenschlos. SoftSort: A Continuous Relaxation for the argsort Operator. ICML 2020.
  """
  return nsh_loss_with_aux(
      codes1, codes2, latents1, latents2, sort_temperature=sort_temperature,
      nce_temperature=nce_temperature, num_positives=num_positives,
      quantization_weight=quantization_weight, renormalize_gathered=renormalize_gathered,
      strict_double_softmax=strict_double_softmax, sort_hard=sort_hard, gather=gather)[0]
