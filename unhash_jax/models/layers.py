"""NHWC layers with PyTorch's semantics, shared by the ImageNet backbones (vgg, resnet, mobilenet).

* :class:`Conv2d`: ``torch.nn.Conv2d`` on ``[B, H, W, C]`` with an HWIO kernel
  ``[kh, kw, in/groups, out]``. 1×1 convolutions are matrix products (XLA:CPU hands them to its
  fast matmul; a ``convolution`` op with a 1×1 kernel is not); depthwise ones
  (``groups == in == out``) use :func:`~unhash_jax.models.depthwise.depthwise_conv2d`.
* :class:`ConvBN`: convolution → BatchNorm (running statistics unless ``train``) → activation, with
  the option to fold the BatchNorm into the convolution for inference.
* :func:`max_pool` and :func:`adaptive_avg_pool2d`: ``nn.MaxPool2d`` and ``nn.AdaptiveAvgPool2d``.

Parameters are float32; ``dtype`` is the computation dtype (inputs and weights are cast to it).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from unhash_jax.models.depthwise import depthwise_conv2d

# torch.nn.BatchNorm2d's defaults: eps 1e-5; running = (1 - 0.1)·running + 0.1·batch, i.e. flax's
# momentum 0.9. (Flax updates the running variance with the biased batch variance, torch with the
# unbiased one: a factor n/(n-1) on the statistics when the backbone is trained, none at inference.)
BN_EPS = 1e-5
BN_MOMENTUM = 0.9

ACTIVATIONS = {
    None: lambda x: x,
    "relu": jax.nn.relu,
    "relu6": lambda x: jnp.clip(x, 0.0, 6.0),   # torch.nn.ReLU6 (hardtanh 0..6)
}


# Host-side initialisers. Built eagerly (as the trainer does), one ``jax.random`` draw per variable
# compiles one small XLA program per distinct shape: ~20 s for MobileNetV2's 158 variables on 2
# cores, more than its whole forward. These draw the same distributions with numpy, seeded from
# the variable's key (so still a function of ``rngs``), and fall back to ``jax.random`` under
# tracing (``nnx.eval_shape``, ``jit``), where the key has no value.


def host_normal(std: float | None = None, *, fan: str | None = None, gain: float = 1.0):
  """An initialiser ``(key, shape, dtype)`` of ``N(0, std²)``; with ``fan`` ("in"/"out"),
  ``std = sqrt(gain / fan)`` over HWIO/[in, out] kernels (torch's kaiming_normal_ for gain 2)."""

  def init(key, shape, dtype=jnp.float32):
    shape = tuple(int(d) for d in shape)
    sd = std
    if fan is not None:
      receptive = int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1
      n = shape[-2] if fan == "in" else shape[-1]
      sd = float(np.sqrt(gain / (receptive * n)))
    if isinstance(key, jax.core.Tracer):
      return jax.random.normal(key, shape, dtype) * sd
    seed = np.asarray(jax.random.key_data(key), np.uint32).ravel()
    draw = np.random.default_rng(seed).standard_normal(shape, np.float32) * np.float32(sd)
    return jnp.asarray(draw, dtype)

  return init


def host_constant(value: float):
  """An initialiser of the constant ``value`` (no XLA program per shape)."""

  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.asarray(np.full(tuple(int(d) for d in shape), value, np.float32), dtype)

  return init


def _kaiming_fan_out():
  """torchvision's ResNet/MobileNet conv init: ``kaiming_normal_(mode="fan_out", "relu")``."""
  return host_normal(fan="out", gain=2.0)


def linear(in_features: int, out_features: int, *, std: float | None = None, dtype=jnp.float32,
           rngs: nnx.Rngs) -> nnx.Linear:
  """``nnx.Linear`` with host-side initialisers: ``N(0, std²)`` weights (LeCun normal,
  ``std = 1/sqrt(in)``, when ``std`` is None) and zero biases."""
  kernel_init = host_normal(std) if std is not None else host_normal(fan="in")
  return nnx.Linear(in_features, out_features, kernel_init=kernel_init, bias_init=host_constant(0.0),
                    dtype=dtype, rngs=rngs)


def layer_norm(dim: int, *, epsilon: float, dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(dim, epsilon=epsilon, dtype=dtype, scale_init=host_constant(1.0),
                       bias_init=host_constant(0.0), rngs=rngs)


def batch_norm(dim: int, *, dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """torch's ``BatchNorm2d`` defaults. Two-pass batch variance (as torch): flax's default
  E[x²] − E[x]² loses float32 digits when |mean| ≫ std, e.g. over the few values per channel of a
  1×1 map in training mode."""
  bn = nnx.BatchNorm(dim, epsilon=BN_EPS, momentum=BN_MOMENTUM, dtype=dtype,
                     use_fast_variance=False, scale_init=host_constant(1.0),
                     bias_init=host_constant(0.0), rngs=rngs)
  return bn


class Conv2d(nnx.Module):
  """``torch.nn.Conv2d(in, out, k, stride, padding, groups, bias)`` on NHWC inputs.

  Args:
    in_channels, out_channels: channel counts.
    kernel_size: ``k`` (square).
    stride, padding: as torch's (symmetric zero padding).
    groups: 1 (dense) or ``in_channels == out_channels`` (depthwise); others are not needed here.
    use_bias: a per-output-channel bias.
    depthwise_impl: the :func:`depthwise_conv2d` formulation (``"auto"``, ``"shifted"``, ``"lax"``).
    dtype: computation dtype.
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
               padding: int = 0, groups: int = 1, use_bias: bool = False,
               depthwise_impl: str = "auto", dtype=jnp.float32, rngs: nnx.Rngs):
    if groups not in (1, in_channels) or (groups > 1 and out_channels != in_channels):
      raise ValueError(f"Conv2d: groups={groups} with {in_channels} -> {out_channels} channels is "
                       "neither dense nor depthwise")
    k = int(kernel_size)
    shape = (k, k, in_channels // groups, out_channels)
    self.kernel = nnx.Param(_kaiming_fan_out()(rngs.params(), shape, jnp.float32))
    self.bias = (nnx.Param(host_constant(0.0)(None, (out_channels,))) if use_bias else None)
    self.kernel_size, self.stride, self.padding, self.groups = k, int(stride), int(padding), groups
    self.depthwise_impl, self.dtype = depthwise_impl, dtype

  def __call__(self, x: jax.Array, *, kernel: jax.Array | None = None,
               bias: jax.Array | None = None) -> jax.Array:
    """``x`` ``[B, H, W, in]`` → ``[B, H', W', out]``; ``kernel``/``bias`` replace the parameters
    (BatchNorm folding)."""
    kernel = (self.kernel[...] if kernel is None else kernel).astype(self.dtype)
    if bias is None and self.bias is not None:
      bias = self.bias[...]
    x = x.astype(self.dtype)
    k, s, p = self.kernel_size, self.stride, self.padding
    if self.groups > 1:
      y = depthwise_conv2d(x, kernel[:, :, 0, :], stride=s, padding=p, impl=self.depthwise_impl)
    elif k == 1 and p == 0:
      y = (x[:, ::s, ::s] if s > 1 else x) @ kernel[0, 0]
    else:
      y = lax.conv_general_dilated(x, kernel, (s, s), ((p, p), (p, p)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y if bias is None else y + bias.astype(self.dtype)


class ConvBN(nnx.Module):
  """``Conv2d(bias=False) → BatchNorm2d → activation`` (torchvision's ``Conv2dNormActivation``).

  Args:
    activation: ``None``, ``"relu"`` or ``"relu6"``.
    fold_bn: at inference (``train=False``) fold the BatchNorm into the convolution,
      ``conv(x, k·s) + (β − μ·s)`` with ``s = γ/√(σ² + eps)``: the same affine map with one
      elementwise pass fewer. The parameters stay unfolded (training and checkpoints see
      ``kernel``, ``scale``, ``bias``, ``mean``, ``var``).
    Other arguments as :class:`Conv2d`.
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
               padding: int | None = None, groups: int = 1, activation: str | None = "relu",
               fold_bn: bool = False, depthwise_impl: str = "auto", dtype=jnp.float32,
               rngs: nnx.Rngs):
    if activation not in ACTIVATIONS:
      raise ValueError(f"ConvBN: unknown activation {activation!r}; valid choices: "
                       f"{', '.join(map(str, ACTIVATIONS))}")
    padding = (kernel_size - 1) // 2 if padding is None else padding
    self.conv = Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                       groups=groups, depthwise_impl=depthwise_impl, dtype=dtype, rngs=rngs)
    self.bn = batch_norm(out_channels, dtype=dtype, rngs=rngs)
    self.activation, self.fold_bn = activation, fold_bn

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    if self.fold_bn and not train:
      s = self.bn.scale[...] * lax.rsqrt(self.bn.var[...] + self.bn.epsilon)
      y = self.conv(x, kernel=self.conv.kernel[...] * s,
                    bias=self.bn.bias[...] - self.bn.mean[...] * s)
    else:
      y = self.bn(self.conv(x), use_running_average=not train)
    return ACTIVATIONS[self.activation](y)


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
  """``torch.nn.MaxPool2d(window, stride, padding)`` (floor mode) on ``[B, H, W, C]``; padding is
  −∞ as in torch."""
  p = int(padding)
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1),
                           ((0, 0), (p, p), (p, p), (0, 0)))


