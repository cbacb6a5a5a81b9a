"""WCH's model (methods/wch.py): its head against a float64 numpy forward, its two initialisations
against their formulas, and the tanh-saturation metric against a numpy count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from unhash_jax import patch_similarity
from unhash_jax.methods import wch
from unhash_jax.methods.contract import StepBatch, StepContext
from unhash_jax.models import make_backbone


def _a(v):
  return np.asarray(v[...], np.float64)


def _model(dim=64, bits=32, hidden=128, **kw):
  return wch.WCHModel(make_backbone("flatten", (dim,), rngs=nnx.Rngs(0)), bits, hidden=hidden,
                      rngs=nnx.Rngs(1), **kw)


def _np_logits(model, tokens):
  """LayerNorm (eps 1e-6) of the mean token → Linear → ReLU → Linear, in float64."""
  x = np.asarray(tokens, np.float64).mean(1)
  x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
  x = x * _a(model.norm.scale) + _a(model.norm.bias)
  h = np.maximum(x @ _a(model.fc1.kernel) + _a(model.fc1.bias), 0)
  return h @ _a(model.fc2.kernel) + _a(model.fc2.bias)


@pytest.mark.parametrize("head_init", ["official", "fan_in"])
def test_logits_match_a_float64_forward(head_init):
  model = _model(head_init=head_init)
  tokens = np.random.default_rng(0).normal(size=(5, 3, 64)).astype(np.float32)
  np.testing.assert_allclose(model.logits(jnp.asarray(tokens)), _np_logits(model, tokens),
                             rtol=1e-4, atol=1e-4)


def test_official_init_is_kaiming_uniform_on_fan_out_with_unit_normal_biases():
  model = _model(dim=256, bits=64, hidden=1024, head_init="official")
  for layer, fan_out in ((model.fc1, 1024), (model.fc2, 64)):
    k = _a(layer.kernel)
    bound = np.sqrt(6.0 / fan_out)                       # uniform(-b, b) with variance 2 / fan_out
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.99 * bound
    np.testing.assert_allclose(k.std(), np.sqrt(2.0 / fan_out), rtol=0.03)
    np.testing.assert_allclose(_a(layer.bias).std(), 1.0, rtol=0.25)


def test_fan_in_init_has_zero_biases_and_lecun_kernels():
  model = _model(dim=256, bits=64, hidden=1024, head_init="fan_in")
  for layer, fan_in in ((model.fc1, 256), (model.fc2, 1024)):
    np.testing.assert_array_equal(_a(layer.bias), 0.0)
    np.testing.assert_allclose(_a(layer.kernel).std(), 1 / np.sqrt(fan_in), rtol=0.05)


def test_fan_in_init_starts_the_tanh_far_from_saturation():
  """What the option is for: on LN-scaled inputs the official fan-out init starts most tanh outputs
  beyond ±0.99 (logits of std ≈ 9 at 32 bits), Flax's fan-in init almost none."""
  tokens = jnp.asarray(np.random.default_rng(1).gamma(1.0, size=(512, 1, 256)), jnp.float32)
  share = {}
  for init in ("official", "fan_in"):
    t = np.tanh(np.asarray(_model(dim=256, hidden=1024, head_init=init).logits(tokens)))
    share[init] = (np.abs(t) > 0.99).mean()
  assert share["official"] > 0.5 and share["fan_in"] < 0.05, share


def test_unknown_head_init_is_refused_by_name():
  with pytest.raises(ValueError, match=r"head_init must be one of \['fan_in', 'official'\], "
                                       r"got 'kaiming'"):
    _model(head_init="kaiming")


def test_tanh_saturation_metric_counts_view_one_outputs_beyond_0_99():
  model = _model(dim=16, bits=8, hidden=32)
  rng = np.random.default_rng(2)
  v1, v2 = (jnp.asarray(rng.normal(size=(6, 16)), jnp.float32) for _ in range(2))
  hparams = wch.WCH.hparam_defaults
  ctx = StepContext(key=jax.random.key(0), step=jnp.int32(0), total_steps=jnp.int32(1),
                    steps_per_epoch=1, num_train=6, hparams=hparams)
  _, aux = wch.compute_loss(model, StepBatch((v1, v2), jnp.arange(6), {}), ctx)
  x1, _ = patch_similarity.mutual_attention(v1[:, None, :], v2[:, None, :],
                                            temperature=hparams["attention_temperature"])
  want = (np.abs(np.tanh(_np_logits(model, x1))) > 0.99).mean()
  assert 0 < want < 1
  np.testing.assert_allclose(float(aux["tanh_saturation"]), want)


def test_feature_dropout_acts_in_training_only_and_follows_the_key():
  model = _model(feature_dropout=0.5)
  tokens = jnp.asarray(np.random.default_rng(3).normal(size=(4, 2, 64)), jnp.float32)
  a = model.logits(tokens, train=True, key=jax.random.key(0))
  b = model.logits(tokens, train=True, key=jax.random.key(0))
  c = model.logits(tokens, train=True, key=jax.random.key(1))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  np.testing.assert_allclose(model.logits(tokens), _np_logits(model, tokens), rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="feature_dropout must lie in"):
    _model(feature_dropout=1.0)


class _TokenInputModel(wch.WCHModel):
  """WCH's head on inputs that already are patch tokens ``[B, P, D]``."""

  def tokens(self, x, *, train=False):
    del train
    return x


@pytest.mark.parametrize("symmetric", [False, True])
def test_symmetric_option_averages_both_directions_of_the_float64_objective(symmetric):
  from losses_wch_test import _np_wch  # noqa: PLC0415 (tests/ is on sys.path under pytest)
  model = _TokenInputModel(make_backbone("flatten", (6,), rngs=nnx.Rngs(0)), 8, hidden=16,
                           head_init="fan_in", rngs=nnx.Rngs(1))
  rng = np.random.default_rng(4)
  v1 = rng.normal(size=(5, 4, 6))
  v2 = v1 + 0.7 * rng.normal(size=(5, 4, 6))
  hparams = dict(wch.WCH.hparam_defaults, symmetric=symmetric, temperature=0.5,
                 weight_temperature=0.1, regularizer_weight=1.0)
  ctx = StepContext(key=jax.random.key(0), step=jnp.int32(0), total_steps=jnp.int32(1),
                    steps_per_epoch=1, num_train=5, hparams=hparams)
  batch = StepBatch((jnp.asarray(v1, jnp.float32), jnp.asarray(v2, jnp.float32)), jnp.arange(5), {})
  loss, aux = wch.compute_loss(model, batch, ctx)
  x1, x2 = (np.asarray(x, np.float64) for x in patch_similarity.mutual_attention(
      *batch.views, temperature=hparams["attention_temperature"]))
  t1, t2 = np.tanh(_np_logits(model, x1)), np.tanh(_np_logits(model, x2))
  forward = _np_wch(t1, t2, x1, x2, tau=0.5, tw=0.1)
  want = [(a + b) / 2 for a, b in zip(forward, _np_wch(t2, t1, x2, x1, tau=0.5, tw=0.1))
          ] if symmetric else forward
  assert abs(want[0] - forward[0]) > 1e-3 or not symmetric    # the reverse direction differs
  np.testing.assert_allclose(float(loss), want[0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(aux["weighted_contrastive"]), want[1], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(aux["regularizer"]), want[2], rtol=1e-4, atol=1e-5)
