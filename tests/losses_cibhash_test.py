"""CIBHash loss against an independent float64 numpy implementation of methods.md §2.1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unhash_jax.losses import cibhash_loss, cibhash_loss_with_aux


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _np_nt_xent(z1, z2, tau):
  z = np.concatenate([z1, z2]).astype(np.float64)
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  n2 = len(z)
  n = n2 // 2
  total = 0.0
  for a in range(n2):
    pos = (a + n) % n2
    s = [z[a] @ z[b] / tau for b in range(n2)]
    denom = sum(np.exp(s[b]) for b in range(n2) if b != a)
    total += -np.log(np.exp(s[pos]) / denom)
  return total / n2


def _np_kl(p, q):
  return np.sum(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q)), axis=-1)


def _np_cibhash(l1, l2, tau, beta, *, hard1=None, hard2=None, sg1=None, sg2=None):
  """Loss in float64. ``hard*`` fix the STE's constant offset, ``sg*`` the stop-gradient inputs,
  so that finite differences of this function give the gradient autodiff should produce."""
  p1, p2 = _sigmoid(l1), _sigmoid(l2)
  h1 = np.where(l1 >= 0, 1.0, -1.0) if hard1 is None else hard1
  h2 = np.where(l2 >= 0, 1.0, -1.0) if hard2 is None else hard2
  # STE: z = (p − ½) + const, where const = sign − (p − ½) at the evaluation point.
  z1 = (p1 - 0.5) + (h1 - (_sigmoid(sg1 if sg1 is not None else l1) - 0.5))
  z2 = (p2 - 0.5) + (h2 - (_sigmoid(sg2 if sg2 is not None else l2) - 0.5))
  q1 = _sigmoid(l1 if sg1 is None else sg1)
  q2 = _sigmoid(l2 if sg2 is None else sg2)
  kl = 0.5 * (np.mean(_np_kl(p1, q2)) + np.mean(_np_kl(p2, q1)))
  return _np_nt_xent(z1, z2, tau) + beta * kl


@pytest.mark.parametrize("n,k,tau,beta", [(2, 3, 0.3, 1e-3), (6, 16, 0.5, 0.1), (9, 32, 0.2, 1.0)])
def test_value_matches_float64_reference(n, k, tau, beta):
  rng = np.random.default_rng(n * k)
  l1, l2 = rng.normal(size=(2, n, k)) * 2
  expect = _np_cibhash(l1, l2, tau, beta)
  got = cibhash_loss(jnp.asarray(l1, jnp.float32), jnp.asarray(l2, jnp.float32),
                     temperature=tau, kl_weight=beta)
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(float(got), expect, rtol=2e-5, atol=2e-6)


def test_hand_computed_case():
  # Two images, codes of view 2 equal to those of view 1 and orthogonal across images:
  # every positive has cos 1, every negative cos 0 -> −log(e^{1/τ} / (e^{1/τ} + 2)).
  l1 = jnp.array([[1.0, 1.0], [1.0, -1.0]]) * 50.0
  tau = 0.5
  expect = -np.log(np.exp(1 / tau) / (np.exp(1 / tau) + 2.0))
  got, aux = cibhash_loss_with_aux(l1, l1, temperature=tau, kl_weight=1.0)
  np.testing.assert_allclose(float(aux["contrastive"]), expect, rtol=1e-6)
  assert float(aux["kl"]) == pytest.approx(0.0, abs=1e-6)
  np.testing.assert_allclose(float(got), expect, rtol=1e-6)


def test_gradient_matches_finite_differences_of_reference():
  rng = np.random.default_rng(3)
  n, k, tau, beta = 4, 5, 0.3, 0.7
  l1, l2 = rng.normal(size=(2, n, k))
  with jax.enable_x64(True):
    g1, g2 = jax.grad(lambda a, b: cibhash_loss(a, b, temperature=tau, kl_weight=beta),
                      argnums=(0, 1))(jnp.asarray(l1), jnp.asarray(l2))
  h1, h2 = np.where(l1 >= 0, 1.0, -1.0), np.where(l2 >= 0, 1.0, -1.0)
  eps = 1e-6
  fd1, fd2 = np.zeros_like(l1), np.zeros_like(l2)
  for idx in np.ndindex(l1.shape):
    d = np.zeros_like(l1)
    d[idx] = eps
    f = lambda a, b: _np_cibhash(a, b, tau, beta, hard1=h1, hard2=h2, sg1=l1, sg2=l2)
    fd1[idx] = (f(l1 + d, l2) - f(l1 - d, l2)) / (2 * eps)
    fd2[idx] = (f(l1, l2 + d) - f(l1, l2 - d)) / (2 * eps)
  np.testing.assert_allclose(np.asarray(g1), fd1, rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(np.asarray(g2), fd2, rtol=1e-5, atol=1e-8)


def test_bf16_inputs_give_float32_and_jit_equals_eager():
  rng = np.random.default_rng(0)
  l1, l2 = rng.normal(size=(2, 8, 16)).astype(np.float32)
  eager = cibhash_loss(jnp.asarray(l1), jnp.asarray(l2))
  jitted = jax.jit(cibhash_loss)(jnp.asarray(l1), jnp.asarray(l2))
  np.testing.assert_allclose(float(jitted), float(eager), rtol=1e-6)
  bf = cibhash_loss(jnp.asarray(l1, jnp.bfloat16), jnp.asarray(l2, jnp.bfloat16))
  assert bf.dtype == jnp.float32
  np.testing.assert_allclose(float(bf), float(eager), rtol=0.05)


def test_saturated_logits_stay_finite():
  l1 = jnp.array([[200.0, -300.0], [-150.0, 90.0]], jnp.float32)
  loss, grads = jax.value_and_grad(cibhash_loss, argnums=(0, 1))(l1, -l1)
  assert np.isfinite(float(loss))
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_invariant_to_joint_permutation_of_the_batch():
  rng = np.random.default_rng(1)
  l1, l2 = rng.normal(size=(2, 7, 8)).astype(np.float32)
  perm = rng.permutation(7)
  a = cibhash_loss(jnp.asarray(l1), jnp.asarray(l2))
  b = cibhash_loss(jnp.asarray(l1[perm]), jnp.asarray(l2[perm]))
  np.testing.assert_allclose(float(a), float(b), rtol=1e-5)


def test_stochastic_codes_need_key_and_are_reproducible(rng):
  l = jnp.zeros((4, 8))
  a = cibhash_loss(l, l, key=rng)
  b = cibhash_loss(l, l, key=rng)
  assert float(a) == float(b)


@pytest.mark.parametrize("shapes", [((4, 8), (4, 9)), ((4,), (4,)), ((1, 8), (1, 8)),
                                    ((0, 8), (0, 8))])
def test_bad_shapes_raise(shapes):
  with pytest.raises(ValueError, match="cibhash_loss"):
    cibhash_loss(jnp.zeros(shapes[0]), jnp.zeros(shapes[1]))


def test_bad_temperature_raises():
  with pytest.raises(ValueError, match="temperature"):
    cibhash_loss(jnp.zeros((4, 8)), jnp.zeros((4, 8)), temperature=0.0)


def test_array_likes_are_accepted():
  # Python lists and numpy arrays used to raise AttributeError ('list' has no attribute 'ndim').
  rng = np.random.default_rng(5)
  l1, l2 = rng.normal(size=(2, 4, 6)).astype(np.float32)
  expect = float(cibhash_loss(jnp.asarray(l1), jnp.asarray(l2)))
  np.testing.assert_allclose(float(cibhash_loss(l1.tolist(), l2.tolist())), expect, rtol=1e-6)
  np.testing.assert_allclose(float(cibhash_loss(l1, l2)), expect, rtol=1e-6)


@pytest.mark.parametrize("args,match", [
    ((jnp.zeros((4, 8)), jnp.zeros((4, 8), jnp.int32)),
     r"cibhash_loss: logits2 must be a floating array \[batch, bits\], got int32"),
    ((jnp.zeros((4, 8), bool), jnp.zeros((4, 8))),
     r"cibhash_loss: logits1 must be a floating array \[batch, bits\], got bool"),
    (([[1, 2], [3, 4]], [[1.0, 2.0], [3.0, 4.0]]),
     r"cibhash_loss: logits1 must be a floating array \[batch, bits\], got int32"),
    ((jnp.zeros((4, 8)), jnp.zeros((4, 9))),
     r"cibhash_loss: logits1 and logits2 must have the same shape \[batch, bits\]"),
    ((jnp.zeros((4,)), jnp.zeros((4,))), r"cibhash_loss: logits1 must be a non-empty 2-D array"),
    ((jnp.zeros((4, 8)), "logits"), r"cibhash_loss: logits2 must be an array"),
])
def test_errors_name_the_argument(args, match):
  with pytest.raises(ValueError, match=match):
    cibhash_loss(*args)


def test_non_finite_logits_give_a_non_finite_loss():
  # Documented: values are not checked under jit; ±inf logits propagate (here to NaN).
  l1 = jnp.array([[jnp.inf, 1.0], [2.0, -jnp.inf]])
  assert not np.isfinite(float(cibhash_loss(l1, jnp.ones((2, 2)))))
  assert not np.isfinite(float(jax.jit(cibhash_loss)(l1, jnp.ones((2, 2)))))
