"""NSH loss against an independent float64 numpy implementation of methods.md §2.2 (loops)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from unhash_jax.losses import nsh_loss, nsh_loss_with_aux


def _np_nsh(b1, b2, l1, l2, *, tau_sort=None, tau_nce=0.3, m=2, lam=1.0, renorm=True,
            double=False, hard=False, sg_hard_offset=None):
  """The §2.2 objective, written as loops over anchors, ranks and items, in float64.

  ``hard`` forward uses the one-hot permutation of the stable descending order (ties: lower index
  first). ``sg_hard_offset`` lets a finite-difference test freeze the sort order (not needed here).
  """
  b1, b2, l1, l2 = (np.asarray(a, np.float64) for a in (b1, b2, l1, l2))
  n, k = b1.shape
  tau_sort = 1.0 / k if tau_sort is None else tau_sort
  z1 = np.array([v / math.sqrt(sum(x * x for x in v)) for v in l1])
  z2 = np.array([v / math.sqrt(sum(x * x for x in v)) for v in l2])
  s = np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      s[i, j] = sum(b1[i, q] * b2[j, q] for q in range(k)) / (2 * k) + 0.5
  p = np.zeros((n, n, n))
  for i in range(n):
    if hard:
      order = sorted(range(n), key=lambda j: -s[i, j])  # Python's sort is stable
      for r in range(n):
        p[i, r, order[r]] = 1.0
    else:
      s_hat = sorted(s[i], reverse=True)
      for r in range(n):
        w = [math.exp(-abs(s_hat[r] - s[i, j]) / tau_sort) for j in range(n)]
        for j in range(n):
          p[i, r, j] = w[j] / sum(w)
  c = np.zeros((n, n))
  for i in range(n):
    for r in range(n):
      e = sum(p[i, r, j] * z1[j] for j in range(n))
      if renorm:
        e = e / math.sqrt(e @ e)
      c[i, r] = e @ z2[i]
  snce = 0.0
  for r in range(m):
    for i in range(n):
      row = np.array([c[i, r]] + [c[i, q] for q in range(m, n)]) / tau_nce
      if double:
        row = np.exp(row) / np.exp(row).sum()
      snce += -(row[0] - math.log(np.exp(row).sum()))
  snce /= m * n
  sign0 = lambda x: np.where(x >= 0, 1.0, -1.0)
  quant = 0.5 * (np.mean((b1 - sign0(b1)) ** 2) + np.mean((b2 - sign0(b2)) ** 2))
  return snce + lam * quant, snce, quant


def _problem(seed, n, k, d, *, spread=1.5):
  rng = np.random.default_rng(seed)
  b1 = np.tanh(rng.normal(size=(n, k)) * spread)
  b2 = np.tanh(np.arctanh(b1) + rng.normal(size=(n, k)) * 0.5)
  l1 = rng.normal(size=(n, d))
  l2 = l1 + rng.normal(size=(n, d)) * 0.7
  return b1, b2, l1, l2


@functools.cache
def _jitted(**kw):
  """``nsh_loss_with_aux`` with keyword arguments bound, jit-compiled once per setting (fast)."""
  return jax.jit(functools.partial(nsh_loss_with_aux, **kw))


def _loss(*args, **kw):
  return _jitted(**kw)(*args)[0]


def _f32(*arrays):
  return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


CASES = [
    # n, k, d, kwargs
    (3, 2, 4, {}),
    (6, 16, 8, {}),                       # n < d
    (9, 8, 5, {}),                        # n > d
    (7, 32, 12, {"m": 1, "tau_nce": 0.1}),
    (8, 16, 6, {"m": 3, "lam": 0.5, "tau_sort": 0.2}),
    (6, 16, 8, {"renorm": False}),
    (9, 8, 5, {"renorm": False}),
    (6, 16, 8, {"double": True}),
    (7, 8, 10, {"hard": True}),
    (7, 8, 3, {"hard": True, "tau_sort": 8.0, "renorm": False}),
    (5, 4, 6, {"hard": True, "double": True, "m": 1}),
]

_KW = {"tau_sort": "sort_temperature", "tau_nce": "nce_temperature", "m": "num_positives",
       "lam": "quantization_weight", "renorm": "renormalize_gathered",
       "double": "strict_double_softmax", "hard": "sort_hard"}


def _kwargs(ref_kwargs):
  return {_KW[k]: v for k, v in ref_kwargs.items()}


@pytest.mark.parametrize("gather", ["dense", "gram"])
@pytest.mark.parametrize("n,k,d,kw", CASES)
def test_value_matches_float64_reference(n, k, d, kw, gather):
  args = _problem(n * 100 + k + d, n, k, d)
  expect, expect_snce, expect_q = _np_nsh(*args, **kw)
  got, aux = _jitted(gather=gather, **_kwargs(kw))(*_f32(*args))
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(float(got), expect, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(float(aux["sorted_nce"]), expect_snce, rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(float(aux["quantization"]), expect_q, rtol=2e-5, atol=1e-7)


def test_value_matches_reference_in_float64(x64):
  args = _problem(5, 6, 8, 7)
  for kw in ({}, {"double": True}, {"renorm": False, "m": 1}, {"hard": True}):
    expect = _np_nsh(*args, **kw)[0]
    for gather in ("dense", "gram"):
      got = _loss(*(jnp.asarray(a) for a in args), gather=gather, **_kwargs(kw))
      assert got.dtype == jnp.float64
      np.testing.assert_allclose(float(got), expect, rtol=1e-11)


@pytest.mark.parametrize("n,d", [(6, 8), (9, 5)])
def test_auto_gather_equals_both_forms(n, d):
  args = _f32(*_problem(n, n, 8, d))
  auto = float(_loss(*args))
  for gather in ("dense", "gram"):
    np.testing.assert_allclose(float(_loss(*args, gather=gather)), auto, rtol=1e-5)


def test_hand_computed_hard_sort():
  # Orthogonal latents z¹ = z² = e_i and exact ±1 codes where every image is its own nearest
  # neighbour: rank 0 gathers e_i (score 1), every other rank some e_j, j ≠ i (score 0); L_q = 0.
  b = jnp.array([[1., 1., 1., 1.], [1., 1., -1., -1.], [-1., 1., -1., 1.]])
  z = jnp.eye(3)
  tau = 0.3
  a = 1 / tau
  # m = 1: −log(e^a / (e^a + 2)).
  got = _loss(b, b, z, z, num_positives=1, nce_temperature=tau, sort_hard=True)
  np.testing.assert_allclose(float(got), math.log1p(2 * math.exp(-a)), rtol=1e-6)
  # m = 2: rank 0 → −log(e^a/(e^a + 1)); rank 1 (score 0) → −log(1/2); averaged.
  got = _loss(b, b, z, z, num_positives=2, nce_temperature=tau, sort_hard=True)
  np.testing.assert_allclose(float(got), 0.5 * (math.log1p(math.exp(-a)) + math.log(2)),
                             rtol=1e-6)
  # Double softmax, m = 1: q = softmax([a, 0, 0]); −log softmax(q)₀.
  q = np.exp([a, 0.0, 0.0]) / np.exp([a, 0.0, 0.0]).sum()
  expect = -(q[0] - math.log(np.exp(q).sum()))
  got = _loss(b, b, z, z, num_positives=1, nce_temperature=tau, sort_hard=True,
                 strict_double_softmax=True)
  np.testing.assert_allclose(float(got), expect, rtol=1e-6)


def test_default_sort_temperature_is_one_over_bits():
  args = _f32(*_problem(1, 6, 16, 8))
  np.testing.assert_allclose(float(_loss(*args)), float(_loss(*args, sort_temperature=1 / 16)),
                             rtol=1e-6)
  assert abs(float(_loss(*args)) - float(_loss(*args, sort_temperature=0.5))) > 1e-4


def test_quantization_weight_scales_the_quantization_term_only():
  args = _f32(*_problem(2, 6, 8, 8))
  l0, aux = _jitted(quantization_weight=0.0)(*args)
  l2 = _loss(*args, quantization_weight=2.0)
  np.testing.assert_allclose(float(l0), float(aux["sorted_nce"]), rtol=1e-6)
  np.testing.assert_allclose(float(l2), float(aux["sorted_nce"] + 2 * aux["quantization"]),
                             rtol=1e-6)


def test_gradient_matches_finite_differences_of_reference():
  # Pre-tanh code logits and raw latents as inputs: the chain a model uses.
  n, k, d = 5, 4, 3
  rng = np.random.default_rng(7)
  a1, a2 = rng.normal(size=(2, n, k)) * 1.5
  l1, l2 = rng.normal(size=(2, n, d))
  kw = {"m": 2, "tau_nce": 0.3, "tau_sort": 0.3}

  def ref(a1, a2, l1, l2):
    return _np_nsh(np.tanh(a1), np.tanh(a2), l1, l2, **kw)[0]

  with jax.enable_x64(True):
    for gather in ("dense", "gram"):
      def f(a1, a2, l1, l2, gather=gather):
        return nsh_loss(jnp.tanh(a1), jnp.tanh(a2), l1, l2, gather=gather, **_kwargs(kw))

      x64_inputs = (jnp.asarray(x) for x in (a1, a2, l1, l2))
      grads = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))(*x64_inputs)
      inputs = [a1, a2, l1, l2]
      eps = 1e-6
      for which, g in enumerate(grads):
        fd = np.zeros_like(inputs[which])
        for idx in np.ndindex(fd.shape):
          plus = [x.copy() for x in inputs]
          minus = [x.copy() for x in inputs]
          plus[which][idx] += eps
          minus[which][idx] -= eps
          fd[idx] = (ref(*plus) - ref(*minus)) / (2 * eps)
        np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kw", [{}, {"strict_double_softmax": True},
                                {"renormalize_gathered": False}, {"sort_hard": True}])
def test_check_grads_and_finite_gradients_reach_both_inputs(kw):
  args = _problem(11, 6, 8, 10)
  if not kw.get("sort_hard"):  # a straight-through gradient is not the derivative of the forward
    with jax.enable_x64(True):
      x = tuple(jnp.asarray(a) for a in args)
      f = jax.jit(lambda *x: nsh_loss(*x, **kw))
      check_grads(f, x, order=1, modes=("rev",), atol=1e-6, rtol=1e-5)
  grads = jax.jit(jax.grad(lambda *x: nsh_loss(*x, **kw), argnums=(0, 1, 2, 3)))(*_f32(*args))
  for g in grads:
    g = np.asarray(g)
    assert np.isfinite(g).all() and np.abs(g).max() > 0
  # Without the quantization term the codes still learn, through the sorter alone.
  g_codes = jax.jit(jax.grad(lambda *x: nsh_loss(*x, quantization_weight=0.0, **kw)))(
      *_f32(*args))
  assert np.abs(np.asarray(g_codes)).max() > 0


@pytest.mark.parametrize("kw", [{}, {"strict_double_softmax": True}, {"sort_hard": True},
                                {"renormalize_gathered": False, "gather": "dense"}])
def test_invariant_to_joint_permutation_of_the_batch(kw):
  args = _problem(3, 9, 16, 12)
  perm = np.random.default_rng(0).permutation(9)
  a = _loss(*_f32(*args), **kw)
  b = _loss(*_f32(*(x[perm] for x in args)), **kw)
  np.testing.assert_allclose(float(a), float(b), rtol=1e-5)


def test_not_invariant_to_permuting_one_view_only():
  # Guards the permutation test: breaking the pairing must change the loss.
  args = list(_problem(3, 9, 16, 12))
  a = _loss(*_f32(*args))
  args[3] = args[3][np.roll(np.arange(9), 1)]
  assert abs(float(a) - float(_loss(*_f32(*args)))) > 1e-3


def test_jit_equals_eager_vmap_and_bf16():
  args = _f32(*_problem(4, 8, 16, 8))
  eager = nsh_loss(*args)
  jitted = jax.jit(nsh_loss, static_argnames=("num_positives",))(*args, num_positives=2)
  np.testing.assert_allclose(float(jitted), float(eager), rtol=1e-6)
  stacked = [jnp.stack([a, a[::-1] * 0.9]) for a in args]
  batched = jax.jit(jax.vmap(nsh_loss))(*stacked)
  loop = [_loss(*(s[i] for s in stacked)) for i in range(2)]
  np.testing.assert_allclose(np.asarray(batched), np.asarray(loop), rtol=1e-6)
  bf = _loss(*(a.astype(jnp.bfloat16) for a in args))
  assert bf.dtype == jnp.float32
  np.testing.assert_allclose(float(bf), float(eager), rtol=0.05)


def test_no_recompilation_across_calls():
  traces = []

  def counted(*args):
    traces.append(1)
    return nsh_loss(*args)

  f = jax.jit(counted)
  args = _f32(*_problem(4, 8, 16, 8))
  f(*args)
  f(*(a * 0.5 for a in args))
  assert len(traces) == 1


def test_saturated_codes_and_collapsed_latents_stay_finite():
  n, k, d = 6, 8, 4
  b = jnp.ones((n, k))                              # all codes equal: S is constant
  z = jnp.ones((n, d))                              # all latents equal
  loss, grads = jax.jit(jax.value_and_grad(nsh_loss, argnums=(0, 1, 2, 3)))(b, b, z, z)
  assert np.isfinite(float(loss))
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)
  # Latents that cancel in a uniform mixture (E = 0) must not produce NaN either.
  z = jnp.concatenate([jnp.eye(d)[:1], -jnp.eye(d)[:1]] * 3)
  loss, grads = jax.jit(jax.value_and_grad(nsh_loss, argnums=(0, 1, 2, 3)))(b, b, z, z)
  assert np.isfinite(float(loss))
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)


@pytest.mark.parametrize("shapes", [
    ((4, 8), (4, 7), (4, 3), (4, 3)),         # codes of different widths
    ((4, 8), (4, 8), (4, 3), (5, 3)),         # latents of different batch
    ((4, 8), (4, 8), (5, 3), (5, 3)),         # codes and latents of different batch
    ((8,), (8,), (4, 3), (4, 3)),             # 1-D codes
    ((4, 8), (4, 8), (4, 3, 1), (4, 3, 1)),   # 3-D latents
    ((0, 8), (0, 8), (0, 3), (0, 3)),         # empty batch
    ((2, 8), (2, 8), (2, 3), (2, 3)),         # n = num_positives: no negatives
])
def test_bad_shapes_raise(shapes):
  arrays = [jnp.ones(s) for s in shapes]
  with pytest.raises(ValueError):
    nsh_loss(*arrays)


@pytest.mark.parametrize("kw", [{"num_positives": 0}, {"num_positives": 1.5},
                                {"nce_temperature": 0.0}, {"sort_temperature": -1.0},
                                {"quantization_weight": -1.0}, {"gather": "sparse"}])
def test_bad_hyperparameters_raise(kw):
  args = _f32(*_problem(0, 4, 8, 3))
  with pytest.raises(ValueError):
    nsh_loss(*args, **kw)


def test_integer_codes_raise():
  with pytest.raises(ValueError, match="floating"):
    nsh_loss(jnp.ones((4, 8), jnp.int32), jnp.ones((4, 8), jnp.int32), jnp.ones((4, 3)),
             jnp.ones((4, 3)))


def test_array_likes_are_accepted():
  # Python lists and numpy arrays used to raise AttributeError ('list' has no attribute 'ndim').
  args = _problem(6, 5, 8, 4)
  expect = float(nsh_loss(*_f32(*args)))
  np.testing.assert_allclose(float(nsh_loss(*(a.tolist() for a in args))), expect, rtol=1e-5)
  np.testing.assert_allclose(float(nsh_loss(*(a.astype(np.float32) for a in args))), expect,
                             rtol=1e-6)


@pytest.mark.parametrize("which,value,match", [
    (1, np.ones((4, 8), np.int32), r"nsh_loss: codes2 must be a floating array \[batch, bits\], "
                                   r"got int32"),
    (3, np.ones((4, 3), bool), r"nsh_loss: latents2 must be a floating array \[batch, "
                               r"latent_dim\], got bool"),
    (1, np.ones((4, 7)), r"nsh_loss: codes1 and codes2 must have the same shape"),
    (3, np.ones((5, 3)), r"nsh_loss: latents1 and latents2 must have the same shape"),
    (0, np.ones(8), r"nsh_loss: codes1 must be a non-empty 2-D array"),
    (2, None, r"nsh_loss: latents1 must be an array"),
])
def test_errors_name_the_argument(which, value, match):
  args = [np.ones((4, 8)), np.ones((4, 8)), np.ones((4, 3)), np.ones((4, 3))]
  args[which] = value
  with pytest.raises(ValueError, match=match):
    nsh_loss(*args)


def test_non_finite_input_gives_a_non_finite_loss():
  # Documented: values are not checked under jit; an inf code propagates to the loss.
  b1, b2, l1, l2 = _problem(7, 5, 8, 4)
  b1[0, 0] = np.inf
  assert not np.isfinite(float(_loss(*_f32(b1, b2, l1, l2))))
