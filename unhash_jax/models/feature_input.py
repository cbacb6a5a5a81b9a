"""What a hash head does to the pooled backbone feature before its first layer: normalisation and
dropout, one module shared by every head that reads the pooled feature (CIBHash, NSH, HARR, FDBH;
WCH uses its dropout only, after the LayerNorm of its mean token).

On a frozen backbone these are the only places where the method sees the feature's scale and noise:
the official CIBHash keeps VGG-16's fc7 dropout active while the backbone is frozen (Qiu et al.,
IJCAI 2021), which a cached feature can only stand in for with dropout on the feature itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from unhash_jax.dropout import dropout

FEATURE_NORMS = ("none", "l2")


class FeatureInput(nnx.Module):
  """``[B, D]`` pooled feature → (optional) normalisation → (optional, training only) dropout.

  No parameters: ``key`` drives the dropout (needed with ``train=True`` and a rate above 0).

  Args:
    dim: D, the feature width.
    norm: ``"none"``, or ``"l2"``: each feature is scaled to norm ``√D`` (unit mean square per
      coordinate), in training and at test time. (Standardising each coordinate over the batch
      first, an ``nnx.BatchNorm`` without affine, was tried and lost 0.02–0.05 validation mAP for
      CIBHash, NSH and FDBH on cifar10-i: experiments/configs/cifar10_frozen.py.)
    dropout_rate: dropout on the (normalised) feature in training, drawn with
      :func:`unhash_jax.dropout.dropout` (16-bit uniforms, a quarter of ``nnx.Dropout``'s threefry
      evaluations).
  """

  def __init__(self, dim: int, *, norm: str = "none", dropout_rate: float = 0.0):
    if norm not in FEATURE_NORMS:
      raise ValueError(f"feature_norm must be one of {', '.join(FEATURE_NORMS)}, got {norm!r}.")
    if not 0.0 <= float(dropout_rate) < 1.0:
      raise ValueError(f"feature_dropout must lie in [0, 1), got {dropout_rate!r}.")
    self.dim = int(dim)
    self.norm = norm
    self.dropout_rate = float(dropout_rate)

  def __call__(self, h: jax.Array, *, train: bool = False, key: jax.Array | None = None
               ) -> jax.Array:
    if self.norm == "l2":
      h = h * jax.lax.rsqrt(jnp.maximum(jnp.mean(h * h, axis=-1, keepdims=True), 1e-24))
    if self.dropout_rate > 0 and train:
      if key is None:
        raise ValueError("feature_dropout > 0 needs a PRNG key when train=True")
      h = dropout(h, rate=self.dropout_rate, key=key)
    return h
