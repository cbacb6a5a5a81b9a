"""Tests of unhash_jax.data.augment against independent references (PIL, colorsys, scipy, numpy)."""

import colorsys
import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unhash_jax.data import augment as aug

def _raw(recipe):
  """The same recipe with identity normalisation: outputs are pixels in [0, 1]."""
  return dataclasses.replace(aug.get_recipe(recipe) if isinstance(recipe, str) else recipe,
                             mean=(0.0,), std=(1.0,))


def _images(batch, height, width, channels, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (batch, height, width, channels), np.uint8)


# --------------------------------------------------------------------------------------------------
# Recipes.
# --------------------------------------------------------------------------------------------------


def test_presets_follow_methods_md():
  cib = aug.get_recipe("cibhash")  # methods.md §2.1
  assert cib.crop_scale == (0.5, 1.0) and cib.flip_prob == 0.5
  assert cib.jitter == (0.4, 0.4, 0.4, 0.1) and cib.jitter_prob == 0.7
  assert cib.grayscale_prob == 0.2 and cib.blur_prob == 0.5 and cib.blur_kernel == 3
  assert cib.blur_sigma == (0.1, 2.0) and cib.mean == aug.IMAGENET_MEAN
  v1, v2 = aug.get_recipe("mocov2_view1"), aug.get_recipe("mocov2_view2")  # §2.2
  assert v1.crop_scale == v2.crop_scale == (0.2, 1.0)
  assert v1.jitter == (0.4, 0.4, 0.4, 0.1) and v1.jitter_prob == 0.8 and v1.blur_prob == 0.5
  assert v2.jitter == (0.4, 0.4, 0.4, 0.4) and v2.jitter_prob == 1.0 and v2.blur_prob == 0.0
  wch = aug.get_recipe("wch")  # §2.3
  assert wch.center_square and wch.crop_scale == (0.2, 1.0) and wch.jitter_prob == 0.8
  digits = aug.get_recipe("digits")
  assert digits.flip_prob == 0.0 and digits.crop_scale is None and max(digits.jitter) == 0
  assert digits.rotation_deg > 0 and digits.translate > 0 and digits.erase_prob > 0
  assert aug.get_recipe("none") == dataclasses.replace(aug.Recipe(), mean=aug.IMAGENET_MEAN,
                                                       std=aug.IMAGENET_STD)
  for name in aug.PRESETS:
    hash(aug.get_recipe(name))


def test_get_recipe_unknown_lists_names():
  with pytest.raises(ValueError, match="cibhash"):
    aug.get_recipe("simclr")


@pytest.mark.parametrize("bad", [
    dict(flip_prob=1.5), dict(crop_scale=(0.0, 1.0)), dict(crop_scale=(0.9, 0.5)),
    dict(crop_scale=(0.5, 1.2)), dict(jitter=(0.4, 0.4, 0.4)), dict(jitter=(0.4, 0.4, 0.4, 0.6)),
    dict(blur_kernel=4), dict(blur_sigma=(0.0, 1.0)), dict(std=(0.0,)), dict(mean=(0.5, 0.5)),
    dict(mean=(0.1, 0.2), std=(0.3, 0.4)), dict(translate=1.0), dict(noise_std=-0.1),
    dict(erase_scale=(0.1, 1.0)), dict(rotation_deg=-5.0), dict(affine_scale=(0.0, 1.0)),
])
def test_recipe_rejects_bad_fields(bad):
  with pytest.raises(ValueError):
    aug.Recipe(**bad)


def test_recipe_coerces_lists_to_hashable_tuples():
  r = aug.Recipe(crop_scale=[0.5, 1], jitter=[0.1, 0.1, 0.1, 0.1], mean=[0.5], std=[0.5])
  assert r == aug.Recipe(crop_scale=(0.5, 1.0), jitter=(0.1,) * 4, mean=(0.5,), std=(0.5,))
  assert hash(r) == hash(aug.Recipe(crop_scale=(0.5, 1.0), jitter=(0.1,) * 4, mean=(0.5,),
                                    std=(0.5,)))


