"""Tests of the classical hashing baselines against independent float64 transcriptions written here."""

import doctest
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.decomposition import PCA

from unhash_jax import baselines, ops

MATLAB_EPS = 2.0 ** -52


def anisotropic(rng, n, dim, *, uniform=False):
  """Features with a well-separated spectrum (distinct principal directions), a random rotation, an
  offset (so centring matters)."""
  scales = 3.0 * 0.7 ** np.arange(dim)
  z = rng.uniform(-1, 1, (n, dim)) * math.sqrt(3) if uniform else rng.standard_normal((n, dim))
  q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
  return (z * scales) @ q.T + rng.uniform(-5, 5, dim)


def align_signs(ref, got):
  """Flips the columns of ``ref`` to ``got``'s sign (eigenvectors are defined up to sign)."""
  s = np.sign(np.sum(ref * got, axis=0))
  s[s == 0] = 1
  return ref * s


def top_eigvecs(cov, k):
  evals, evecs = np.linalg.eigh(cov)
  order = np.argsort(-evals)[:k]
  return evecs[:, order]


# ---------------------------------------------------------------------------------------------------
# ITQ: a literal transcription of Gong & Lazebnik's ITQ.m loop (with n_iter alternations).


def ref_itq(x, bits, r0, n_iter, pc_like):
  """[pc, l] = eigs(cov(XX), bit); V = XX*pc (zero-centred); then ITQ.m's loop. Returns pc, R, losses."""
  xx = x - x.mean(axis=0)
  pc = align_signs(top_eigvecs(np.cov(xx, rowvar=False), bits), pc_like)
  v = xx @ pc
  r = r0.copy()
  z = v @ r
  ux = -np.ones_like(z)
  ux[z >= 0] = 1
  losses = [np.sum((ux - z) ** 2)]
  for _ in range(n_iter):
    z = v @ r
    ux = -np.ones_like(z)
    ux[z >= 0] = 1
    c = ux.T @ v
    ub, _, ua_t = np.linalg.svd(c)  # MATLAB [UB, sigma, UA] = svd(C) gives C = UB*sigma*UA'
    r = ua_t.T @ ub.T  # R = UA * UB'
    losses.append(np.sum((ux - v @ r) ** 2))
  return pc, r, np.array(losses), v


@pytest.mark.parametrize("bits,iterations", [(4, 50), (8, 50), (16, 20), (8, 0)])
def test_itq_matches_transcription_with_same_initial_rotation(bits, iterations):
  rng = np.random.default_rng(bits)
  x = anisotropic(rng, 400, 24)
  q0, _ = np.linalg.qr(rng.standard_normal((bits, bits)))  # the test's own random rotation
  model = baselines.fit_itq(x, bits, key=None, iterations=iterations, initial_rotation=q0)
  pc, r, losses, v = ref_itq(x, bits, q0, iterations, model.components)
  np.testing.assert_allclose(model.components, pc, atol=1e-9)
  np.testing.assert_allclose(model.rotation, r, atol=1e-8)
  np.testing.assert_allclose(model.losses, losses, rtol=1e-9)
  np.testing.assert_allclose(model.rotation.T @ model.rotation, np.eye(bits), atol=1e-10)
  enc = np.asarray(model.encode(x))
  assert enc.dtype == np.float32 and enc.shape == (400, bits)
  want = v @ r
  np.testing.assert_allclose(enc, want, atol=1e-4 * np.abs(want).max())
  clear = np.abs(want) > 1e-3
  np.testing.assert_array_equal(np.asarray(model.codes(x))[clear], np.where(want >= 0, 1, -1)[clear])


def test_itq_key_gives_random_rotation_initialisation():
  x = anisotropic(np.random.default_rng(1), 300, 12)
  key = jax.random.key(7)
  r0 = baselines.random_rotation(key, 8)
  np.testing.assert_allclose(r0.T @ r0, np.eye(8), atol=1e-12)
  model = baselines.fit_itq(x, 8, key=key)
  pc, r, losses, _ = ref_itq(x, 8, r0, 50, model.components)
  np.testing.assert_allclose(model.rotation, r, atol=1e-8)
  np.testing.assert_allclose(model.losses, losses, rtol=1e-9)
  # The int seed names the same key; another seed another rotation.
  np.testing.assert_array_equal(baselines.fit_itq(x, 8, key=7).rotation, model.rotation)
  assert not np.allclose(baselines.fit_itq(x, 8, key=8).rotation, model.rotation)


