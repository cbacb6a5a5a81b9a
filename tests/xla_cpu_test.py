"""unhash_jax.xla_cpu: per-program XLA:CPU options (which operations YNNPACK runs)."""

import logging
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unhash_jax import xla_cpu


def test_no_options_for_xlas_own_list():
  assert xla_cpu.options_for(jax.devices(), ynn_fusions="xla") is None


def test_no_options_for_accelerators():
  gpu = types.SimpleNamespace(platform="gpu")
  assert xla_cpu.options_for([gpu], ynn_fusions="dots") is None
  assert xla_cpu.options_for([jax.devices("cpu")[0], gpu], ynn_fusions="dots_reductions") is None


def test_unknown_fusion_set_names_the_choices():
  with pytest.raises(ValueError, match="'convs'; valid choices: xla, dots, dots_reductions"):
    xla_cpu.options_for(jax.devices(), ynn_fusions="convs")
  from unhash_jax.config import Config
  from unhash_jax.methods import resolve_config
  with pytest.raises(ValueError, match="unknown YNNPACK fusion set 'fast'"):
    resolve_config(Config(cpu_ynn_fusions="fast"))


@pytest.mark.parametrize("name", ["dots", "dots_reductions"])
def test_products_and_batch_statistics_match_a_float64_reference(name):
  """A product and BatchNorm-style statistics (mean and variance over [batch, h, w] of an
  activation, the reductions the option moves to YNNPACK) and their gradient, against float64."""
  options = xla_cpu.options_for(jax.devices("cpu"), ynn_fusions=name)
  if options is None:
    pytest.skip("this jaxlib's XLA:CPU rejects the YNNPACK option")
  assert options == {"xla_cpu_experimental_ynn_fusion_type": xla_cpu.YNN_FUSIONS[name]}
  rng = np.random.default_rng(0)
  a = rng.standard_normal((96, 300)).astype(np.float32)
  b = rng.standard_normal((300, 40)).astype(np.float32)
  compiled = jax.jit(jnp.dot, compiler_options=options).lower(a, b).compile()
  np.testing.assert_allclose(np.asarray(compiled(a, b)), a.astype(np.float64) @ b.astype(np.float64),
                             rtol=1e-4, atol=1e-4)

  x = (3 + 2 * rng.standard_normal((64, 16, 16, 8))).astype(np.float32)

  def stats(x):
    return jnp.mean(x, axis=(0, 1, 2)), jnp.var(x, axis=(0, 1, 2))

  def sum_of_var(x):
    return jnp.sum(stats(x)[1])

  x64 = x.astype(np.float64)
  mean, var = jax.jit(stats, compiler_options=options)(x)
  np.testing.assert_allclose(np.asarray(mean), x64.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(var), x64.var(axis=(0, 1, 2)), rtol=1e-5)
  grad = jax.jit(jax.grad(sum_of_var), compiler_options=options)(x)
  want = 2 * (x64 - x64.mean(axis=(0, 1, 2))) / (64 * 16 * 16)  # d/dx of the population variance
  np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-4, atol=1e-9)


def test_rejected_option_falls_back_with_a_warning(caplog):
  with caplog.at_level(logging.WARNING):
    assert not xla_cpu._accepted((("xla_cpu_no_such_option_for_this_test", "1"),))
  assert "rejected" in caplog.text


def test_train_step_with_ynnpack_fusions_matches_xlas_default_list():
  """Config.cpu_ynn_fusions changes only float rounding (same loss to ~1e-4) and stays
  deterministic (two runs with it agree bit for bit)."""
  from unhash_jax import parallel, train
  from unhash_jax.config import Config
  from unhash_jax.methods import resolve_config
  if xla_cpu.options_for(jax.devices("cpu"), ynn_fusions="dots_reductions") is None:
    pytest.skip("this jaxlib's XLA:CPU rejects the YNNPACK option")
  mesh = parallel.make_data_mesh(jax.devices("cpu")[:1])
  images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
  out = []
  for ynn in ("xla", "dots_reductions", "dots_reductions"):
    cfg = resolve_config(Config(backbone="tiny", bits=8, batch_size=16, image_size=8,
                                model={"hidden": 16}, cpu_ynn_fusions=ynn))
    setup, state = train.create_train_state(cfg, (8, 8, 1), mesh)
    state, metrics = train.make_train_step(setup)(state, {"image": jnp.asarray(images)},
                                                  jax.random.key(0))
    out.append((float(metrics["loss"]), jax.device_get(state.params)))
  (l0, p0), (l1, p1), (l2, p2) = out
  assert l1 == l2
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(l1, l0, rtol=1e-4)
  # Adam's first step is lr·g/|g|: a rounding-level change of a near-zero gradient can flip its sign,
  # so parameters agree to 2·lr, not to float rounding.
  for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(p1)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=2.01 * cfg.learning_rate)
