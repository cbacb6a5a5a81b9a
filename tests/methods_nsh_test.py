"""NSH method wiring: model heads, test codes, gradients to both heads, registry/config, CLI run."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from unhash_jax.config import Config
from unhash_jax.methods import get_method, resolve_config
from unhash_jax.methods import nsh as nsh_method
from unhash_jax.methods.contract import BuildContext, StepBatch, StepContext
from unhash_jax.optim import RunPlan

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PLAN = RunPlan(num_train=64, batch_size=8, steps_per_epoch=8, total_steps=10)


def _batch(*views):
  return StepBatch(views=tuple(views), position=jnp.arange(views[0].shape[0]), tables={})


def _ctx(hparams):
  return StepContext(key=jax.random.key(0), step=jnp.int32(0), total_steps=jnp.int32(10),
                     steps_per_epoch=8, num_train=64, hparams=hparams)


def build_ctx(shape=(8, 8, 1), num_train=16):
  return BuildContext(input_shape=shape, num_train=num_train, rngs=nnx.Rngs(params=0))


def _model(bits=8, latent_dim=16, backbone="mlp", **model):
  config = Config(method="nsh", bits=bits, backbone=backbone,
                  model={"latent_dim": latent_dim, "backbone_kwargs": {"hidden": (32,)}, **model})
  if backbone != "mlp":
    config = config.replace(model={"latent_dim": latent_dim, **model})
  return nsh_method.make_model(config, build_ctx())


def _images(n, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, 8, 8, 1))


def test_model_heads_match_their_definition():
  model = _model()
  x = _images(5)
  b, z = model(x)
  h = model.backbone(x).pooled
  w_b, c_b = model.hash_head.kernel[...], model.hash_head.bias[...]
  w_z, c_z = model.latent_head.kernel[...], model.latent_head.bias[...]
  np.testing.assert_allclose(np.asarray(b), np.tanh(np.asarray(h @ w_b + c_b)), rtol=1e-5,
                             atol=1e-6)
  z_raw = np.asarray(h @ w_z + c_z)
  np.testing.assert_allclose(np.asarray(z), z_raw / np.linalg.norm(z_raw, axis=1, keepdims=True),
                             rtol=1e-5, atol=1e-6)
  assert b.shape == (5, 8) and z.shape == (5, 16)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(z), axis=1), 1.0, rtol=1e-5)


def test_encode_returns_pre_tanh_logits_whose_sign_is_the_code():
  model = _model()
  x = _images(6, seed=1)
  logits = nsh_method.encode(model, x)
  b, _ = model(x)
  np.testing.assert_allclose(np.asarray(jnp.tanh(logits)), np.asarray(b), rtol=1e-5, atol=1e-6)
  assert not np.allclose(np.asarray(logits), np.asarray(b))  # not the tanh output itself


def test_latent_dim_is_a_model_option():
  config = resolve_config(Config(method="nsh", dataset="digits", bits=16,
                                 model={"latent_dim": 64}))
  model = nsh_method.make_model(config, build_ctx())
  assert model.latent_head.kernel[...].shape[-1] == 64
  default = resolve_config(Config(method="nsh", dataset="digits", bits=16))
  assert default.model["latent_dim"] == 1024
  with pytest.raises(ValueError, match="latent_dim"):
    _model(latent_dim=0)


def test_compute_loss_gives_finite_gradients_to_both_heads_and_backbone():
  model = _model()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  v1, v2 = _images(8, seed=2), _images(8, seed=2) + 0.1 * _images(8, seed=3)
  hparams = get_method("nsh").hparam_defaults

  def loss_fn(p, hp):
    m = nnx.merge(graphdef, p, rest)
    return nsh_method.compute_loss(m, _batch(v1, v2), _ctx(hp))

  for hp in (hparams, {**hparams, "quantization_weight": 0.0}):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, hp)
    assert np.isfinite(float(loss))
    assert set(aux) >= {"sorted_nce", "quantization", "bit_balance", "self_top1"}
    for head in ("hash_head", "latent_head", "backbone"):
      leaves = jax.tree.leaves(grads[head])
      assert leaves and all(np.isfinite(np.asarray(g)).all() for g in leaves)
      assert max(float(jnp.abs(g).max()) for g in leaves) > 0, head


def test_frozen_backbone_gets_no_gradient():
  model = _model(backbone="tiny", frozen_backbone=True)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  v1, v2 = _images(8, seed=4), _images(8, seed=5)

  def loss_fn(p):
    m = nnx.merge(graphdef, p, rest)
    return nsh_method.compute_loss(m, _batch(v1, v2), _ctx(get_method("nsh").hparam_defaults))[0]

  grads = jax.grad(loss_fn)(params)
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["backbone"]))
  assert float(jnp.abs(grads["hash_head"]["kernel"]).max()) > 0


def test_backbone_lr_scale_scales_only_backbone_updates():
  # Reference: plain optax.adam at the config's lr; the backbone's updates must be `scale` times
  # those, the heads' identical, over several steps of a random gradient sequence.
  import optax
  from unhash_jax import train
  lr = 1e-2
  for scale in (0.0, 0.1):
    config = resolve_config(Config(method="nsh", dataset="digits", bits=8, learning_rate=lr,
                                   weight_decay=0.0,
                                   model={"latent_dim": 16, "backbone_kwargs": {"hidden": (32,)},
                                          "backbone_lr_scale": scale}))
    model = nsh_method.make_model(config, build_ctx())
    _, params, _ = nnx.split(model, train.trainable_filter(config), ...)
    tx, ref = get_method("nsh").make_optimizer(config, _PLAN), optax.adam(lr)
    state, ref_state = tx.init(params), ref.init(params)
    for step in range(3):
      keys = iter(jax.random.split(jax.random.key(step), 16))
      grads = jax.tree.map(lambda a: jax.random.normal(next(keys), a.shape), params)
      upd, state = tx.update(grads, state, params)
      ref_upd, ref_state = ref.update(grads, ref_state, params)
      for name in ("backbone", "hash_head", "latent_head"):
        want = scale if name == "backbone" else 1.0
        for u, r in zip(jax.tree.leaves(upd[name]), jax.tree.leaves(ref_upd[name])):
          np.testing.assert_allclose(np.asarray(u), want * np.asarray(r), rtol=1e-6, atol=1e-12)
  with pytest.raises(ValueError, match="backbone_lr_scale"):
    get_method("nsh").make_optimizer(config.replace(model={**config.model, "backbone_lr_scale": -1}),
                                     _PLAN)


def test_hparams_map_to_loss_keywords():
  hp = get_method("nsh").hparam_defaults
  kw = nsh_method.loss_kwargs(hp)
  assert kw["sort_temperature"] is None          # 0 = 1/bits
  assert nsh_method.loss_kwargs({**hp, "sort_temperature": 16.0})["sort_temperature"] == 16.0
  from unhash_jax.losses import nsh_loss
  import inspect
  loss_params = set(inspect.signature(nsh_loss).parameters)
  assert set(kw) <= loss_params and set(hp) <= loss_params
  assert (kw["nce_temperature"], kw["num_positives"], kw["quantization_weight"]) == (0.3, 2, 1.0)
  assert kw["renormalize_gathered"] and not kw["strict_double_softmax"] and not kw["sort_hard"]


def test_registry_presets_and_recipes():
  nsh = resolve_config(Config(method="nsh", dataset="digits"))
  assert nsh.view_recipes == ("digits_light", "digits_light")
  # NSH's digits views are the lighter recipe; CIBHash keeps the full digits one.
  assert resolve_config(Config(method="cibhash")).view_recipes == ("digits", "digits")
  from unhash_jax.data import augment
  light, full = augment.get_recipe("digits_light"), augment.get_recipe("digits")
  assert light.flip_prob == 0.0 and light.erase_prob == 0.0 and light.crop_scale is None
  assert 0 < light.rotation_deg < full.rotation_deg and 0 < light.translate < full.translate
  assert (light.mean, light.std) == (full.mean, full.std)
  # batch 64: the tests run on 8 fake devices, which the ports' batch of 50 does not fit.
  paper = resolve_config(Config(method="nsh", dataset="cifar10", batch_size=64))
  assert paper.view_recipes == ("mocov2_view1", "mocov2_view2")
  assert (paper.learning_rate, paper.weight_decay) == (1e-5, 1e-5)
  digits = resolve_config(Config(method="nsh", dataset="digits"))
  assert digits.backbone == get_method("cibhash").presets["digits"]["backbone"] == "mlp"
  # The user's flags win over the preset.
  user = resolve_config(Config(method="nsh", dataset="digits", learning_rate=0.5,
                               hparams={"num_positives": 3}))
  assert user.learning_rate == 0.5 and user.hparams["num_positives"] == 3
  with pytest.raises(ValueError, match="temperature"):
    resolve_config(Config(method="nsh", hparams={"temperature": 0.2}))  # a CIBHash name


@pytest.mark.slow
def test_cli_two_step_run(tmp_path):
  workdir, data_dir = tmp_path / "run", tmp_path / "data"
  cmd = [sys.executable, "-m", "unhash_jax.main", "--method=nsh", "--bits=16", "--steps=2",
         "--batch_size=32", f"--workdir={workdir}", f"--data_dir={data_dir}", "--eval_every=0",
         "--log_every=1", "--num_positives=3", "--sort_temperature=0.125", "--sort_hard"]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
         "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  results = json.loads((workdir / "results.json").read_text())
  assert results["method"] == "nsh" and results["bits"] == 16 and results["steps"] == 2
  assert 0.0 <= results["map"] <= 1.0
  config = json.loads((workdir / "config.json").read_text())
  assert config["hparams"]["num_positives"] == 3
  assert config["hparams"]["sort_temperature"] == 0.125 and config["hparams"]["sort_hard"] is True
  assert config["backbone"] == "mlp" and config["model"]["latent_dim"] == 1024
  codes = np.load(workdir / "codes.npz")
  assert codes["query_codes"].shape[1] == 16
  assert set(np.unique(codes["query_codes"])) <= {-1, 1}
