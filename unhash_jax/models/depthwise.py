"""Depthwise 2-D convolution (one filter per channel), with a CPU formulation that XLA runs fast.

XLA:CPU lowers a grouped convolution (``lax.conv_general_dilated(..., feature_group_count=C)``) to
a loop that is 20–100× slower than PyTorch's oneDNN kernel on the 3×3 depthwise layers of
MobileNetV2 (2-core AMD EPYC with AVX-512, batch 32, NHWC float32; experiments/bench_backbones.py
has the current figures). Written instead as ``kh·kw`` shifted multiply-adds over the zero-padded
input (``Σ_ij x_pad[:, i + s·h, j + s·w, :] · k[i, j, :]``), the whole convolution is one
elementwise XLA fusion that reads the input in place and vectorises over the channel axis; it is
the same sum, only in another order (results agree to ~1e-6 relative in float32). Autodiff of the
slices and products gives the input and kernel gradients.

On GPU and TPU the native grouped convolution (cuDNN, the TPU convolution unit) is the fast one,
so :func:`depthwise_conv2d` picks the formulation by platform (``impl="auto"``), and the caller can
force either.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("auto", "shifted", "lax")


def _pairs(padding: int | Sequence[int] | Sequence[Sequence[int]]) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  padding = tuple(padding)
  if len(padding) == 2 and all(isinstance(p, int) for p in padding):
    return ((padding[0], padding[0]), (padding[1], padding[1]))
  if len(padding) == 2 and all(len(p) == 2 for p in padding):
    return tuple((int(a), int(b)) for a, b in padding)
  raise ValueError(f"depthwise_conv2d: padding must be an int, (ph, pw) or ((top, bottom), (left, "
                   f"right)), got {padding!r}")


def resolve_impl(impl: str) -> str:
  """``"shifted"`` on CPU and ``"lax"`` elsewhere for ``"auto"``; other values are checked and
  returned. The platform is ``jax.default_backend()`` (under ``jit`` the input's device is not
  known while tracing)."""
  if impl not in IMPLS:
    raise ValueError(f"unknown depthwise implementation {impl!r}; valid choices: {', '.join(IMPLS)}.")
  if impl == "auto":
    return "shifted" if jax.default_backend() == "cpu" else "lax"
  return impl


def depthwise_conv2d_lax(x: jax.Array, kernel: jax.Array, *, stride: int = 1,
                         padding=0) -> jax.Array:
  """The reference: XLA's grouped convolution, ``feature_group_count = C``."""
  c = x.shape[-1]
  return lax.conv_general_dilated(
      x, kernel[:, :, None, :], (stride, stride), _pairs(padding),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)


def depthwise_conv2d_shifted(x: jax.Array, kernel: jax.Array, *, stride: int = 1,
                             padding=0) -> jax.Array:
  """``Σ_ij x_pad[:, i + s·h, j + s·w, :] · kernel[i, j, :]`` as ``kh·kw`` strided slices."""
  b, h, w, c = x.shape
  kh, kw, _ = kernel.shape
  (pt, pb), (pl, pr) = _pairs(padding)
  ho = (h + pt + pb - kh) // stride + 1
  wo = (w + pl + pr - kw) // stride + 1
  if ho < 1 or wo < 1:
    raise ValueError(f"depthwise_conv2d: a {kh}x{kw} kernel does not fit a {h}x{w} input with "
                     f"padding {padding!r}")
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  out = None
  for i in range(kh):
    for j in range(kw):
      tap = lax.slice(xp, (0, i, j, 0), (b, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c),
                      (1, stride, stride, 1))
      term = tap * kernel[i, j]
      out = term if out is None else out + term
  return out


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, *, stride: int = 1, padding=0,
                     impl: str = "auto") -> jax.Array:
  """Depthwise convolution: channel ``c`` of the output is channel ``c`` of ``x`` correlated with
  ``kernel[:, :, c]`` (PyTorch's ``Conv2d(C, C, k, groups=C)``, no bias).

  Args:
    x: ``[batch, height, width, channels]``.
    kernel: ``[kh, kw, channels]``.
    stride: the same stride along height and width.
    padding: zero padding, an int, ``(ph, pw)`` or ``((top, bottom), (left, right))``.
    impl: ``"auto"`` (``"shifted"`` on CPU, ``"lax"`` on GPU/TPU), ``"shifted"`` or ``"lax"``.

  Returns:
    ``[batch, (H + pads - kh) // stride + 1, (W + pads - kw) // stride + 1, channels]``.
  """
  if x.ndim != 4 or kernel.ndim != 3 or kernel.shape[-1] != x.shape[-1]:
    raise ValueError(f"depthwise_conv2d: expected x [B, H, W, C] and kernel [kh, kw, C], got "
                     f"{x.shape} and {kernel.shape}")
  if resolve_impl(impl) == "lax":
    return depthwise_conv2d_lax(x, kernel, stride=stride, padding=padding)
  return depthwise_conv2d_shifted(x, kernel, stride=stride, padding=padding)
