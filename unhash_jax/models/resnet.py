"""ResNet-50 (He et al., CVPR 2016; torchvision's ``resnet50``, "v1.5") in Flax NNX, NHWC.

Forward (torchvision): ``Conv7×7/2 → BN → ReLU → MaxPool3×3/2``; four stages of bottleneck blocks
(3, 4, 6, 3 blocks; widths 64/128/256/512, outputs 4× wider) where each block is
``Conv1×1 → BN → ReLU → Conv3×3/s → BN → ReLU → Conv1×1 → BN`` plus the identity (or a
``Conv1×1/s → BN`` projection in a stage's first block), then ReLU. "v1.5": the stride of a
stage's first block sits in its 3×3 convolution, not in the first 1×1 (as in the original paper).
BatchNorm eps 1e-5.

:class:`Features`: ``pooled`` = the global average of the final map ``[B, 2048]`` (what
torchvision's ``fc`` sees); ``tokens`` = the final map ``[B, h·w, 2048]`` (7×7 = 49 at 224 px).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from unhash_jax.models.backbones import Features
from unhash_jax.models.layers import ConvBN, linear, max_pool
from unhash_jax.models.weight_table import WeightTable, conv_bn_entries, linear_entries

RESNET50_BLOCKS = (3, 4, 6, 3)
WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
NUM_CLASSES = 1000


class Bottleneck(nnx.Module):
  """torchvision's ``Bottleneck`` (expansion 4, stride in the 3×3 convolution)."""

  def __init__(self, in_channels: int, width: int, stride: int, *, fold_bn: bool, dtype,
               rngs: nnx.Rngs):
    out = width * EXPANSION
    kw = dict(fold_bn=fold_bn, dtype=dtype, rngs=rngs)
    self.conv1 = ConvBN(in_channels, width, 1, **kw)
    self.conv2 = ConvBN(width, width, 3, stride=stride, **kw)
    self.conv3 = ConvBN(width, out, 1, activation=None, **kw)
    self.downsample = (ConvBN(in_channels, out, 1, stride=stride, activation=None, **kw)
                       if stride != 1 or in_channels != out else None)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = self.conv3(self.conv2(self.conv1(x, train=train), train=train), train=train)
    identity = x if self.downsample is None else self.downsample(x, train=train)
    return jax.nn.relu(y + identity)


class ResNet50(nnx.Module):
  """torchvision's ``resnet50`` (``blocks`` also gives ResNet-101 ``(3, 4, 23, 3)`` and -152).

  Args:
    input_shape: ``(H, W, 3)``, any size of at least 32×32.
    include_classifier: also build ``fc`` (1000 ImageNet classes) for :meth:`logits`.
    blocks: bottleneck blocks per stage.
    fold_bn: fold each BatchNorm into its convolution at inference (see
      :class:`~unhash_jax.models.layers.ConvBN`).
    dtype: computation dtype (parameters stay float32).
  """

  def __init__(self, input_shape: Sequence[int] = (224, 224, 3), *, include_classifier: bool = False,
               blocks: Sequence[int] = RESNET50_BLOCKS, num_classes: int = NUM_CLASSES,
               fold_bn: bool = False, dtype=jnp.float32, rngs: nnx.Rngs):
    h, w, c = (int(s) for s in input_shape)
    if min(h, w) < 32:
      raise ValueError(f"ResNet50 needs images of at least 32x32 (total stride 32), got {h}x{w}")
    kw = dict(fold_bn=fold_bn, dtype=dtype, rngs=rngs)
    self.stem = ConvBN(c, 64, 7, stride=2, padding=3, **kw)
    stages, channels = [], 64
    for i, (n, width) in enumerate(zip(blocks, WIDTHS)):
      stage = []
      for j in range(n):
        stage.append(Bottleneck(channels, width, 2 if (j == 0 and i > 0) else 1, **kw))
        channels = width * EXPANSION
      stages.append(nnx.List(stage))
    self.stages = nnx.List(stages)
    self.blocks = tuple(int(n) for n in blocks)
    self.fc = linear(channels, num_classes, dtype=dtype, rngs=rngs) if include_classifier else None
    self.feature_dim = self.token_dim = channels

  def __call__(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None
               ) -> Features:
    """Images ``[B, H, W, 3]`` (ImageNet-normalised) → ``Features([B, 2048], [B, P, 2048])``.

    ``train`` runs BatchNorm on batch statistics (and updates the running ones); ``key`` is unused
    (no dropout).
    """
    del key
    h = max_pool(self.stem(x, train=train), 3, 2, 1)
    for stage in self.stages:
      for block in stage:
        h = block(h, train=train)
    tokens = h.reshape(h.shape[0], -1, h.shape[-1])
    return Features(tokens.mean(axis=1), tokens)

  def logits(self, x: jax.Array) -> jax.Array:
    """ImageNet logits ``[B, num_classes]`` (needs ``include_classifier=True``)."""
    if self.fc is None:
      raise ValueError("ResNet50.logits needs the classifier: build it with include_classifier=True")
    return self.fc(self(x).pooled)


def torch_weight_table(model: ResNet50, keys=None) -> WeightTable:
  """torchvision names: ``conv1``/``bn1``, ``layer{1-4}.{j}.conv{1,2,3}``/``bn{1,2,3}``,
  ``.downsample.{0,1}``, ``fc``."""
  del keys
  entries = conv_bn_entries("conv1", "bn1", ("stem",))
  for i, n in enumerate(model.blocks):
    for j in range(n):
      t, path = f"layer{i + 1}.{j}", ("stages", i, j)
      for k in (1, 2, 3):
        entries += conv_bn_entries(f"{t}.conv{k}", f"{t}.bn{k}", (*path, f"conv{k}"))
      if model.stages[i][j].downsample is not None:
        entries += conv_bn_entries(f"{t}.downsample.0", f"{t}.downsample.1", (*path, "downsample"))
  ignored = ()
  if model.fc is not None:
    entries += linear_entries("fc", ("fc",))
  else:
    ignored = ("fc.",)
  return WeightTable(tuple(entries), ignored_prefixes=ignored)
