"""soft_sort / soft_rank (Blondel et al. 2020) against independent float64 references.

References written here: a generic constrained solver (scipy SLSQP) for the Euclidean and KL
projections onto the permutahedron (n ≤ 5, every subset constraint written out), a textbook
Python PAV for large n, scipy.stats.rankdata / np.sort for the hard limits.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from jax.test_util import check_grads

from unhash_jax import sorting

RHO = lambda n: np.arange(n, 0, -1).astype(np.float64)  # noqa: E731


def _permutahedron_constraints(w):
  """μ ∈ 𝒫(w) ⟺ Σμ = Σw and Σ_{i∈S} μ_i ≤ (sum of the |S| largest w) for every subset S."""
  n = len(w)
  top = np.cumsum(np.sort(w)[::-1])
  cons = [{"type": "eq", "fun": lambda m: m.sum() - w.sum(), "jac": lambda m: np.ones(n)}]
  for k in range(1, n):
    for subset in itertools.combinations(range(n), k):
      a = np.zeros(n)
      a[list(subset)] = 1.0
      cons.append({"type": "ineq", "fun": lambda m, a=a, c=top[k - 1]: c - a @ m,
                   "jac": lambda m, a=a: -a})
  return cons


def _vertex(z, w):
  """The vertex of 𝒫(w) ordered like z (a feasible starting point)."""
  v = np.empty(len(z))
  v[np.argsort(-np.asarray(z), kind="stable")] = np.sort(w)[::-1]
  return v


def _solved(res, cons):
  # SLSQP's status 8 ("positive directional derivative") means it could not improve further;
  # accept it only at a feasible point (the value is then compared with the operator anyway).
  assert res.status in (0, 8), res.message
  for c in cons:
    assert (abs(c["fun"](res.x)) < 1e-7) if c["type"] == "eq" else (c["fun"](res.x) > -1e-7)
  return res.x


def _project_l2(z, w):
  """argmin_{μ ∈ 𝒫(w)} ½‖μ − z‖² by SLSQP."""
  z, w = np.asarray(z, np.float64), np.asarray(w, np.float64)
  cons = _permutahedron_constraints(w)
  res = scipy.optimize.minimize(lambda m: 0.5 * np.sum((m - z) ** 2), _vertex(z, w),
                                jac=lambda m: m - z, constraints=cons,
                                method="SLSQP", options={"ftol": 1e-15, "maxiter": 500})
  return _solved(res, cons)


def _project_kl(z, w):
  """argmin_{μ ∈ 𝒫(w)} KL(μ, e^z) = Σ μ log(μ/e^z) − μ + e^z (w > 0), by SLSQP."""
  z, w = np.asarray(z, np.float64), np.asarray(w, np.float64)
  f = lambda m: np.sum(m * (np.log(m) - z) - m)  # noqa: E731
  g = lambda m: np.log(m) - z  # noqa: E731
  bounds = [(1e-9, None)] * len(z)
  cons = _permutahedron_constraints(w)
  res = scipy.optimize.minimize(f, np.full(len(z), w.mean()), jac=g, bounds=bounds,
                                constraints=cons, method="SLSQP",
                                options={"ftol": 1e-15, "maxiter": 1000})
  return _solved(res, cons)


def _pav_decreasing(y):
  """Textbook PAV: argmin_{v_1 ≥ … ≥ v_n} ½‖v − y‖² (float64 Python loop)."""
  blocks = []  # [sum, count]
  for v in y:
    blocks.append([float(v), 1])
    while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] <= blocks[-1][0] / blocks[-1][1]:
      s, c = blocks.pop()
      blocks[-1][0] += s
      blocks[-1][1] += c
  return np.concatenate([np.full(c, s / c) for s, c in blocks])


def _soft_rank_l2_pav(x, eps, descending=False):
  theta = (-1 if descending else 1) * np.asarray(x, np.float64) / eps
  perm = np.argsort(-theta, kind="stable")
  s = theta[perm]
  out = np.empty_like(s)
  out[perm] = s - _pav_decreasing(s - RHO(len(s)))
  return out


def _soft_sort_l2_pav(x, eps, descending=False):
  sign = 1 if descending else -1
  s = np.sort(sign * np.asarray(x, np.float64))[::-1]
  w = RHO(len(s)) / eps
  return sign * (w - _pav_decreasing(w - s))


STRENGTHS = [0.05, 0.3, 1.0, 3.0]


# --------------------------------------------------------------------------- definitions


@pytest.mark.parametrize("eps", STRENGTHS)
@pytest.mark.parametrize("direction", ["ascending", "descending"])
def test_l2_rank_is_projection_onto_permutahedron(x64, eps, direction):
  rng = np.random.default_rng(int(eps * 100))
  for n in (1, 2, 3, 5):
    x = rng.normal(size=n)
    got = np.asarray(sorting.soft_rank(jnp.asarray(x), regularization_strength=eps,
                                       direction=direction))
    sign = -1 if direction == "descending" else 1
    np.testing.assert_allclose(got, _project_l2(sign * x / eps, RHO(n)), atol=2e-6)


@pytest.mark.parametrize("eps", STRENGTHS)
@pytest.mark.parametrize("direction", ["ascending", "descending"])
def test_l2_sort_is_projection_onto_permutahedron(x64, eps, direction):
  rng = np.random.default_rng(int(eps * 100) + 7)
  for n in (1, 2, 4, 5):
    x = rng.normal(size=n)
    got = np.asarray(sorting.soft_sort(jnp.asarray(x), regularization_strength=eps,
                                       direction=direction))
    sign = 1 if direction == "descending" else -1
    np.testing.assert_allclose(got, sign * _project_l2(RHO(n) / eps, sign * x), atol=2e-6)


@pytest.mark.parametrize("eps", [0.3, 1.0, 3.0])
@pytest.mark.parametrize("direction", ["ascending", "descending"])
def test_kl_rank_is_kl_projection(x64, eps, direction):
  rng = np.random.default_rng(int(eps * 10) + 3)
  for n in (2, 3, 5):
    x = rng.normal(size=n)
    got = np.asarray(sorting.soft_rank(jnp.asarray(x), regularization_strength=eps,
                                       regularization="kl", direction=direction))
    sign = -1 if direction == "descending" else 1
    np.testing.assert_allclose(got, _project_kl(sign * x / eps, RHO(n)), atol=5e-5)


@pytest.mark.parametrize("eps", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("direction", ["ascending", "descending"])
def test_kl_sort_matches_its_isotonic_definition(x64, eps, direction):
  """out = sign·(ρ/ε − v), v = argmin_{v decreasing} <e^{ρ/ε−v}, 1> + <e^{sort↓(sign·x)}, v>."""
  rng = np.random.default_rng(int(eps * 10) + 5)
  sign = 1 if direction == "descending" else -1
  for n in (2, 4, 5):
    x = rng.normal(size=n)
    s = np.sort(sign * x)[::-1]
    w = RHO(n) / eps
    f = lambda v: np.sum(np.exp(w - v)) + np.exp(s) @ v  # noqa: E731
    g = lambda v: -np.exp(w - v) + np.exp(s)  # noqa: E731
    cons = [{"type": "ineq", "fun": lambda v, i=i: v[i] - v[i + 1]} for i in range(n - 1)]
    res = scipy.optimize.minimize(f, w - s, jac=g, constraints=cons, method="SLSQP",
                                  options={"ftol": 1e-15, "maxiter": 1000})
    assert res.success
    got = np.asarray(sorting.soft_sort(jnp.asarray(x), regularization_strength=eps,
                                       regularization="kl", direction=direction))
    np.testing.assert_allclose(got, sign * (w - res.x), atol=5e-5)


def test_hand_computed_values():
  # θ = (1, 0, 2.5): sorted (2.5, 1, 0) − ρ = (−0.5, −1, −1) is already non-increasing → hard ranks.
  np.testing.assert_allclose(sorting.soft_rank(jnp.array([2.0, 0.0, 5.0]),
                                               regularization_strength=2.0), [2, 1, 3])
  # ε = 10: θ = (.2, 0, .5); sorted − ρ = (−2.5, −1.8, −1) increasing → one block, mean −1.7667;
  # ranks = θ + 1.7667.
  np.testing.assert_allclose(sorting.soft_rank(jnp.array([2.0, 0.0, 5.0]),
                                               regularization_strength=10.0),
                             np.array([0.2, 0.0, 0.5]) + 5.3 / 3, rtol=1e-6)
  # Ascending soft sort, ε = 2: ρ/ε − sort↓(−x) = (1.5, 3, 5.5) pools to 10/3.
  np.testing.assert_allclose(sorting.soft_sort(jnp.array([2.0, 0.0, 5.0]),
                                               regularization_strength=2.0),
                             [10 / 3 - 1.5, 10 / 3 - 1.0, 10 / 3 - 0.5], rtol=1e-6)


# --------------------------------------------------------------------------- limits & ties


@pytest.mark.parametrize("regularization", ["l2", "kl"])
@pytest.mark.parametrize("direction", ["ascending", "descending"])
def test_hard_limits(regularization, direction):
  rng = np.random.default_rng(0)
  x = rng.permutation(40).astype(np.float32).reshape(2, 20) / 4  # gaps ≥ 0.25
  # KL ranks are exp(θ/ε − dual): float32 cancellation at |θ/ε| ~ 1e4 costs ~1e-3 relative.
  eps, tol = (1e-3, 1e-5) if regularization == "l2" else (1e-2, 3e-4)
  r = sorting.soft_rank(jnp.asarray(x), regularization_strength=eps,
                        regularization=regularization, direction=direction)
  sign = -1 if direction == "descending" else 1
  np.testing.assert_allclose(r, [scipy.stats.rankdata(sign * row) for row in x], rtol=tol)
  s = sorting.soft_sort(jnp.asarray(x), regularization_strength=eps,
                        regularization=regularization, direction=direction)
  expect = np.sort(x, -1)
  np.testing.assert_allclose(s, expect if direction == "ascending" else expect[:, ::-1],
                             rtol=tol, atol=tol)


@pytest.mark.parametrize("eps", [1e-3, 0.1, 1.0, 10.0])
@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_ties_get_equal_ranks(eps, regularization):
  x = np.array([[0.5, 0.25, 0.5, 0.0, 0.25, 0.5, 1.0]], np.float32)
  r = np.asarray(sorting.soft_rank(jnp.asarray(x), regularization_strength=eps,
                                   regularization=regularization))
  for v in np.unique(x):
    idx = np.flatnonzero(x[0] == v)
    np.testing.assert_allclose(r[0, idx], r[0, idx[0]], rtol=1e-6)
  if eps == 1e-3:
    # average ranks (KL: float32 cancellation in exp(θ/ε − dual) at |θ/ε| = 1e3)
    np.testing.assert_allclose(r[0], scipy.stats.rankdata(x[0]),
                               rtol=1e-6 if regularization == "l2" else 1e-4)
  # All-equal row: every rank is (n + 1) / 2; -0.0 and 0.0 tie.
  z = jnp.array([0.0, -0.0, 0.0, -0.0])
  np.testing.assert_allclose(sorting.soft_rank(z, regularization_strength=eps), 2.5)


@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_permutation_equivariance(regularization):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 12)).astype(np.float32)
  perm = rng.permutation(12)
  kw = dict(regularization_strength=0.5, regularization=regularization)
  np.testing.assert_allclose(sorting.soft_rank(x[:, perm], **kw),
                             np.asarray(sorting.soft_rank(x, **kw))[:, perm], rtol=1e-5)
  np.testing.assert_allclose(sorting.soft_sort(x[:, perm], **kw), sorting.soft_sort(x, **kw),
                             rtol=1e-5)


def test_l2_rank_sums_and_large_strength():
  x = np.random.default_rng(2).normal(size=(4, 9)).astype(np.float32)
  r = sorting.soft_rank(x, regularization_strength=1e4)
  np.testing.assert_allclose(r.sum(-1), 45.0, rtol=1e-6)
  np.testing.assert_allclose(r, 5.0, atol=1e-3)
  np.testing.assert_allclose(sorting.soft_sort(x, regularization_strength=1e4),
                             np.broadcast_to(x.mean(-1, keepdims=True), x.shape), atol=1e-3)


# --------------------------------------------------------------------------- large n & PAV


@pytest.mark.parametrize("n,eps", [(1000, 0.01), (1000, 1e-4),
                                   pytest.param(16384, 1e-3, marks=pytest.mark.slow),
                                   pytest.param(16384, 1.0, marks=pytest.mark.slow)])
def test_large_n_against_textbook_pav(x64, n, eps):
  rng = np.random.default_rng(n)
  x = rng.normal(size=(2, n))
  r = np.asarray(sorting.soft_rank(jnp.asarray(x), regularization_strength=eps))
  s = np.asarray(sorting.soft_sort(jnp.asarray(x), regularization_strength=eps,
                                   direction="descending"))
  for b in range(2):
    np.testing.assert_allclose(r[b], _soft_rank_l2_pav(x[b], eps), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(s[b], _soft_sort_l2_pav(x[b], eps, descending=True), rtol=1e-9,
                               atol=1e-9)


def test_large_n_float32():
  n = 16384
  x = np.random.default_rng(3).normal(size=(1, n)).astype(np.float32)
  r = np.asarray(sorting.soft_rank(jnp.asarray(x), regularization_strength=1e-3))
  np.testing.assert_allclose(r[0], _soft_rank_l2_pav(x[0].astype(np.float64), 1e-3),
                             rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("max_rounds", [0, 1, 3])
@pytest.mark.parametrize("kl", [False, True])
def test_sequential_fallback_equals_parallel_rounds(x64, max_rounds, kl):
  """The stack PAV that finishes unconverged columns gives the same partition."""
  rng = np.random.default_rng(4)
  n, b = 300, 5
  # Mixed regimes per column: strong pooling, partial pooling, none.
  s = -np.sort(-rng.normal(size=(b, n)), -1).T * np.array([1.0, 30.0, 100.0, 300.0, 1e4])
  w = RHO(n)[:, None] * np.ones((1, b))
  p, q = (jnp.asarray(s), jnp.asarray(np.log(w))) if kl else (jnp.asarray(s - w),) * 2
  ref, ref_values = sorting._pav_partition(p, q, kl, max_rounds=10**6)
  got, got_values = sorting._pav_partition(p, q, kl, max_rounds=max_rounds)
  np.testing.assert_array_equal(got, ref)
  np.testing.assert_allclose(got_values, ref_values, rtol=1e-12)
  if not kl:
    # The values carried out of the rounds (or recomputed after the stack PAV) are the fit.
    v = np.asarray(got_values)
    for c in range(b):
      np.testing.assert_allclose(v[:, c], _pav_decreasing(np.asarray(p[:, c])), rtol=1e-10,
                                 atol=1e-9)


# --------------------------------------------------------------------------- autodiff


def _check_grads(op, regularization, eps, modes):
  x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 6)))
  w = jnp.asarray(np.random.default_rng(6).normal(size=(2, 6)))
  f = jax.jit(lambda v: jnp.sum(w * op(v, regularization_strength=eps,
                                       regularization=regularization)))
  check_grads(f, (x,), order=2, modes=modes, eps=1e-6)


@pytest.mark.parametrize("op", [sorting.soft_rank, sorting.soft_sort])
@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_check_grads(x64, op, regularization):
  _check_grads(op, regularization, 0.5, ("rev",))


@pytest.mark.slow
@pytest.mark.parametrize("op", [sorting.soft_rank, sorting.soft_sort])
@pytest.mark.parametrize("regularization", ["l2", "kl"])
@pytest.mark.parametrize("eps", [0.1, 1.0])
def test_check_grads_fwd_and_rev(x64, op, regularization, eps):
  _check_grads(op, regularization, eps, ("fwd", "rev"))


def test_l2_rank_jacobian_is_block_average(x64):
  # θ = (0, .1, .2, 5) / 1: sorted (5, .2, .1, 0) − ρ = (1, −2.8, −1.9, −1): last three pool.
  x = jnp.array([0.0, 0.1, 0.2, 5.0])
  jac = np.asarray(jax.jacobian(lambda v: sorting.soft_rank(v))(x))
  expect = np.eye(4)
  expect[:3, :3] -= 1 / 3  # identity minus the block average; the singleton block {3} gives 0
  expect[3, 3] = 0.0
  np.testing.assert_allclose(jac, expect, atol=1e-12)


# --------------------------------------------------------------------------- transforms & shapes


@pytest.mark.parametrize("op", [sorting.soft_rank, sorting.soft_sort])
@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_jit_vmap_shapes_axis(op, regularization):
  x = jnp.asarray(np.random.default_rng(7).normal(size=(3, 4, 10)), jnp.float32)
  kw = dict(regularization_strength=0.3, regularization=regularization)
  full = jax.jit(lambda v: op(v, **kw))(x)
  assert full.shape == x.shape and full.dtype == jnp.float32
  # Eager (op-by-op) on one row: every primitive dispatched on its own is slow, so only one row.
  np.testing.assert_allclose(op(x[1, 2], **kw), full[1, 2], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(jax.jit(jax.vmap(jax.vmap(lambda v: op(v, **kw))))(x), full,
                             rtol=1e-5, atol=1e-5)
  moved = jax.jit(lambda v: op(v, axis=1, **kw))(jnp.moveaxis(x, -1, 1))
  np.testing.assert_allclose(jnp.moveaxis(moved, 1, -1), full, rtol=1e-5, atol=1e-5)
  g = jax.jit(jax.grad(lambda v: jnp.sum(op(v, **kw) ** 2)))(x)
  g2 = jax.jit(jax.vmap(jax.grad(lambda v: jnp.sum(op(v, **kw) ** 2))))(x)
  np.testing.assert_allclose(g, g2, rtol=1e-4, atol=1e-4)
  assert np.isfinite(np.asarray(g)).all()


def test_float32_matches_float64():
  x = np.random.default_rng(8).normal(size=(4, 50))
  r32 = sorting.soft_rank(jnp.asarray(x, jnp.float32), regularization_strength=0.05)
  with jax.enable_x64(True):
    r64 = np.asarray(sorting.soft_rank(jnp.asarray(x), regularization_strength=0.05))
  np.testing.assert_allclose(r32, r64, rtol=1e-5, atol=1e-4)


def test_bfloat16_in_float32_out():
  assert sorting.soft_rank(jnp.ones(3, jnp.bfloat16)).dtype == jnp.float32


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("op", [sorting.soft_rank, sorting.soft_sort])
def test_bad_input(op):
  x = jnp.ones(4)
  with pytest.raises(ValueError, match="regularization must be"):
    op(x, regularization="entropy")
  for bad in (0.0, -1.0, float("nan")):
    with pytest.raises(ValueError, match="regularization_strength"):
      op(x, regularization_strength=bad)
  with pytest.raises(ValueError, match="floating"):
    op(jnp.arange(4))
  with pytest.raises(ValueError, match="direction"):
    op(x, direction="up")
  with pytest.raises(ValueError, match="axis"):
    op(x, axis=3)


@pytest.mark.parametrize("op", [sorting.soft_rank, sorting.soft_sort])
@pytest.mark.parametrize("shape,axis", [((0,), -1), ((3, 0), -1), ((0, 4), 0), ((2, 0, 3), 1)])
def test_empty_axis_raises_value_error_naming_the_argument(op, shape, axis):
  # Used to raise ZeroDivisionError from the [B, n] reshape.
  with pytest.raises(ValueError, match=rf"{op.__name__}: values must have at least one element "
                                       rf"along axis {axis}"):
    op(jnp.zeros(shape), axis=axis)


@pytest.mark.parametrize("op", [sorting.soft_rank, sorting.soft_sort])
def test_empty_leading_axes_give_empty_result(op):
  for shape, axis in (((0, 3), -1), ((2, 0, 3), -1), ((2, 0, 3), 0)):
    out = op(jnp.zeros(shape), axis=axis)
    assert out.shape == shape and out.dtype == jnp.float32


@pytest.mark.parametrize("op", [sorting.softsort, sorting.neuralsort])
def test_relaxed_permutations_of_an_empty_last_axis_raise(op):
  for shape in ((0,), (3, 0)):
    with pytest.raises(ValueError, match=rf"{op.__name__}: scores must have at least one element"):
      op(jnp.zeros(shape))
  assert op(jnp.zeros((0, 3))).shape == (0, 3, 3)
