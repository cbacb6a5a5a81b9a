"""SoftSort / NeuralSort against float64 NumPy loops of the papers' formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from unhash_jax import sorting


def _softsort_ref(s, tau, descending=True):
  """Prillo & Eisenschlos: P[r, j] = softmax_j(-|sort(s)_r - s_j| / tau), loops in float64."""
  s = np.asarray(s, np.float64)
  n = len(s)
  srt = sorted(s, reverse=descending)
  p = np.zeros((n, n))
  for r in range(n):
    logits = [-abs(srt[r] - s[j]) / tau for j in range(n)]
    m = max(logits)
    e = [np.exp(v - m) for v in logits]
    for j in range(n):
      p[r, j] = e[j] / sum(e)
  return p


def _neuralsort_ref(s, tau, descending=True):
  """Grover et al. eq. 5: P[r, :] = softmax(((n + 1 - 2r) s - A 1) / tau), r = 1..n."""
  s = np.asarray(s, np.float64)
  if not descending:
    s = -s
  n = len(s)
  p = np.zeros((n, n))
  for r in range(1, n + 1):
    logits = [((n + 1 - 2 * r) * s[j] - sum(abs(s[j] - s[k]) for k in range(n))) / tau
              for j in range(n)]
    m = max(logits)
    e = [np.exp(v - m) for v in logits]
    p[r - 1] = [v / sum(e) for v in e]
  return p


def _perm_ref(s, descending):
  """Rank -> item with ties by lower index first (Python's sort is stable)."""
  idx = list(range(len(s)))
  return sorted(idx, key=lambda j: -s[j] if descending else s[j])


@pytest.mark.parametrize("op,ref", [(sorting.softsort, _softsort_ref),
                                    (sorting.neuralsort, _neuralsort_ref)])
@pytest.mark.parametrize("tau", [0.05, 0.3, 2.0])
@pytest.mark.parametrize("descending", [True, False])
def test_matches_formula(x64, op, ref, tau, descending):
  s = np.random.default_rng(1).normal(size=(3, 6))
  got = np.asarray(op(jnp.asarray(s), temperature=tau, descending=descending))
  assert got.shape == (3, 6, 6) and got.dtype == np.float64
  for b in range(3):
    np.testing.assert_allclose(got[b], ref(s[b], tau, descending), rtol=1e-10, atol=1e-12)


def test_softsort_hand_case():
  # s = [0, 1], descending: sorted = [1, 0]; row 0 logits [-1, 0]/tau, row 1 logits [0, -1]/tau.
  p = sorting.softsort(jnp.array([0.0, 1.0]), temperature=1.0)
  a = 1 / (1 + np.e)
  np.testing.assert_allclose(p, [[a, 1 - a], [1 - a, a]], rtol=1e-6)


@pytest.mark.parametrize("op", [sorting.softsort, sorting.neuralsort])
@pytest.mark.parametrize("descending", [True, False])
def test_hard_is_exact_permutation_with_ties(op, descending):
  rng = np.random.default_rng(2)
  # Heavy ties, like Hamming similarities of short codes.
  s = rng.integers(0, 4, size=(5, 9)).astype(np.float32) / 4
  s[0] = 0.5  # all tied
  p = np.asarray(op(jnp.asarray(s), temperature=0.1, hard=True, descending=descending))
  for b in range(5):
    expect = np.zeros((9, 9), np.float32)
    for r, j in enumerate(_perm_ref(list(s[b]), descending)):
      expect[r, j] = 1.0
    np.testing.assert_array_equal(p[b], expect)


def test_hard_permutation_sorts():
  s = jnp.asarray(np.random.default_rng(3).normal(size=(4, 7)), jnp.float32)
  p = sorting.softsort(s, hard=True)
  np.testing.assert_array_equal(jnp.einsum("brj,bj->br", p, s), -jnp.sort(-s, axis=-1))


@pytest.mark.parametrize("op", [sorting.softsort, sorting.neuralsort])
def test_hard_backward_is_soft_backward(x64, op):
  s = jnp.asarray(np.random.default_rng(4).normal(size=(2, 5)))
  w = jnp.asarray(np.random.default_rng(5).normal(size=(2, 5, 5)))
  g_soft = jax.grad(lambda x: jnp.sum(w * op(x, temperature=0.7)))(s)
  g_hard = jax.grad(lambda x: jnp.sum(w * op(x, temperature=0.7, hard=True)))(s)
  np.testing.assert_allclose(g_hard, g_soft, rtol=1e-12)
  assert np.abs(g_soft).max() > 1e-3


def test_softsort_gradient_flows_through_sorted_values(x64):
  # Finite differences of the formula (distinct values: sort is locally a fixed permutation).
  s = jnp.asarray([0.3, -1.2, 0.8, 0.1, 2.0])
  w = jnp.asarray(np.random.default_rng(6).normal(size=(5, 5)))
  f = lambda x: jnp.sum(w * sorting.softsort(x, temperature=0.5))
  check_grads(f, (s,), order=2, modes=("rev",))
  # Blocking the gradient through the sorted values changes it, so the sort path is live.
  def f_sg(x):
    srt = jax.lax.stop_gradient(jnp.sort(x)[::-1])
    return jnp.sum(w * jax.nn.softmax(-jnp.abs(srt[:, None] - x[None]) / 0.5, -1))
  assert np.abs(jax.grad(f)(s) - jax.grad(f_sg)(s)).max() > 1e-3


def test_neuralsort_grads(x64):
  s = jnp.asarray([0.3, -1.2, 0.8, 0.1])
  w = jnp.asarray(np.random.default_rng(7).normal(size=(4, 4)))
  check_grads(lambda x: jnp.sum(w * sorting.neuralsort(x, temperature=0.5)), (s,), order=2,
              modes=("rev",))


@pytest.mark.parametrize("op", [sorting.softsort, sorting.neuralsort])
@pytest.mark.parametrize("hard", [False, True])
def test_jit_vmap_equal_eager(op, hard):
  s = jnp.asarray(np.random.default_rng(8).normal(size=(3, 4, 6)), jnp.float32)
  eager = op(s, temperature=0.3, hard=hard)
  assert eager.shape == (3, 4, 6, 6)
  jitted = jax.jit(lambda x: op(x, temperature=0.3, hard=hard))(s)
  vmapped = jax.vmap(lambda x: op(x, temperature=0.3, hard=hard))(s)
  np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(vmapped, eager, rtol=1e-5, atol=1e-6)
  # unbatched rows agree with batched
  np.testing.assert_allclose(op(s[1, 2], temperature=0.3, hard=hard), eager[1, 2], rtol=1e-5,
                             atol=1e-6)


def test_small_temperature_is_hard_and_rows_stochastic():
  s = jnp.asarray(np.random.default_rng(9).permutation(8) / 8.0, jnp.float32)
  p = sorting.softsort(s, temperature=1e-3)
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(p, sorting.softsort(s, hard=True), atol=1e-6)


def test_bfloat16_in_float32_out():
  p = sorting.softsort(jnp.array([0.1, 0.5], jnp.bfloat16))
  assert p.dtype == jnp.float32


def test_traced_temperature_is_allowed():
  s = jnp.array([0.1, 0.9, 0.5])
  got = jax.jit(lambda t: sorting.softsort(s, temperature=t))(0.5)
  np.testing.assert_allclose(got, sorting.softsort(s, temperature=0.5), rtol=1e-6)


@pytest.mark.parametrize("op", [sorting.softsort, sorting.neuralsort])
def test_bad_input(op):
  with pytest.raises(ValueError, match="temperature"):
    op(jnp.ones(3), temperature=0.0)
  with pytest.raises(ValueError, match="temperature"):
    op(jnp.ones(3), temperature=-1.0)
  with pytest.raises(ValueError, match="floating"):
    op(jnp.arange(3))
  with pytest.raises(ValueError, match="scalar"):
    op(jnp.float32(1.0))