def _adaptive_matrix(size_in: int, size_out: int) -> np.ndarray:
  """``[out, in]`` averaging weights of torch's adaptive pooling along one axis: output ``i``
  averages inputs ``floor(i·in/out) … ceil((i+1)·in/out) − 1``."""
  m = np.zeros((size_out, size_in), np.float32)
  for i in range(size_out):
    lo = (i * size_in) // size_out
    hi = -(-((i + 1) * size_in) // size_out)
    m[i, lo:hi] = 1.0 / (hi - lo)
  return m


def adaptive_avg_pool2d(x: jax.Array, output_size: int | Sequence[int]) -> jax.Array:
  """``torch.nn.AdaptiveAvgPool2d(output_size)`` on ``[B, H, W, C]`` → ``[B, oh, ow, C]``, for any
  input size (bins overlap when the input is not a multiple of the output, as in torch).

  The identity when the input already has the output size (VGG-16 at 224 px: 7×7 → 7×7)."""
  oh, ow = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
  _, h, w, _ = x.shape
  if (h, w) == (oh, ow):
    return x
  mh = jnp.asarray(_adaptive_matrix(h, oh), x.dtype)
  mw = jnp.asarray(_adaptive_matrix(w, ow), x.dtype)
  return jnp.einsum("ih,bhwc,jw->bijc", mh, x, mw, precision=lax.Precision.HIGHEST)
