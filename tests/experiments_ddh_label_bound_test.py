"""experiments/ddh_label_bound.py: the spectral embedding and the linear fit it scores."""

import numpy as np
import pytest


@pytest.fixture
def script(experiment_script):
  return experiment_script("ddh_label_bound")


def test_spectral_embedding_is_the_best_rank_k_psd_approximation(script):
  rng = np.random.default_rng(0)
  a = rng.normal(size=(40, 3))
  low_rank = a @ a.T                                  # PSD, rank 3: reproduced exactly
  e = script.spectral_embedding(low_rank, 3)
  np.testing.assert_allclose(e @ e.T, low_rank, atol=1e-9)
  # A ±1 two-cluster label matrix: its top eigenvalue's rank-1 term from an independent SVD.
  labels = np.where(np.arange(10)[:, None] // 5 == np.arange(10)[None, :] // 5, 1, -1).astype(np.int8)
  u, s, vt = np.linalg.svd(labels.astype(np.float64))
  e = script.spectral_embedding(labels, 1)
  np.testing.assert_allclose(e @ e.T, s[0] * np.outer(u[:, 0], vt[0]), atol=1e-9)


def test_fit_linear_recovers_an_affine_map(script):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(200, 6))
  w, b = rng.normal(size=(6, 2)), rng.normal(size=2)
  predict = script.fit_linear(x, x @ w + b, ridge=1e-9)
  z = rng.normal(size=(5, 6))
  np.testing.assert_allclose(predict(z), z @ w + b, atol=1e-6)
