"""Backbones, heads, the frozen-backbone mode and the registries."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from unhash_jax import parallel, train
from unhash_jax.config import Config
from unhash_jax.methods import REGISTRY, get_method, register, resolve_config
from unhash_jax.models import BACKBONES, HashEncoder, make_backbone, register_backbone


@pytest.mark.parametrize("name,shape,tokens", [("mlp", (8, 8, 1), 1), ("small_cnn", (32, 32, 3), 64),
                                               ("tiny", (8, 8, 1), 1), ("flatten", (4, 4, 2), 1)])
def test_backbones_give_pooled_features_and_tokens(name, shape, tokens):
  model = HashEncoder(make_backbone(name, shape, rngs=nnx.Rngs(0)), 12, hidden=8, rngs=nnx.Rngs(1))
  x = jnp.ones((3, *shape))
  feats = model.features(x)
  assert feats.pooled.shape == (3, model.backbone.feature_dim)
  assert feats.tokens.shape == (3, tokens, model.backbone.feature_dim)
  assert model(x).shape == (3, 12)
  # the backbone call API: backbone(x, *, train, key); these have no dropout and ignore the key
  keyed = model.backbone(x, train=False, key=jax.random.key(0))
  np.testing.assert_array_equal(keyed.pooled, feats.pooled)


def test_unknown_and_duplicate_names_raise():
  with pytest.raises(ValueError, match="valid choices: .*mlp"):
    make_backbone("vgg99", (8, 8, 1), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="already registered"):
    register_backbone(BACKBONES["mlp"])
  with pytest.raises(ValueError, match="already registered"):
    register(REGISTRY["cibhash"])
  with pytest.raises(ValueError, match="valid choices: .*cibhash"):
    get_method("nope")


def test_resolve_config_precedence():
  c = resolve_config(Config())
  assert (c.backbone, c.batch_size, c.hparams["temperature"]) == ("mlp", 128, 0.5)  # digits preset
  c = resolve_config(Config(batch_size=64, hparams={"temperature": 0.2}))
  assert (c.batch_size, c.hparams["temperature"], c.hparams["kl_weight"]) == (64, 0.2, 1e-3)
  c = resolve_config(Config(dataset="cifar10"))
  assert (c.backbone, c.hparams["temperature"]) == ("small_cnn", 0.3)      # method defaults
  with pytest.raises(ValueError, match="no hyper-parameter"):
    resolve_config(Config(hparams={"gamma": 1.0}))


def test_frozen_backbone_is_not_trained_and_keeps_batch_stats(tmp_path):
  cfg = resolve_config(Config(backbone="tiny", bits=8, batch_size=16, image_size=8,
                              model={"hidden": 16, "frozen_backbone": True}))
  mesh = parallel.make_data_mesh(jax.devices()[:1])
  setup, state = train.create_train_state(cfg, (8, 8, 1), mesh)
  assert "backbone" not in state.params and "backbone" in state.rest
  before_rest = jax.device_get(state.rest)
  before_head = jax.device_get(state.params)
  step = train.make_train_step(setup)
  images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
  state, _ = step(state, {"image": jnp.asarray(images)}, jax.random.key(0))
  for a, b in zip(jax.tree.leaves(before_rest), jax.tree.leaves(jax.device_get(state.rest))):
    np.testing.assert_array_equal(a, b)   # frozen weights and BN statistics untouched
  changed = [not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(before_head), jax.tree.leaves(jax.device_get(state.params)))]
  assert any(changed)


def test_unfrozen_backbone_updates_batch_stats():
  cfg = resolve_config(Config(backbone="tiny", bits=8, batch_size=16, image_size=8,
                              model={"hidden": 16}))
  mesh = parallel.make_data_mesh(jax.devices()[:1])
  setup, state = train.create_train_state(cfg, (8, 8, 1), mesh)
  mean_before = np.asarray(state.rest["backbone"]["norm"]["mean"][...])
  images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
  state, _ = train.make_train_step(setup)(state, {"image": jnp.asarray(images)}, jax.random.key(0))
  assert not np.array_equal(mean_before, np.asarray(state.rest["backbone"]["norm"]["mean"][...]))


def test_max_pool_2x2_matches_a_numpy_loop():
  from unhash_jax.models.backbones import _max_pool_2x2
  x = np.random.default_rng(0).normal(size=(2, 7, 6, 3)).astype(np.float32)
  expect = np.zeros((2, 3, 3, 3), np.float32)
  for b, i, j, c in np.ndindex(expect.shape):
    expect[b, i, j, c] = x[b, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c].max()
  np.testing.assert_array_equal(_max_pool_2x2(jnp.asarray(x)), expect)


def test_feature_norm_l2_scales_each_feature_to_unit_mean_square():
  model = HashEncoder(make_backbone("flatten", (6,), rngs=nnx.Rngs(0)), 4, hidden=5,
                      feature_norm="l2", rngs=nnx.Rngs(1))
  x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32) * 7
  scaled = x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1, keepdims=True))
  plain = HashEncoder(make_backbone("flatten", (6,), rngs=nnx.Rngs(0)), 4, hidden=5,
                      rngs=nnx.Rngs(1))
  np.testing.assert_allclose(model(jnp.asarray(x)), plain(jnp.asarray(scaled, jnp.float32)),
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="feature_norm"):
    HashEncoder(make_backbone("flatten", (6,), rngs=nnx.Rngs(0)), 4, feature_norm="z", rngs=nnx.Rngs(1))


def test_feature_input_rejects_a_dropout_rate_outside_0_1_and_needs_a_key_to_drop():
  from unhash_jax.models.feature_input import FeatureInput
  for rate in (-0.1, 1.0, 1.5):
    with pytest.raises(ValueError, match="feature_dropout"):
      FeatureInput(4, dropout_rate=rate)
  layer = FeatureInput(4, dropout_rate=0.5)
  x = jnp.ones((2, 4))
  np.testing.assert_array_equal(layer(x), x)   # evaluation: nothing drops, no key needed
  with pytest.raises(ValueError, match="PRNG key"):
    layer(x, train=True)
  dropped = np.asarray(layer(x, train=True, key=jax.random.key(0)))
  assert set(np.unique(dropped)) <= {0.0, 2.0}


@pytest.mark.parametrize("method", ["nsh", "fdbh"])
def test_nsh_and_fdbh_read_the_pooled_feature_through_feature_input(method):
  """With ``feature_norm="l2"`` the model equals the plain one fed the scaled feature (reference:
  float64 NumPy scaling); with ``feature_dropout`` training needs a key and the key changes the
  output, evaluation does not drop."""
  from unhash_jax.methods import fdbh, nsh
  model_cls = {"nsh": nsh.NSHModel, "fdbh": fdbh.FDBHModel}[method]

  def build(**kw):
    return model_cls(make_backbone("flatten", (6,), rngs=nnx.Rngs(0)), 4, rngs=nnx.Rngs(1), **kw)

  x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32) * 3
  scaled = x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1, keepdims=True))
  got = build(feature_norm="l2")(jnp.asarray(x))
  want = build()(jnp.asarray(scaled, jnp.float32))
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
  if method == "nsh":   # the latent head reads the same scaled feature; FDBH's target stays x
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)
  else:
    np.testing.assert_array_equal(got[1], x)
  dropping = build(feature_dropout=0.5)
  np.testing.assert_array_equal(dropping(jnp.asarray(x))[0], build()(jnp.asarray(x))[0])
  with pytest.raises(ValueError, match="PRNG key"):
    dropping(jnp.asarray(x), train=True)
  a = dropping(jnp.asarray(x), train=True, key=jax.random.key(0))[0]
  b = dropping(jnp.asarray(x), train=True, key=jax.random.key(1))[0]
  assert not np.allclose(a, b)
