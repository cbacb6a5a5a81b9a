"""FDBH's batch standardisation (methods.md §2.6) against a float64 numpy formula and against
flax.nnx.BatchNorm(use_bias=False, use_scale=False)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unhash_jax import ops
from unhash_jax.standardize import batch_standardize


def _np_standardize(h, mean, var, *, train, momentum, eps):
  h = np.asarray(h, np.float64)
  if train:
    mu = h.mean(0)
    v = ((h - mu) ** 2).mean(0)                       # biased
    return ((h - mu) / np.sqrt(v + eps), momentum * mean + (1 - momentum) * mu,
            momentum * var + (1 - momentum) * v)
  return (h - mean) / np.sqrt(var + eps), mean, var


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("fast", [True, False])
def test_matches_float64_formula(train, fast):
  rng = np.random.default_rng(0)
  h = rng.normal(size=(16, 8)) * 3 + 1
  mean, var = rng.normal(size=8), rng.uniform(0.5, 2.0, size=8)
  got = batch_standardize(jnp.asarray(h, jnp.float32), jnp.asarray(mean, jnp.float32),
                          jnp.asarray(var, jnp.float32), train=train, momentum=0.9, eps=1e-5,
                          use_fast_variance=fast)
  expect = _np_standardize(h, mean, var, train=train, momentum=0.9, eps=1e-5)
  for g, e in zip(got, expect):
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(g), e, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("fast", [True, False])
def test_equals_flax_batchnorm_without_affine(fast):
  nnx = pytest.importorskip("flax.nnx")
  rng = np.random.default_rng(1)
  k = 6
  bn = nnx.BatchNorm(k, use_bias=False, use_scale=False, momentum=0.9, epsilon=1e-5,
                     use_fast_variance=fast, rngs=nnx.Rngs(0))
  mean, var = jnp.zeros(k), jnp.ones(k)
  for step in range(3):                                # running statistics over several steps
    h = jnp.asarray(rng.normal(size=(10, k)) * (step + 1) + step, jnp.float32)
    ours, mean, var = batch_standardize(h, mean, var, train=True, use_fast_variance=fast)
    theirs = bn(h, use_running_average=False)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(mean), np.asarray(bn.mean[...]), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(var), np.asarray(bn.var[...]), rtol=1e-6, atol=1e-7)
  h = jnp.asarray(rng.normal(size=(4, k)), jnp.float32)
  ours, m2, v2 = batch_standardize(h, mean, var, train=False)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(bn(h, use_running_average=True)),
                             rtol=1e-6, atol=1e-6)
  assert m2 is mean and v2 is var


def test_gradient_flows_through_batch_statistics_x64(x64):
  from jax.test_util import check_grads
  h = jnp.asarray(np.random.default_rng(2).normal(size=(6, 3)))
  f = jax.jit(lambda h: jnp.sum(jnp.sin(batch_standardize(h, jnp.zeros(3), jnp.ones(3),
                                                           train=True)[0])))
  check_grads(f, (h,), order=1, atol=1e-6, rtol=1e-6)
  # The gradient of a standardised column's sum is zero (the mean is subtracted in the graph).
  g = jax.grad(lambda h: jnp.sum(batch_standardize(h, jnp.zeros(3), jnp.ones(3),
                                                   train=True)[0]))(h)
  np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-12)
  # The running statistics carry no gradient.
  g = jax.grad(lambda h: jnp.sum(batch_standardize(h, jnp.zeros(3), jnp.ones(3),
                                                   train=True)[1]))(h)
  np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_constant_bit_bf16_and_jit():
  h = jnp.array([[1.0, 5.0], [3.0, 5.0]], jnp.bfloat16)
  out, mean, var = jax.jit(batch_standardize, static_argnames="train")(
      h, jnp.zeros(2), jnp.ones(2), train=True)
  assert out.dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()
  np.testing.assert_allclose(np.asarray(out)[:, 1], 0.0)
  assert ops.batch_standardize is batch_standardize


def test_bad_inputs_raise():
  h = jnp.ones((4, 3))
  with pytest.raises(ValueError, match="running_var must have shape"):
    batch_standardize(h, jnp.zeros(3), jnp.ones(4), train=True)
  with pytest.raises(ValueError, match="train must be a Python bool"):
    batch_standardize(h, jnp.zeros(3), jnp.ones(3), train=1)
  with pytest.raises(ValueError, match="batch_standardize: h must be a floating"):
    batch_standardize(jnp.ones((4, 3), jnp.int32), jnp.zeros(3), jnp.ones(3), train=True)
  with pytest.raises(ValueError, match="momentum"):
    batch_standardize(h, jnp.zeros(3), jnp.ones(3), train=True, momentum=1.5)
  with pytest.raises(ValueError, match="2-D"):
    batch_standardize(jnp.ones(3), jnp.zeros(3), jnp.ones(3), train=True)