@pytest.mark.parametrize("seed", range(4))
def test_itq_quantization_loss_decreases_monotonically(seed):
  rng = np.random.default_rng(seed)
  x = anisotropic(rng, 500, 32, uniform=seed % 2 == 1)
  model = baselines.fit_itq(x, 16, key=seed, iterations=50)
  losses = model.losses
  assert losses.shape == (51,)
  assert np.all(np.diff(losses) <= 1e-9 * losses[0]), np.diff(losses).max()
  assert losses[-1] < losses[0]
  # The stored loss is the objective of the stored rotation's own codes or above it.
  v = (x - x.mean(0)) @ model.components
  assert baselines.itq_quantization_loss(v, model.rotation) <= losses[-1] * (1 + 1e-12)
  # ITQ's rotation quantises better than the plain PCA directions (R = I).
  assert losses[-1] < baselines.itq_quantization_loss(v, np.eye(16))


# ---------------------------------------------------------------------------------------------------
# PCAH against scikit-learn.


@pytest.mark.parametrize("bits", [1, 5, 12, 20])
def test_pcah_matches_sklearn_pca(bits):
  rng = np.random.default_rng(bits)
  x = anisotropic(rng, 300, 20)
  model = baselines.fit_pcah(x, bits)
  pca = PCA(n_components=bits, svd_solver="full").fit(x)
  np.testing.assert_allclose(model.mean, pca.mean_, atol=1e-10)
  np.testing.assert_allclose(model.components, align_signs(pca.components_.T, model.components),
                             atol=1e-8)
  np.testing.assert_allclose(model.variances, pca.explained_variance_, rtol=1e-9)
  enc = np.asarray(model.encode(x))
  want = align_signs(pca.transform(x), enc)
  np.testing.assert_allclose(enc, want, atol=1e-4 * np.abs(want).max())
  # The fixed sign convention: each direction's largest-magnitude entry is positive.
  big = model.components[np.argmax(np.abs(model.components), axis=0), np.arange(bits)]
  assert np.all(big > 0)


def test_fit_is_float64_whatever_the_input_dtype():
  x = anisotropic(np.random.default_rng(3), 200, 10).astype(np.float32)
  a, b = baselines.fit_pcah(x, 6), baselines.fit_pcah(x.astype(np.float64), 6)
  assert a.components.dtype == np.float64
  np.testing.assert_array_equal(a.components, b.components)
  np.testing.assert_array_equal(a.mean, b.mean)


# ---------------------------------------------------------------------------------------------------
# SH: a transcription of Weiss et al.'s MATLAB trainSH.m / compressSH.m.


def ref_train_sh(X, nbits, pc_like):
  """trainSH.m, line by line (MATLAB indices shifted to 0-based)."""
  _, ndim = X.shape
  npca = min(nbits, ndim)
  pc = align_signs(top_eigvecs(np.cov(X, rowvar=False), npca), pc_like)  # eigs(cov(X), npca)
  X = X @ pc  # "no need to remove the mean"
  mn = X.min(axis=0) - MATLAB_EPS
  mx = X.max(axis=0) + MATLAB_EPS
  R = mx - mn
  max_mode = np.ceil((nbits + 1) * R / R.max()).astype(int)
  n_modes = max_mode.sum() - len(max_mode) + 1
  modes = np.ones((n_modes, npca))
  m = 1
  for i in range(npca):
    modes[m:m + max_mode[i] - 1, i] = np.arange(2, max_mode[i] + 1)  # modes(m+1:m+maxMode(i)-1, i)
    m = m + max_mode[i] - 1
  modes = modes - 1
  omega0 = np.pi / R
  omegas = modes * omega0
  eig_val = -np.sum(omegas ** 2, axis=1)
  ii = np.argsort(-eig_val, kind="stable")  # MATLAB's sort is stable
  modes = modes[ii[1:nbits + 1], :]
  return {"pc": pc, "mn": mn, "mx": mx, "modes": modes, "nbits": nbits}