@pytest.mark.parametrize("images, kwargs, match", [
    (np.zeros((2, 8, 8), np.uint8), {}, "channels"),
    (np.zeros((2, 8, 8, 2), np.uint8), {}, "channels"),
    (np.zeros((2, 8, 8, 1), np.int32), {}, "uint8"),
    (np.zeros((2, 8, 8, 1), np.uint8), dict(out_size=0), "out_size"),
    (np.zeros((2, 8, 8, 1), np.uint8), dict(recipe="nope"), "valid names"),
])
def test_augment_rejects_bad_inputs(images, kwargs, match):
  args = dict(recipe="raw", out_size=8) | kwargs
  with pytest.raises(ValueError, match=match):
    aug.augment(images, jax.random.key(0), args["recipe"], out_size=args["out_size"])


# --------------------------------------------------------------------------------------------------
# Batch API: shapes, determinism, independence, range, jit.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, channels, size, out", [
    ("cibhash", 3, 16, 24), ("cibhash", 1, 16, 24), ("mocov2_view1", 3, 20, 16),
    ("wch", 3, 16, 16), ("digits", 1, 8, 8), ("digits", 3, 8, 12), ("none", 3, 16, 8)])
def test_shapes_dtypes_and_range(name, channels, size, out):
  images = _images(6, size, size + 4, channels)
  x = aug.augment(images, jax.random.key(1), _raw(name), out_size=out)
  assert x.shape == (6, out, out, channels) and x.dtype == jnp.float32
  x = np.asarray(x)
  assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0
  normalised = aug.augment(images, jax.random.key(1), name, out_size=out)
  mean, std = np.asarray(aug.get_recipe(name).mean), np.asarray(aug.get_recipe(name).std)
  if channels == 1:  # RGB statistics on grey images: their averages
    mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
  np.testing.assert_allclose(normalised, (x - mean) / std, atol=1e-5)


@pytest.mark.parametrize("name", ["cibhash", "mocov2_view2", "digits"])
def test_same_key_same_view_different_keys_different_views(name):
  channels, size = (1, 8) if name == "digits" else (3, 24)
  images = _images(4, size, size, channels)
  a = aug.augment(images, jax.random.key(7), name, out_size=8)
  b = aug.augment(images, jax.random.key(7), name, out_size=8)
  c = aug.augment(images, jax.random.key(8), name, out_size=8)
  np.testing.assert_array_equal(a, b)
  for n in range(4):  # every example gets its own, different view
    assert not np.allclose(a[n], c[n])


def test_examples_use_their_own_keys():
  images = _images(5, 8, 8, 1)
  key = jax.random.key(3)
  a = aug.augment(images, key, "digits", out_size=8)
  same_pictures = np.repeat(images[:1], 5, axis=0)
  b = aug.augment(same_pictures, key, "digits", out_size=8)
  assert all(not np.allclose(b[0], b[n]) for n in range(1, 5))  # one image, 5 different views
  np.testing.assert_array_equal(a[0], b[0])  # example 0's view depends only on image 0 and its key
  changed = images.copy()
  changed[3] = 255 - changed[3]
  c = aug.augment(changed, key, "digits", out_size=8)
  np.testing.assert_array_equal(np.delete(np.asarray(a), 3, 0), np.delete(np.asarray(c), 3, 0))


def test_two_views_uses_split_keys_and_asymmetric_recipes():
  images = _images(3, 12, 12, 3)
  key = jax.random.key(11)
  v1, v2 = aug.two_views(images, key, "mocov2_view1", "mocov2_view2", out_size=8)
  k1, k2 = jax.random.split(key)
  np.testing.assert_allclose(v1, aug.augment(images, k1, "mocov2_view1", out_size=8), atol=1e-6)
  np.testing.assert_allclose(v2, aug.augment(images, k2, "mocov2_view2", out_size=8), atol=1e-6)
  w1, w2 = aug.two_views(images, key, "cibhash", out_size=8)
  assert w1.shape == w2.shape == (3, 8, 8, 3) and not np.allclose(w1, w2)


@pytest.mark.parametrize("name, channels", [("cibhash", 3), ("digits", 1), ("mocov2_view2", 3)])
def test_jit_equals_eager(name, channels):
  images = _images(3, 10, 10, channels)
  key = jax.random.key(5)
  jitted = aug.augment(images, key, name, out_size=12)
  with jax.disable_jit():
    eager = aug.augment(images, key, name, out_size=12)
  np.testing.assert_allclose(jitted, eager, atol=2e-5)


