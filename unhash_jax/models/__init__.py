"""Flax NNX models: backbones (registry), hash heads and encoders."""

from unhash_jax.models.backbones import (BACKBONES, IN_BACKBONE, Features, backbone_features,
                                         make_backbone, register_backbone)
from unhash_jax.models.heads import HashEncoder, HashHead

__all__ = ["BACKBONES", "IN_BACKBONE", "Features", "backbone_features", "HashEncoder", "HashHead",
           "make_backbone", "register_backbone"]
