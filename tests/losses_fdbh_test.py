"""FDBH loss (methods.md §2.6, project formulation) against an independent float64 loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unhash_jax.losses import fdbh_loss, fdbh_loss_with_aux
from unhash_jax.losses.fdbh import fdbh_codes


def _decoder_params(seed, k, d, hidden=7):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(k, hidden)) / np.sqrt(k), rng.normal(size=hidden) * 0.1,
          rng.normal(size=(hidden, d)) / np.sqrt(hidden), rng.normal(size=d) * 0.1)


def _np_decode(params, b):
  w1, b1, w2, b2 = params
  return np.maximum(b @ w1 + b1, 0.0) @ w2 + b2


def _jax_decoder(params):
  w1, b1, w2, b2 = (jnp.asarray(p) for p in params)
  return lambda b: jax.nn.relu(b @ w1.astype(b.dtype) + b1.astype(b.dtype)) @ w2.astype(
      b.dtype) + b2.astype(b.dtype)


def _np_nt_xent(z1, z2, tau):
  z = np.concatenate([z1, z2]).astype(np.float64)
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  n2 = len(z)
  total = 0.0
  for a in range(n2):
    s = [z[a] @ z[b] / tau for b in range(n2)]
    denom = sum(np.exp(s[b]) for b in range(n2) if b != a)
    total += -np.log(np.exp(s[(a + n2 // 2) % n2]) / denom)
  return total / n2


def _np_fdbh(h1, h2, f1, f2, params, *, gamma, tau=0.3, lam_rec=1.0, lam_fdo=0.1, offsets=None):
  """Loss in float64; ``offsets`` freezes the STE constants for finite differences."""
  h1, h2, f1, f2 = (np.asarray(a, np.float64) for a in (h1, h2, f1, f2))
  sign0 = lambda t: np.where(t >= 0, 1.0, -1.0)                 # noqa: E731
  ts = [np.tanh(gamma * h) for h in (h1, h2)]
  if offsets is None:
    offsets = [sign0(t) - t for t in ts]
  b = [t + o for t, o in zip(ts, offsets)]
  con = _np_nt_xent(b[0], b[1], tau)
  fdo = 0.0
  for h in (h1, h2):
    t = np.tanh(h)
    n, k = t.shape
    balance = sum((sum(t[m, q] for m in range(n)) / n) ** 2 for q in range(k)) / k
    polar = sum((1 - abs(t[m, q])) ** 2 for m in range(n) for q in range(k)) / (n * k)
    fdo += 0.5 * (balance + polar)
  rec = 0.0
  for bv, f in zip(b, (f1, f2)):
    r = _np_decode(params, bv)
    rec += 0.5 * np.mean([np.sum((r[m] - f[m]) ** 2) / f.shape[1] for m in range(len(f))])
  return con + lam_rec * rec + lam_fdo * fdo, con, rec, fdo


def _problem(seed, n=6, k=8, d=10):
  rng = np.random.default_rng(seed)
  h1 = rng.normal(size=(n, k))
  h2 = h1 + 0.5 * rng.normal(size=(n, k))
  f1, f2 = rng.normal(size=(2, n, d))
  return h1, h2, f1, f2, _decoder_params(seed, k, d)


@functools.cache
def _jitted(seed, n, k, d, **kw):
  params = _problem(seed, n, k, d)[4]
  return jax.jit(lambda h1, h2, f1, f2, gamma: fdbh_loss_with_aux(
      h1, h2, f1, f2, decode=_jax_decoder(params), gamma=gamma, **kw))


@pytest.mark.parametrize("n,k,d,gamma,kw", [
    (2, 4, 3, 1.0, {}),
    (6, 8, 10, 3.5, {}),
    (5, 16, 12, 10.0, {"temperature": 0.5, "rec_weight": 2.0, "fdo_weight": 0.7}),
    (4, 8, 5, 1.0, {"rec_weight": 0.0, "fdo_weight": 0.0}),
])
def test_value_matches_float64_reference(n, k, d, gamma, kw):
  seed = n + k + d
  h1, h2, f1, f2, params = _problem(seed, n, k, d)
  expect, e_con, e_rec, e_fdo = _np_fdbh(h1, h2, f1, f2, params, gamma=gamma,
                                         tau=kw.get("temperature", 0.3),
                                         lam_rec=kw.get("rec_weight", 1.0),
                                         lam_fdo=kw.get("fdo_weight", 0.1))
  got, aux = _jitted(seed, n, k, d, **kw)(*(jnp.asarray(a, jnp.float32) for a in (h1, h2, f1, f2)),
                                          gamma)
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(float(got), expect, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(float(aux["contrastive"]), e_con, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(float(aux["reconstruction"]), e_rec, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(float(aux["distribution"]), e_fdo, rtol=2e-5, atol=2e-6)


def test_gradient_matches_finite_differences_of_reference(x64):
  h1, h2, f1, f2, params = _problem(1, n=4, k=3, d=5)
  gamma = 2.0
  sign0 = lambda t: np.where(t >= 0, 1.0, -1.0)                 # noqa: E731
  offsets = [sign0(np.tanh(gamma * h)) - np.tanh(gamma * h) for h in (h1, h2)]
  decode = _jax_decoder(params)
  grads = jax.jit(jax.grad(lambda a, b, c, e: fdbh_loss(a, b, c, e, decode=decode, gamma=gamma),
                           argnums=(0, 1, 2, 3)))(*(jnp.asarray(a) for a in (h1, h2, f1, f2)))
  inputs = [h1, h2]
  eps = 1e-6
  for which in range(2):
    fd = np.zeros_like(inputs[which])
    for idx in np.ndindex(fd.shape):
      plus, minus = [a.copy() for a in inputs], [a.copy() for a in inputs]
      plus[which][idx] += eps
      minus[which][idx] -= eps
      fd[idx] = (_np_fdbh(*plus, f1, f2, params, gamma=gamma, offsets=offsets)[0]
                 - _np_fdbh(*minus, f1, f2, params, gamma=gamma, offsets=offsets)[0]) / (2 * eps)
    np.testing.assert_allclose(np.asarray(grads[which]), fd, rtol=1e-5, atol=1e-8)
  # The features are targets under a stop-gradient.
  np.testing.assert_array_equal(np.asarray(grads[2]), 0.0)
  np.testing.assert_array_equal(np.asarray(grads[3]), 0.0)


def test_codes_are_sign_forward_and_tanh_backward():
  h = jnp.array([[-0.2, 0.0, 3.0]])
  np.testing.assert_array_equal(np.asarray(fdbh_codes(h, gamma=4.0)), [[-1.0, 1.0, 1.0]])
  g = jax.grad(lambda h: jnp.sum(fdbh_codes(h, gamma=4.0) * jnp.array([1.0, 2.0, 3.0])))(h)
  expect = np.array([1.0, 2.0, 3.0]) * 4.0 * (1 - np.tanh(4.0 * np.array([-0.2, 0.0, 3.0])) ** 2)
  np.testing.assert_allclose(np.asarray(g)[0], expect, rtol=1e-5, atol=1e-7)


def test_traced_gamma_does_not_recompile():
  h1, h2, f1, f2, params = _problem(2)
  decode = _jax_decoder(params)
  traces = []

  def step(h1, h2, f1, f2, gamma):
    traces.append(1)
    return fdbh_loss(h1, h2, f1, f2, decode=decode, gamma=gamma)

  f = jax.jit(step)
  args = tuple(jnp.asarray(a, jnp.float32) for a in (h1, h2, f1, f2))
  values = [float(f(*args, jnp.float32(g))) for g in (1.0, 4.0, 10.0)]
  assert len(traces) == 1
  for g, v in zip((1.0, 4.0, 10.0), values):
    np.testing.assert_allclose(v, _np_fdbh(h1, h2, f1, f2, params, gamma=g)[0], rtol=2e-5)


def test_jit_equals_eager_bf16_and_lists():
  h1, h2, f1, f2, params = _problem(3)
  decode = _jax_decoder(params)
  args = tuple(jnp.asarray(a, jnp.float32) for a in (h1, h2, f1, f2))
  eager = fdbh_loss(*args, decode=decode, gamma=2.0)
  jitted = jax.jit(lambda *a: fdbh_loss(*a, decode=decode, gamma=2.0))(*args)
  np.testing.assert_allclose(float(jitted), float(eager), rtol=1e-6)
  bf = fdbh_loss(*(a.astype(jnp.bfloat16) for a in args), decode=decode, gamma=2.0)
  assert bf.dtype == jnp.float32
  np.testing.assert_allclose(float(bf), float(eager), rtol=0.05)
  listed = fdbh_loss(h1.tolist(), h2.tolist(), f1, f2.tolist(), decode=decode, gamma=2.0)
  np.testing.assert_allclose(float(listed), float(eager), rtol=1e-6)


def test_non_finite_input_gives_non_finite_loss():
  h1, h2, f1, f2, params = _problem(4)
  f1[0, 0] = np.nan
  assert not np.isfinite(float(fdbh_loss(h1, h2, f1, f2, decode=_jax_decoder(params), gamma=1.0)))


def test_bad_inputs_raise_naming_the_argument():
  h, f = jnp.ones((4, 8)), jnp.ones((4, 5))
  dec = lambda b: jnp.zeros((b.shape[0], 5))                    # noqa: E731
  with pytest.raises(ValueError, match="fdbh_loss: h_hat2 must be a floating array"):
    fdbh_loss(h, jnp.ones((4, 8), jnp.int32), f, f, decode=dec, gamma=1.0)
  with pytest.raises(ValueError, match="fdbh_loss: features1 and features2 must have the same"):
    fdbh_loss(h, h, f, jnp.ones((4, 6)), decode=dec, gamma=1.0)
  with pytest.raises(ValueError, match="same batch"):
    fdbh_loss(h, h, jnp.ones((3, 5)), jnp.ones((3, 5)), decode=dec, gamma=1.0)
  with pytest.raises(ValueError, match=r"decode\(codes1\) must return"):
    fdbh_loss(h, h, f, f, decode=lambda b: jnp.zeros((4, 6)), gamma=1.0)
  with pytest.raises(ValueError, match="decode must be a callable"):
    fdbh_loss(h, h, f, f, decode=None, gamma=1.0)
  with pytest.raises(ValueError, match="gamma must be > 0"):
    fdbh_loss(h, h, f, f, decode=dec, gamma=0.0)
  with pytest.raises(ValueError, match="at least 2"):
    fdbh_loss(jnp.ones((1, 8)), jnp.ones((1, 8)), jnp.ones((1, 5)), jnp.ones((1, 5)),
              decode=dec, gamma=1.0)
  with pytest.raises(ValueError, match="fdbh_codes: h_hat must be a non-empty 2-D"):
    fdbh_codes(jnp.ones(3), gamma=1.0)


def test_contrastive_weight_scales_only_the_contrastive_term():
  rng = np.random.default_rng(3)
  h1, h2 = (rng.normal(size=(8, 4)).astype(np.float32) for _ in range(2))
  f1, f2 = (rng.normal(size=(8, 5)).astype(np.float32) for _ in range(2))
  w = jnp.asarray(rng.normal(size=(4, 5)).astype(np.float32))
  decode = lambda b: b @ w  # noqa: E731
  full, aux = fdbh_loss_with_aux(h1, h2, f1, f2, decode=decode, gamma=2.0)
  off, _ = fdbh_loss_with_aux(h1, h2, f1, f2, decode=decode, gamma=2.0, contrastive_weight=0.0)
  np.testing.assert_allclose(float(off), float(aux["reconstruction"]) + 0.1 * float(aux["distribution"]),
                             rtol=1e-5)
  np.testing.assert_allclose(float(full) - float(off), float(aux["contrastive"]), rtol=1e-5)
