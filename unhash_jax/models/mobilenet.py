"""MobileNetV2 (Sandler et al., CVPR 2018; torchvision's ``mobilenet_v2``) in Flax NNX, NHWC.

Forward (torchvision, width multiplier 1): ``Conv3×3/2 (32) → BN → ReLU6``; 17 inverted-residual
blocks ``[Conv1×1 expand ×t → BN → ReLU6] → depthwise Conv3×3/s → BN → ReLU6 → Conv1×1 project →
BN`` (+ the input when ``s = 1`` and the widths match), with (t, c, n, s) = (1, 16, 1, 1),
(6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1);
``Conv1×1 (1280) → BN → ReLU6``; the classifier ``Dropout(0.2) → Linear(1280 → 1000)`` on the
global average. BatchNorm eps 1e-5.

The depthwise convolutions use :func:`~unhash_jax.models.depthwise.depthwise_conv2d` (shifted
multiply-adds on CPU, where XLA's grouped convolution is 20–100× slower; XLA's own elsewhere).

:class:`Features`: ``pooled`` = the mean of the final 1280-channel map (what the classifier sees);
``tokens`` = that map ``[B, h·w, 1280]`` (7×7 = 49 at 224 px).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from unhash_jax.models.backbones import Features
from unhash_jax.models.layers import ConvBN, linear
from unhash_jax.models.weight_table import WeightTable, conv_bn_entries, linear_entries

# (expand ratio t, output channels c, repeats n, first stride s): torchvision's inverted_residual_setting.
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1))
NUM_CLASSES = 1000


def make_divisible(v: float, divisor: int = 8) -> int:
  """torchvision's ``_make_divisible``: round to a multiple of ``divisor``, never 10 % below ``v``."""
  new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
  if new_v < 0.9 * v:
    new_v += divisor
  return new_v


class InvertedResidual(nnx.Module):
  """torchvision's ``InvertedResidual``: expand (if t > 1) → depthwise → linear projection."""

  def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int, *,
               fold_bn: bool, depthwise_impl: str, dtype, rngs: nnx.Rngs):
    hidden = int(round(in_channels * expand_ratio))
    kw = dict(fold_bn=fold_bn, dtype=dtype, rngs=rngs)
    self.expand = (ConvBN(in_channels, hidden, 1, activation="relu6", **kw)
                   if expand_ratio != 1 else None)
    self.depthwise = ConvBN(hidden, hidden, 3, stride=stride, groups=hidden, activation="relu6",
                            depthwise_impl=depthwise_impl, **kw)
    self.project = ConvBN(hidden, out_channels, 1, activation=None, **kw)
    self.use_residual = stride == 1 and in_channels == out_channels

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    h = x if self.expand is None else self.expand(x, train=train)
    h = self.project(self.depthwise(h, train=train), train=train)
    return x + h if self.use_residual else h


class MobileNetV2(nnx.Module):
  """torchvision's ``mobilenet_v2``.

  Args:
    input_shape: ``(H, W, 3)``, any size of at least 32×32.
    include_classifier: also build the 1000-class ``classifier`` for :meth:`logits`.
    width_mult: torchvision's width multiplier (1.0 for the ImageNet weights).
    fold_bn: fold each BatchNorm into its convolution at inference
      (:class:`~unhash_jax.models.layers.ConvBN`).
    depthwise_impl: ``"auto"``, ``"shifted"`` or ``"lax"`` (:mod:`unhash_jax.models.depthwise`).
    dtype: computation dtype (parameters stay float32).
  """

  def __init__(self, input_shape: Sequence[int] = (224, 224, 3), *, include_classifier: bool = False,
               width_mult: float = 1.0, num_classes: int = NUM_CLASSES, fold_bn: bool = False,
               depthwise_impl: str = "auto", dtype=jnp.float32, rngs: nnx.Rngs):
    h, w, c = (int(s) for s in input_shape)
    if min(h, w) < 32:
      raise ValueError(f"MobileNetV2 needs images of at least 32x32 (total stride 32), got {h}x{w}")
    kw = dict(fold_bn=fold_bn, dtype=dtype, rngs=rngs)
    channels = make_divisible(32 * width_mult)
    last = make_divisible(1280 * max(1.0, width_mult))
    self.stem = ConvBN(c, channels, 3, stride=2, activation="relu6", **kw)
    blocks = []
    for t, cout, n, s in SETTING:
      cout = make_divisible(cout * width_mult)
      for i in range(n):
        blocks.append(InvertedResidual(channels, cout, s if i == 0 else 1, t,
                                       depthwise_impl=depthwise_impl, **kw))
        channels = cout
    self.blocks = nnx.List(blocks)
    self.head_conv = ConvBN(channels, last, 1, activation="relu6", **kw)
    self.classifier = (linear(last, num_classes, std=0.01, dtype=dtype, rngs=rngs)
                       if include_classifier else None)
    self.feature_dim = self.token_dim = last

  def __call__(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None
               ) -> Features:
    """Images ``[B, H, W, 3]`` (ImageNet-normalised) → ``Features([B, 1280], [B, P, 1280])``.

    ``train`` runs BatchNorm on batch statistics; ``key`` is unused (the classifier's dropout is
    not part of the features).
    """
    del key
    h = self.stem(x, train=train)
    for block in self.blocks:
      h = block(h, train=train)
    h = self.head_conv(h, train=train)
    tokens = h.reshape(h.shape[0], -1, h.shape[-1])
    return Features(tokens.mean(axis=1), tokens)

  def logits(self, x: jax.Array) -> jax.Array:
    """ImageNet logits ``[B, num_classes]`` (needs ``include_classifier=True``; eval-mode dropout
    is the identity)."""
    if self.classifier is None:
      raise ValueError("MobileNetV2.logits needs the classifier: build it with "
                       "include_classifier=True")
    return self.classifier(self(x).pooled)


def torch_weight_table(model: MobileNetV2, keys=None) -> WeightTable:
  """torchvision names: ``features.0.{0,1}`` stem, ``features.{1-17}.conv.*`` blocks,
  ``features.18.{0,1}``, ``classifier.1``."""
  del keys
  entries = conv_bn_entries("features.0.0", "features.0.1", ("stem",))
  for i, block in enumerate(model.blocks):
    t, path = f"features.{i + 1}.conv", ("blocks", i)
    j = 0
    if block.expand is not None:
      entries += conv_bn_entries(f"{t}.0.0", f"{t}.0.1", (*path, "expand"))
      j = 1
    entries += conv_bn_entries(f"{t}.{j}.0", f"{t}.{j}.1", (*path, "depthwise"))
    entries += conv_bn_entries(f"{t}.{j + 1}", f"{t}.{j + 2}", (*path, "project"))
  n = len(model.blocks) + 1
  entries += conv_bn_entries(f"features.{n}.0", f"features.{n}.1", ("head_conv",))
  ignored = ()
  if model.classifier is not None:
    entries += linear_entries("classifier.1", ("classifier",))
  else:
    ignored = ("classifier.",)
  return WeightTable(tuple(entries), ignored_prefixes=ignored)