def test_no_recompilation_across_keys_and_images():
  recipe = _raw("digits")
  images = _images(4, 8, 8, 1)
  aug.augment(images, jax.random.key(0), recipe, out_size=8)
  before = aug.augment._cache_size()
  aug.augment(images[::-1].copy(), jax.random.key(1), recipe, out_size=8)
  aug.augment(images, jax.random.key(2), dataclasses.replace(recipe), out_size=8)  # equal recipe
  assert aug.augment._cache_size() == before


def test_float_input_is_taken_as_unit_range():
  images = _images(2, 8, 8, 3)
  a = aug.augment(images, jax.random.key(0), "cibhash", out_size=8)
  b = aug.augment(images.astype(np.float32) / 255.0, jax.random.key(0), "cibhash", out_size=8)
  np.testing.assert_allclose(a, b, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Geometry against independent references.
# --------------------------------------------------------------------------------------------------


def _pil_resize(image, out_h, out_w):
  """Reference: Pillow's BILINEAR resize (antialiased when shrinking), per channel, float32 mode F."""
  from PIL import Image
  chans = [np.asarray(Image.fromarray(image[..., c].astype(np.float32)).resize(
      (out_w, out_h), Image.BILINEAR)) for c in range(image.shape[-1])]
  return np.stack(chans, axis=-1)


@pytest.mark.parametrize("size, out", [((8, 8), 20), ((32, 32), 224), ((50, 50), 20), ((9, 9), 9),
                                       ((31, 31), 7)])
def test_raw_recipe_and_eval_preprocess_equal_pil_bilinear_resize(size, out):
  pytest.importorskip("PIL")
  images = _images(2, *size, 3, seed=size[0])
  got = aug.augment(images, jax.random.key(0), "raw", out_size=out)
  want = np.stack([_pil_resize(im / 255.0, out, out) for im in images])
  np.testing.assert_allclose(got, want, atol=2e-5)
  none = aug.get_recipe("none")
  np.testing.assert_allclose(aug.eval_preprocess(images, none, out_size=out),
                             (want - np.asarray(none.mean)) / np.asarray(none.std), atol=1e-4)


def test_center_square_takes_the_central_square():
  pytest.importorskip("PIL")
  images = _images(2, 12, 20, 3)
  got = aug.eval_preprocess(images, _raw("wch"), out_size=6)
  want = np.stack([_pil_resize(im[:, 4:16] / 255.0, 6, 6) for im in images])
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_flip_probability_one_mirrors():
  images = _images(3, 9, 9, 3)
  got = aug.augment(images, jax.random.key(0), aug.Recipe(flip_prob=1.0), out_size=9)
  np.testing.assert_allclose(got, images[:, :, ::-1] / 255.0, atol=1e-6)
  unflipped = aug.augment(images, jax.random.key(0), aug.Recipe(), out_size=9)
  np.testing.assert_allclose(unflipped, images / 255.0, atol=1e-6)


def test_full_crop_with_unit_ratio_is_identity():
  images = _images(4, 16, 16, 3)
  recipe = aug.Recipe(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
  got = aug.augment(images, jax.random.key(0), recipe, out_size=16)
  np.testing.assert_allclose(got, images / 255.0, atol=1e-6)


def test_crop_boxes_follow_torchvision_rules():
  height, width, scale, ratio = 32, 40, (0.08, 1.0), (3 / 4, 4 / 3)
  us = jax.random.uniform(jax.random.key(0), (500, 40))
  boxes = np.asarray(jax.vmap(lambda u: aug._random_resized_crop_box(u, height, width, scale,
                                                                    ratio))(us))
  top, left, h, w = boxes.T
  assert (boxes == np.round(boxes)).all() and (h >= 1).all() and (w >= 1).all()
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + h <= height).all() and (left + w <= width).all()
  area = h * w / (height * width)
  # Integer rounding of w and h moves the area a little outside the sampled range.
  assert area.min() > 0.08 * 0.8 and area.max() <= 1.0
  assert (w / h > 3 / 4 * 0.8).all() and (w / h < 4 / 3 * 1.25).all()
  assert len({tuple(b) for b in boxes}) > 300  # offsets and sizes really vary
  # Impossible ratio range: falls back to the ratio-clamped central crop (torchvision).
  fallback = aug._random_resized_crop_box(us[0], 10, 40, (0.9, 1.0), (1.0, 1.0))
  np.testing.assert_array_equal(fallback, [0, 15, 10, 10])


def _sample_affine(image, **kw):
  h, w = image.shape[:2]
  args = dict(top=0.0, left=0.0, height=float(h), width=float(w), flip=False, angle=0.0, zoom=1.0,
              shift_y=0.0, shift_x=0.0, out_size=h) | kw
  return np.asarray(aug._sample_affine(jnp.asarray(image, jnp.float32), **args))


def test_affine_sampler_identity_rotation_shift_flip():
  image = np.random.default_rng(0).random((7, 7, 2)).astype(np.float32)
  np.testing.assert_allclose(_sample_affine(image), image, atol=1e-5)
  np.testing.assert_allclose(_sample_affine(image, flip=True), image[:, ::-1], atol=1e-5)
  # 90° counter-clockwise (torchvision's sign) is np.rot90.
  np.testing.assert_allclose(_sample_affine(image, angle=np.pi / 2), np.rot90(image), atol=1e-5)
  # A 2-pixel shift to the right and 1 down, zero fill (torchvision RandomAffine fill=0).
  shifted = np.zeros_like(image)
  shifted[1:, 2:] = image[:-1, :-2]
  np.testing.assert_allclose(_sample_affine(image, shift_x=2.0, shift_y=1.0), shifted, atol=1e-5)
  # Zoom 2 about the centre of an 8x8 image: output pixel (u, v) reads source (u/2 + 2, v/2 + 2)
  # (half-pixel centres), i.e. the average of a 2x2 block shifted by a quarter pixel -> check centre.
  ramp = np.tile(np.arange(8, dtype=np.float32), (8, 1))[..., None]
  zoomed = _sample_affine(ramp, zoom=2.0)
  np.testing.assert_allclose(zoomed[4, :, 0], [(v + 0.5) / 2 + 2 - 0.5 for v in range(8)], atol=1e-5)


def test_affine_path_with_zero_ranges_is_identity():
  images = _images(2, 8, 8, 1)
  recipe = aug.Recipe(rotation_deg=1e-30, affine_scale=(1.0, 1.0))
  assert recipe.uses_affine
  got = aug.augment(images, jax.random.key(0), recipe, out_size=8)
  np.testing.assert_allclose(got, images / 255.0, atol=1e-5)


def test_digits_preset_never_mirrors_an_asymmetric_glyph():
  # A left-heavy glyph (vertical bar in columns 1-2) stays left-heavy under every digits view; a
  # flipping recipe moves it right, so the check can fail.
  glyph = np.zeros((1, 8, 8, 1), np.uint8)
  glyph[0, 1:7, 1:3] = 255
  images = np.repeat(glyph, 200, axis=0)
  cols = np.arange(8) + 0.5
  def centroid(recipe):
    x = np.asarray(aug.augment(images, jax.random.key(0), recipe, out_size=8))[..., 0]
    return (x.sum(1) * cols).sum(1) / x.sum((1, 2))
  assert (centroid(_raw("digits")) < 4.0).all()
  assert (centroid(dataclasses.replace(_raw("digits"), flip_prob=1.0)) > 4.0).all()


def test_digits_views_really_move_the_glyph():
  glyph = np.zeros((1, 8, 8, 1), np.uint8)
  glyph[0, 1:7, 3:5] = 255
  images = np.repeat(glyph, 64, axis=0)
  geometric = dataclasses.replace(_raw("digits"), noise_std=0.0, erase_prob=0.0,
                                  intensity_scale=(1.0, 1.0))
  x = np.asarray(aug.augment(images, jax.random.key(0), geometric, out_size=8))
  assert len({x[n].round(4).tobytes() for n in range(64)}) == 64
  assert np.abs(x - glyph / 255.0).max(axis=(1, 2, 3)).min() > 0.01


# --------------------------------------------------------------------------------------------------
# Colour ops against hand-computed values and colorsys.
# --------------------------------------------------------------------------------------------------

PIXELS = np.array([[[0.2, 0.4, 0.6], [0.9, 0.1, 0.3], [1.0, 1.0, 1.0]],
                   [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.7, 0.8, 0.05]]], np.float32)


