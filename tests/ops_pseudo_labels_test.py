"""DDH's kNN ranking and SNN pseudo labels (methods.md §2.5) against literal Python loops."""

import math

import numpy as np
import pytest

from unhash_jax import ops
from unhash_jax.pseudo_labels import knn_indices, snn_pseudo_labels


def _loop_knn(features, k):
  """Self first, then the others by descending cosine (float64), ties to the lower index."""
  f = [list(map(float, row)) for row in features]
  norm = [math.sqrt(sum(x * x for x in row)) or 1.0 for row in f]
  out = []
  for i in range(len(f)):
    cos = [(sum(a * b for a, b in zip(f[i], f[j])) / (norm[i] * norm[j]), j)
           for j in range(len(f)) if j != i]
    others = sorted(cos, key=lambda cj: (-cj[0], cj[1]))
    out.append([i] + [j for _, j in others[:k]])
  return out


def _loop_labels(knn, k1, k2):
  """methods.md §2.5 written literally: sets, overlaps, sorted candidates, unions."""
  n = len(knn)
  t = [set(int(x) for x in knn[i][:k1 + 1]) for i in range(n)]
  s = [[-1] * n for _ in range(n)]
  for i in range(n):
    overlaps = [(len(t[i] & t[j]), j) for j in range(n)]
    joined = [j for o, j in sorted(overlaps, key=lambda oj: (-oj[0], oj[1])) if o > 0][:k2]
    members = set()
    for j in joined:
      members |= t[j]
    for j in members:
      s[i][j] = s[j][i] = 1
  return np.array(s, np.int8)


def test_knn_matches_loop_on_distinct_features():
  rng = np.random.default_rng(0)
  f = rng.normal(size=(40, 7))
  got = knn_indices(f, 6, block=7)
  assert got.dtype == np.int32 and got.shape == (40, 7)
  np.testing.assert_array_equal(got, _loop_knn(f, 6))


def test_knn_ties_go_to_the_lower_index_and_self_is_first():
  # Integer features with many exact duplicates: every kind of tie, and duplicates of i itself.
  rng = np.random.default_rng(1)
  f = rng.integers(-1, 2, size=(30, 2)).astype(np.float32)
  f[f.sum(1) == 0] = [1.0, 1.0]             # no zero rows here (tested separately)
  for block in (1, 4, 30):
    got = knn_indices(f, 12, block=block)
    np.testing.assert_array_equal(got, _loop_knn(f, 12))
  np.testing.assert_array_equal(got[:, 0], np.arange(30))


def test_knn_zero_rows_have_cosine_zero():
  f = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
  # Row 0 ties with everyone at 0 -> lowest indices; rows 1..3 see row 0 at cosine 0.
  np.testing.assert_array_equal(knn_indices(f, 3), [[0, 1, 2, 3], [1, 0, 3, 2], [2, 0, 3, 1],
                                                    [3, 0, 1, 2]])


def test_knn_accepts_lists_and_k_equal_to_n_minus_one():
  got = knn_indices([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], 2)
  np.testing.assert_array_equal(got, [[0, 1, 2], [1, 0, 2], [2, 1, 0]])


@pytest.mark.parametrize("n,k1,k2,block", [(12, 2, 3, 5), (25, 4, 6, 1), (40, 5, 30, 7),
                                           (40, 8, 2, 64), (9, 8, 50, 3)])
def test_labels_match_loop_on_random_rankings(n, k1, k2, block):
  rng = np.random.default_rng(n * 100 + k1 * 10 + k2)
  knn = np.array([[i] + list(rng.permutation([j for j in range(n) if j != i])[:k1 + 2])
                  for i in range(n)])
  got = snn_pseudo_labels(knn, k1, k2, block=block)
  assert got.dtype == np.int8 and got.shape == (n, n)
  np.testing.assert_array_equal(got, _loop_labels(knn, k1, k2))
  np.testing.assert_array_equal(got, got.T)
  assert (np.diag(got) == 1).all()


