"""Learning-rate schedules (methods.registry.learning_rate_schedule) against hand-written formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unhash_jax.config import Config
from unhash_jax.methods import get_method, resolve_config
from unhash_jax.methods.registry import learning_rate_schedule

LR = 3e-4


def _config(**kw) -> Config:
  return resolve_config(Config(method="cibhash", learning_rate=LR, **kw))


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
  assert learning_rate_schedule(config, 100) == LR


@pytest.mark.parametrize("schedule,warmup,total", [
    ("constant", 4, 20), ("cosine", 0, 20), ("cosine", 5, 20), ("cosine", 1, 3)])
def test_schedule_values_match_the_formula(schedule, warmup, total):
  fn = learning_rate_schedule(_config(lr_schedule=schedule, warmup_steps=warmup), total)
  got = [float(fn(t)) for t in range(total + 3)]
  want = [_reference(t, schedule=schedule, warmup=warmup, total=total) for t in range(total + 3)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-10)


def test_adam_updates_follow_the_schedule():
  """With a constant gradient Adam's bias-corrected step is lr_t·sign(g), so the updates trace the
  schedule itself."""
  total, warmup = 8, 3
  config = _config(lr_schedule="cosine", warmup_steps=warmup)
  tx = get_method("cibhash").make_optimizer(config, total)
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
    ({"lr_schedule": "cosine"}, None, "needs total_steps"),
    ({"lr_schedule": "cosine", "warmup_steps": 10}, 10, "needs total_steps > warmup_steps (10)"),
])
def test_bad_schedules_raise(kw, total, needle):
  with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
    learning_rate_schedule(_config(**kw), total)


def test_schedule_runs_inside_jit():
  """The step count is traced: a jitted update loop gives w = 1 − Σ_t lr_t (gradient = w > 0)."""
  config = _config(lr_schedule="cosine", warmup_steps=2)
  tx = get_method("cibhash").make_optimizer(config, 10)

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
