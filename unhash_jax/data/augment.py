"""On-device image augmentation: jit-compiled, vmapped, one PRNG key per example.

Images travel as ``uint8[batch, height, width, channels]`` (``channels`` 1 or 3) and are augmented on
the accelerator. Every random draw comes from the example's own key
(``jax.random.split(key, batch)``), so the same key always gives the same view and different keys give
independent views. A :class:`Recipe` is a frozen, hashable dataclass: it is a *static* argument of
``jax.jit``, and every stage whose recipe field disables it is removed at trace time.

Pipeline of one example (pixels as float32 in [0, 1] throughout, normalised only at the very end):

1. **Geometry, one resampling.** Optional central square (``center_square``: torchvision
   ``Resize(s) → CenterCrop(s)``), random resized crop (``crop_scale``/``crop_ratio``), optional
   random affine (``rotation_deg``/``affine_scale``/``translate``), horizontal flip (``flip_prob``)
   and the resize to ``out_size × out_size`` are composed into *one* map from output to input
   coordinates and sampled once:

   * without rotation/affine (the CIBHash/MoCo/WCH recipes) the map is axis-aligned and separable: two
     small per-example interpolation matrices ``[out, H]`` and ``[out, W]`` (bilinear, half-pixel
     centres, PIL/torchvision ``antialias=True`` triangle filter widened by the scale when shrinking)
     contracted with the image — matmuls, fast on CPU and TPU;
   * with rotation/affine (the digits recipe) a bilinear gather (zero fill outside the image, like
     torchvision's ``RandomAffine(fill=0)``; no antialiasing, so keep shrink factors small).
2. **Colour** at output resolution, as torchvision does: ``ColorJitter`` applied with ``jitter_prob``
   (brightness, contrast, saturation, hue factors, random order per example), ``RandomGrayscale``,
   ``GaussianBlur`` with ``blur_prob``.
3. **Grey-digit intensity ops** (project additions): intensity scaling, additive Gaussian pixel noise,
   both clipped to [0, 1]; then ``RandomErasing`` (fills the rectangle with ``erase_value``, in pixel
   units, before normalisation).
4. **Normalisation** ``(x − mean) / std``.

Semantics followed (torchvision ``transforms`` v1 on PIL images, the form the official CIBHash, MoCo-v2
and WCH code use):

* ``RandomResizedCrop``: 10 attempts of area ``∈ U(scale)·H·W``, log-uniform aspect in ``ratio``,
  integer ``w = round(√(area·r))``, ``h = round(√(area/r))``, uniform integer offset; first valid
  attempt wins, otherwise the ratio-clamped central crop.
* ``ColorJitter(b, c, s, h)``: factors ``U(max(0, 1−b), 1+b)`` etc., hue shift ``U(−h, h)`` (turns,
  ``h ≤ 0.5``); brightness ``clip(f·x)``; contrast ``clip(f·x + (1−f)·mean(gray(x)))``; saturation
  ``clip(f·x + (1−f)·gray(x))``; hue rotates H of HSV by the shift (mod 1). The four ops run in a
  random order per example (``jitter_random_order=True``, torchvision's ``randperm(4)``).
  Saturation, hue and grayscale are no-ops on one-channel images (torchvision does the same).
* Grayscale uses ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B`` (PIL ``convert("L")``).
* ``GaussianBlur(kernel, sigma=(lo, hi))``: ``σ ~ U(lo, hi)``, sampled Gaussian kernel of
  ``blur_kernel`` taps normalised to 1, separable, reflect padding. MoCo v2 and WCH blur with PIL's
  ``GaussianBlur(radius=σ)`` (a near-exact Gaussian of std σ): their presets use 13 taps (±3σ at
  σ = 2); CIBHash uses torchvision's 3-tap kernel.
* ``RandomErasing(p, scale, ratio)``: 10 attempts, first one with ``h < H`` and ``w < W`` wins.

Deviations (documented, deliberate): translations are continuous (torchvision rounds them to whole
pixels) and the affine path interpolates bilinearly (torchvision ``RandomAffine`` defaults to nearest);
horizontal flip is applied to the crop (WCH flips last, which has the same distribution).

Example:
  >>> import jax, jax.numpy as jnp
  >>> images = jnp.zeros((4, 32, 32, 3), jnp.uint8)
  >>> v1, v2 = two_views(images, jax.random.key(0), get_recipe("cibhash"), out_size=64)
  >>> v1.shape, v1.dtype
  ((4, 64, 64, 3), dtype('float32'))
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# scikit-learn's 1,797 8x8 digits scaled to [0, 1] (pixel / 16): mean 0.3053, std 0.3760.
DIGITS_MEAN = (0.305,)
DIGITS_STD = (0.376,)
# ITU-R 601-2 luma, as PIL's convert("L") (torchvision's tensor path uses 0.2989).
GRAY_WEIGHTS = (0.299, 0.587, 0.114)

_ATTEMPTS = 10  # torchvision's RandomResizedCrop / RandomErasing retry count.

# Every example draws ONE vector of uniforms (a single threefry call, which keeps compile time low) and
# each stage reads its own fixed slice, so enabling one stage never changes another stage's draws.
_U_CROP = slice(0, 4 * _ATTEMPTS)     # area, log-ratio, top, left (10 attempts each)
_U_FLIP = 40
_U_ROTATE, _U_ZOOM, _U_SHIFT = 41, 42, slice(43, 45)
_U_JITTER_APPLY, _U_JITTER_FACTORS, _U_JITTER_ORDER = 45, slice(46, 50), slice(50, 54)
_U_GRAY = 54
_U_BLUR_APPLY, _U_BLUR_SIGMA = 55, 56
_U_INTENSITY = 57
_U_ERASE_APPLY, _U_ERASE = 58, slice(59, 59 + 4 * _ATTEMPTS)
_NUM_UNIFORMS = 59 + 4 * _ATTEMPTS


def _lerp(u, lo, hi):
  """Maps uniforms in [0, 1) to [lo, hi)."""
  return lo + (hi - lo) * u


def _pair(name, value, *, lo=None, hi=None, ordered=True):
  try:
    pair = tuple(float(v) for v in value)
  except TypeError:
    raise ValueError(f"Recipe.{name} must be a pair of numbers, got {value!r}.") from None
  if len(pair) != 2 or not all(math.isfinite(v) for v in pair):
    raise ValueError(f"Recipe.{name} must be a pair of finite numbers, got {value!r}.")
  if ordered and pair[0] > pair[1]:
    raise ValueError(f"Recipe.{name} must be (low, high) with low <= high, got {pair}.")
  if lo is not None and pair[0] < lo or hi is not None and pair[1] > hi:
    raise ValueError(f"Recipe.{name} must lie in [{lo}, {hi}], got {pair}.")
  return pair


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A static, hashable description of one augmentation view (torchvision-like semantics).

  Every field defaults to "off", so ``Recipe()`` is resize-only with no normalisation (pixels in
  [0, 1]); use ``dataclasses.replace(recipe, mean=(0.0,), std=(1.0,))`` to look at un-normalised
  output of any recipe.

  Attributes:
    crop_scale: ``RandomResizedCrop`` area-fraction range ``(lo, hi)`` ⊂ (0, 1]; ``None`` = no crop
      (the whole image, or its central square, is resized).
    crop_ratio: aspect-ratio (w/h) range of the crop, sampled log-uniformly.
    center_square: first take the central ``min(H, W)`` square (``Resize(s) → CenterCrop(s)``).
    flip_prob: probability of a horizontal (left-right) mirror.
    rotation_deg: affine rotation ``∈ U(−rotation_deg, rotation_deg)`` degrees, counter-clockwise
      positive, about the image centre.
    affine_scale: affine zoom factor range about the image centre (> 1 enlarges the content).
    translate: affine shift ``∈ U(−translate, translate)`` times the image height/width (continuous).
    antialias: widen the bilinear filter when shrinking (separable path only; PIL/torchvision).
    jitter: ``ColorJitter`` (brightness, contrast, saturation, hue) strengths; hue ≤ 0.5.
    jitter_prob: probability that the whole ``ColorJitter`` is applied (``RandomApply``).
    jitter_random_order: apply the four jitter ops in a random order per example (torchvision).
    grayscale_prob: ``RandomGrayscale`` probability (no-op on one channel).
    blur_prob: probability of a Gaussian blur.
    blur_sigma: blur standard-deviation range in output pixels, ``σ ~ U(lo, hi)``.
    blur_kernel: odd number of taps of the (separable) blur kernel.
    intensity_scale: pixels are multiplied by ``U(lo, hi)`` and clipped (always applied).
    noise_std: standard deviation of additive Gaussian pixel noise in [0, 1] pixel units (clipped).
    erase_prob: ``RandomErasing`` probability.
    erase_scale: erased area-fraction range.
    erase_ratio: erased rectangle aspect-ratio (h/w) range, log-uniform.
    erase_value: value written into the erased rectangle, in [0, 1] pixel units (before normalising).
    mean: per-channel mean subtracted after scaling pixels to [0, 1] (length 1 or 3; on one-channel
      images a 3-entry mean/std is replaced by its average, so RGB presets work on grey images).
    std: per-channel standard deviation divided by (length 1 or 3).
  """

  crop_scale: tuple[float, float] | None = None
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
  center_square: bool = False
  flip_prob: float = 0.0
  rotation_deg: float = 0.0
  affine_scale: tuple[float, float] = (1.0, 1.0)
  translate: float = 0.0
  antialias: bool = True
  jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
  jitter_prob: float = 0.0
  jitter_random_order: bool = True
  grayscale_prob: float = 0.0
  blur_prob: float = 0.0
  blur_sigma: tuple[float, float] = (0.1, 2.0)
  blur_kernel: int = 3
  intensity_scale: tuple[float, float] = (1.0, 1.0)
  noise_std: float = 0.0
  erase_prob: float = 0.0
  erase_scale: tuple[float, float] = (0.02, 0.33)
  erase_ratio: tuple[float, float] = (0.3, 3.3)
  erase_value: float = 0.0
  mean: tuple[float, ...] = (0.0,)
  std: tuple[float, ...] = (1.0,)

  def __post_init__(self):
    fix = functools.partial(object.__setattr__, self)
    if self.crop_scale is not None:
      fix("crop_scale", _pair("crop_scale", self.crop_scale))
      if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
        raise ValueError(f"Recipe.crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}.")
    fix("crop_ratio", _pair("crop_ratio", self.crop_ratio))
    if self.crop_ratio[0] <= 0:
      raise ValueError(f"Recipe.crop_ratio must be positive, got {self.crop_ratio}.")
    for name in ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "erase_prob"):
      value = float(getattr(self, name))
      if not 0 <= value <= 1:
        raise ValueError(f"Recipe.{name} must be a probability in [0, 1], got {value}.")
      fix(name, value)
    fix("rotation_deg", float(self.rotation_deg))
    if not 0 <= self.rotation_deg <= 180:
      raise ValueError(f"Recipe.rotation_deg must lie in [0, 180], got {self.rotation_deg}.")
    fix("affine_scale", _pair("affine_scale", self.affine_scale))
    if self.affine_scale[0] <= 0:
      raise ValueError(f"Recipe.affine_scale must be positive, got {self.affine_scale}.")
    fix("translate", float(self.translate))
    if not 0 <= self.translate < 1:
      raise ValueError(f"Recipe.translate must lie in [0, 1), got {self.translate}.")
    jitter = tuple(float(v) for v in self.jitter)
    if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
      raise ValueError(
          "Recipe.jitter must be 4 non-negative strengths (brightness, contrast, saturation, hue) "
          f"with hue <= 0.5, got {self.jitter}.")
    fix("jitter", jitter)
    fix("blur_sigma", _pair("blur_sigma", self.blur_sigma))
    if self.blur_sigma[0] <= 0:
      raise ValueError(f"Recipe.blur_sigma must be positive, got {self.blur_sigma}.")
    if int(self.blur_kernel) != self.blur_kernel or self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
      raise ValueError(f"Recipe.blur_kernel must be a positive odd integer, got {self.blur_kernel}.")
    fix("blur_kernel", int(self.blur_kernel))
    fix("intensity_scale", _pair("intensity_scale", self.intensity_scale, lo=0.0))
    fix("noise_std", float(self.noise_std))
    if self.noise_std < 0:
      raise ValueError(f"Recipe.noise_std must be non-negative, got {self.noise_std}.")
    fix("erase_scale", _pair("erase_scale", self.erase_scale))
    if not 0 < self.erase_scale[0] <= self.erase_scale[1] < 1:
      raise ValueError(f"Recipe.erase_scale must satisfy 0 < lo <= hi < 1, got {self.erase_scale}.")
    fix("erase_ratio", _pair("erase_ratio", self.erase_ratio))
    if self.erase_ratio[0] <= 0:
      raise ValueError(f"Recipe.erase_ratio must be positive, got {self.erase_ratio}.")
    fix("erase_value", float(self.erase_value))
    mean = tuple(float(v) for v in self.mean)
    std = tuple(float(v) for v in self.std)
    if len(mean) not in (1, 3) or len(std) != len(mean) or min(std) <= 0:
      raise ValueError(
          f"Recipe.mean/std must have equal length 1 or 3 and std > 0, got {self.mean}, {self.std}.")
    fix("mean", mean)
    fix("std", std)
    for name in ("center_square", "antialias", "jitter_random_order"):
      fix(name, bool(getattr(self, name)))

  @property
  def uses_affine(self) -> bool:
    """Whether the geometry needs the general (rotation/zoom/shift) bilinear-gather sampler."""
    return self.rotation_deg > 0 or self.translate > 0 or self.affine_scale != (1.0, 1.0)


