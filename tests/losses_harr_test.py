"""HARR structure and loss (methods.md §2.4, project formulation) against float64 loops, with the
tie rules written out."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from unhash_jax.losses import harr_loss, harr_loss_with_aux
from unhash_jax.losses.harr import harr_structure


def _np_structure(sim, p):
  """§2.4 step 2 literally: per-row rankings of the others (descending, ties to lower index)."""
  sim = np.asarray(sim, np.float64)
  n = len(sim)
  top = min(n - 1, math.ceil(round(p * n, 9)))
  others = n - 1
  rank = {}
  for i in range(n):
    order = sorted((j for j in range(n) if j != i), key=lambda j: (-sim[i, j], j))
    for r, j in enumerate(order):
      rank[i, j] = r
  in_top = lambda i, j: rank[i, j] < top                       # noqa: E731
  bottom = lambda i, j: rank[i, j] >= others - others // 2     # noqa: E731  last ⌊(N−1)/2⌋
  s = np.zeros((n, n), np.int8)
  for i in range(n):
    for j in range(n):
      if i == j or in_top(i, j) or in_top(j, i):
        s[i, j] = 1
      elif bottom(i, j) and bottom(j, i):
        s[i, j] = -1
  return s


def _np_harr(u1, u2, sim, *, p=0.1, alpha=0.01, beta=0.1, lam=None, eps=1e-5):
  u1, u2 = np.asarray(u1, np.float64), np.asarray(u2, np.float64)
  n, k = u1.shape
  lam = 1.0 / k if lam is None else lam
  s = _np_structure(sim, p)
  cos = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))   # noqa: E731
  terms = [(cos(u1[i], u2[j]) - s[i, j]) ** 2 for i in range(n) for j in range(n) if s[i, j]]
  l_sim = sum(terms) / len(terms)

  def standardise(u):
    mu = u.mean(0)
    sd = np.sqrt(((u - mu) ** 2).mean(0))
    return (u - mu) / (sd + eps)

  z1, z2 = standardise(u1), standardise(u2)
  c = np.array([[sum(z1[m, a] * z2[m, b] for m in range(n)) / n for b in range(k)]
                for a in range(k)])
  l_bc = sum((1 - c[a, a]) ** 2 for a in range(k)) + lam * sum(
      c[a, b] ** 2 for a in range(k) for b in range(k) if a != b)
  sign0 = lambda u: np.where(u >= 0, 1.0, -1.0)                       # noqa: E731
  l_q = 0.5 * sum(np.mean([1 - cos(u[m], sign0(u[m])) for m in range(n)]) for u in (u1, u2))
  return l_sim + alpha * l_bc + beta * l_q, l_sim, l_bc, l_q


def _problem(seed, n=10, k=8, ties=False):
  rng = np.random.default_rng(seed)
  u1 = np.tanh(rng.normal(size=(n, k)) * 1.5)
  u2 = np.tanh(np.arctanh(u1) + 0.5 * rng.normal(size=(n, k)))
  if ties:   # WTA similarities are multiples of 1/M: with small M most pairs tie
    sim = rng.integers(0, 4, size=(n, n)) / 4.0
  else:
    sim = rng.random((n, n))
  sim = (sim + sim.T) / 2
  np.fill_diagonal(sim, 1.0)
  return u1, u2, sim


@pytest.mark.parametrize("n,p", [(2, 0.1), (3, 0.5), (7, 0.1), (10, 0.25), (11, 0.3), (16, 1.0),
                                 (20, 0.0), (70, 0.1)])
@pytest.mark.parametrize("ties", [False, True])
def test_structure_matches_loop(n, p, ties):
  _, _, sim = _problem(n, n=n, k=4, ties=ties)
  got = np.asarray(harr_structure(jnp.asarray(sim, jnp.float32), top_fraction=p))
  assert got.dtype == np.int8
  np.testing.assert_array_equal(got, _np_structure(sim, p))
  np.testing.assert_array_equal(got, got.T)


def test_structure_of_an_asymmetric_matrix_matches_loop():
  sim = np.random.default_rng(0).integers(0, 3, size=(9, 9)) / 2.0
  np.testing.assert_array_equal(np.asarray(harr_structure(sim, top_fraction=0.2)),
                                _np_structure(sim, 0.2))


def test_structure_hand_computed_ties():
  # All others tie: rankings follow the index. N = 5, p = 0.2 -> t = 1, bottom half = last 2.
  s = np.asarray(harr_structure(jnp.full((5, 5), 0.5), top_fraction=0.2))
  # T(0) = {1}; T(i) = {0} for i > 0. Bottom of row 0: {3, 4}; rows 1, 2: {3, 4};
  # row 3: {2, 4}; row 4: {2, 3}. Negatives: (3, 4) (mutual), (2, 3)? 3 ∈ bottom(2) and
  # 2 ∈ bottom(3): yes; (2, 4): yes; (1, 3): 1 ∉ bottom(3): no.
  expect = [[1, 1, 1, 1, 1],
            [1, 1, 0, 0, 0],
            [1, 0, 1, -1, -1],
            [1, 0, -1, 1, -1],
            [1, 0, -1, -1, 1]]
  np.testing.assert_array_equal(s, expect)


def test_top_count_rounds_before_the_ceiling():
  # 0.1 · 70 = 7.000000000000001 in floating point: t must be 7, not 8.
  sim = np.eye(70) + np.arange(70)[None, :] * 1e-3   # row ranking = descending index
  s = np.asarray(harr_structure(sim, top_fraction=0.1))
  np.testing.assert_array_equal(s, _np_structure(sim, 0.1))
  # Row 1 ranks the others by descending index: T(1) = {63, …, 69}, and no row ranks 1 that high.
  assert np.flatnonzero(s[1] == 1).tolist() == [1] + list(range(63, 70))


@pytest.mark.parametrize("n,k,kw", [(6, 4, {}), (10, 8, {"p": 0.25}),
                                    (12, 16, {"alpha": 1.0, "beta": 2.0, "lam": 0.3}),
                                    (9, 8, {"eps": 0.0}), (8, 6, {"p": 0.5})])
@pytest.mark.parametrize("ties", [False, True])
def test_value_matches_float64_reference(n, k, kw, ties):
  u1, u2, sim = _problem(n * k, n=n, k=k, ties=ties)
  expect, e_sim, e_bc, e_q = _np_harr(u1, u2, sim, **kw)
  names = {"p": "top_fraction", "alpha": "bc_weight", "beta": "quantization_weight",
           "lam": "lambda_off", "eps": "eps"}
  got, aux = jax.jit(lambda *a: harr_loss_with_aux(*a, **{names[x]: v for x, v in kw.items()}))(
      *(jnp.asarray(a, jnp.float32) for a in (u1, u2, sim)))
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(float(got), expect, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(float(aux["similarity"]), e_sim, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(float(aux["bit_correlation"]), e_bc, rtol=2e-4, atol=1e-5)
  np.testing.assert_allclose(float(aux["quantization"]), e_q, rtol=2e-5, atol=1e-6)


def test_float64_and_check_grads(x64):
  u1, u2, sim = _problem(1, n=7, k=5)
  got = harr_loss(jnp.asarray(u1), jnp.asarray(u2), jnp.asarray(sim), top_fraction=0.3)
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(float(got), _np_harr(u1, u2, sim, p=0.3)[0], rtol=1e-11)
  f = jax.jit(lambda a, b: harr_loss(a, b, jnp.asarray(sim), top_fraction=0.3, bc_weight=0.5))
  check_grads(f, (jnp.asarray(u1), jnp.asarray(u2)), order=1, modes=("rev",), atol=1e-6,
              rtol=1e-6)


def test_hand_computed_case():
  # Four orthogonal-sign codes, identical views, all WTA similarities tied (see the docstring).
  u = jnp.array([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
  _, aux = jax.jit(lambda a, s: harr_loss_with_aux(a, a, s, top_fraction=0.25, eps=0.0))(
      u, jnp.eye(4) + 0.5)
  np.testing.assert_allclose(float(aux["similarity"]), 14 / 12, rtol=1e-6)
  assert float(aux["bit_correlation"]) == pytest.approx(0.0, abs=1e-12)   # C = I
  assert float(aux["quantization"]) == pytest.approx(0.0, abs=1e-7)       # already binary


def test_constant_bit_gives_finite_gradients():
  u = jnp.array([[0.5, 0.3], [0.5, -0.2], [0.5, 0.9]])     # bit 0 is constant: σ = 0
  g = jax.jit(jax.grad(lambda a: harr_loss(a, a, jnp.eye(3))))(u)
  assert np.isfinite(np.asarray(g)).all()


def test_jit_equals_eager_bf16_lists_and_no_gradient_into_wta():
  u1, u2, sim = _problem(2)
  args = tuple(jnp.asarray(a, jnp.float32) for a in (u1, u2, sim))
  eager = harr_loss(*args)
  np.testing.assert_allclose(float(jax.jit(harr_loss)(*args)), float(eager), rtol=1e-6)
  bf = harr_loss(args[0].astype(jnp.bfloat16), args[1].astype(jnp.bfloat16), args[2])
  assert bf.dtype == jnp.float32
  np.testing.assert_allclose(float(bf), float(eager), rtol=0.05)
  np.testing.assert_allclose(float(harr_loss(u1.tolist(), u2.tolist(), sim.tolist())),
                             float(eager), rtol=1e-5)
  g = jax.jit(jax.grad(harr_loss, argnums=2))(*args)
  np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_non_finite_input_gives_non_finite_loss():
  u1, u2, sim = _problem(3)
  u1[0, 0] = np.inf
  assert not np.isfinite(float(harr_loss(u1, u2, sim)))


def test_bad_inputs_raise_naming_the_argument():
  u = jnp.ones((4, 8))
  with pytest.raises(ValueError, match=r"harr_loss: wta_sim must have shape \[batch, batch\]"):
    harr_loss(u, u, jnp.ones((4, 5)))
  with pytest.raises(ValueError, match="harr_loss: u1 and u2 must have the same shape"):
    harr_loss(u, jnp.ones((4, 7)), jnp.ones((4, 4)))
  with pytest.raises(ValueError, match="harr_loss: u2 must be a floating array"):
    harr_loss(u, jnp.ones((4, 8), jnp.int32), jnp.ones((4, 4)))
  with pytest.raises(ValueError, match="harr_loss: wta_sim must be a floating"):
    harr_loss(u, u, jnp.ones((4, 4), jnp.int8))
  with pytest.raises(ValueError, match="at least 2"):
    harr_loss(jnp.ones((1, 8)), jnp.ones((1, 8)), jnp.ones((1, 1)))
  with pytest.raises(ValueError, match="top_fraction"):
    harr_loss(u, u, jnp.ones((4, 4)), top_fraction=1.5)
  with pytest.raises(ValueError, match="bc_weight"):
    harr_loss(u, u, jnp.ones((4, 4)), bc_weight=-1.0)
  with pytest.raises(ValueError, match="harr_structure: wta_sim must be a square"):
    harr_structure(jnp.ones((3, 4)))


def test_similarity_weight_scales_only_the_structure_term():
  rng = np.random.default_rng(7)
  u1, u2 = (np.tanh(rng.normal(size=(8, 6))).astype(np.float32) for _ in range(2))
  sim = rng.random((8, 8)).astype(np.float32)
  full, aux = harr_loss_with_aux(u1, u2, sim, bc_weight=0.2, quantization_weight=0.3)
  off, aux_off = harr_loss_with_aux(u1, u2, sim, bc_weight=0.2, quantization_weight=0.3,
                                    similarity_weight=0.0)
  np.testing.assert_allclose(float(off), 0.2 * float(aux["bit_correlation"])
                             + 0.3 * float(aux["quantization"]), rtol=1e-6)
  np.testing.assert_allclose(float(full) - float(off), float(aux["similarity"]), rtol=1e-5)
  with pytest.raises(ValueError, match="similarity_weight"):
    harr_loss_with_aux(u1, u2, sim, similarity_weight=-1.0)