def test_grayscale_uses_itu_601_weights():
  gray = np.asarray(aug.rgb_to_grayscale(jnp.asarray(PIXELS)))
  assert gray.shape == (2, 3, 1)
  np.testing.assert_allclose(gray[0, 0, 0], 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6, atol=1e-6)
  np.testing.assert_allclose(gray[1, 2, 0], 0.299 * 0.7 + 0.587 * 0.8 + 0.114 * 0.05, atol=1e-6)


def test_grayscale_probability_one_gives_equal_channels():
  images = _images(3, 8, 8, 3)
  got = np.asarray(aug.augment(images, jax.random.key(0), aug.Recipe(grayscale_prob=1.0),
                               out_size=8))
  want = (images / 255.0) @ np.array([0.299, 0.587, 0.114])
  for c in range(3):
    np.testing.assert_allclose(got[..., c], want, atol=1e-5)


def test_brightness_contrast_saturation_hand_computed():
  x = jnp.asarray(PIXELS)
  np.testing.assert_allclose(aug.adjust_brightness(x, 1.5), np.clip(PIXELS * 1.5, 0, 1), atol=1e-6)
  np.testing.assert_allclose(aug.adjust_brightness(x, 0.5)[0, 1], [0.45, 0.05, 0.15], atol=1e-6)
  gray = PIXELS @ np.array([0.299, 0.587, 0.114])
  m = gray.mean()
  np.testing.assert_allclose(aug.adjust_contrast(x, 0.6), np.clip(0.6 * PIXELS + 0.4 * m, 0, 1),
                             atol=1e-6)
  np.testing.assert_allclose(aug.adjust_saturation(x, 1.4),
                             np.clip(1.4 * PIXELS - 0.4 * gray[..., None], 0, 1), atol=1e-6)
  # One channel: contrast uses the plain mean, saturation is a no-op.
  g = PIXELS[..., :1]
  np.testing.assert_allclose(aug.adjust_contrast(jnp.asarray(g), 0.5), 0.5 * g + 0.5 * g.mean(),
                             atol=1e-6)
  np.testing.assert_array_equal(aug.adjust_saturation(jnp.asarray(g), 0.1), g)
  np.testing.assert_array_equal(aug.adjust_hue(jnp.asarray(g), 0.3), g)