def test_labels_match_loop_with_many_overlap_ties():
  # Clustered integer features give kNN lists with large, tied overlaps; k2 cuts inside ties.
  rng = np.random.default_rng(5)
  f = rng.integers(0, 3, size=(36, 2)).astype(np.float64) + 1.0
  for k1, k2 in ((3, 2), (5, 4), (7, 9)):
    knn = knn_indices(f, k1)
    np.testing.assert_array_equal(snn_pseudo_labels(knn, k1, k2, block=5),
                                  _loop_labels(knn, k1, k2))


def test_hand_computed_case_and_non_overlapping_images_never_join():
  # Two triangles {0,1,2}, {3,4,5} and a chain: T_6 = {6, 5}.
  knn = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1], [3, 4, 5], [4, 5, 3], [5, 3, 4], [6, 5, 4]])
  s = snn_pseudo_labels(knn, 1, 7)
  # T_i (k1 = 1): {0,1} {1,2} {2,0} {3,4} {4,5} {5,3} {6,5}. Overlaps of 0: with 0 (2), 1 (1),
  # 2 (1); zero with 3..6, which never join although k2 = 7 leaves room: P_0 = {0, 1, 2}.
  np.testing.assert_array_equal(s[0], [1, 1, 1, -1, -1, -1, -1])
  # J_6 = {6 (2), 4 (1), 5 (1)} -> P_6 = {6, 5} ∪ {4, 5} ∪ {5, 3} = {3, 4, 5, 6}.
  np.testing.assert_array_equal(s[6], [-1, -1, -1, 1, 1, 1, 1])
  np.testing.assert_array_equal(s, _loop_labels(knn, 1, 7))


def test_k2_one_keeps_only_own_neighbourhood():
  knn = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 0]])
  # J_i = {i}: P_i = T_i, symmetrised.
  s = snn_pseudo_labels(knn, 1, 1)
  np.testing.assert_array_equal(s, [[1, 1, -1], [1, 1, 1], [-1, 1, 1]])


def test_hub_rows_are_split_into_blocks(monkeypatch):
  # One image in every neighbour list: each row generates N pairs; a tiny pair budget forces
  # one-row blocks, which must not change the result.
  from unhash_jax import pseudo_labels
  n = 30
  rng = np.random.default_rng(2)
  knn = np.array([[i, 0 if i else 1] + list(rng.permutation([j for j in range(1, n) if j != i])[:2])
                  for i in range(n)])
  expect = _loop_labels(knn, 3, 4)
  monkeypatch.setattr(pseudo_labels, "_PAIR_BUDGET", 10)
  np.testing.assert_array_equal(snn_pseudo_labels(knn, 3, 4), expect)


def test_ops_reexports():
  assert ops.knn_indices is knn_indices and ops.snn_pseudo_labels is snn_pseudo_labels


@pytest.mark.parametrize("knn,k1,match", [
    (np.zeros((3, 2), np.float32), 1, "integer array"),
    (np.array([[0, 1], [1, 0]]), 2, "columns"),
    (np.array([[0, 1], [0, 1]]), 1, r"knn_idx\[i, 0\] must be i"),
    (np.array([[0, 2], [1, 0]]), 1, r"\[0, N\)"),
    (np.array([[0, 0, 1], [1, 0, 1], [2, 1, 0]]), 2, "repeat"),
    (np.array([[0, 1], [1, 0]]), 0, "k1 must be an integer >= 1"),
])
def test_bad_labels_input_raises(knn, k1, match):
  with pytest.raises(ValueError, match=match):
    snn_pseudo_labels(knn, k1, 2)


def test_bad_knn_input_raises():
  with pytest.raises(ValueError, match="k = 3 needs"):
    knn_indices(np.ones((3, 2)), 3)
  with pytest.raises(ValueError, match="finite"):
    knn_indices(np.array([[1.0, np.nan], [1.0, 0.0]]), 1)
  with pytest.raises(ValueError, match="2-D"):
    knn_indices(np.ones(4), 1)
  with pytest.raises(ValueError, match="k2 must be"):
    snn_pseudo_labels(np.array([[0, 1], [1, 0]]), 1, 0)
