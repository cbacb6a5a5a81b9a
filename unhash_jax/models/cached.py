"""The backbone of a model trained on a frozen-feature cache: its inputs are the cached features."""

from __future__ import annotations

from typing import Sequence

import jax
from flax import nnx

from unhash_jax.models.backbones import Features


class CachedFeatures(nnx.Module):
  """No parameters: pooled features ``[B, D]`` or patch tokens ``[B, P, D]`` are passed through.

  Pooled inputs become ``Features(x, x[:, None])``; token inputs ``Features(mean_p x, x)`` (the
  pooled feature of MobileNetV2/ResNet is the mean of their final map's positions, so a model sees
  the same pooled feature either way). The frozen network ran when the cache was built
  (:mod:`unhash_jax.data.feature_cache`).
  """

  def __init__(self, input_shape: Sequence[int], *, rngs: nnx.Rngs | None = None):
    del rngs
    if len(input_shape) not in (1, 2):
      raise ValueError(f"cached features are [D] or [P, D] per example, got {tuple(input_shape)}.")
    self.feature_dim = int(input_shape[-1])

  def __call__(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None
               ) -> Features:
    del train, key
    if x.ndim == 2:
      return Features(x, x[:, None, :])
    return Features(x.mean(axis=1), x)
