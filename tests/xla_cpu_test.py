"""unhash_jax.xla_cpu: opt-in per-program XLA:CPU options."""

import logging
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unhash_jax import xla_cpu


def test_no_options_unless_asked():
  assert xla_cpu.options_for(jax.devices(), ynnpack_dots=False) is None


def test_no_options_for_accelerators():
  gpu = types.SimpleNamespace(platform="gpu")
  assert xla_cpu.options_for([gpu], ynnpack_dots=True) is None
  assert xla_cpu.options_for([jax.devices("cpu")[0], gpu], ynnpack_dots=True) is None


def test_ynnpack_products_compile_and_match_a_float64_reference():
  options = xla_cpu.options_for(jax.devices("cpu"), ynnpack_dots=True)
  if options is None:
    pytest.skip("this jaxlib's XLA:CPU rejects the YNNPACK option")
  assert options == xla_cpu.YNNPACK_DOTS
  rng = np.random.default_rng(0)
  a = rng.standard_normal((96, 300)).astype(np.float32)
  b = rng.standard_normal((300, 40)).astype(np.float32)
  compiled = jax.jit(jnp.dot, compiler_options=options).lower(a, b).compile()
  got = np.asarray(compiled(a, b))
  want = a.astype(np.float64) @ b.astype(np.float64)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_rejected_option_falls_back_with_a_warning(caplog):
  with caplog.at_level(logging.WARNING):
    assert not xla_cpu._accepted((("xla_cpu_no_such_option_for_this_test", "1"),))
  assert "rejected" in caplog.text


def test_train_step_with_ynnpack_products_matches_the_default_step():
  """Config.cpu_ynnpack_dots changes only float rounding (same loss to ~1e-4) and stays
  deterministic (two runs with it agree bit for bit)."""
  from unhash_jax import parallel, train
  from unhash_jax.config import Config
  from unhash_jax.methods import resolve_config
  if xla_cpu.options_for(jax.devices("cpu"), ynnpack_dots=True) is None:
    pytest.skip("this jaxlib's XLA:CPU rejects the YNNPACK option")
  mesh = parallel.make_data_mesh(jax.devices("cpu")[:1])
  images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
  out = []
  for ynn in (False, True, True):
    cfg = resolve_config(Config(backbone="tiny", bits=8, batch_size=16, image_size=8,
                                model={"hidden": 16}, cpu_ynnpack_dots=ynn))
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
