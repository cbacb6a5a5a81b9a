"""WCH loss against an independent float64 loop of methods.md §2.3 (official objective)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unhash_jax import ops
from unhash_jax.losses import wch_loss, wch_loss_with_aux


def _np_wch(t1, t2, x1, x2, *, tau=0.3, tw=0.2, normalize=False, offsets=None):
  """The §2.3 objective as loops, float64. ``offsets`` freezes the STE's constant
  ``sign₀(t0) − t0`` so that finite differences give the straight-through gradient."""
  t1, t2, x1, x2 = (np.asarray(a, np.float64) for a in (t1, t2, x1, x2))
  n, k = t1.shape
  p = x1.shape[1]
  sign0 = lambda t: np.where(t >= 0, 1.0, -1.0)                 # noqa: E731
  o1, o2 = offsets if offsets is not None else (sign0(t1) - t1, sign0(t2) - t2)
  h1, h2 = t1 + o1, t2 + o2
  cos = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))   # noqa: E731
  s_hat = np.array([[sum(max(cos(x1[a, i], x2[b, j]) for j in range(x2.shape[1]))
                         for i in range(p)) / p for b in range(n)] for a in range(n)])
  q = np.exp(s_hat / tw)
  q = q / q.sum(1, keepdims=True)
  w = q / np.diag(q)[:, None]
  if normalize:
    w = w / w.sum(1, keepdims=True)
  lam = np.array([[h1[a] @ h2[b] / (k * tau) for b in range(n)] for a in range(n)])
  l_wc = 0.0
  for a in range(n):
    lse = np.log(np.sum(np.exp(lam[a])))
    l_wc += sum(-w[a, b] * (lam[a, b] - lse) for b in range(n))
  l_wc /= n
  reg = np.mean(h1.mean(0) ** 2) - np.mean(h1 ** 2)
  return l_wc + reg, l_wc, reg


def _problem(seed, n=4, k=8, p=5, d=6):
  rng = np.random.default_rng(seed)
  t1 = np.tanh(rng.normal(size=(n, k)))
  t2 = np.tanh(np.arctanh(t1) + 0.5 * rng.normal(size=(n, k)))
  x1 = rng.normal(size=(n, p, d))
  x2 = x1 + 0.8 * rng.normal(size=(n, p, d))
  return t1, t2, x1, x2


@functools.cache
def _jitted(**kw):
  return jax.jit(functools.partial(wch_loss_with_aux, **kw))


@pytest.mark.parametrize("n,k,p,d,kw", [
    (2, 4, 3, 5, {}),
    (4, 8, 5, 6, {}),
    (6, 16, 4, 3, {"temperature": 0.5, "weight_temperature": 0.1}),
    (5, 8, 7, 4, {"normalize_weights": True}),
    (5, 8, 7, 4, {"detach_weights": True, "chunk": 2}),
    (7, 8, 3, 4, {"chunk": 3}),
    (4, 8, 5, 6, {"regularizer_weight": 0.25}),
    (4, 8, 5, 6, {"regularizer_weight": 0.0}),
])
def test_value_matches_float64_reference(n, k, p, d, kw):
  t1, t2, x1, x2 = _problem(n * k + p + d, n, k, p, d)
  expect, e_wc, e_reg = _np_wch(t1, t2, x1, x2, tau=kw.get("temperature", 0.3),
                                tw=kw.get("weight_temperature", 0.2),
                                normalize=kw.get("normalize_weights", False))
  expect = e_wc + kw.get("regularizer_weight", 1.0) * e_reg
  got, aux = _jitted(**kw)(*(jnp.asarray(a, jnp.float32) for a in (t1, t2, x1, x2)))
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(float(got), expect, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(float(aux["weighted_contrastive"]), e_wc, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(float(aux["regularizer"]), e_reg, rtol=1e-6, atol=1e-7)


def test_gradients_match_finite_differences_of_reference(x64):
  # Straight-through gradient in t (offsets frozen) and the full gradient in the tokens through
  # the non-detached weights W; a small step keeps the max's argmax fixed.
  t1, t2, x1, x2 = _problem(1, n=3, k=4, p=3, d=4)
  sign0 = lambda t: np.where(t >= 0, 1.0, -1.0)                 # noqa: E731
  offsets = (sign0(t1) - t1, sign0(t2) - t2)
  ref = lambda *a: _np_wch(*a, offsets=offsets)[0]              # noqa: E731
  grads = jax.jit(jax.grad(wch_loss, argnums=(0, 1, 2, 3)))(
      *(jnp.asarray(a) for a in (t1, t2, x1, x2)))
  inputs = [t1, t2, x1, x2]
  eps = 1e-6
  for which, g in enumerate(grads):
    fd = np.zeros_like(inputs[which])
    for idx in np.ndindex(fd.shape):
      plus = [a.copy() for a in inputs]
      minus = [a.copy() for a in inputs]
      plus[which][idx] += eps
      minus[which][idx] -= eps
      fd[idx] = (ref(*plus) - ref(*minus)) / (2 * eps)
    np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-5, atol=1e-8)
    assert np.abs(fd).max() > 1e-4                               # every input gets a gradient


def test_detached_weights_stop_the_token_gradient():
  t1, t2, x1, x2 = (jnp.asarray(a, jnp.float32) for a in _problem(2))
  f = jax.jit(jax.grad(lambda *a: wch_loss(*a, detach_weights=True), argnums=(0, 2, 3)))
  g_t, g_x1, g_x2 = f(t1, t2, x1, x2)
  np.testing.assert_array_equal(np.asarray(g_x1), 0.0)
  np.testing.assert_array_equal(np.asarray(g_x2), 0.0)
  g_t_full = jax.jit(jax.grad(wch_loss))(t1, t2, x1, x2)
  np.testing.assert_allclose(np.asarray(g_t), np.asarray(g_t_full), rtol=1e-6)


def test_chunking_does_not_change_values_or_gradients():
  args = tuple(jnp.asarray(a, jnp.float32) for a in _problem(3, n=7))
  base = jax.jit(jax.value_and_grad(wch_loss, argnums=(0, 2, 3)))(*args)
  for chunk in (1, 3, 7):
    got = jax.jit(jax.value_and_grad(lambda *a: wch_loss(*a, chunk=chunk), argnums=(0, 2, 3)))(
        *args)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(base)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_hand_computed_case():
  # One patch per image, orthogonal images: Ŝ = I, W = [[1, e^-5], [e^-5, 1]].
  t = jnp.array([[0.9, 0.8], [-0.7, 0.9]])
  x = jnp.array([[[1.0, 0.0]], [[0.0, 2.0]]])
  a = 2 / 0.6
  row = np.log1p(np.exp(-a)) + np.exp(-5) * (a + np.log1p(np.exp(-a)))
  loss, aux = wch_loss_with_aux(t, t, x, x)
  np.testing.assert_allclose(float(aux["weighted_contrastive"]), row, rtol=1e-6)
  # R: the bit means of h¹ are (0, 1) -> ½; minus mean h² = 1.
  np.testing.assert_allclose(float(aux["regularizer"]), -0.5, rtol=1e-7)
  np.testing.assert_allclose(float(loss), row - 0.5, rtol=1e-6)


@pytest.mark.parametrize("detach", [False, True])
def test_sharp_weights_stay_finite_when_a_rows_diagonal_underflows(detach):
  # Image 0's views are orthogonal while its first view equals image 1's second: Ŝ[0] = (0, 1), so
  # at T_w 0.005 softmax(Ŝ/T_w)[0, 0] = e^-200 underflows to 0 in float32 (a quotient Q/Q[0, 0]
  # gave NaN). Normalised, W[0] = (e^-200, 1) and the loss matches the float64 loop.
  t1 = np.array([[0.9, -0.8], [0.7, 0.6], [-0.5, 0.4]])
  t2 = np.array([[0.8, -0.9], [0.6, 0.5], [-0.6, 0.3]])
  x1 = np.array([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]]])
  x2 = np.array([[[0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]]])
  kw = dict(weight_temperature=0.005, normalize_weights=True, detach_weights=detach)
  want = _np_wch(t1, t2, x1, x2, tw=0.005, normalize=True)[0]
  loss = wch_loss(*(jnp.asarray(a, jnp.float32) for a in (t1, t2, x1, x2)), **kw)
  np.testing.assert_allclose(float(loss), want, rtol=1e-6)
  grads = jax.grad(lambda a, b: wch_loss(jnp.asarray(t1, jnp.float32), jnp.asarray(t2, jnp.float32),
                                         a, b, **kw), argnums=(0, 1))(
      jnp.asarray(x1, jnp.float32), jnp.asarray(x2, jnp.float32))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_regularizer_uses_view_one_only_and_zero_maps_to_plus_one():
  t1 = jnp.array([[0.0, -0.3], [0.2, -0.1]])          # sign₀: [[1, -1], [1, -1]]
  t2 = jnp.array([[-0.5, 0.5], [0.5, 0.5]])
  x = jnp.ones((2, 1, 3))
  _, aux = wch_loss_with_aux(t1, t2, x, x)
  np.testing.assert_allclose(float(aux["regularizer"]), 1.0 - 1.0, atol=1e-7)


def test_jit_equals_eager_bf16_lists_and_pipeline_with_mutual_attention():
  t1, t2, x1, x2 = _problem(4)
  args = tuple(jnp.asarray(a, jnp.float32) for a in (t1, t2, x1, x2))
  eager = wch_loss(*args)
  np.testing.assert_allclose(float(jax.jit(wch_loss)(*args)), float(eager), rtol=1e-6)
  bf = wch_loss(*(a.astype(jnp.bfloat16) for a in args))
  assert bf.dtype == jnp.float32
  np.testing.assert_allclose(float(bf), float(eager), rtol=0.05)
  np.testing.assert_allclose(float(wch_loss(t1.tolist(), t2, x1.tolist(), x2)), float(eager),
                             rtol=1e-6)
  # The intended use: the loss on mutually attended tokens is finite with finite gradients.
  y1, y2 = ops.mutual_attention(args[2], args[3])
  g = jax.jit(jax.grad(lambda a, b: wch_loss(args[0], args[1], *ops.mutual_attention(a, b)),
                       argnums=(0, 1)))(args[2], args[3])
  assert all(np.isfinite(np.asarray(x)).all() for x in g)
  assert np.isfinite(float(wch_loss(args[0], args[1], y1, y2)))


def test_non_finite_input_gives_non_finite_loss():
  t1, t2, x1, x2 = _problem(5)
  x1[0, 0, 0] = np.inf
  assert not np.isfinite(float(wch_loss(t1, t2, x1, x2)))


def test_bad_inputs_raise_naming_the_argument():
  t, x = jnp.ones((4, 8)), jnp.ones((4, 3, 5))
  with pytest.raises(ValueError, match="wch_loss: t2 must be a floating array"):
    wch_loss(t, jnp.ones((4, 8), jnp.int32), x, x)
  with pytest.raises(ValueError, match="wch_loss: t1 and t2 must have the same shape"):
    wch_loss(t, jnp.ones((4, 7)), x, x)
  with pytest.raises(ValueError, match=r"wch_loss: x1 must be a non-empty 3-D array \[batch, "
                                       r"patches, dim\]"):
    wch_loss(t, t, jnp.ones((4, 5)), x)
  with pytest.raises(ValueError, match="wch_loss: x1 and x2 must have the same shape"):
    wch_loss(t, t, x, jnp.ones((4, 2, 5)))
  with pytest.raises(ValueError, match="share the batch"):
    wch_loss(t, t, jnp.ones((5, 3, 5)), jnp.ones((5, 3, 5)))
  with pytest.raises(ValueError, match="at least 2"):
    wch_loss(jnp.ones((1, 8)), jnp.ones((1, 8)), jnp.ones((1, 3, 5)), jnp.ones((1, 3, 5)))
  with pytest.raises(ValueError, match="weight_temperature must be > 0"):
    wch_loss(t, t, x, x, weight_temperature=0.0)
  with pytest.raises(ValueError, match="temperature must be > 0"):
    wch_loss(t, t, x, x, temperature=-1.0)
  with pytest.raises(ValueError, match="regularizer_weight must be >= 0"):
    wch_loss(t, t, x, x, regularizer_weight=-0.5)


def test_wch_loss_passes_regularizer_weight_through():
  t1, t2, x1, x2 = (jnp.asarray(a, jnp.float32) for a in _problem(5))
  _, e_wc, e_reg = _np_wch(t1, t2, x1, x2)
  np.testing.assert_allclose(float(wch_loss(t1, t2, x1, x2, regularizer_weight=0.5)),
                             e_wc + 0.5 * e_reg, rtol=2e-5, atol=2e-6)
