"""The shifted-sum depthwise convolution against XLA's grouped convolution (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unhash_jax.models.depthwise import (depthwise_conv2d, depthwise_conv2d_lax,
                                         depthwise_conv2d_shifted, resolve_impl)

# Both compute the same float32 sums of kh·kw = 9 products in different orders: each output is
# off by a few ulps of the largest term (|x|·|k| ≲ 10 here), so 1e-5 absolute is ~10 ulps of
# margin; a wrong tap or stride gives O(1) errors.
ATOL = 1e-5


@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((2, 7, 9, 5), 3, 1, 1),       # odd sizes, stride 1
    ((2, 7, 9, 5), 3, 2, 1),       # odd sizes, stride 2 (MobileNetV2's downsampling blocks)
    ((1, 8, 8, 3), 3, 2, 1),       # even sizes, stride 2
    ((2, 6, 5, 4), 5, 1, 2),       # a 5x5 kernel
    ((1, 5, 5, 2), 3, 1, 0),       # no padding
    ((1, 6, 7, 3), 3, 2, ((0, 1), (1, 0))),   # asymmetric padding
])
def test_shifted_matches_lax_values_and_gradients(shape, kernel, stride, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  k = jnp.asarray(rng.normal(size=(kernel, kernel, shape[-1])).astype(np.float32))
  fast = depthwise_conv2d_shifted(x, k, stride=stride, padding=padding)
  ref = depthwise_conv2d_lax(x, k, stride=stride, padding=padding)
  assert fast.shape == ref.shape
  np.testing.assert_allclose(fast, ref, atol=ATOL, rtol=0)
  cotangent = jnp.asarray(rng.normal(size=ref.shape).astype(np.float32))

  def loss(f):
    return lambda x, k: jnp.sum(f(x, k, stride=stride, padding=padding) * cotangent)

  gx, gk = jax.jit(jax.grad(loss(depthwise_conv2d_shifted), argnums=(0, 1)))(x, k)
  rx, rk = jax.grad(loss(depthwise_conv2d_lax), argnums=(0, 1))(x, k)
  # The kernel gradient sums B·H'·W' (≤ 126) products: 1e-4 is ~10 ulps of its largest sums.
  np.testing.assert_allclose(gx, rx, atol=ATOL, rtol=0)
  np.testing.assert_allclose(gk, rk, atol=1e-4, rtol=0)


def test_auto_picks_by_platform_and_override_works():
  assert resolve_impl("auto") == ("shifted" if jax.default_backend() == "cpu" else "lax")
  assert resolve_impl("lax") == "lax"
  with pytest.raises(ValueError, match="valid choices: auto, shifted, lax"):
    resolve_impl("im2col")
  x = jnp.ones((1, 4, 4, 2))
  k = jnp.ones((3, 3, 2))
  a = depthwise_conv2d(x, k, padding=1, impl="lax")
  b = depthwise_conv2d(x, k, padding=1, impl="shifted")
  np.testing.assert_allclose(a, b, atol=ATOL)
  assert float(a[0, 0, 0, 0]) == 4.0 and float(a[0, 1, 1, 0]) == 9.0   # corner and interior sums


def test_shape_errors_name_the_problem():
  with pytest.raises(ValueError, match=r"kernel \[kh, kw, C\]"):
    depthwise_conv2d(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 3)))
  with pytest.raises(ValueError, match="does not fit"):
    depthwise_conv2d(jnp.ones((1, 2, 2, 2)), jnp.ones((3, 3, 2)), impl="shifted")
