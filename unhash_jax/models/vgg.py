"""VGG-16 (Simonyan & Zisserman, ICLR 2015; torchvision's ``vgg16``) in Flax NNX, NHWC.

Forward (torchvision, configuration "D"): 13 ``Conv3×3(pad 1) → ReLU`` in five stages of
64/128/256/512/512 channels, each followed by ``MaxPool 2×2``; ``AdaptiveAvgPool2d(7)``; flatten;
``fc6 = Linear(25088 → 4096) → ReLU → Dropout(0.5)``, ``fc7 = Linear(4096 → 4096) → ReLU →
Dropout(0.5)``; the ImageNet classifier ``fc8 = Linear(4096 → 1000)``.

:class:`Features`: ``pooled`` = fc7 after its ReLU (and its dropout when a key is passed), the
4096-d feature CIBHash uses (docs/methods.md §2.1); ``tokens`` = the last stage's map after its
max-pool, ``[B, h·w, 512]`` (7×7 = 49 tokens at 224 px).

Dropout: the official CIBHash keeps VGG's two dropouts active on its frozen backbone during
training, so they are applied iff ``__call__`` gets a ``key`` — independently of ``train`` (which
only BatchNorm would read; VGG-16 has none).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from unhash_jax.dropout import dropout
from unhash_jax.models.backbones import Features, _max_pool_2x2
from unhash_jax.models.layers import Conv2d, adaptive_avg_pool2d, linear
from unhash_jax.models.weight_table import (CONV, COPY, Transform, WeightEntry, WeightTable,
                                            linear_entries)

# Configuration "D": output channels per stage.
STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
POOL_SIZE = 7            # AdaptiveAvgPool2d((7, 7))
FC_DIM = 4096
NUM_CLASSES = 1000


class VGG16(nnx.Module):
  """torchvision's ``vgg16`` (no BatchNorm).

  Args:
    input_shape: ``(H, W, 3)``; any size of at least 32×32 (the adaptive pooling makes fc6's input
      7×7×512 whatever the map size).
    include_classifier: also build fc8 (1000 ImageNet classes) for :meth:`logits`.
    dropout_rate: rate of the dropouts after fc6 and fc7 (0.5 in torchvision); 0 removes them.
    dtype: computation dtype (parameters stay float32).
  """

  def __init__(self, input_shape: Sequence[int] = (224, 224, 3), *, include_classifier: bool = False,
               dropout_rate: float = 0.5, num_classes: int = NUM_CLASSES, dtype=jnp.float32,
               rngs: nnx.Rngs):
    h, w, c = (int(s) for s in input_shape)
    if min(h, w) < 32:
      raise ValueError(f"VGG16 needs images of at least 32x32 (five 2x2 max-pools), got {h}x{w}")
    convs = []
    for stage in STAGES:
      for width in stage:
        convs.append(Conv2d(c, width, 3, padding=1, use_bias=True, dtype=dtype, rngs=rngs))
        c = width
    self.convs = nnx.List(convs)
    fc = dict(std=0.01, dtype=dtype, rngs=rngs)   # torchvision: N(0, 0.01²), zero bias
    self.fc6 = linear(POOL_SIZE * POOL_SIZE * c, FC_DIM, **fc)
    self.fc7 = linear(FC_DIM, FC_DIM, **fc)
    self.fc8 = linear(FC_DIM, num_classes, **fc) if include_classifier else None
    self.dropout_rate = float(dropout_rate)
    self.feature_dim = FC_DIM
    self.token_dim = c   # 512: the tokens are the conv map, the pooled feature is fc7
    self.dtype = dtype

  def conv_features(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, 3]`` → the last stage's map after its max-pool, ``[B, H/32, W/32, 512]``."""
    h, i = x, 0
    for stage in STAGES:
      for _ in stage:
        h = jax.nn.relu(self.convs[i](h))
        i += 1
      h = _max_pool_2x2(h)   # nn.MaxPool2d(2, 2): floor mode, like the reshape-max
    return h

  def __call__(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None
               ) -> Features:
    """Images ``[B, H, W, 3]`` (ImageNet-normalised) → ``Features(fc7 [B, 4096], map [B, P, 512])``.

    ``train`` is unused (no BatchNorm); dropout runs iff ``key`` is given.
    """
    del train
    fmap = self.conv_features(x)
    b = fmap.shape[0]
    tokens = fmap.reshape(b, -1, fmap.shape[-1])
    flat = adaptive_avg_pool2d(fmap, POOL_SIZE).reshape(b, -1)   # NHWC order (see fc6's table)
    k6, k7 = jax.random.split(key) if key is not None else (None, None)
    h = self._dropout(jax.nn.relu(self.fc6(flat)), k6)
    h = self._dropout(jax.nn.relu(self.fc7(h)), k7)
    return Features(h, tokens)

  def _dropout(self, h: jax.Array, key: jax.Array | None) -> jax.Array:
    if key is None or self.dropout_rate == 0:
      return h
    return dropout(h, rate=self.dropout_rate, key=key)

  def logits(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
    """ImageNet logits ``[B, num_classes]`` (needs ``include_classifier=True``)."""
    if self.fc8 is None:
      raise ValueError("VGG16.logits needs the classifier: build it with include_classifier=True")
    return self.fc8(self(x, key=key).pooled)


def _fc6_transform(channels: int) -> Transform:
  """torchvision flattens the 7×7×C map in NCHW order (index ``c·49 + h·7 + w``); ours is NHWC
  (``(h·7 + w)·C + c``): permute fc6's input axis accordingly."""
  p = POOL_SIZE

  def apply(a: np.ndarray) -> np.ndarray:
    out = a.shape[0]
    return a.reshape(out, channels, p, p).transpose(2, 3, 1, 0).reshape(p * p * channels, out)

  return Transform("fc6 [out, C*7*7] (NCHW) -> [7*7*C, out] (NHWC)", apply, lambda s: (s[1], s[0]))


def torch_weight_table(model: VGG16, keys=None) -> WeightTable:
  """torchvision ``vgg16`` names: ``features.{i}`` convs, ``classifier.{0,3,6}`` fc6/fc7/fc8."""
  del keys
  entries, index, i = [], 0, 0
  for stage in STAGES:
    for _ in stage:
      entries += [WeightEntry(f"features.{index}.weight", ("convs", i, "kernel"), CONV),
                  WeightEntry(f"features.{index}.bias", ("convs", i, "bias"), COPY)]
      index += 2   # Conv2d, ReLU
      i += 1
    index += 1     # MaxPool2d
  entries += linear_entries("classifier.0", ("fc6",), transform=_fc6_transform(STAGES[-1][-1]))
  entries += linear_entries("classifier.3", ("fc7",))
  ignored = ()
  if model.fc8 is not None:
    entries += linear_entries("classifier.6", ("fc8",))
  else:
    ignored = ("classifier.6.",)
  return WeightTable(tuple(entries), ignored_prefixes=ignored)

