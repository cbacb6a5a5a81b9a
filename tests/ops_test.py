import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unhash_jax import ops


def test_binarize_maps_zero_to_plus_one():
  x = jnp.array([-2.0, -0.0, 0.0, 1e-30, -1e-30], jnp.float32)
  np.testing.assert_array_equal(ops.binarize(x), [-1, 1, 1, 1, -1])
  assert ops.binarize(x).dtype == jnp.int8


@pytest.mark.parametrize("bits", [1, 8, 13, 31, 32, 33, 48, 64, 100, 128])
def test_pack_matches_python_bit_loop_and_roundtrips(bits):
  codes = np.random.default_rng(bits).choice([-1, 1], size=(5, bits)).astype(np.int8)
  packed = np.asarray(ops.pack_bits(codes))
  assert packed.dtype == np.uint32 and packed.shape == (5, -(-bits // 32))
  for row, words in zip(codes, packed):
    expect = [0] * len(words)
    for i, c in enumerate(row):
      if c > 0:
        expect[i // 32] |= 1 << (i % 32)
    assert [int(w) for w in words] == expect
  np.testing.assert_array_equal(ops.unpack_bits(jnp.asarray(packed), bits), codes)


def test_popcount_of_xor_is_hamming():
  rng = np.random.default_rng(0)
  a = rng.choice([-1, 1], size=(4, 45))
  b = rng.choice([-1, 1], size=(6, 45))
  pa, pb = ops.pack_bits(a), ops.pack_bits(b)
  d = jax.lax.population_count(pa[:, None] ^ pb[None]).sum(-1)
  expect = [[sum(x != y for x, y in zip(r, s)) for s in b] for r in a]
  np.testing.assert_array_equal(d, expect)


def test_unpack_rejects_wrong_word_count():
  with pytest.raises(ValueError, match="words"):
    ops.unpack_bits(jnp.zeros((2, 2), jnp.uint32), 16)


def test_ste_sign_forward_and_gradient():
  x = jnp.array([-0.3, 0.0, 0.7], jnp.bfloat16)
  y = ops.ste_sign(x)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_array_equal(y.astype(jnp.float32), [-1, 1, 1])
  g = jax.grad(lambda v: (ops.ste_sign(v) * jnp.array([1.0, 2.0, 3.0])).sum())(
      jnp.array([-0.3, 0.0, 0.7]))
  np.testing.assert_allclose(g, [1.0, 2.0, 3.0])


def test_bernoulli_codes_frequency_and_gradient(rng):
  p = jnp.full((20000, 2), jnp.array([0.2, 0.9]))
  c = ops.bernoulli_codes(p, key=rng)
  assert set(np.unique(np.asarray(c)).tolist()) <= {-1.0, 1.0}
  np.testing.assert_allclose((np.asarray(c) > 0).mean(0), [0.2, 0.9], atol=0.02)
  g = jax.grad(lambda q: ops.bernoulli_codes(q, key=rng).sum())(jnp.array([0.3, 0.6]))
  np.testing.assert_allclose(g, [2.0, 2.0])
