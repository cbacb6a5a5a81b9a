"""HARR's WTA hashing ops (methods.md §2.4 step 1) against literal Python loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unhash_jax import ops
from unhash_jax.wta import wta_codes, wta_permutations, wta_similarity


def test_permutations_are_deterministic_distinct_and_in_range():
  p = np.asarray(wta_permutations(7, dim=50, num_codes=64, window=4))
  assert p.shape == (64, 4) and p.dtype == np.int32
  np.testing.assert_array_equal(p, np.asarray(wta_permutations(7, 50, 64, 4)))
  assert all(len(set(row)) == 4 for row in p.tolist())
  assert p.min() >= 0 and p.max() < 50
  assert not np.array_equal(p, np.asarray(wta_permutations(8, 50, 64, 4)))
  # A key gives the same permutations as its seed; a prefix of a longer window is the same draw.
  np.testing.assert_array_equal(p, np.asarray(wta_permutations(jax.random.key(7), 50, 64, 4)))
  np.testing.assert_array_equal(p, np.asarray(wta_permutations(7, 50, 64, 9))[:, :4])


def test_permutation_first_entries_are_uniform():
  p = np.asarray(wta_permutations(0, dim=8, num_codes=8000, window=2))
  counts = np.bincount(p[:, 0], minlength=8)
  assert counts.min() > 850 and counts.max() < 1150   # 1000 expected each


def test_codes_match_loop_including_ties():
  rng = np.random.default_rng(0)
  f = rng.integers(0, 3, size=(20, 12)).astype(np.float32)      # many ties
  perms = np.asarray(wta_permutations(1, 12, 30, 5))
  got = np.asarray(wta_codes(jnp.asarray(f), perms, 5))
  assert got.dtype == np.int8 and got.shape == (20, 30)
  for n in range(20):
    for m in range(30):
      window = [f[n, perms[m, r]] for r in range(5)]
      first_max = next(r for r in range(5) if window[r] == max(window))
      assert got[n, m] == first_max


def test_codes_use_only_the_first_window_columns_and_accept_lists():
  f = [[0.0, 5.0, 1.0, 9.0]]
  assert np.asarray(wta_codes(f, [[0, 1, 3], [2, 0, 1]], 2)).tolist() == [[1, 0]]


@pytest.mark.parametrize("n,n2,m", [(5, 7, 16), (40, 30, 600)])   # direct and sliced paths
def test_similarity_matches_loop(n, n2, m, monkeypatch):
  from unhash_jax import wta
  monkeypatch.setattr(wta, "_DIRECT_ELEMENTS", 5000)             # forces slices for the 2nd case
  rng = np.random.default_rng(n)
  a = rng.integers(0, 4, size=(n, m)).astype(np.int8)
  b = rng.integers(0, 4, size=(n2, m)).astype(np.int8)
  got = np.asarray(wta_similarity(jnp.asarray(a), jnp.asarray(b)))
  assert got.dtype == np.float32 and got.shape == (n, n2)
  expect = [[sum(int(a[i, k] == b[j, k]) for k in range(m)) / m for j in range(n2)]
            for i in range(n)]
  np.testing.assert_allclose(got, expect, rtol=1e-7)


def test_similar_features_share_codes():
  rng = np.random.default_rng(3)
  f = rng.normal(size=(3, 256))
  f[1] = f[0] + 0.05 * rng.normal(size=256)            # near-duplicate of row 0
  perms = wta_permutations(0, 256, 512, 4)
  s = np.asarray(wta_similarity(wta_codes(f, perms, 4), wta_codes(f, perms, 4)))
  np.testing.assert_allclose(np.diag(s), 1.0)
  assert s[0, 1] > 0.85 and s[0, 2] < 0.45             # random pairs agree about 1/4 of the time


def test_jit_and_reexports():
  f = jnp.asarray(np.random.default_rng(4).normal(size=(6, 20)), jnp.float32)
  perms = wta_permutations(0, 20, 16, 4)
  np.testing.assert_array_equal(jax.jit(wta_codes, static_argnums=2)(f, perms, 4),
                                wta_codes(f, perms, 4))
  c = wta_codes(f, perms, 4)
  np.testing.assert_array_equal(jax.jit(wta_similarity)(c, c), wta_similarity(c, c))
  assert ops.wta_codes is wta_codes and ops.wta_similarity is wta_similarity
  assert ops.wta_permutations is wta_permutations


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="window must be <="):
    wta_permutations(0, 3, 4, 4)
  with pytest.raises(ValueError, match="num_codes"):
    wta_permutations(0, 3, 0, 2)
  with pytest.raises(ValueError, match="seed_or_key"):
    wta_permutations("seed", 8, 4, 2)
  with pytest.raises(ValueError, match="wta_codes: permutations must be an integer"):
    wta_codes(jnp.ones((2, 4)), jnp.ones((3, 2)), 2)
  with pytest.raises(ValueError, match="width"):
    wta_codes(jnp.ones((2, 4)), jnp.zeros((3, 2), jnp.int32), 3)
  with pytest.raises(ValueError, match="wta_similarity: b must be an integer"):
    wta_similarity(jnp.zeros((2, 4), jnp.int8), jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="same non-zero number of codes"):
    wta_similarity(jnp.zeros((2, 4), jnp.int8), jnp.zeros((2, 5), jnp.int8))