def ref_compress_sh(X, p):
  """compressSH.m: U(:, i) = prod(sin(X .* omega_i + pi/2), 2)."""
  X = X @ p["pc"] - p["mn"]
  omega0 = np.pi / (p["mx"] - p["mn"])
  omegas = p["modes"] * omega0
  U = np.zeros((X.shape[0], p["nbits"]))
  for i in range(p["nbits"]):
    U[:, i] = np.prod(np.sin(X * omegas[i] + np.pi / 2), axis=1)
  return U


@pytest.mark.parametrize("bits", [3, 5, 8, 12, 24])
def test_sh_matches_matlab_transcription(bits):
  rng = np.random.default_rng(bits)
  x = anisotropic(rng, 250, 5, uniform=bits % 2 == 0)
  model = baselines.fit_sh(x, bits)
  p = ref_train_sh(x, bits, model.components)
  assert model.components.shape == (5, min(bits, 5))
  np.testing.assert_allclose(model.components, p["pc"], atol=1e-9)
  np.testing.assert_array_equal(model.modes, p["modes"].astype(int))
  np.testing.assert_allclose(model.mx - model.mn, p["mx"] - p["mn"], rtol=1e-12)
  enc = np.asarray(model.encode(x))
  want = ref_compress_sh(x, p)
  np.testing.assert_allclose(enc, want, atol=5e-5 * bits)
  clear = np.abs(want) > 1e-2
  np.testing.assert_array_equal(np.asarray(model.codes(x))[clear], np.where(want > 0, 1, -1)[clear])
  # New points go through the same formulas.
  xn = anisotropic(np.random.default_rng(99), 40, 5)
  np.testing.assert_allclose(np.asarray(model.encode(xn)), ref_compress_sh(xn, p), atol=5e-5 * bits)
  if bits > 5:
    assert np.any(np.count_nonzero(model.modes, axis=0) > 1)  # several modes along one component


def grid_2d(angle=0.5):
  """A 41 × 21 product grid with ranges 2.7 and 1.0 along its (rotated) principal axes."""
  a, b = np.meshgrid(np.linspace(-1.35, 1.35, 41), np.linspace(-0.5, 0.5, 21), indexing="ij")
  pts = np.stack([a.ravel(), b.ravel()], axis=1)
  c, s = math.cos(angle), math.sin(angle)
  return pts @ np.array([[c, s], [-s, c]]) + np.array([3.0, -1.0])


@pytest.mark.parametrize("bits,expected", [
    # ω/π = m / range: PC0 (range 2.7) 0.370, 0.741, 1.111, 1.481, 1.852; PC1 (range 1.0) 1, 2.
    (1, [(0, 1)]),
    (2, [(0, 1), (0, 2)]),
    (4, [(0, 1), (0, 2), (1, 1), (0, 3)]),
    (6, [(0, 1), (0, 2), (1, 1), (0, 3), (0, 4), (0, 5)]),
    (8, [(0, 1), (0, 2), (1, 1), (0, 3), (0, 4), (0, 5), (1, 2), (0, 6)]),
])
def test_sh_mode_selection_by_hand(bits, expected):
  model = baselines.fit_sh(grid_2d(), bits)
  npca = min(bits, 2)
  np.testing.assert_allclose(model.mx - model.mn, [2.7, 1.0][:npca], atol=1e-12)
  want = np.zeros((bits, npca), int)
  for row, (pc, m) in enumerate(expected):
    want[row, pc] = m
  np.testing.assert_array_equal(model.modes, want)
  # Bit (0, 1) is cos(π (p0 - mn0) / 2.7): +1 at one end of the long axis, -1 at the other, 0 in the
  # middle; every bit is ±1 at a corner of the grid.
  u = np.asarray(model.encode(grid_2d()))
  np.testing.assert_allclose(np.sort(u[:, 0])[[0, -1]], [-1, 1], atol=1e-5)
  np.testing.assert_allclose(np.abs(u[[0, 20, -21, -1]]), 1.0, atol=1e-5)


def test_sh_more_bits_than_dimensions_and_constant_components():
  x = np.concatenate([grid_2d(), np.zeros((861, 1))], axis=1)  # a constant third coordinate
  model = baselines.fit_sh(x, 10)
  assert model.modes.shape == (10, 3)
  assert np.all(model.modes[:, 2] == 0)  # the zero-range component offers no mode
  assert np.all(np.isfinite(np.asarray(model.encode(x))))
  with pytest.raises(ValueError, match="constant"):
    baselines.fit_sh(np.ones((10, 3)), 4)


