"""DDH loss (Song, He, Fan, Gao, "Deep Discrete Hashing with Self-supervised Pairwise Labels",
ECML-PKDD 2017).

Exactly docs/methods.md §2.5 (the official MATLAB release's objective): regress the inner products
of the batch's fc8 outputs with the stored output buffer ``U`` onto the pseudo pairwise labels of
:func:`unhash_jax.ops.snn_pseudo_labels`, plus ``λ·‖u − sign₀ u‖²``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from unhash_jax.losses import _common

_FN = "ddh_loss"


def _labels(x) -> jax.Array:
  x = _common.as_array(_FN, "pairwise_labels", x)
  if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.signedinteger)):
    raise ValueError(f"{_FN}: pairwise_labels must be a ±1 array [batch, N] of a signed integer "
                     f"(e.g. int8) or floating dtype, got {x.dtype}.")
  if x.ndim != 2 or 0 in x.shape:
    raise ValueError(f"{_FN}: pairwise_labels must be a non-empty 2-D array [batch, N], got shape "
                     f"{tuple(x.shape)}.")
  return x


def ddh_loss_with_aux(codes: jax.Array, buffer: jax.Array, pairwise_labels: jax.Array, *,
                      quantization_weight=15.0, quantization_per_bit: bool = False
                      ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """:func:`ddh_loss` plus its terms (float32 scalars), both divided by ``N·|B|`` like the loss.

  Aux keys: ``"pairwise"`` (``Σ_ij (u_iᵀU_j/K − S_ij)²/(N·|B|)``) and ``"quantization"``
  (``Σ_i ‖u_i − sign₀ u_i‖²/(N·|B|)``, divided by ``K`` as well with ``quantization_per_bit``);
  the loss is ``pairwise + λ·quantization``.
  """
  codes = _common.floating_input(_FN, "codes", codes)
  buffer = _common.floating_input(_FN, "buffer", buffer, shape="[N, bits]")
  labels = _labels(pairwise_labels)
  _common.check_number(_FN, "quantization_weight", quantization_weight, nonnegative=True)
  (b, k), (n, k_buf) = codes.shape, buffer.shape
  if k_buf != k:
    raise ValueError(f"{_FN}: codes [batch, bits] and buffer [N, bits] must have the same number "
                     f"of bits, got {tuple(codes.shape)} and {tuple(buffer.shape)}.")
  if labels.shape != (b, n):
    raise ValueError(f"{_FN}: pairwise_labels must have shape [batch, N] = ({b}, {n}) for codes "
                     f"{tuple(codes.shape)} and buffer {tuple(buffer.shape)}, got "
                     f"{tuple(labels.shape)}.")
  dtype = jnp.promote_types(codes.dtype, buffer.dtype)
  codes, buffer = codes.astype(dtype), jax.lax.stop_gradient(buffer.astype(dtype))
  inner = codes @ buffer.T / k                                  # [B, N]: u_iᵀ U_j / K
  pairwise = jnp.sum(jnp.square(inner - labels.astype(dtype)))
  quant = _common.quant_l2_sum(codes)
  scale = 1.0 / (n * b)
  pairwise, quant = pairwise * scale, quant * (scale / k if quantization_per_bit else scale)
  return pairwise + quantization_weight * quant, {"pairwise": pairwise, "quantization": quant}


def ddh_loss(codes: jax.Array, buffer: jax.Array, pairwise_labels: jax.Array, *,
             quantization_weight=15.0, quantization_per_bit: bool = False) -> jax.Array:
  """DDH objective ``J_B/(N·|B|)`` (docs/methods.md §2.5), the official logged loss.

  For a batch ``B`` of ``|B|`` images with fc8 outputs ``u_B`` and the buffer ``U`` ``[N, K]`` of
  the latest outputs of all N training images:

  ``J_B = Σ_{i∈B} Σ_{j=1}^{N} (u_iᵀ sg(U_j)/K − S_ij)² + λ·Σ_{i∈B} ‖u_i − sg(sign₀ u_i)‖²``.

  The buffer is a constant (stop-gradient): the caller has already written ``sg(u_B)`` into the
  batch's rows (``U[B] ← u_B``) before the call. Then ``½∇J_B`` with respect to ``u_i`` is the
  release's hand-coded gradient ``Σ_j (u_iᵀU_j/K − S_ij)·U_j/K + λ(u_i − b_i)``, and this loss's
  gradient is that divided by ``N·|B|/2``; the trainer's SGD step ``lr·(½∇J_B/(N·|B|) + wd·w)``
  is therefore ``lr·(½·∇ddh_loss + wd·w)``. ``B = sign₀(U)`` enters only through the quantization
  term; exact zeros count as +1.

  Non-finite inputs are not checked (values are unknown under ``jit``): an inf or NaN in
  ``codes``, ``buffer`` or ``pairwise_labels`` propagates to a non-finite loss, and the trainer
  stops at a non-finite loss.

  Args:
    codes: ``[batch, bits]`` fc8 outputs ``u_B`` (any float dtype; computed in float32).
    buffer: ``[N, bits]`` output buffer ``U`` (the project initialises it to zeros).
    pairwise_labels: ``[batch, N]`` rows ``S[B]`` of the ±1 pseudo labels, int8 (as stored by
      :func:`~unhash_jax.ops.snn_pseudo_labels`) or float.
    quantization_weight: λ (DDH: 15), ``>= 0``.
    quantization_per_bit: divide the quantization term by ``K`` (``λ·Σ_i ‖u_i − b_i‖²/K``) [project
      option, off in the release]. Each pairwise residual is already normalised by ``K``
      (``u_iᵀU_j/K``) while ``‖u_i − b_i‖²`` sums ``K`` bits, so with a fixed λ the quantization
      weighs 4× more at 64 bits than at 16; per bit, one λ means the same at every length.

  Returns:
    float32 scalar (float64 under x64 with float64 inputs).

  Raises:
    ValueError: on non-floating codes/buffer, labels that are neither signed-integer nor float,
      wrong ranks, empty axes, mismatched bits or a label shape other than ``[batch, N]``, or a
      negative λ.

  Examples:
    >>> u = jnp.array([[1.0, 1.0], [-1.0, -1.0]])
    >>> labels = jnp.array([[1, -1], [-1, 1]], jnp.int8)
    >>> float(ddh_loss(u, u, labels))  # u_iᵀu_j/K reproduces S, and u is binary: zero
    0.0
    >>> float(ddh_loss(0.5 * u, u, labels, quantization_weight=1.0))  # (4·0.25 + 4·0.25)/4
    0.5

  References:
    Song, He, Fan, Gao. Deep Discrete Hashing with Self-supervised Pairwise Labels. ECML-PKDD 2017
    (arXiv 1707.02112); docs/methods.md §2.5.
  """
  return ddh_loss_with_aux(codes, buffer, pairwise_labels, quantization_weight=quantization_weight,
                           quantization_per_bit=quantization_per_bit)[0]
