"""Flax NNX models: backbones (registry), hash heads and encoders, pretrained ImageNet weights."""

from unhash_jax.models.backbones import (BACKBONES, IN_BACKBONE, Features, backbone_features,
                                         make_backbone, register_backbone, uses_dropout)
from unhash_jax.models.heads import HashEncoder, HashHead
from unhash_jax.models.pretrained import load_pretrained, load_weights_into, weights_digest
from unhash_jax.models.torch_format import PretrainedWeightsError

__all__ = ["BACKBONES", "IN_BACKBONE", "Features", "backbone_features", "HashEncoder", "HashHead",
           "PretrainedWeightsError", "load_pretrained", "load_weights_into", "make_backbone",
           "register_backbone", "uses_dropout", "weights_digest"]
