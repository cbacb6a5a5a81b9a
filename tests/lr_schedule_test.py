"""Optimizers and learning-rate schedules (unhash_jax.optim) against hand-written formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax

from unhash_jax.config import Config, ConfigError
from unhash_jax.methods import get_method, resolve_config
from unhash_jax.optim import RunPlan, learning_rate_schedule, make_optimizer

LR = 3e-4


def _config(**kw) -> Config:
  return resolve_config(Config(**{"method": "cibhash", "learning_rate": LR, **kw}))


def _plan(total: int, steps_per_epoch: int = 1) -> RunPlan:
  return RunPlan(num_train=64 * steps_per_epoch, batch_size=64, steps_per_epoch=steps_per_epoch,
                 total_steps=total)


def _reference(t: int, *, schedule: str, warmup: int, total: int) -> float:
  """float64 learning rate at optimizer step ``t`` (0-based count of applied updates)."""
  if t < warmup:
    return LR * t / warmup
  if schedule == "constant":
    return LR
  progress = min(t - warmup, total - warmup) / (total - warmup)
  return LR * 0.5 * (1.0 + math.cos(math.pi * progress))


def test_resolved_defaults_are_constant_without_warmup():
  config = _config()
  assert config.lr_schedule == "constant" and config.warmup_steps == 0
  assert config.optimizer == "adam"
  assert learning_rate_schedule(config, _plan(100)) == LR


@pytest.mark.parametrize("schedule,warmup,total", [
    ("constant", 4, 20), ("cosine", 0, 20), ("cosine", 5, 20), ("cosine", 1, 3)])
def test_schedule_values_match_the_formula(schedule, warmup, total):
  fn = learning_rate_schedule(_config(lr_schedule=schedule, warmup_steps=warmup), _plan(total))
  got = [float(fn(t)) for t in range(total + 3)]
  want = [_reference(t, schedule=schedule, warmup=warmup, total=total) for t in range(total + 3)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-10)


def test_adam_updates_follow_the_schedule():
  """With a constant gradient Adam's bias-corrected step is lr_t·sign(g), so the updates trace the
  schedule itself."""
  total, warmup = 8, 3
  config = _config(lr_schedule="cosine", warmup_steps=warmup)
  tx = get_method("cibhash").make_optimizer(config, _plan(total))
  params = {"w": jnp.zeros((3,))}
  grads = {"w": jnp.asarray([0.5, -2.0, 1.0])}
  state = tx.init(params)
  for t in range(total):
    updates, state = tx.update(grads, state, params)
    want = -_reference(t, schedule="cosine", warmup=warmup, total=total) * np.sign(grads["w"])
    np.testing.assert_allclose(np.asarray(updates["w"]), want, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("kw,total,needle", [
    ({"lr_schedule": "linear"}, 10, "unknown lr_schedule 'linear'"),
    ({"warmup_steps": -1}, 10, "warmup_steps must be >= 0"),
    ({"lr_schedule": "cosine", "warmup_steps": 10}, 10, "needs total_steps > warmup_steps (10)"),
    ({"lr_schedule": "log_epoch"}, 10, "needs --final_learning_rate > 0"),
    ({"optimizer": "lamb"}, 10, "unknown optimizer 'lamb'"),
])
def test_bad_schedules_raise(kw, total, needle):
  config = _config().replace(**kw)  # past resolve_config, which refuses them too (below)
  with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
    learning_rate_schedule(config, _plan(total)) if "optimizer" not in kw else make_optimizer(
        config, _plan(total))


@pytest.mark.parametrize("kw", [{"lr_schedule": "linear"}, {"warmup_steps": -1},
                                {"lr_schedule": "log_epoch"}, {"optimizer": "lamb"}])
def test_resolve_config_refuses_bad_schedules(kw):
  with pytest.raises(ConfigError):
    _config(**kw)


def _cosine_epoch_reference(t, *, epochs, spe):
  """PyTorch CosineAnnealingLR(T_max=epochs) stepped after every epoch."""
  e = min(t // spe, epochs - 1)
  return LR * 0.5 * (1 + math.cos(math.pi * e / epochs))


def test_cosine_epoch_is_constant_within_an_epoch_and_follows_torch_formula():
  spe, epochs = 5, 4
  fn = learning_rate_schedule(_config(lr_schedule="cosine_epoch"), _plan(spe * epochs, spe))
  got = [float(fn(t)) for t in range(spe * epochs + 2)]
  want = [_cosine_epoch_reference(t, epochs=epochs, spe=spe) for t in range(spe * epochs + 2)]
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_log_epoch_reproduces_ddh_logspace():
  """DDH's official rate: lr_e = 10^(−2 − 4e/99), e = 0..99 (MATLAB logspace(-2, -6, 100))."""
  spe, epochs = 3, 100
  config = _config(lr_schedule="log_epoch", learning_rate=1e-2, final_learning_rate=1e-6)
  fn = learning_rate_schedule(config, _plan(spe * epochs, spe))
  got = np.array([float(fn(t)) for t in range(0, spe * epochs, spe)])
  want = 10.0 ** (-2 - 4 * np.arange(epochs) / 99)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert float(fn(1)) == float(fn(0)) and float(fn(spe)) < float(fn(spe - 1))


def test_epoch_schedules_count_the_warmup_in_the_epoch():
  spe, epochs, warmup = 4, 3, 2
  fn = learning_rate_schedule(_config(lr_schedule="cosine_epoch", warmup_steps=warmup),
                              _plan(spe * epochs, spe))
  np.testing.assert_allclose([float(fn(t)) for t in range(warmup)], [0.0, LR / 2])
  np.testing.assert_allclose([float(fn(t)) for t in range(warmup, spe * epochs)],
                             [_cosine_epoch_reference(t, epochs=epochs, spe=spe)
                              for t in range(warmup, spe * epochs)], rtol=1e-6)


def test_sgd_with_coupled_weight_decay_is_ddh_update():
  """DDH: w ← w − lr·(g + wd·w), plain SGD without momentum."""
  config = _config(optimizer="sgd", learning_rate=0.1, weight_decay=5e-4)
  tx = make_optimizer(config, _plan(10))
  w = jnp.asarray([1.0, -2.0])
  g = jnp.asarray([0.3, 0.1])
  updates, _ = tx.update({"w": g}, tx.init({"w": w}), {"w": w})
  np.testing.assert_allclose(np.asarray(updates["w"]), -0.1 * (np.asarray(g) + 5e-4 * np.asarray(w)),
                             rtol=1e-6)
  assert isinstance(tx, optax.GradientTransformation)


def test_schedule_runs_inside_jit():
  """The step count is traced: a jitted update loop gives w = 1 − Σ_t lr_t (gradient = w > 0)."""
  config = _config(lr_schedule="cosine", warmup_steps=2)
  tx = get_method("cibhash").make_optimizer(config, _plan(10))

  @jax.jit
  def step(params, state):
    updates, state = tx.update(params, state, params)
    return jax.tree.map(jnp.add, params, updates), state

  params = {"w": jnp.ones((2,))}
  state = tx.init(params)
  for _ in range(4):
    params, state = step(params, state)
  want = 1.0 - sum(_reference(t, schedule="cosine", warmup=2, total=10) for t in range(4))
  np.testing.assert_allclose(np.asarray(params["w"]), want, rtol=1e-6)