# ---------------------------------------------------------------------------------------------------
# LSH.


@pytest.mark.parametrize("center", [True, False])
def test_lsh_collision_probability_is_angle_over_pi(center):
  rng = np.random.default_rng(0)
  dim, bits = 16, 20_000
  train = rng.standard_normal((200, dim)) + 2.0
  model = baselines.fit_lsh(train, bits, key=3, center=center)
  mu = train.mean(0) if center else np.zeros(dim)
  np.testing.assert_allclose(model.mean, mu, atol=1e-12)
  u, w = np.linalg.qr(rng.standard_normal((dim, 2)))[0].T
  for theta in (0.2, math.pi / 3, math.pi / 2, 2.5, 3.0):
    x = mu + 1.7 * u
    y = mu + 0.6 * (math.cos(theta) * u + math.sin(theta) * w)
    c = np.asarray(model.codes(np.stack([x, y]).astype(np.float32)))
    p = theta / math.pi
    frac = float(np.mean(c[0] != c[1]))
    assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / bits) + 1e-3, (theta, frac, p)
  # The directions are standard normal.
  assert abs(model.projections.mean()) < 0.01 and abs(model.projections.std() - 1) < 0.01


def test_lsh_is_deterministic_by_seed():
  x = np.random.default_rng(0).standard_normal((50, 6))
  a = baselines.fit_lsh(x, 32, key=11)
  np.testing.assert_array_equal(a.projections, baselines.fit_lsh(x, 32, key=11).projections)
  np.testing.assert_array_equal(a.projections,
                                baselines.fit_lsh(x, 32, key=jax.random.key(11)).projections)
  np.testing.assert_array_equal(a.projections,
                                baselines.fit_lsh(x, 32, key=jax.random.PRNGKey(11)).projections)
  assert not np.allclose(a.projections, baselines.fit_lsh(x, 32, key=12).projections)
  assert baselines.fit_lsh(x, 100, key=11).projections.shape == (6, 100)  # bits > dim is fine


# ---------------------------------------------------------------------------------------------------
# Common API: jit, codes, persistence, dispatch.