# docs/methods.md §2.1 [official code]: RandomResizedCrop(224, (0.5, 1)) → flip → ColorJitter(0.4, 0.4,
# 0.4, 0.1) p 0.7 → grayscale p 0.2 → GaussianBlur(3, σ ∈ (0.1, 2)) p 0.5 → ImageNet normalisation.
_CIBHASH = Recipe(
    crop_scale=(0.5, 1.0), flip_prob=0.5, jitter=(0.4, 0.4, 0.4, 0.1), jitter_prob=0.7,
    grayscale_prob=0.2, blur_prob=0.5, blur_sigma=(0.1, 2.0), blur_kernel=3,
    mean=IMAGENET_MEAN, std=IMAGENET_STD)

PRESETS: dict[str, Recipe] = {
    "cibhash": _CIBHASH,
    # [project choice] CIBHash's recipe with a milder crop, 80-100 % of the image instead of 50-100 %:
    # on a frozen backbone's cached features it keeps the views nearer the image (validation mAP@83
    # on cifar10-i, frozen MobileNetV2: +2 points at 32 and 64 bits for CIBHash, HARR and FDBH, while
    # MoCo-v2's 20-100 % crops lose 3-5 points; experiments/configs/cifar10_frozen.py).
    "cibhash_crop08": dataclasses.replace(_CIBHASH, crop_scale=(0.8, 1.0)),
    # docs/methods.md §2.2 (NSH, MoCo-v2 style, asymmetric). View 1: crop (0.2, 1) → flip → ColorJitter(0.4,
    # 0.4, 0.4, 0.1) p 0.8 → grayscale p 0.2 → PIL-style Gaussian blur σ ∈ [0.1, 2] p 0.5.
    "mocov2_view1": Recipe(
        crop_scale=(0.2, 1.0), flip_prob=0.5, jitter=(0.4, 0.4, 0.4, 0.1), jitter_prob=0.8,
        grayscale_prob=0.2, blur_prob=0.5, blur_sigma=(0.1, 2.0), blur_kernel=13,
        mean=IMAGENET_MEAN, std=IMAGENET_STD),
    # View 2: the same but ColorJitter(0.4, 0.4, 0.4, 0.4) always applied and no blur.
    "mocov2_view2": Recipe(
        crop_scale=(0.2, 1.0), flip_prob=0.5, jitter=(0.4, 0.4, 0.4, 0.4), jitter_prob=1.0,
        grayscale_prob=0.2, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    # docs/methods.md §2.3 [official code]: Resize(224) → CenterCrop(224) → RandomResizedCrop(224, (0.2, 1))
    # → ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8 → grayscale p 0.2 → PIL Gaussian blur radius U[0.1, 2]
    # p 0.5 → flip → ImageNet normalisation. Test transform: central square, resize, normalise.
    "wch": Recipe(
        center_square=True, crop_scale=(0.2, 1.0), flip_prob=0.5, jitter=(0.4, 0.4, 0.4, 0.1),
        jitter_prob=0.8, grayscale_prob=0.2, blur_prob=0.5, blur_sigma=(0.1, 2.0), blur_kernel=13,
        mean=IMAGENET_MEAN, std=IMAGENET_STD),
    # [project choice] grey 8x8 digits: geometric views matter most (rotation ±15°, zoom 0.85–1.15,
    # shift ±1 px of 8), then intensity scaling 0.7–1.3, pixel noise σ = 0.05, random erasing of a small
    # patch (p 0.3, 2–15 % of the area) to background 0. Never flips (mirrored digits are other glyphs),
    # no crop, no colour ops. Normalised with the scikit-learn digits mean/std.
    "digits": Recipe(
        rotation_deg=15.0, affine_scale=(0.85, 1.15), translate=0.125, intensity_scale=(0.7, 1.3),
        noise_std=0.05, erase_prob=0.3, erase_scale=(0.02, 0.15), erase_ratio=(0.3, 3.3),
        erase_value=0.0, mean=DIGITS_MEAN, std=DIGITS_STD),
    # [project choice] a lighter digits recipe, NSH's on digits (methods/nsh.py): rotation ±8°, zoom
    # 0.92–1.08, shift ±0.5 px, intensity 0.8–1.2, noise σ = 0.05, no erasing. Chosen on the
    # validation split (experiments/configs/nsh_digits.py); lighter still (±5°, no shift) was worse.
    "digits_light": Recipe(
        rotation_deg=8.0, affine_scale=(0.92, 1.08), translate=0.0625, intensity_scale=(0.8, 1.2),
        noise_std=0.05, mean=DIGITS_MEAN, std=DIGITS_STD),
    # No augmentation: resize + ImageNet normalisation (methods without views, backbone inputs).
    "none": Recipe(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    # No augmentation on digits: resize + the digits mean/std (DDH's un-augmented view).
    "digits_none": Recipe(mean=DIGITS_MEAN, std=DIGITS_STD),
    # No augmentation and no normalisation: resize only, pixels in [0, 1].
    "raw": Recipe(),
}


def get_recipe(name: str) -> Recipe:
  """Returns the preset recipe ``name`` (see :data:`PRESETS`).

  Raises:
    ValueError: unknown name; the message lists the valid ones.
  """
  try:
    return PRESETS[name]
  except (KeyError, TypeError):
    raise ValueError(f"Unknown augmentation recipe {name!r}; valid names: {sorted(PRESETS)}.") from None


# ----------------------------------------------------------------------------------------------------
# Colour ops on one float image [H, W, C] in [0, 1] (C = 1 or 3); usable on their own.
# ----------------------------------------------------------------------------------------------------


def rgb_to_grayscale(x: jax.Array) -> jax.Array:
  """ITU-R 601 luma ``[..., 3] → [..., 1]`` (one-channel input is returned unchanged)."""
  if x.shape[-1] == 1:
    return x
  r, g, b = x[..., 0:1], x[..., 1:2], x[..., 2:3]
  return GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b


def _blend(x, y, factor):
  return jnp.clip(factor * x + (1.0 - factor) * y, 0.0, 1.0)


def adjust_brightness(x: jax.Array, factor) -> jax.Array:
  """``clip(factor · x, 0, 1)`` on ``[H, W, C]`` pixels in [0, 1] (torchvision semantics)."""
  return _blend(x, jnp.zeros_like(x), factor)


def _gray_mean(x):
  """Mean of the grayscale image of ``[H, W, C]`` pixels (a per-channel mean, then the luma weights)."""
  channel_mean = jnp.mean(x, axis=(-3, -2))
  if x.shape[-1] == 1:
    return channel_mean[..., 0, None, None, None]
  weights = jnp.asarray(GRAY_WEIGHTS, x.dtype)
  return jnp.sum(channel_mean * weights, axis=-1)[..., None, None, None]


def adjust_contrast(x: jax.Array, factor) -> jax.Array:
  """Blends ``[H, W, C]`` pixels with the mean of their grayscale image: ``clip(f·x + (1−f)·m)``."""
  return _blend(x, _gray_mean(x), factor)


def adjust_saturation(x: jax.Array, factor) -> jax.Array:
  """Blends RGB pixels with their grayscale: ``clip(f·x + (1−f)·gray(x))``; no-op on one channel."""
  if x.shape[-1] == 1:
    return x
  return _blend(x, rgb_to_grayscale(x), factor)


def _mod(x, period: float):
  # jnp.mod lowers to fmod, which XLA:CPU does not vectorise (3x slower hue); floor is exact enough.
  return x - period * jnp.floor(x * (1.0 / period))


def _hue6(r, g, b, maxc, chroma):
  """Hue in sixths of a turn, in [−1, 5) (torchvision's h·6 before the final mod); 0 where grey."""
  inv = 1.0 / jnp.where(chroma == 0, 1.0, chroma)
  return jnp.where(maxc == r, (g - b) * inv,
                   jnp.where(maxc == g, 2.0 + (b - r) * inv, 4.0 + (r - g) * inv))


def _hsv_channels(h6, chroma, v):
  """RGB from hue (sixths), chroma = v·s and value; branch-free form of the sector formula."""
  def channel(n):
    k = _mod(n + h6, 6.0)
    return v - chroma * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
  return jnp.stack([channel(5.0), channel(3.0), channel(1.0)], axis=-1)


def rgb_to_hsv(x: jax.Array) -> jax.Array:
  """``[..., 3]`` RGB in [0, 1] → HSV with hue in turns [0, 1) (torchvision/colorsys formula)."""
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  maxc = jnp.maximum(jnp.maximum(r, g), b)
  chroma = maxc - jnp.minimum(jnp.minimum(r, g), b)
  s = chroma / jnp.where(maxc == 0, 1.0, maxc)
  h = _mod(_hue6(r, g, b, maxc, chroma) / 6.0, 1.0)
  return jnp.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(x: jax.Array) -> jax.Array:
  """Inverse of :func:`rgb_to_hsv`: ``[..., 3]`` HSV (hue in turns) → RGB in [0, 1].

  Channel ``n ∈ {5, 3, 1}`` (R, G, B) is ``v − v·s·clip(min(k, 4 − k), 0, 1)`` with
  ``k = (n + 6h) mod 6``: the sector formula of torchvision/colorsys without branches.
  """
  h, s, v = x[..., 0], x[..., 1], x[..., 2]
  return _hsv_channels(6.0 * h, v * s, v)


def adjust_hue(x: jax.Array, shift) -> jax.Array:
  """Rotates the HSV hue of RGB pixels by ``shift`` turns (``|shift| ≤ 0.5``); no-op on one channel.

  Same result as torchvision's rgb→hsv, ``h = (h + shift) mod 1``, hsv→rgb, computed directly:
  value (max) and chroma (max − min) are unchanged by a hue rotation.
  """
  if x.shape[-1] == 1:
    return x
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  maxc = jnp.maximum(jnp.maximum(r, g), b)
  chroma = maxc - jnp.minimum(jnp.minimum(r, g), b)
  return _hsv_channels(_hue6(r, g, b, maxc, chroma) + 6.0 * shift, chroma, maxc)


def gaussian_blur(x: jax.Array, sigma, *, kernel_size: int) -> jax.Array:
  """Separable Gaussian blur of ``[H, W, C]`` with ``kernel_size`` taps, reflect padding (torchvision).

  ``sigma`` (pixels) may be a traced scalar: the kernel is built on the fly.
  """
  radius = kernel_size // 2
  if radius == 0:
    return x
  taps = jnp.arange(kernel_size, dtype=jnp.float32) - radius
  w = jnp.exp(-0.5 * jnp.square(taps / sigma))
  w = w / jnp.sum(w)
  height, width = x.shape[0], x.shape[1]
  if radius >= min(height, width):
    raise ValueError(f"blur kernel of {kernel_size} taps needs images larger than {radius} pixels, "
                     f"got {height}x{width}.")
  def along(y, axis, size):
    yp = jnp.pad(y, [(radius, radius) if a == axis else (0, 0) for a in range(3)], mode="reflect")
    tap = lambda i: jax.lax.slice_in_dim(yp, i, i + size, axis=axis)
    out = w[radius] * tap(radius)
    for i in range(1, radius + 1):  # symmetric kernel: half the multiplies
      out = out + w[radius + i] * (tap(radius + i) + tap(radius - i))
    return out
  return along(along(x, 0, height), 1, width)


# ----------------------------------------------------------------------------------------------------
# Geometry.
# ----------------------------------------------------------------------------------------------------


def _random_resized_crop_box(u, height: int, width: int, scale, ratio):
  """torchvision ``RandomResizedCrop.get_params`` from 40 uniforms ``u``.

  Returns:
    float32 (top, left, h, w), integer-valued.
  """
  u = u.reshape(4, _ATTEMPTS)
  target = float(height * width) * _lerp(u[0], scale[0], scale[1])
  aspect = jnp.exp(_lerp(u[1], math.log(ratio[0]), math.log(ratio[1])))
  w = jnp.round(jnp.sqrt(target * aspect))
  h = jnp.round(jnp.sqrt(target / aspect))
  valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  i = jnp.minimum(jnp.floor(u[2] * (height - h + 1)), height - h)
  j = jnp.minimum(jnp.floor(u[3] * (width - w + 1)), width - w)
  first = jnp.argmax(valid)
  # Fallback: central crop with the aspect ratio clamped into `ratio` (static: depends on shapes only).
  in_ratio = width / height
  if in_ratio < ratio[0]:
    fw, fh = width, int(round(width / ratio[0]))
  elif in_ratio > ratio[1]:
    fh, fw = height, int(round(height * ratio[1]))
  else:
    fw, fh = width, height
  fallback = jnp.array([(height - fh) // 2, (width - fw) // 2, fh, fw], jnp.float32)
  chosen = jnp.stack([i[first], j[first], h[first], w[first]]).astype(jnp.float32)
  return jnp.where(jnp.any(valid), chosen, fallback)


def _interp_matrix(start, length, in_size: int, out_size: int, flip, antialias: bool):
  """``[out, in]`` bilinear weights mapping the span [start, start+length) onto ``out_size`` pixels.

  Half-pixel centres (PIL/torchvision ``align_corners=False``); output pixel ``u`` samples the input at
  continuous coordinate ``start + (u + ½)·length/out`` (mirrored inside the span when ``flip``). When
  shrinking with ``antialias`` the triangle filter is widened by the scale (PIL's convolution resize);
  rows are normalised over the pixels inside the span, which equals edge clamping for plain bilinear.
  """
  scale = length / out_size
  offsets = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * scale
  centres = jnp.where(flip, start + length - offsets, start + offsets)
  support = jnp.maximum(scale, 1.0) if antialias else jnp.float32(1.0)
  pixel_centres = jnp.arange(in_size, dtype=jnp.float32) + 0.5
  w = jnp.maximum(0.0, 1.0 - jnp.abs(pixel_centres[None, :] - centres[:, None]) / support)
  # Only pixels inside the span contribute: the crop happens before the resize (torchvision).
  w = jnp.where((pixel_centres >= start) & (pixel_centres < start + length), w, 0.0)
  total = jnp.sum(w, axis=1, keepdims=True)
  return w / jnp.where(total == 0, 1.0, total)


def _sample_separable(image, top, left, height, width, flip, out_size: int, antialias: bool):
  """Crops the box (top, left, height, width) of ``[H, W, C]``, resizes to out×out, mirrors if flip."""
  wy = _interp_matrix(top, height, image.shape[0], out_size, False, antialias)
  wx = _interp_matrix(left, width, image.shape[1], out_size, flip, antialias)
  hi = jax.lax.Precision.HIGHEST  # keep f32 pixel accuracy on TPU (default matmul precision is bf16).
  if image.shape[0] <= image.shape[1]:
    y = jnp.einsum("uh,hwc->uwc", wy, image, precision=hi)
    return jnp.einsum("vw,uwc->uvc", wx, y, precision=hi)
  y = jnp.einsum("vw,hwc->hvc", wx, image, precision=hi)
  return jnp.einsum("uh,hvc->uvc", wy, y, precision=hi)


def _sample_affine(image, top, left, height, width, flip, angle, zoom, shift_y, shift_x,
                   out_size: int):
  """Bilinear gather of out×out pixels through crop, flip and an affine map about the image centre.

  The content is rotated by ``angle`` radians counter-clockwise, zoomed by ``zoom`` and shifted by
  (``shift_y``, ``shift_x``) pixels, then the box is cropped, mirrored if ``flip`` and resized.
  Pixels mapped from outside the image read 0 (torchvision ``fill=0``).
  """
  in_h, in_w, channels = image.shape
  grid = jnp.arange(out_size, dtype=jnp.float32) + 0.5
  ys = top + grid * (height / out_size)
  xs = jnp.where(flip, left + width - grid * (width / out_size), left + grid * (width / out_size))
  # Destination point relative to the centre, minus the shift, un-zoomed and un-rotated.
  dy = ys[:, None] - in_h / 2 - shift_y
  dx = xs[None, :] - in_w / 2 - shift_x
  cos, sin = jnp.cos(angle) / zoom, jnp.sin(angle) / zoom
  src_x = cos * dx - sin * dy + in_w / 2 - 0.5
  src_y = sin * dx + cos * dy + in_h / 2 - 0.5
  r0 = jnp.floor(src_y)
  c0 = jnp.floor(src_x)
  fr = src_y - r0
  fc = src_x - c0
  flat = image.reshape(in_h * in_w, channels)
  out = jnp.zeros((out_size, out_size, channels), image.dtype)
  for dr, dc, wgt in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                      (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
    r = (r0 + dr).astype(jnp.int32)
    c = (c0 + dc).astype(jnp.int32)
    inside = (r >= 0) & (r < in_h) & (c >= 0) & (c < in_w)
    idx = jnp.clip(r, 0, in_h - 1) * in_w + jnp.clip(c, 0, in_w - 1)
    out = out + jnp.where(inside, wgt, 0.0)[..., None] * flat[idx]
  return out


def _base_box(height: int, width: int, center_square: bool):
  if not center_square:
    return 0, 0, height, width
  side = min(height, width)
  return (height - side) // 2, (width - side) // 2, side, side


def _geometry(image, u, recipe: Recipe, out_size: int):
  in_h, in_w, _ = image.shape
  top, left, height, width = _base_box(in_h, in_w, recipe.center_square)
  if recipe.crop_scale is not None:
    i, j, h, w = _random_resized_crop_box(u[_U_CROP], height, width, recipe.crop_scale,
                                          recipe.crop_ratio)
    top, left, height, width = top + i, left + j, h, w
  else:
    top, left, height, width = (jnp.float32(v) for v in (top, left, height, width))
  flip = u[_U_FLIP] < recipe.flip_prob if recipe.flip_prob > 0 else False
  if not recipe.uses_affine:
    return _sample_separable(image, top, left, height, width, flip, out_size, recipe.antialias)
  limit = math.radians(recipe.rotation_deg)
  angle = _lerp(u[_U_ROTATE], -limit, limit)
  zoom = _lerp(u[_U_ZOOM], *recipe.affine_scale)
  shift = _lerp(u[_U_SHIFT], -recipe.translate, recipe.translate)
  return _sample_affine(image, top, left, height, width, flip, angle, zoom,
                        shift[0] * in_h, shift[1] * in_w, out_size)


# ----------------------------------------------------------------------------------------------------
# Per-example pipeline.
# ----------------------------------------------------------------------------------------------------


def _blend_op(x, op, factors):
  """One of brightness (op 0), contrast (1), saturation (2) chosen by a traced ``op``; -1 = identity.

  All three are ``clip(f·x + (1−f)·ref)`` with ref = 0, mean(gray(x)) or gray(x), so a traced choice
  costs one blend instead of three (the selection happens on the factor and the reference).
  """
  f = jnp.select([op == 0, op == 1, op == 2], list(factors), 1.0)
  gray = rgb_to_grayscale(x)
  ref = jnp.where(op == 0, 0.0, jnp.where(op == 1, _gray_mean(x), gray))
  return _blend(x, ref, f)


def _color_jitter(x, u_factors, u_order, jitter, random_order: bool):
  """torchvision ``ColorJitter`` on one ``[H, W, C]`` image; ops with strength 0 are skipped.

  With ``random_order`` the active ops run in a uniformly random order per example (``randperm``).
  Hue, the expensive op, is computed once: the cheap blends before it fill slots 0..n−2 (identity where
  unused), the ones after it slots n..2n−2.
  """
  strengths = jitter if x.shape[-1] == 3 else (jitter[0], jitter[1], 0.0, 0.0)
  factors = [_lerp(u_factors[k], max(0.0, 1 - strength), 1 + strength) if strength > 0
             else jnp.float32(1.0) for k, strength in enumerate(strengths[:3])]
  shift = _lerp(u_factors[3], -strengths[3], strengths[3])
  active = [op for op, strength in enumerate(strengths) if strength > 0]
  if not active:
    return x
  if not random_order or len(active) == 1:
    for op in active:
      x = adjust_hue(x, shift) if op == 3 else _blend_op(x, op, factors)
    return x
  n = len(active)
  order = jnp.asarray(active, jnp.int32)[jnp.argsort(u_order[:n])]  # uniform random permutation
  if 3 not in active:
    for slot in range(n):
      x = _blend_op(x, order[slot], factors)
    return x
  hue_at = jnp.argmax(order == 3)
  for slot in range(n - 1):
    x = _blend_op(x, jnp.where(slot < hue_at, order[slot], -1), factors)
  x = adjust_hue(x, shift)
  for slot in range(n - 1):
    after = hue_at + 1 + slot
    x = _blend_op(x, jnp.where(after < n, order[jnp.minimum(after, n - 1)], -1), factors)
  return x


def _random_erase_mask(u, height: int, width: int, scale, ratio):
  """torchvision ``RandomErasing.get_params`` (40 uniforms) as a boolean ``[H, W]`` mask.

  The mask is all False when none of the 10 attempts fits (torchvision then erases nothing).
  """
  u = u.reshape(4, _ATTEMPTS)
  target = float(height * width) * _lerp(u[0], scale[0], scale[1])
  aspect = jnp.exp(_lerp(u[1], math.log(ratio[0]), math.log(ratio[1])))
  h = jnp.round(jnp.sqrt(target * aspect))
  w = jnp.round(jnp.sqrt(target / aspect))
  valid = (h < height) & (w < width) & (h > 0) & (w > 0)
  i = jnp.minimum(jnp.floor(u[2] * (height - h + 1)), height - h)
  j = jnp.minimum(jnp.floor(u[3] * (width - w + 1)), width - w)
  k = jnp.argmax(valid)
  rows = jnp.arange(height, dtype=jnp.float32)[:, None]
  cols = jnp.arange(width, dtype=jnp.float32)[None, :]
  inside = (rows >= i[k]) & (rows < i[k] + h[k]) & (cols >= j[k]) & (cols < j[k] + w[k])
  return inside & jnp.any(valid)


def _augment_one(image, key, recipe: Recipe, out_size: int):
  """One float ``[H, W, C]`` image in [0, 1] → ``[out, out, C]`` in [0, 1] (not normalised)."""
  channels = image.shape[-1]
  num_noise = out_size * out_size * channels if recipe.noise_std > 0 else 0
  u = jax.random.uniform(key, (_NUM_UNIFORMS + num_noise,))
  x = _geometry(image, u, recipe, out_size)
  if recipe.jitter_prob > 0 and max(recipe.jitter) > 0:
    jittered = _color_jitter(x, u[_U_JITTER_FACTORS], u[_U_JITTER_ORDER], recipe.jitter,
                             recipe.jitter_random_order)
    x = jnp.where(u[_U_JITTER_APPLY] < recipe.jitter_prob, jittered, x)
  if recipe.grayscale_prob > 0 and x.shape[-1] == 3:
    gray = jnp.broadcast_to(rgb_to_grayscale(x), x.shape)
    x = jnp.where(u[_U_GRAY] < recipe.grayscale_prob, gray, x)
  if recipe.blur_prob > 0 and recipe.blur_kernel > 1:
    sigma = _lerp(u[_U_BLUR_SIGMA], *recipe.blur_sigma)
    blurred = gaussian_blur(x, sigma, kernel_size=recipe.blur_kernel)
    x = jnp.where(u[_U_BLUR_APPLY] < recipe.blur_prob, blurred, x)
  if recipe.intensity_scale != (1.0, 1.0):
    x = jnp.clip(x * _lerp(u[_U_INTENSITY], *recipe.intensity_scale), 0.0, 1.0)
  if recipe.noise_std > 0:
    # Standard normals from the same draw, as jax.random.normal makes them: √2·erfinv(U(−1, 1)).
    lo = float(np.nextafter(np.float32(-1.0), np.float32(0.0)))
    z = math.sqrt(2.0) * jax.lax.erf_inv(_lerp(u[_NUM_UNIFORMS:], lo, 1.0)).reshape(x.shape)
    x = jnp.clip(x + recipe.noise_std * z, 0.0, 1.0)
  if recipe.erase_prob > 0:
    mask = _random_erase_mask(u[_U_ERASE], out_size, out_size, recipe.erase_scale, recipe.erase_ratio)
    mask = mask & (u[_U_ERASE_APPLY] < recipe.erase_prob)
    x = jnp.where(mask[..., None], jnp.float32(recipe.erase_value), x)
  return x


def _check_inputs(images, recipe, out_size):
  if isinstance(recipe, str):
    recipe = get_recipe(recipe)
  if not isinstance(recipe, Recipe):
    raise ValueError(f"recipe must be a Recipe or a preset name, got {type(recipe).__name__}.")
  if isinstance(out_size, bool) or not isinstance(out_size, (int, np.integer)) or out_size < 1:
    raise ValueError(f"out_size must be a positive int, got {out_size!r}.")
  images = jnp.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images must be [batch, height, width, channels] with 1 or 3 channels, "
                     f"got shape {images.shape}.")
  if images.dtype == jnp.uint8:
    images = images.astype(jnp.float32) / 255.0
  elif jnp.issubdtype(images.dtype, jnp.floating):
    images = images.astype(jnp.float32)
  else:
    raise ValueError(f"images must be uint8 (0..255) or floating point (0..1), got {images.dtype}.")
  return images, recipe, int(out_size)


def _like_batch(keys, images):
  """Shards the per-example keys like the images' batch axis (needed under explicit sharding).

  With ``jax.make_mesh`` explicit axes, ``vmap`` refuses a batch axis sharded on ``data`` for the images
  but replicated for the keys; under automatic sharding the type carries no spec and this is a no-op.
  """
  sharding = getattr(jax.typeof(images), "sharding", None)
  spec = getattr(sharding, "spec", None)
  if not spec or spec[0] is None:
    return keys
  return jax.reshard(keys, jax.NamedSharding(sharding.mesh, jax.P(spec[0])))


def _normalize(x, recipe: Recipe):
  """``(x − mean) / std``; 3-entry statistics on one-channel images use their averages."""
  mean, std = recipe.mean, recipe.std
  if x.shape[-1] == 1 and len(mean) == 3:
    mean, std = (sum(mean) / 3,), (sum(std) / 3,)
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


@functools.partial(jax.jit, static_argnames=("recipe", "out_size"))
def augment(images: jax.Array, key: jax.Array, recipe: Recipe | str, *, out_size: int) -> jax.Array:
  """Augments a batch, one independent random view per image.

  Args:
    images: ``uint8[batch, height, width, channels]`` (channels 1 or 3), or floats already in [0, 1].
    key: a PRNG key (``jax.random.key``); example ``n`` uses ``jax.random.split(key, batch)[n]``.
    recipe: a :class:`Recipe` or a preset name (static: hashable, part of the jit cache key).
    out_size: output height = width in pixels (static).

  Returns:
    ``float32[batch, out_size, out_size, channels]``: pixels in [0, 1] after augmentation, then
    ``(x − recipe.mean) / recipe.std``.

  Raises:
    ValueError: bad shapes, dtypes, recipe or out_size (at trace time).
  """
  images, recipe, out_size = _check_inputs(images, recipe, out_size)
  keys = _like_batch(jax.random.split(key, images.shape[0]), images)
  views = jax.vmap(lambda im, k: _augment_one(im, k, recipe, out_size))(images, keys)
  return _normalize(views, recipe)


@functools.partial(jax.jit, static_argnames=("recipe", "out_size"))
def augment_each(images: jax.Array, keys: jax.Array, recipe: Recipe | str, *, out_size: int
                 ) -> jax.Array:
  """:func:`augment` with one given key per image (``keys`` ``[batch]``), so that an image's view is
  a function of its own key alone, whatever batch it travels in (cached views of a data set)."""
  images, recipe, out_size = _check_inputs(images, recipe, out_size)
  if keys.shape[:1] != images.shape[:1]:
    raise ValueError(f"augment_each needs one key per image: {keys.shape[0]} keys for "
                     f"{images.shape[0]} images.")
  views = jax.vmap(lambda im, k: _augment_one(im, k, recipe, out_size))(images, keys)
  return _normalize(views, recipe)


@functools.partial(jax.jit, static_argnames=("recipe1", "recipe2", "out_size"))
def two_views(images: jax.Array, key: jax.Array, recipe1: Recipe | str,
              recipe2: Recipe | str | None = None, *, out_size: int) -> tuple[jax.Array, jax.Array]:
  """Two independently augmented views of every image (``recipe2`` defaults to ``recipe1``).

  View ``v`` uses ``jax.random.split(key)[v]``; asymmetric pipelines (MoCo v2: ``"mocov2_view1"``,
  ``"mocov2_view2"``) pass two recipes. Shapes as in :func:`augment`.
  """
  k1, k2 = jax.random.split(key)
  view1 = augment(images, k1, recipe1, out_size=out_size)
  view2 = augment(images, k2, recipe1 if recipe2 is None else recipe2, out_size=out_size)
  return view1, view2


@functools.partial(jax.jit, static_argnames=("recipe", "out_size"))
def eval_preprocess(images: jax.Array, recipe: Recipe | str, *, out_size: int) -> jax.Array:
  """Deterministic test transform: (central square if ``recipe.center_square``), resize, normalise.

  Uses only ``center_square``, ``antialias``, ``mean`` and ``std`` of the recipe (CIBHash:
  ``Resize((224, 224))``; WCH: ``Resize(224) → CenterCrop(224)``).

  Returns:
    ``float32[batch, out_size, out_size, channels]``.
  """
  images, recipe, out_size = _check_inputs(images, recipe, out_size)
  top, left, height, width = _base_box(images.shape[1], images.shape[2], recipe.center_square)
  def one(im):
    return _sample_separable(im, jnp.float32(top), jnp.float32(left), jnp.float32(height),
                             jnp.float32(width), False, out_size, recipe.antialias)
  return _normalize(jax.vmap(one)(images), recipe)
