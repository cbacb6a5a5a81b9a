"""ImageNet backbones against torchvision/timm: parity of the forwards through our own checkpoint
reader, the real MobileNetV2 weights, the loader's checks and errors, and the dropout key API.

Tolerances: the float32 forwards differ from torch's only by summation order and fused/unfused
rounding. Over the depths here (≤ 53 layers, sums of ≤ 25,088 products) that is ~1e-6 of the
output's scale (measured: 1e-7 – 3e-6); ``_close`` allows 1e-4 of the scale, which a wrong
layout, padding or epsilon exceeds by orders of magnitude (those give errors of O(scale)).
"""

import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from unhash_jax.models import (HashEncoder, PretrainedWeightsError, load_pretrained,
                               load_weights_into, make_backbone, uses_dropout, weights_digest)
from unhash_jax.models import layers, pretrained


@pytest.fixture(scope="module")
def ref():
  """tests/_torch_reference.py (skips the test without torch)."""
  import _torch_reference  # noqa: PLC0415
  return _torch_reference


def _close(ours, theirs, rel=1e-4):
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  assert ours.shape == theirs.shape
  scale = np.abs(theirs).max()
  err = np.abs(ours - theirs).max()
  assert err <= rel * scale, f"max |diff| {err:.3g} > {rel:g} x scale {scale:.3g}"


def _images(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@nnx.jit(static_argnames=("train", "logits"))
def _run(module, x, train=False, logits=False):
  """``(features, ImageNet logits or None)`` in one compiled program (eager dispatch of a whole
  CNN compiles each op apart: ~5x slower here)."""
  feats = module(x, train=train)
  head = getattr(module, "fc8", None) or getattr(module, "fc", None) or getattr(
      module, "classifier", None) or getattr(module, "head", None)
  return feats, (head(feats.pooled) if logits else None)


# ---------------------------------------------------------------------------------------------
# Parity with torchvision / timm (random weights, non-trivial BatchNorm statistics).


def _cnn_reference(ref, name, model, x):
  """torch's (pooled, final map, logits) for ``x`` [B, H, W, 3]."""
  torch = ref.torch
  with torch.no_grad():
    t = ref.nchw(x)
    if name == "vgg16":
      fmap = model.features(t)
      pooled = model.classifier[:5](torch.flatten(model.avgpool(fmap), 1))   # fc7 after ReLU
    elif name == "resnet50":
      h = model.maxpool(model.relu(model.bn1(model.conv1(t))))
      fmap = model.layer4(model.layer3(model.layer2(model.layer1(h))))
      pooled = fmap.mean((2, 3))
    else:
      fmap = model.features(t)
      pooled = fmap.mean((2, 3))
    return pooled.numpy(), ref.tokens_of_map(fmap), model(t).numpy()


@pytest.mark.parametrize("name,size", [("vgg16", 64), ("resnet50", 64), ("mobilenet_v2", 64),
                                       ("mobilenet_v2", 45)])   # odd size: stride-2 padding
def test_cnn_matches_torchvision(ref, tmp_path, name, size):
  ref.torch.manual_seed(0)
  model = ref.seeded(getattr(ref.torchvision.models, name)())
  path = ref.save_state_dict(model, tmp_path / f"{name}.pth")
  ours = load_pretrained(name, path, image_size=size, include_classifier=True)
  x = _images((2, size, size, 3))
  pooled, tokens, logits = _cnn_reference(ref, name, model, x)
  feats, our_logits = _run(ours, jnp.asarray(x), logits=True)
  assert ours.feature_dim == pooled.shape[1]
  _close(feats.pooled, pooled)
  _close(feats.tokens, tokens)
  _close(our_logits, logits)


def test_batchnorm_folding_and_depthwise_formulations_agree(ref, tmp_path):
  ref.torch.manual_seed(0)
  model = ref.seeded(ref.torchvision.models.mobilenet_v2())
  path = ref.save_state_dict(model, tmp_path / "m.pth")
  x = jnp.asarray(_images((2, 48, 48, 3)))
  base, _ = _run(load_pretrained("mobilenet_v2", path, image_size=48), x)
  for kwargs in ({"fold_bn": True}, {"depthwise_impl": "lax"}):
    other, _ = _run(load_pretrained("mobilenet_v2", path, image_size=48, **kwargs), x)
    _close(other.pooled, base.pooled)
    _close(other.tokens, base.tokens)


def test_train_mode_batchnorm_matches_torch_train_mode(ref, tmp_path):
  """train=True normalises by the batch's statistics (torch's model.train() forward)."""
  torch = ref.torch
  torch.manual_seed(0)
  model = ref.seeded(ref.torchvision.models.resnet50())
  path = ref.save_state_dict(model, tmp_path / "r.pth")
  ours = load_pretrained("resnet50", path, image_size=64)
  x = _images((4, 64, 64, 3))
  model.train()
  with torch.no_grad():
    h = model.maxpool(model.relu(model.bn1(model.conv1(ref.nchw(x)))))
    fmap = model.layer4(model.layer3(model.layer2(model.layer1(h))))
  feats, _ = _run(ours, jnp.asarray(x), train=True)
  # Each training-mode BN divides by the batch's deviations, which amplifies rounding layer after
  # layer: measured 8e-5 of the scale after layer4 at 64 px (2x2 maps, 16 values per channel;
  # 5e-3 at 32 px, where each channel has only 4 values), hence 1e-3.
  _close(feats.tokens, ref.tokens_of_map(fmap), rel=1e-3)


@pytest.mark.parametrize("library", ["torchvision", "timm"])
def test_small_vit_matches_torchvision_and_timm(ref, tmp_path, library):
  torch = ref.torch
  torch.manual_seed(0)
  cfg = dict(patch_size=8, depth=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)
  if library == "torchvision":
    from torchvision.models.vision_transformer import VisionTransformer  # noqa: PLC0415
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                              hidden_dim=32, mlp_dim=64, num_classes=10)
  else:
    from timm.models.vision_transformer import VisionTransformer  # noqa: PLC0415
    ref.timm()
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                              mlp_ratio=2, num_classes=10)
  with torch.no_grad():   # zero-initialised biases, CLS token and head would hide layout errors
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.05)
  model.eval()
  if library == "timm":   # timm/Hugging Face publish safetensors
    import safetensors.torch  # noqa: PLC0415
    path = str(tmp_path / "vit.safetensors")
    safetensors.torch.save_file(model.state_dict(), path)
  else:
    path = ref.save_state_dict(model, tmp_path / "vit.pth")
  ours = load_pretrained("vit_b16", path, image_size=32, include_classifier=True, **cfg)
  x = _images((2, 32, 32, 3))
  with torch.no_grad():
    t = ref.nchw(x)
    if library == "torchvision":
      h = model._process_input(t)
      h = model.encoder(torch.cat([model.class_token.expand(2, -1, -1), h], dim=1))
    else:
      h = model.forward_features(t)
    logits = model(t).numpy()
  feats, our_logits = _run(ours, jnp.asarray(x), logits=True)
  assert feats.tokens.shape == (2, 16, 32)
  _close(feats.pooled, h[:, 0].numpy())
  _close(feats.tokens, h[:, 1:].numpy())
  _close(our_logits, logits)


@pytest.mark.parametrize("size_in,size_out", [(2, 7), (5, 7), (9, 7), (13, 7), (7, 3), (7, 7)])
def test_adaptive_avg_pool_matches_torch(ref, size_in, size_out):
  torch = ref.torch
  x = _images((2, size_in, size_in + 1, 3))
  expect = torch.nn.AdaptiveAvgPool2d(size_out)(ref.nchw(x))
  _close(layers.adaptive_avg_pool2d(jnp.asarray(x), size_out), ref.nhwc(expect), rel=1e-6)


def test_max_pool_matches_torch(ref):
  x = _images((2, 9, 8, 3))
  expect = ref.torch.nn.MaxPool2d(3, 2, 1)(ref.nchw(x))
  np.testing.assert_array_equal(layers.max_pool(jnp.asarray(x), 3, 2, 1), ref.nhwc(expect))


# ---------------------------------------------------------------------------------------------
# The real ImageNet MobileNetV2 weights on real photos.


def test_real_mobilenet_v2_weights_on_photos(ref, shared_data_dir):
  path = os.path.join(shared_data_dir, "mobilenet_v2-b0353104.pth")
  if not os.path.exists(path):
    pytest.skip(f"{path} not present")
  torch, tv = ref.torch, ref.torchvision
  from PIL import Image  # noqa: PLC0415
  from sklearn.datasets import load_sample_images  # noqa: PLC0415
  from torchvision import transforms  # noqa: PLC0415
  preprocess = transforms.Compose([
      transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
      transforms.Normalize(pretrained.IMAGENET_MEAN, pretrained.IMAGENET_STD)])
  batch = torch.stack([preprocess(Image.fromarray(im)) for im in load_sample_images().images])
  model = tv.models.mobilenet_v2()
  model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
  model.eval()
  with torch.no_grad():
    pooled = model.features(batch).mean((2, 3)).numpy()
    logits = model(batch).numpy()
  ours = load_pretrained("mobilenet_v2", path, include_classifier=True)
  x = jnp.asarray(batch.numpy().transpose(0, 2, 3, 1))
  feats, our_logits = _run(ours, x, logits=True)
  our_pooled, our_logits = np.asarray(feats.pooled), np.asarray(our_logits)
  np.testing.assert_array_equal(np.argsort(-our_logits, 1)[:, :5], np.argsort(-logits, 1)[:, :5])
  rel = np.abs(our_pooled - pooled).max() / np.abs(pooled).max()
  assert rel < 1e-3, rel


def test_weights_digest_is_the_files_sha256(tmp_path):
  path = tmp_path / "w.bin"
  path.write_bytes(b"weights" * 1000)
  assert weights_digest(path) == hashlib.sha256(b"weights" * 1000).hexdigest()
  assert weights_digest(str(path)) == weights_digest(path)   # cached
  path.write_bytes(b"other")
  os.utime(path, ns=(1, 1))
  assert weights_digest(path) == hashlib.sha256(b"other").hexdigest()


# ---------------------------------------------------------------------------------------------
# Loader checks (files written with safetensors.numpy: no torch needed).


def _synthetic_file(tmp_path, name, *, drop=(), add=None, reshape=None, **kwargs):
  """A safetensors file with ``name``'s torchvision keys and shapes (zeros; BN variances 1)."""
  import safetensors.numpy  # noqa: PLC0415
  module = nnx.eval_shape(lambda: make_backbone(name, (64, 64, 3), rngs=nnx.Rngs(0), **kwargs))
  table = pretrained.TABLES[name](module)
  tensors = {}
  for e in table.entries:
    var = pretrained._variable(module, e.path)
    tensors[e.torch_key] = np.ones(e.transform.torch_shape(tuple(var.shape)), np.float32)
  for k in drop:
    del tensors[k]
  tensors.update(add or {})
  for k, shape in (reshape or {}).items():
    tensors[k] = np.ones(shape, np.float32)
  path = str(tmp_path / f"{name}.safetensors")
  safetensors.numpy.save_file(tensors, path)
  return path


def test_file_of_another_architecture_is_named(tmp_path):
  resnet = _synthetic_file(tmp_path, "resnet50")
  with pytest.raises(PretrainedWeightsError, match="looks like resnet50 weights, not mobilenet_v2"):
    load_pretrained("mobilenet_v2", resnet, image_size=64)
  mobilenet = _synthetic_file(tmp_path, "mobilenet_v2")
  with pytest.raises(PretrainedWeightsError, match="looks like mobilenet_v2 weights, not vgg16"):
    load_pretrained("vgg16", mobilenet, image_size=64)
  with pytest.raises(PretrainedWeightsError, match="looks like resnet50 weights, not vit_b16"):
    load_pretrained("vit_b16", resnet)


def test_missing_unexpected_and_mismatched_keys_are_listed(tmp_path):
  path = _synthetic_file(tmp_path, "mobilenet_v2", drop=["features.3.conv.1.0.weight"],
                         add={"features.3.extra": np.ones(2, np.float32)})
  with pytest.raises(PretrainedWeightsError,
                     match=r"1 missing keys: features\.3\.conv\.1\.0\.weight; 1 unexpected keys: "
                           r"features\.3\.extra"):
    load_pretrained("mobilenet_v2", path, image_size=64)
  path = _synthetic_file(tmp_path, "mobilenet_v2", reshape={"features.0.0.weight": (16, 3, 3, 3)})
  with pytest.raises(PretrainedWeightsError,
                     match=r"1 mismatched tensors: features\.0\.0\.weight \[16, 3, 3, 3\] \(module "
                           r"expects \[32, 3, 3, 3\]\)"):
    load_pretrained("mobilenet_v2", path, image_size=64)
  # the classifier is optional: ignored without include_classifier, required with it
  path = _synthetic_file(tmp_path, "mobilenet_v2")
  with pytest.raises(PretrainedWeightsError, match=r"missing keys: classifier\.1\.weight"):
    load_pretrained("mobilenet_v2", path, image_size=64, include_classifier=True)
  with pytest.raises(ValueError, match="valid choices: mobilenet_v2, resnet50, vgg16, vit_b16"):
    load_pretrained("small_cnn", path)


def test_load_weights_into_fills_a_built_module_in_place(tmp_path):
  path = _synthetic_file(tmp_path, "mobilenet_v2")
  module = make_backbone("mobilenet_v2", (32, 32, 3), rngs=nnx.Rngs(0))
  assert load_weights_into(module, "mobilenet_v2", path) is module
  np.testing.assert_array_equal(module.stem.conv.kernel[...], np.ones((3, 3, 3, 32)))
  np.testing.assert_array_equal(module.blocks[3].depthwise.bn.var[...], np.ones(144))


def test_vit_names_of_both_libraries_are_detected(tmp_path):
  cfg = dict(patch_size=8, depth=1, num_heads=2, hidden_dim=16, mlp_dim=32)
  module = nnx.eval_shape(lambda: make_backbone("vit_b16", (32, 32, 3), rngs=nnx.Rngs(0), **cfg))
  assert pretrained.TABLES["vit_b16"](module, {"conv_proj.weight"}).source == "torchvision"
  assert pretrained.TABLES["vit_b16"](module, {"patch_embed.proj.weight"}).source == "timm"


# ---------------------------------------------------------------------------------------------
# Registry and the dropout key API.


@pytest.mark.parametrize("name,kwargs,dim,tokens,token_dim", [
    ("vgg16", {}, 4096, 4, 512), ("resnet50", {}, 2048, 4, 2048), ("mobilenet_v2", {}, 1280, 4, 1280),
    ("vit_b16", dict(patch_size=16, depth=1, num_heads=2, hidden_dim=32, mlp_dim=64), 32, 16, 32)])
def test_registered_backbones_build_randomly_initialised(name, kwargs, dim, tokens, token_dim):
  module = make_backbone(name, (64, 64, 3), rngs=nnx.Rngs(0), **kwargs)
  feats, _ = _run(module, jnp.ones((2, 64, 64, 3)))
  assert (module.feature_dim, module.token_dim) == (dim, token_dim)
  assert feats.pooled.shape == (2, dim) and feats.tokens.shape == (2, tokens, token_dim)
  assert np.isfinite(np.asarray(feats.pooled)).all()


def test_vgg_dropout_follows_the_key_and_reaches_a_frozen_backbone():
  vgg = make_backbone("vgg16", (32, 32, 3), rngs=nnx.Rngs(0))
  x = jnp.asarray(_images((2, 32, 32, 3)))
  plain = vgg(x).pooled
  np.testing.assert_array_equal(vgg(x, train=True).pooled, plain)          # no key: no dropout
  a = vgg(x, key=jax.random.key(1)).pooled
  np.testing.assert_array_equal(vgg(x, train=False, key=jax.random.key(1)).pooled, a)
  assert not np.allclose(a, plain) and not np.allclose(vgg(x, key=jax.random.key(2)).pooled, a)
  assert uses_dropout(vgg)
  assert not uses_dropout(make_backbone("vgg16", (32, 32, 3), rngs=nnx.Rngs(0), dropout_rate=0.0))

  enc = HashEncoder(vgg, 8, hidden=16, frozen_backbone=True, rngs=nnx.Rngs(1))
  k = jax.random.key(3)
  kb, _ = jax.random.split(k)
  np.testing.assert_allclose(enc(x, train=True, key=k), enc.head(vgg(x, key=kb).pooled),
                             rtol=1e-6, atol=1e-6)   # the frozen backbone still drops out
  np.testing.assert_allclose(enc(x, train=False), enc.head(plain), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="backbone has dropout"):
    enc(x, train=True)


def test_hash_encoder_keeps_its_key_when_the_backbone_has_no_dropout():
  from unhash_jax.dropout import dropout  # noqa: PLC0415
  enc = HashEncoder(make_backbone("flatten", (16,), rngs=nnx.Rngs(0)), 4, hidden=8,
                    feature_dropout=0.5, rngs=nnx.Rngs(1))
  x, k = jnp.ones((3, 16)), jax.random.key(5)
  np.testing.assert_array_equal(enc(x, train=True, key=k), enc.head(dropout(x, rate=0.5, key=k)))