@pytest.mark.parametrize("method", baselines.METHODS)
def test_jit_codes_and_round_trip(method, tmp_path):
  x = anisotropic(np.random.default_rng(5), 120, 10)
  model = baselines.fit(method, x, 8, key=0)
  assert model.bits == 8
  enc = model.encode(x)
  assert enc.dtype == jnp.float32 and enc.shape == (120, 8)
  # Under jit the leaves are float32 (SH's range is then subtracted in float32): equal to rounding.
  np.testing.assert_allclose(jax.jit(lambda m, f: m.encode(f))(model, x), enc, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(model.codes(x), ops.binarize(enc))
  arrays = model.to_arrays()
  assert str(arrays["method"]) == method
  np.savez(tmp_path / "m.npz", **arrays)
  with np.load(tmp_path / "m.npz") as f:
    back = baselines.from_arrays(f)
  assert type(back) is type(model)
  np.testing.assert_array_equal(back.encode(x), enc)
  # The pytree's leaves are the fitted arrays.
  leaves = jax.tree_util.tree_leaves(model)
  assert len(leaves) == len(arrays) - 1 and all(isinstance(a, np.ndarray) for a in leaves)


def test_from_arrays_errors():
  model = baselines.fit_pcah(np.random.default_rng(0).standard_normal((30, 4)), 2)
  arrays = model.to_arrays()
  with pytest.raises(ValueError, match="method"):
    baselines.ITQ.from_arrays(arrays)
  with pytest.raises(ValueError, match="method"):
    baselines.from_arrays({k: v for k, v in arrays.items() if k != "method"})
  with pytest.raises(ValueError, match="lack"):
    baselines.from_arrays({k: v for k, v in arrays.items() if k != "components"})
  with pytest.raises(ValueError, match="finite"):
    baselines.from_arrays({**arrays, "mean": np.full(4, np.nan)})
  with pytest.raises(ValueError, match=r"arrays\['components'\] has shape \(5, 2\), inconsistent"):
    baselines.from_arrays({**arrays, "components": np.zeros((5, 2))})
  with pytest.raises(ValueError, match=r"arrays\['mean'\] must have shape \[dim\]"):
    baselines.from_arrays({**arrays, "mean": np.zeros((4, 1))})
  sh = baselines.fit_sh(grid_2d(), 3).to_arrays()
  with pytest.raises(ValueError, match="modes"):
    baselines.from_arrays({**sh, "modes": np.zeros_like(sh["modes"])})


# ---------------------------------------------------------------------------------------------------
# Input errors.

GOOD = np.random.default_rng(0).standard_normal((20, 6))


@pytest.mark.parametrize("method", baselines.METHODS)
@pytest.mark.parametrize("features,match", [
    (GOOD[0], r"shape \[n, dim\]"),
    (GOOD[None], r"shape \[n, dim\]"),
    (np.where(np.eye(20, 6) > 0, np.nan, GOOD), "NaN or infinite"),
    (np.where(np.eye(20, 6) > 0, np.inf, GOOD), "NaN or infinite"),
    (GOOD > 0, "real numbers"),
    (GOOD + 1j, "real numbers"),
    (np.zeros((0, 6)), "rows"),
    (np.zeros((20, 0)), "0 columns"),
])
def test_bad_features(method, features, match):
  with pytest.raises(ValueError, match=match):
    baselines.fit(method, features, 4, key=0)


@pytest.mark.parametrize("method", ["pcah", "itq", "sh"])
def test_one_row_is_not_enough_for_a_covariance(method):
  with pytest.raises(ValueError, match="at least 2"):
    baselines.fit(method, GOOD[:1], 2, key=0)
  baselines.fit_lsh(GOOD[:1], 2, key=0)  # LSH only needs a mean


@pytest.mark.parametrize("method", baselines.METHODS)
@pytest.mark.parametrize("bits", [0, -3, 2.0, True, None])
def test_bad_bits(method, bits):
  with pytest.raises(ValueError, match="bits"):
    baselines.fit(method, GOOD, bits, key=0)


@pytest.mark.parametrize("method", ["pcah", "itq"])
def test_bits_above_dim_need_sh_or_lsh(method):
  with pytest.raises(ValueError, match=r"bits=7 exceeds the feature dimension 6"):
    baselines.fit(method, GOOD, 7, key=0)
  assert baselines.fit_sh(GOOD, 7).bits == 7 and baselines.fit_lsh(GOOD, 7, key=0).bits == 7


def test_other_argument_errors():
  for method in ("lsh", "itq"):
    with pytest.raises(ValueError, match="key is required"):
      baselines.fit(method, GOOD, 4)
    with pytest.raises(ValueError, match="key"):
      baselines.fit(method, GOOD, 4, key=jax.random.split(jax.random.key(0), 2))
    with pytest.raises(ValueError, match="key"):
      baselines.fit(method, GOOD, 4, key=np.zeros(3, np.float32))
  with pytest.raises(ValueError, match="iterations"):
    baselines.fit_itq(GOOD, 4, key=0, iterations=-1)
  with pytest.raises(ValueError, match="initial_rotation"):
    baselines.fit_itq(GOOD, 4, key=None, initial_rotation=np.ones((4, 4)))
  with pytest.raises(ValueError, match="initial_rotation"):
    baselines.fit_itq(GOOD, 4, key=None, initial_rotation=np.eye(3))
  with pytest.raises(ValueError, match="unknown method"):
    baselines.fit("kmeans", GOOD, 4)
  model = baselines.fit_pcah(GOOD, 4)
  with pytest.raises(ValueError, match=r"features must have shape \[n, 6\]"):
    model.encode(GOOD[:, :5])
  with pytest.raises(ValueError, match=r"features must have shape \[n, 6\]"):
    model.encode(GOOD[0])


# ---------------------------------------------------------------------------------------------------
# Documentation and imports.


def test_docstring_examples():
  result = doctest.testmod(baselines, extraglobs={"jax": jax, "jnp": jnp},
                           optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0


def test_does_not_import_the_training_stack():
  code = ("import sys; import unhash_jax.baselines, unhash_jax.cosine_retrieval;"
          "bad = [m for m in ('flax', 'tensorflow', 'orbax', 'optax', 'tensorflow_datasets', 'sklearn',"
          " 'scipy') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr
