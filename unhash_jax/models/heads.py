"""Hash heads and the encoder that puts a head on a backbone (Flax NNX)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from unhash_jax.models.backbones import Features, backbone_features, uses_dropout
from unhash_jax.models.feature_input import FEATURE_NORMS, FeatureInput


class HashHead(nnx.Module):
  """``Linear(d → hidden) → ReLU → Linear(hidden → bits)``: logits ``[B, bits]`` (CIBHash §2.1)."""

  def __init__(self, in_features: int, bits: int, *, hidden: int = 1024, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(in_features, hidden, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, bits, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.relu(self.fc1(x)))


__all__ = ["FEATURE_NORMS", "HashEncoder", "HashHead"]


class HashEncoder(nnx.Module):
  """Backbone → :class:`FeatureInput` (normalisation, dropout) on the pooled feature → :class:`HashHead`.

  Args:
    backbone: a module returning :class:`Features`.
    bits: code length K.
    hidden: width of the head's hidden layer.
    frozen_backbone: stop gradients at the backbone output and run its BatchNorm in inference mode
      (its parameters are also kept out of the optimizer by the training code).
    feature_dropout: dropout rate on the backbone feature during training (the official CIBHash keeps
      VGG's fc7 dropout active while the backbone is frozen, docs/methods.md §2.1).
    feature_norm: ``"none"`` or ``"l2"`` (:class:`FeatureInput`), applied
      before dropout and the head, in training and at test time.

  Keys: in training (``train=True``) a backbone with its own dropout (VGG-16's fc6/fc7,
  :func:`~unhash_jax.models.backbones.uses_dropout`) gets one half of ``jax.random.split(key)``,
  frozen or not, and ``feature_dropout`` the other; with any other backbone ``key`` goes to
  ``feature_dropout`` unchanged. At ``train=False`` nothing drops out.
  """

  def __init__(self, backbone: nnx.Module, bits: int, *, hidden: int = 1024,
               frozen_backbone: bool = False, feature_dropout: float = 0.0,
               feature_norm: str = "none", rngs: nnx.Rngs):
    self.backbone = backbone
    self.feature_input = FeatureInput(backbone.feature_dim, norm=feature_norm,
                                      dropout_rate=feature_dropout)
    self.head = HashHead(backbone.feature_dim, bits, hidden=hidden, rngs=rngs)
    self.frozen_backbone = frozen_backbone

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
    return self.head(self.feature_input(h, train=train, key=key))