def test_hsv_conversions_and_hue_shift_match_colorsys():
  rgb = np.random.default_rng(0).random((300, 3)).astype(np.float32)
  rgb[:20] = rgb[:20, :1]  # grey pixels
  rgb[20:40, 1] = rgb[20:40, 0]  # ties between max channels
  hsv = np.asarray(aug.rgb_to_hsv(jnp.asarray(rgb)))
  want_hsv = np.array([colorsys.rgb_to_hsv(*p) for p in rgb.astype(np.float64)])
  np.testing.assert_allclose(hsv, want_hsv, atol=2e-6)
  np.testing.assert_allclose(aug.hsv_to_rgb(jnp.asarray(want_hsv, jnp.float32)), rgb, atol=2e-6)
  for shift in (-0.5, -0.1, 0.0, 0.05, 0.37, 0.5):
    want = np.array([colorsys.hsv_to_rgb((h + shift) % 1.0, s, v) for h, s, v in want_hsv])
    np.testing.assert_allclose(aug.adjust_hue(jnp.asarray(rgb), shift), want, atol=3e-6)


def test_gaussian_blur_matches_scipy_reflect_convolution():
  scipy_ndimage = pytest.importorskip("scipy.ndimage")
  image = np.random.default_rng(0).random((9, 11, 3))
  for sigma, taps in ((0.7, 3), (1.6, 13), (2.0, 5)):
    kernel = np.exp(-0.5 * (np.arange(taps) - taps // 2) ** 2 / sigma ** 2)
    kernel /= kernel.sum()
    want = scipy_ndimage.convolve1d(image, kernel, axis=0, mode="mirror")  # torch "reflect"
    want = scipy_ndimage.convolve1d(want, kernel, axis=1, mode="mirror")
    got = aug.gaussian_blur(jnp.asarray(image, jnp.float32), sigma, kernel_size=taps)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_random_order_jitter_equals_sequential_ops(order):
  x = jnp.asarray(np.random.default_rng(1).random((5, 6, 3)), jnp.float32)
  u_factors = jnp.array([0.9, 0.1, 0.75, 0.8])
  u_order = jnp.zeros(4).at[jnp.array(order)].set(jnp.arange(4) / 4.0)  # argsort(u_order) == order
  jitter = (0.4, 0.4, 0.4, 0.1)
  got = aug._color_jitter(x, u_factors, u_order, jitter, True)
  factors = {0: 0.6 + 0.8 * 0.9, 1: 0.6 + 0.8 * 0.1, 2: 0.6 + 0.8 * 0.75, 3: -0.1 + 0.2 * 0.8}
  ops = {0: aug.adjust_brightness, 1: aug.adjust_contrast, 2: aug.adjust_saturation,
         3: aug.adjust_hue}
  want = x
  for op in order:
    want = ops[op](want, factors[op])
  np.testing.assert_allclose(got, want, atol=2e-6)


def test_jitter_random_order_varies_and_grey_images_stay_sensible():
  images = _images(64, 8, 8, 3)
  r = aug.Recipe(jitter=(0.4, 0.4, 0.4, 0.4), jitter_prob=1.0)
  a = aug.augment(images, jax.random.key(0), r, out_size=8)
  b = aug.augment(images, jax.random.key(0), dataclasses.replace(r, jitter_random_order=False),
                  out_size=8)
  assert not np.allclose(a, b)  # some examples ran the ops in another order
  grey = aug.augment(images[..., :1], jax.random.key(0), _raw("cibhash"), out_size=8)
  assert grey.shape == (64, 8, 8, 1) and 0 <= float(grey.min()) and float(grey.max()) <= 1


# --------------------------------------------------------------------------------------------------
# Intensity ops.
# --------------------------------------------------------------------------------------------------


def test_intensity_scaling_is_a_per_example_factor():
  images = np.full((100, 6, 6, 1), 100, np.uint8)
  x = np.asarray(aug.augment(images, jax.random.key(0), aug.Recipe(intensity_scale=(0.7, 1.3)),
                             out_size=6))
  per_example = x.reshape(100, -1)
  np.testing.assert_allclose(per_example, per_example[:, :1] * np.ones((1, 36)), atol=1e-6)
  factors = per_example[:, 0] / (100 / 255)
  assert factors.min() >= 0.7 - 1e-5 and factors.max() <= 1.3 + 1e-5
  assert factors.max() - factors.min() > 0.4


def test_pixel_noise_has_the_requested_std():
  images = np.full((64, 16, 16, 1), 128, np.uint8)
  x = np.asarray(aug.augment(images, jax.random.key(0), aug.Recipe(noise_std=0.05), out_size=16))
  noise = x - 128 / 255
  assert abs(noise.mean()) < 2e-3 and abs(noise.std() - 0.05) < 2e-3
  assert abs(np.corrcoef(noise[:, :, :-1].ravel(), noise[:, :, 1:].ravel())[0, 1]) < 0.03


def test_random_erasing_writes_one_rectangle_of_the_requested_size():
  images = np.full((200, 16, 16, 1), 255, np.uint8)
  recipe = aug.Recipe(erase_prob=1.0, erase_scale=(0.05, 0.2), erase_value=0.25)
  x = np.asarray(aug.augment(images, jax.random.key(0), recipe, out_size=16))[..., 0]
  assert set(np.unique(x).round(5)) <= {0.25, 1.0}
  for img in x:
    rows, cols = np.nonzero(img == 0.25)
    assert rows.size > 0
    h, w = np.ptp(rows) + 1, np.ptp(cols) + 1
    assert rows.size == h * w  # a filled rectangle
    assert 0.05 * 256 * 0.6 <= rows.size <= 0.2 * 256 * 1.4
  never = np.asarray(aug.augment(images, jax.random.key(0), dataclasses.replace(
      recipe, erase_prob=0.0), out_size=16))
  np.testing.assert_array_equal(never, 1.0)


def test_erase_probability_is_respected():
  images = np.full((400, 8, 8, 1), 255, np.uint8)
  x = np.asarray(aug.augment(images, jax.random.key(0), _raw("digits"), out_size=8))
  erased = (x.reshape(400, -1) == 0).any(axis=1).mean()
  # p = 0.3, plus examples whose rotation/shift brings in zero fill at the border.
  assert 0.25 <= erased <= 1.0
  recipe = aug.Recipe(erase_prob=0.3, erase_scale=(0.02, 0.15))
  x = np.asarray(aug.augment(images, jax.random.key(0), recipe, out_size=8))
  assert abs((x.reshape(400, -1) == 0).any(axis=1).mean() - 0.3) < 0.07
