"""unhash_jax.dropout against a reconstruction from jax's public threefry function and statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32
from jax.test_util import check_grads

from unhash_jax.dropout import dropout, uniform_uint16


def _reference_uniforms(key, shape):
  """Evaluation c of threefry on counter (0, c) gives words b1, b2; elements 4c..4c+3 are
  b1 & 0xffff, b1 >> 16, b2 & 0xffff, b2 >> 16 (counters row-major over lead dims + ⌈d/4⌉)."""
  *lead, d = shape
  words = -(-d // 4)
  m = int(np.prod(lead, dtype=np.int64)) * words
  count = np.concatenate([np.zeros(m, np.uint32), np.arange(m, dtype=np.uint32)])
  out = np.asarray(threefry_2x32(jax.random.key_data(key), jnp.asarray(count)), np.uint64)
  b1, b2 = out[:m], out[m:]
  u = np.empty(4 * m, np.uint64)
  u[0::4], u[1::4] = b1 & 0xFFFF, b1 >> 16
  u[2::4], u[3::4] = b2 & 0xFFFF, b2 >> 16
  return u.reshape(*lead, 4 * words)[..., :d].astype(np.uint16)


@pytest.mark.parametrize("shape", [(7,), (3, 10), (2, 3, 4), (1, 1)])
def test_uniforms_match_public_threefry(shape):
  key = jax.random.key(42)
  np.testing.assert_array_equal(uniform_uint16(key, shape), _reference_uniforms(key, shape))


def test_raw_key_data_is_accepted():
  key = jax.random.key(3)
  np.testing.assert_array_equal(uniform_uint16(jax.random.key_data(key), (4, 9)),
                                uniform_uint16(key, (4, 9)))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.75])
def test_dropout_is_the_thresholded_mask_times_the_inverse_keep_rate(rate):
  key = jax.random.key(7)
  x = np.random.default_rng(0).normal(size=(5, 13)).astype(np.float32)
  t = round(rate * 65536)
  u = _reference_uniforms(key, x.shape).astype(np.int64)
  expect = np.where(u >= t, x * (65536 / (65536 - t)), 0.0)
  np.testing.assert_allclose(dropout(jnp.asarray(x), rate=rate, key=key), expect, rtol=1e-6)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_frequency_and_mean_are_unbiased(rate):
  n = 1 << 20
  y = np.asarray(dropout(jnp.ones((256, n // 256)), rate=rate, key=jax.random.key(1)))
  keep = y != 0
  p = 1 - round(rate * 65536) / 65536
  sd = np.sqrt(p * (1 - p) / n)
  assert abs(keep.mean() - p) < 5 * sd
  assert abs(y.mean() - 1.0) < 5 * sd / p
  # The four elements cut from one evaluation, and neighbouring rows, are uncorrelated.
  k = keep.astype(np.float64)
  for a, b in [(k[:, 0::4], k[:, 1::4]), (k[:, 1::4], k[:, 2::4]), (k[:, 2::4], k[:, 3::4]),
               (k[:-1], k[1:])]:
    r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    assert abs(r) < 5 / np.sqrt(a.size)


def test_same_key_same_mask_and_different_keys_differ():
  x = jnp.ones((8, 64))
  a = dropout(x, rate=0.5, key=jax.random.key(0))
  np.testing.assert_array_equal(a, dropout(x, rate=0.5, key=jax.random.key(0)))
  assert np.mean(np.asarray(a) != np.asarray(dropout(x, rate=0.5, key=jax.random.key(1)))) > 0.3
  assert not np.array_equal(np.asarray(a[0]), np.asarray(a[1]))  # rows get their own counters


def test_rate_zero_is_identity_and_dtype_is_kept():
  x = jnp.arange(6.0, dtype=jnp.bfloat16)
  assert dropout(x, rate=0.0, key=jax.random.key(0)) is x
  y = dropout(jnp.ones(64, jnp.bfloat16), rate=0.25, key=jax.random.key(0))
  assert y.dtype == jnp.bfloat16
  assert set(np.unique(np.asarray(y, np.float32))) == {0.0, float(jnp.asarray(4 / 3, jnp.bfloat16))}


def test_gradient_is_the_mask(x64):
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 9)))
  key = jax.random.key(5)
  check_grads(lambda v: dropout(v, rate=0.3, key=key), (x,), order=2)
  g = jax.grad(lambda v: dropout(v, rate=0.5, key=key).sum())(x)
  np.testing.assert_array_equal(g, np.where(np.asarray(dropout(jnp.ones_like(x), rate=0.5, key=key)) > 0, 2.0, 0.0))


def test_jit_and_sharded_equal_eager():
  x = jnp.ones((16, 24))
  key = jax.random.key(9)
  eager = dropout(x, rate=0.5, key=key)
  f = jax.jit(lambda v, k: dropout(v, rate=0.5, key=k))
  np.testing.assert_array_equal(f(x, key), eager)
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  xs = jax.device_put(x, jax.NamedSharding(mesh, jax.P("data")))
  np.testing.assert_array_equal(f(xs, key), eager)


def test_non_threefry_keys_fall_back_to_random_bits():
  key = jax.random.key(0, impl="rbg")
  u = uniform_uint16(key, (4, 6))
  np.testing.assert_array_equal(u, jax.random.bits(key, (4, 6), jnp.uint16))


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1 - 1e-7])
def test_bad_rate_is_rejected(rate):
  with pytest.raises(ValueError, match="rate"):
    dropout(jnp.ones(3), rate=rate, key=jax.random.key(0))


def test_integer_input_is_rejected():
  with pytest.raises(ValueError, match="floating"):
    dropout(jnp.ones(3, jnp.int32), rate=0.5, key=jax.random.key(0))
