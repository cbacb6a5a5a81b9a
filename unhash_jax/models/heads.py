"""Hash heads and the encoder that puts a head on a backbone (Flax NNX)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from unhash_jax.dropout import dropout
from unhash_jax.models.backbones import Features, backbone_features, uses_dropout


class HashHead(nnx.Module):
  """``Linear(d → hidden) → ReLU → Linear(hidden → bits)``: logits ``[B, bits]`` (CIBHash §2.1)."""

  def __init__(self, in_features: int, bits: int, *, hidden: int = 1024, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(in_features, hidden, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, bits, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.relu(self.fc1(x)))


FEATURE_NORMS = ("none", "l2")


class HashEncoder(nnx.Module):
  """Backbone → optional dropout on the pooled feature → :class:`HashHead`.

  Args:
    backbone: a module returning :class:`Features`.
    bits: code length K.
    hidden: width of the head's hidden layer.
    frozen_backbone: stop gradients at the backbone output and run its BatchNorm in inference mode
      (its parameters are also kept out of the optimizer by the training code).
    feature_dropout: dropout rate on the backbone feature during training (the official CIBHash keeps
      VGG's fc7 dropout active while the backbone is frozen, docs/methods.md §2.1); drawn with
      :func:`unhash_jax.dropout.dropout` (16-bit uniforms, a quarter of ``nnx.Dropout``'s threefry
      evaluations).
    feature_norm: ``"none"``, or ``"l2"``: each pooled feature is scaled to norm ``√D`` (unit
      mean square per coordinate) before dropout and the head, in training and at test time.

  Keys: in training (``train=True``) a backbone with its own dropout (VGG-16's fc6/fc7,
  :func:`~unhash_jax.models.backbones.uses_dropout`) gets one half of ``jax.random.split(key)``,
  frozen or not, and ``feature_dropout`` the other; with any other backbone ``key`` goes to
  ``feature_dropout`` unchanged. At ``train=False`` nothing drops out.
  """

  def __init__(self, backbone: nnx.Module, bits: int, *, hidden: int = 1024,
               frozen_backbone: bool = False, feature_dropout: float = 0.0,
               feature_norm: str = "none", rngs: nnx.Rngs):
    if feature_norm not in FEATURE_NORMS:
      raise ValueError(f"HashEncoder: feature_norm must be one of {', '.join(FEATURE_NORMS)}, got "
                       f"{feature_norm!r}.")
    self.backbone = backbone
    self.head = HashHead(backbone.feature_dim, bits, hidden=hidden, rngs=rngs)
    self.frozen_backbone = frozen_backbone
    self.feature_dropout = float(feature_dropout)
    self.feature_norm = feature_norm

  def features(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None
               ) -> Features:
    """The backbone's :class:`Features`; ``key`` drives the backbone's own dropout, if any."""
    return backbone_features(self.backbone, x, train=train, frozen=self.frozen_backbone, key=key)

  def __call__(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None
               ) -> jax.Array:
    backbone_key = None
    if train and uses_dropout(self.backbone):
      if key is None:
        raise ValueError("HashEncoder: its backbone has dropout, so it needs a PRNG key when "
                         "train=True")
      backbone_key, key = jax.random.split(key)
    h = self.features(x, train=train, key=backbone_key).pooled
    if self.feature_norm == "l2":
      h = h * jax.lax.rsqrt(jnp.maximum(jnp.mean(h * h, axis=-1, keepdims=True), 1e-24))
    if self.feature_dropout > 0 and train:
      if key is None:
        raise ValueError("HashEncoder with feature_dropout > 0 needs a PRNG key when train=True")
      h = dropout(h, rate=self.feature_dropout, key=key)
    return self.head(h)
