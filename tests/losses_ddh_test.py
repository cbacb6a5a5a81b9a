"""DDH loss against an independent float64 loop of methods.md §2.5 and the release's hand-coded
gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from unhash_jax.losses import ddh_loss, ddh_loss_with_aux


def _np_ddh(u, buf, s, lam, per_bit=False):
  """J_B/(N·|B|) as loops over the batch, the buffer and the bits, in float64 (``per_bit``: the
  quantization sum divided by K)."""
  u, buf, s = (np.asarray(a, np.float64) for a in (u, buf, s))
  b, k = u.shape
  n = len(buf)
  pair = 0.0
  for i in range(b):
    for j in range(n):
      pair += (sum(u[i, q] * buf[j, q] for q in range(k)) / k - s[i, j]) ** 2
  quant = sum((u[i, q] - (1.0 if u[i, q] >= 0 else -1.0)) ** 2 for i in range(b) for q in range(k))
  if per_bit:
    quant /= k
  return (pair + lam * quant) / (n * b), pair / (n * b), quant / (n * b)


def _problem(seed, b=5, n=12, k=8):
  rng = np.random.default_rng(seed)
  buf = rng.normal(size=(n, k)) * 0.5
  rows = rng.choice(n, size=b, replace=False)
  u = rng.normal(size=(b, k)) * 0.8
  buf[rows] = u                                        # the caller wrote U[B] <- u_B
  s = np.where(rng.random((n, n)) < 0.3, 1, -1).astype(np.int8)
  s = np.maximum(s, s.T)
  np.fill_diagonal(s, 1)
  return u, buf, s[rows], rows


@pytest.mark.parametrize("seed,b,n,k,lam,per_bit", [
    (0, 5, 12, 8, 15.0, False), (1, 1, 3, 2, 0.0, False), (2, 7, 20, 16, 2.5, False),
    (6, 5, 12, 8, 15.0, True), (7, 4, 9, 64, 160.0, True)])
def test_value_matches_float64_reference(seed, b, n, k, lam, per_bit):
  u, buf, s, _ = _problem(seed, b, n, k)
  expect, expect_pair, expect_q = _np_ddh(u, buf, s, lam, per_bit=per_bit)
  got, aux = ddh_loss_with_aux(jnp.asarray(u, jnp.float32), jnp.asarray(buf, jnp.float32),
                               jnp.asarray(s), quantization_weight=lam,
                               quantization_per_bit=per_bit)
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(float(got), expect, rtol=2e-6)
  np.testing.assert_allclose(float(aux["pairwise"]), expect_pair, rtol=2e-6)
  np.testing.assert_allclose(float(aux["quantization"]), expect_q, rtol=2e-6)
  if per_bit:  # per bit with λ is the release's sum with λ/K
    plain = ddh_loss(jnp.asarray(u), jnp.asarray(buf), jnp.asarray(s), quantization_weight=lam / k)
    np.testing.assert_allclose(float(got), float(plain), rtol=2e-6)


def test_float_labels_equal_int8_labels_and_x64(x64):
  u, buf, s, _ = _problem(3)
  a = ddh_loss(jnp.asarray(u), jnp.asarray(buf), jnp.asarray(s))
  b = ddh_loss(jnp.asarray(u), jnp.asarray(buf), jnp.asarray(s, jnp.float64))
  assert a.dtype == jnp.float64
  np.testing.assert_allclose(float(a), _np_ddh(u, buf, s, 15.0)[0], rtol=1e-12)
  assert float(a) == float(b)


def test_gradient_is_the_release_hand_coded_gradient(x64):
  # ½∇J_B with U constant: ∂/∂u_i = Σ_j (u_iᵀU_j/K − S_ij)·U_j/K + λ(u_i − b_i).
  u, buf, s, _ = _problem(4, b=6, n=15, k=12)
  lam = 15.0
  b, k = u.shape
  n = len(buf)
  hand = np.zeros_like(u)
  for i in range(b):
    for j in range(n):
      hand[i] += (u[i] @ buf[j] / k - s[i, j]) * buf[j] / k
    hand[i] += lam * (u[i] - np.where(u[i] >= 0, 1.0, -1.0))
  g = jax.grad(ddh_loss)(jnp.asarray(u), jnp.asarray(buf), jnp.asarray(s), quantization_weight=lam)
  np.testing.assert_allclose(0.5 * n * b * np.asarray(g), hand, rtol=1e-12, atol=1e-12)
  # The buffer is a constant, even though it holds the batch's own rows.
  gb = jax.grad(ddh_loss, argnums=1)(jnp.asarray(u), jnp.asarray(buf), jnp.asarray(s))
  np.testing.assert_array_equal(np.asarray(gb), 0.0)


def test_check_grads_x64(x64):
  u, buf, s, _ = _problem(5)
  f = jax.jit(lambda u: ddh_loss(u, jnp.asarray(buf), jnp.asarray(s)))
  check_grads(f, (jnp.asarray(u),), order=1, modes=("rev", "fwd"), atol=1e-7, rtol=1e-7)


def test_hand_computed_case():
  u = jnp.array([[1.0, 1.0], [-1.0, -1.0]])
  s = jnp.array([[1, -1], [-1, 1]], jnp.int8)
  assert float(ddh_loss(u, u, s)) == 0.0
  # Halved codes: every inner product is S/2 (error ¼, 4 pairs) and every entry is ½ from its
  # sign (¼, 4 entries): (1 + λ·1)/(N·|B|) = (1 + 2)/4.
  np.testing.assert_allclose(float(ddh_loss(0.5 * u, u, s, quantization_weight=2.0)), 0.75)
  # sign₀(0) = +1: a zero code is one away from +1 in every bit.
  _, aux = ddh_loss_with_aux(jnp.zeros((1, 4)), jnp.zeros((3, 4)), jnp.ones((1, 3), jnp.int8))
  np.testing.assert_allclose(float(aux["quantization"]), 4.0 / 3.0)
  # Per bit: the 4 bits' distance averaged, (1 + λ·1/2)/4 for the halved codes above.
  np.testing.assert_allclose(float(ddh_loss(0.5 * u, u, s, quantization_weight=2.0,
                                            quantization_per_bit=True)), 0.5)


def test_jit_equals_eager_bf16_and_lists():
  u, buf, s, _ = _problem(6)
  args = (jnp.asarray(u, jnp.float32), jnp.asarray(buf, jnp.float32), jnp.asarray(s))
  eager = ddh_loss(*args)
  np.testing.assert_allclose(float(jax.jit(ddh_loss)(*args)), float(eager), rtol=1e-6)
  bf = ddh_loss(args[0].astype(jnp.bfloat16), args[1].astype(jnp.bfloat16), args[2])
  assert bf.dtype == jnp.float32
  np.testing.assert_allclose(float(bf), float(eager), rtol=0.05)
  listed = ddh_loss(u.tolist(), buf.tolist(), s.tolist())   # int labels from a list: int32
  np.testing.assert_allclose(float(listed), float(eager), rtol=1e-6)
  np.testing.assert_allclose(float(ddh_loss(u, buf, s)), float(eager), rtol=1e-6)  # numpy


def test_non_finite_input_gives_non_finite_loss():
  u, buf, s, _ = _problem(7)
  u[0, 0] = np.inf
  assert not np.isfinite(float(ddh_loss(u, buf, s)))


@pytest.mark.parametrize("args,match", [
    (((4, 8), (10, 8), (4, 11)), r"pairwise_labels must have shape \[batch, N\] = \(4, 10\)"),
    (((4, 8), (10, 6), (4, 10)), "same number of bits"),
    (((8,), (10, 8), (4, 10)), "ddh_loss: codes must be a non-empty 2-D"),
    (((0, 8), (10, 8), (0, 10)), "ddh_loss: codes must be a non-empty"),
    (((4, 8), (10, 8, 1), (4, 10)), "ddh_loss: buffer must be a non-empty 2-D"),
])
def test_bad_shapes_raise_naming_the_argument(args, match):
  arrays = [jnp.ones(s) for s in args]
  with pytest.raises(ValueError, match=match):
    ddh_loss(*arrays)


def test_bad_dtypes_and_hyperparameters_raise():
  with pytest.raises(ValueError, match="ddh_loss: codes must be a floating array .*int32"):
    ddh_loss(jnp.ones((2, 4), jnp.int32), jnp.ones((3, 4)), jnp.ones((2, 3), jnp.int8))
  with pytest.raises(ValueError, match="ddh_loss: pairwise_labels must be a ±1 array .*bool"):
    ddh_loss(jnp.ones((2, 4)), jnp.ones((3, 4)), jnp.ones((2, 3), bool))
  with pytest.raises(ValueError, match="ddh_loss: pairwise_labels must be .*uint8"):
    ddh_loss(jnp.ones((2, 4)), jnp.ones((3, 4)), jnp.ones((2, 3), jnp.uint8))
  with pytest.raises(ValueError, match="quantization_weight must be >= 0"):
    ddh_loss(jnp.ones((2, 4)), jnp.ones((3, 4)), jnp.ones((2, 3)), quantization_weight=-1.0)
  with pytest.raises(ValueError, match="ddh_loss: buffer must be an array"):
    ddh_loss(jnp.ones((2, 4)), "buffer", jnp.ones((2, 3)))
