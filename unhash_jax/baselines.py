"""Classical unsupervised hashing baselines: LSH, PCAH, ITQ and spectral hashing (SH).

Each ``fit_*`` function learns a hash function from a training feature matrix ``[n, dim]`` and returns a
small frozen dataclass, registered as a JAX pytree whose leaves are float64 numpy arrays, with

* ``encode(features) -> float32 [n, bits]``: real values whose ``sign₀`` (``0 -> +1``,
  :func:`unhash_jax.ops.binarize`) is the code, so they can be fed straight to
  :func:`unhash_jax.retrieval.evaluate`; ``codes(features)`` returns the int8 ±1 codes;
* ``to_arrays()`` / ``from_arrays(arrays)``: a dict of numpy arrays (with a ``"method"`` string entry),
  e.g. for ``np.savez``; :func:`from_arrays` dispatches on that entry.

The fits run on the host in float64 numpy (covariances are accumulated over row blocks, so the float64 copy
of a large feature matrix is never made); ``encode`` is jit-able float32 JAX with full-precision matrix
products (``precision="highest"``: TF32/bf16 passes would flip the signs of near-zero projections).

Methods (``bits`` is the code length):

* **LSH** (:func:`fit_lsh`), random hyperplanes: Charikar, "Similarity estimation techniques from rounding
  algorithms", STOC 2002. Gaussian directions drawn from an explicit key; the hyperplanes pass through the
  training mean (features are mean-centred; ``center=False`` gives Charikar's hyperplanes through the
  origin). Any ``bits`` is allowed.
* **PCAH** (:func:`fit_pcah`): the signs of the projections on the top-``bits`` principal directions of
  the centred training features (the PCA baseline of Wang, Kumar & Chang, CVPR 2010, and of Gong &
  Lazebnik, CVPR 2011). Needs ``bits <= dim``.
* **ITQ** (:func:`fit_itq`), iterative quantization: Gong & Lazebnik, "Iterative quantization: a
  procrustean approach to learning binary codes", CVPR 2011; Gong, Lazebnik, Gordo & Perronnin, TPAMI 2013.
  PCA to ``bits`` dimensions (``V``), then alternations of ``B = sign₀(V R)`` and the orthogonal Procrustes
  solution for ``R``, from a random orthogonal matrix. Needs ``bits <= dim``.
* **SH** (:func:`fit_sh`), spectral hashing: Weiss, Torralba & Fergus, NIPS 2008, exactly as the authors'
  MATLAB ``trainSH.m`` / ``compressSH.m``: PCA to ``min(bits, dim)`` dimensions, a uniform distribution on
  ``[min - eps, max + eps]`` of every principal component, the ``bits`` analytical one-dimensional
  eigenfunctions with the smallest eigenvalues ``(m π / range)²`` (several may lie on the same principal
  component, so ``bits > dim`` is allowed), thresholded at zero. Deterministic.

Examples:
  >>> x = np.random.default_rng(0).standard_normal((100, 8))
  >>> model = fit_itq(x, 4, key=0)
  >>> model.encode(x).shape, model.codes(x).dtype
  ((100, 4), dtype('int8'))
  >>> restored = from_arrays(model.to_arrays())
  >>> bool(jnp.all(restored.encode(x) == model.encode(x)))
  True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unhash_jax.ops import binarize

__all__ = [
    "METHODS",
    "LSH",
    "PCAH",
    "ITQ",
    "SH",
    "fit",
    "fit_lsh",
    "fit_pcah",
    "fit_itq",
    "fit_sh",
    "from_arrays",
    "random_rotation",
    "itq_quantization_loss",
]

METHODS = ("lsh", "pcah", "itq", "sh")
# Rows per block when the float64 statistics are accumulated (a 4096 × 1280 float64 block is 42 MB).
_BLOCK_ROWS = 4096
# MATLAB's eps (trainSH widens the range of every principal component by it on both sides).
_MATLAB_EPS = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------------------------------
# Input checking.


def _check_features(features: Any, name: str = "features", *, min_rows: int = 1) -> np.ndarray:
  """Host array ``[n, dim]`` of real numbers (not copied when already numpy); raises ``ValueError``."""
  x = np.asarray(features)
  if x.ndim != 2:
    raise ValueError(f"{name} must have shape [n, dim], got shape {x.shape}.")
  dt = x.dtype
  real = (np.issubdtype(dt, np.floating) or np.issubdtype(dt, np.integer) or dt == jnp.bfloat16)
  if dt == np.bool_ or not real:
    raise ValueError(f"{name} must be real numbers (float or integer), got dtype {dt}.")
  if x.shape[1] == 0:
    raise ValueError(f"{name} has 0 columns (dim must be >= 1).")
  if x.shape[0] < min_rows:
    raise ValueError(f"{name} has {x.shape[0]} rows; at least {min_rows} are needed"
                     + (" to estimate a covariance." if min_rows > 1 else "."))
  if not np.issubdtype(dt, np.integer) and not np.isfinite(x).all():
    raise ValueError(f"{name} contains NaN or infinite values.")
  return x


def _check_bits(bits: Any, dim: int | None = None, method: str = "") -> int:
  if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)):
    raise ValueError(f"bits must be a positive int, got {bits!r}.")
  if bits < 1:
    raise ValueError(f"bits must be >= 1, got {bits}.")
  if dim is not None and bits > dim:
    raise ValueError(f"bits={bits} exceeds the feature dimension {dim}: {method} keeps `bits` "
                     "principal directions, so it needs bits <= dim.")
  return int(bits)


def _check_key(key: Any) -> jax.Array:
  """An int seed, a typed key (``jax.random.key``) or a legacy ``uint32[2]`` key → typed key."""
  if key is None:
    raise ValueError("key is required: pass an int seed or a jax.random.key.")
  if isinstance(key, (bool, np.bool_)):
    raise ValueError(f"key must be an int seed or a jax.random.key, got {key!r}.")
  if isinstance(key, (int, np.integer)):
    return jax.random.key(int(key))
  k = jnp.asarray(key) if not isinstance(key, jax.Array) else key
  if jnp.issubdtype(k.dtype, jax.dtypes.prng_key):
    if k.shape != ():
      raise ValueError(f"key must be a single key (shape ()), got shape {k.shape}.")
    return k
  if k.dtype == jnp.uint32 and k.shape == (2,):
    return jax.random.wrap_key_data(k)
  raise ValueError(f"key must be an int seed, a jax.random.key or a uint32[2] PRNGKey, got dtype "
                   f"{k.dtype} and shape {k.shape}.")


def _check_iterations(iterations: Any) -> int:
  if (isinstance(iterations, (bool, np.bool_)) or not isinstance(iterations, (int, np.integer))
      or iterations < 0):
    raise ValueError(f"iterations must be a non-negative int, got {iterations!r}.")
  return int(iterations)


# --------------------------------------------------------------------------------------------------
# Float64 statistics over row blocks.


def _gaussian(key: Any, shape: tuple[int, ...]) -> np.ndarray:
  """Standard normal float32 draws from ``key`` (made on the CPU backend, so the same on every host)."""
  cpu = jax.devices("cpu")[0]
  with jax.default_device(cpu):
    z = jax.random.normal(jax.device_put(_check_key(key), cpu), shape, jnp.float32)
  return np.asarray(z, np.float64)


def _mean(x: np.ndarray) -> np.ndarray:
  return x.mean(axis=0, dtype=np.float64)


def _centred_blocks(x: np.ndarray, mean: np.ndarray):
  for start in range(0, x.shape[0], _BLOCK_ROWS):
    yield x[start:start + _BLOCK_ROWS].astype(np.float64) - mean


def _project(x: np.ndarray, mean: np.ndarray, w: np.ndarray) -> np.ndarray:
  """``(x - mean) @ w`` in float64, ``[n, k]``, block by block."""
  return np.concatenate([xb @ w for xb in _centred_blocks(x, mean)], axis=0)


def _pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mean ``[dim]``, top-``k`` principal directions ``[dim, k]`` and their variances ``[k]``.

  Eigenvectors of the unbiased covariance (float64, accumulated over row blocks), in decreasing order of
  variance. Each direction's sign is fixed so that its entry of largest magnitude is positive.
  """
  n, dim = x.shape
  mean = _mean(x)
  cov = np.zeros((dim, dim), np.float64)
  for xb in _centred_blocks(x, mean):
    cov += xb.T @ xb
  cov /= n - 1
  evals, evecs = np.linalg.eigh(cov)
  evals, evecs = evals[::-1][:k], evecs[:, ::-1][:, :k]
  pivot = evecs[np.argmax(np.abs(evecs), axis=0), np.arange(k)]
  evecs = evecs * np.where(pivot < 0, -1.0, 1.0)
  return mean, np.ascontiguousarray(evecs), np.maximum(evals, 0.0)


# --------------------------------------------------------------------------------------------------
# Models.


def _encode_input(features: Any, dim: int) -> jax.Array:
  x = jnp.asarray(features)
  if x.ndim != 2 or x.shape[1] != dim:
    raise ValueError(f"features must have shape [n, {dim}], got shape {tuple(x.shape)}.")
  return x.astype(jnp.float32)


def _matmul(a: jax.Array, b: Any) -> jax.Array:
  return jnp.matmul(a, jnp.asarray(b, jnp.float32), precision=jax.lax.Precision.HIGHEST)


def _arrays_in(cls, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Checks the ``"method"`` entry and the field names of ``arrays``; returns float64 fields."""
  method = cls.method
  got = arrays.get("method")
  if got is None or str(np.asarray(got)) != method:
    raise ValueError(f"arrays['method'] must be {method!r} to build {cls.__name__}, got {got!r}.")
  names = [f.name for f in dataclasses.fields(cls)]
  missing = [n for n in names if n not in arrays]
  if missing:
    raise ValueError(f"arrays lack {missing} for {cls.__name__} (expected {names}).")
  out = {}
  for n in names:
    a = np.asarray(arrays[n])
    if n == "modes":
      if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"arrays['modes'] must be integers, got dtype {a.dtype}.")
      out[n] = a.astype(np.int32)
    else:
      if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
        raise ValueError(f"arrays[{n!r}] must be finite floats.")
      out[n] = a.astype(np.float64)
  sizes: dict[str, int] = {}
  for n, dims in cls._SHAPES.items():
    if out[n].ndim != len(dims):
      raise ValueError(f"arrays[{n!r}] must have shape [{', '.join(dims)}], got {out[n].shape}.")
    for d, size in zip(dims, out[n].shape):
      if sizes.setdefault(d, size) != size:
        raise ValueError(f"arrays[{n!r}] has shape {out[n].shape}, inconsistent with {d}={sizes[d]} "
                         f"of the other arrays (expected [{', '.join(dims)}]).")
  return out


class _Base:
  """Shared methods: ``encode``, ``codes``, ``to_arrays``, ``from_arrays``."""

  method = ""
  _SHAPES: dict[str, tuple[str, ...]] = {}

  def encode(self, features: Any) -> jax.Array:
    """``float32[n, bits]`` real values of ``features`` ``[n, dim]``; the code is their ``sign₀``.

    One jit-compiled program per model type and input shape (the model is a pytree argument, so
    refitting does not recompile); works inside a caller's ``jax.jit`` too.
    """
    return _encode_jit(self, _encode_input(features, self.dim))

  def codes(self, features: Any) -> jax.Array:
    """``int8[n, bits]`` ±1 codes: ``sign₀(encode(features))``."""
    return binarize(self.encode(features))

  def to_arrays(self) -> dict[str, np.ndarray]:
    """The fitted parameters as a dict of numpy arrays plus ``"method"`` (see :func:`from_arrays`)."""
    out = {"method": np.array(self.method)}
    out.update({f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)})
    return out

  @classmethod
  def from_arrays(cls, arrays: Mapping[str, Any]):
    """Rebuilds the model from :meth:`to_arrays`'s dict (or an ``np.load``-ed ``.npz``)."""
    return cls(**_arrays_in(cls, arrays))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class LSH(_Base):
  """Random-hyperplane LSH (Charikar, STOC 2002): ``encode(x) = (x - mean) @ projections``.

  Attributes:
    mean: ``[dim]`` the training mean (zeros when fitted with ``center=False``).
    projections: ``[dim, bits]`` i.i.d. standard normal hyperplane normals.
  """

  mean: np.ndarray
  projections: np.ndarray
  method = "lsh"
  _SHAPES = {"mean": ("dim",), "projections": ("dim", "bits")}

  @property
  def bits(self) -> int:
    return int(self.projections.shape[1])

  @property
  def dim(self) -> int:
    """Input feature dimension."""
    return int(self.projections.shape[0])

  def _encode(self, x: jax.Array) -> jax.Array:
    return _matmul(x - jnp.asarray(self.mean, jnp.float32), self.projections)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class PCAH(_Base):
  """PCA hashing: ``encode(x) = (x - mean) @ components``.

  Attributes:
    mean: ``[dim]`` training mean.
    components: ``[dim, bits]`` top principal directions (orthonormal columns, decreasing variance).
    variances: ``[bits]`` the variance along each direction.
  """

  mean: np.ndarray
  components: np.ndarray
  variances: np.ndarray
  method = "pcah"
  _SHAPES = {"mean": ("dim",), "components": ("dim", "bits"), "variances": ("bits",)}

  @property
  def bits(self) -> int:
    return int(self.components.shape[1])

  @property
  def dim(self) -> int:
    """Input feature dimension."""
    return int(self.components.shape[0])

  def _encode(self, x: jax.Array) -> jax.Array:
    return _matmul(x - jnp.asarray(self.mean, jnp.float32), self.components)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class ITQ(_Base):
  """Iterative quantization: ``encode(x) = ((x - mean) @ components) @ rotation``.

  Attributes:
    mean: ``[dim]`` training mean.
    components: ``[dim, bits]`` top principal directions (as :class:`PCAH`).
    rotation: ``[bits, bits]`` the learned orthogonal rotation ``R``.
    losses: ``[iterations + 1]`` quantization loss ``‖B - V R‖_F²`` (summed over the training set) at the
      initial rotation and after every alternation (a diagnostic: non-increasing).
  """

  mean: np.ndarray
  components: np.ndarray
  rotation: np.ndarray
  losses: np.ndarray
  method = "itq"
  _SHAPES = {"mean": ("dim",), "components": ("dim", "bits"), "rotation": ("bits", "bits"),
             "losses": ("iterations + 1",)}

  @property
  def bits(self) -> int:
    return int(self.rotation.shape[1])

  @property
  def dim(self) -> int:
    """Input feature dimension."""
    return int(self.components.shape[0])

  def _encode(self, x: jax.Array) -> jax.Array:
    v = _matmul(x - jnp.asarray(self.mean, jnp.float32), self.components)
    return _matmul(v, self.rotation)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class SH(_Base):
  """Spectral hashing (``compressSH.m``): ``U_b = Π_i sin(π/2 + ω_bi (p_i - mn_i))``, code ``U > 0``.

  ``p = (x - mean) @ components`` are the principal-component coordinates and
  ``ω_bi = modes[b, i] · π / (mx_i - mn_i)``. ``trainSH`` only produces one-dimensional modes (one
  non-zero entry per row of ``modes``), so ``U_b = cos(ω_b (p_i - mn_i))`` on that component ``i``.
  (``trainSH`` projects uncentred features and takes ``mn``/``mx`` of those; centring first shifts
  ``p`` and ``mn`` alike, so ``p - mn`` and the codes are the same.)

  ``sign₀`` maps an exact ``U = 0`` to +1 where MATLAB's ``U > 0`` gives 0; that is a measure-zero event.

  Attributes:
    mean: ``[dim]`` training mean.
    components: ``[dim, npca]`` top ``npca = min(bits, dim)`` principal directions.
    mn, mx: ``[npca]`` the range of each principal coordinate on the training set, widened by MATLAB's
      ``eps`` (``2⁻⁵²``) on both sides.
    modes: ``int32[bits, npca]`` the mode number of every bit along every principal component (one
      non-zero entry per row).
  """

  mean: np.ndarray
  components: np.ndarray
  mn: np.ndarray
  mx: np.ndarray
  modes: np.ndarray
  method = "sh"
  _SHAPES = {"mean": ("dim",), "components": ("dim", "npca"), "mn": ("npca",), "mx": ("npca",),
             "modes": ("bits", "npca")}

  @property
  def bits(self) -> int:
    return int(self.modes.shape[0])

  def __post_init__(self):
    modes = self.modes
    if not isinstance(modes, np.ndarray):  # traced or placeholder leaves (inside jit/tree ops)
      return
    if modes.ndim != 2 or np.any(np.count_nonzero(modes, axis=1) != 1) or np.any(modes < 0):
      raise ValueError("SH.modes must be [bits, npca] with exactly one positive mode per row.")

  @property
  def dim(self) -> int:
    """Input feature dimension."""
    return int(self.components.shape[0])

  def _encode(self, x: jax.Array) -> jax.Array:
    p = _matmul(x - jnp.asarray(self.mean, jnp.float32), self.components) - jnp.asarray(
        self.mn, jnp.float32)
    modes = jnp.asarray(self.modes)
    pc = jnp.argmax(modes != 0, axis=1)  # the one component of every bit
    omega0 = np.pi / jnp.asarray(self.mx - self.mn, jnp.float32)
    omega = jnp.take_along_axis(modes, pc[:, None], axis=1)[:, 0].astype(jnp.float32) * omega0[pc]
    return jnp.cos(p[:, pc] * omega)


@jax.jit
def _encode_jit(model, x):
  return model._encode(x)


_CLASSES = {"lsh": LSH, "pcah": PCAH, "itq": ITQ, "sh": SH}


# --------------------------------------------------------------------------------------------------
# Fitting.


def fit_lsh(features: Any, bits: int, *, key: Any, center: bool = True) -> LSH:
  """Random hyperplanes (Charikar, STOC 2002) on mean-centred features.

  ``P[bit differs for x, y] = θ(x - μ, y - μ) / π`` over the draw of the hyperplanes (``μ`` the training
  mean, or 0 with ``center=False``).

  Args:
    features: ``[n, dim]`` training features (only their mean is used).
    bits: number of hyperplanes (any positive int; may exceed ``dim``).
    key: int seed or ``jax.random.key``; the ``[dim, bits]`` standard normal directions are
      ``jax.random.normal(key, (dim, bits), float32)`` drawn on the CPU backend.
    center: subtract the training mean (default) or not.

  Returns:
    An :class:`LSH`.

  Raises:
    ValueError: features not a finite real ``[n, dim]`` matrix, ``bits < 1``, bad ``key``.
  """
  x = _check_features(features)
  bits = _check_bits(bits)
  dim = x.shape[1]
  mean = _mean(x) if center else np.zeros(dim, np.float64)
  return LSH(mean=mean, projections=_gaussian(key, (dim, bits)))


def fit_pcah(features: Any, bits: int) -> PCAH:
  """PCA hashing: signs of the top-``bits`` principal-component projections.

  Args:
    features: ``[n, dim]`` training features, ``n >= 2``.
    bits: code length, ``1 <= bits <= dim``.

  Returns:
    A :class:`PCAH`.

  Raises:
    ValueError: features not a finite real ``[n, dim]`` matrix with ``n >= 2``, or ``bits`` not in
      ``[1, dim]``.

  References:
    Wang, Kumar & Chang, CVPR 2010 (PCAH); Gong & Lazebnik, CVPR 2011 (PCA-Direct).
  """
  x = _check_features(features, min_rows=2)
  bits = _check_bits(bits, x.shape[1], "PCAH")
  mean, comps, var = _pca(x, bits)
  return PCAH(mean=mean, components=comps, variances=var)


def random_rotation(key: Any, bits: int) -> np.ndarray:
  """ITQ's initial rotation: the left singular vectors of a ``[bits, bits]`` standard normal matrix.

  As ``ITQ.m`` (``R = randn(bit, bit); [U11, S2, V2] = svd(R); R = U11``), with the normal draws made as
  in :func:`fit_lsh` (``jax.random.normal(key, (bits, bits), float32)`` on the CPU backend).

  Returns:
    float64 ``[bits, bits]`` orthogonal matrix.
  """
  bits = _check_bits(bits)
  u, _, _ = np.linalg.svd(_gaussian(key, (bits, bits)))
  return u


def itq_quantization_loss(v: np.ndarray, rotation: np.ndarray) -> float:
  """``‖sign₀(V R) - V R‖_F²``, the ITQ objective at its optimal ``B`` for ``R`` (float64)."""
  z = np.asarray(v, np.float64) @ np.asarray(rotation, np.float64)
  return float(np.sum((np.where(z >= 0, 1.0, -1.0) - z) ** 2))


def fit_itq(features: Any, bits: int, *, key: Any, iterations: int = 50,
            initial_rotation: Any = None) -> ITQ:
  """Iterative quantization (Gong & Lazebnik, CVPR 2011 / TPAMI 2013).

  With ``V = (X - μ) W`` the ``[n, bits]`` PCA projections of the training set, each alternation is

  1. ``B = sign₀(V R)`` (the optimal codes for ``R``),
  2. ``R = Ŝ Sᵀ`` from the SVD ``Bᵀ V = S Ω Ŝᵀ`` (the orthogonal Procrustes solution minimising
     ``‖B - V R‖_F``),

  so the quantization loss ``‖B - V R‖_F²`` never increases (``ITQ.losses``). The authors' ``ITQ.m`` loops
  ``for iter = 0:n_iter``, i.e. ``n_iter + 1`` alternations: ``iterations=51`` reproduces their
  ``ITQ(V, 50)``.

  Args:
    features: ``[n, dim]`` training features, ``n >= 2``.
    bits: code length, ``1 <= bits <= dim``.
    key: int seed or ``jax.random.key`` for the initial rotation (:func:`random_rotation`).
    iterations: number of alternations (default 50; 0 keeps the random rotation).
    initial_rotation: optional ``[bits, bits]`` orthogonal matrix used instead of the random one (then
      ``key`` may be None).

  Returns:
    An :class:`ITQ`.

  Raises:
    ValueError: features not a finite real ``[n, dim]`` matrix with ``n >= 2``, ``bits`` not in
      ``[1, dim]``, negative ``iterations``, bad ``key``, or an ``initial_rotation`` that is not a
      ``[bits, bits]`` orthogonal matrix.
  """
  x = _check_features(features, min_rows=2)
  bits = _check_bits(bits, x.shape[1], "ITQ")
  iterations = _check_iterations(iterations)
  if initial_rotation is None:
    r = random_rotation(key, bits)
  else:
    r = np.asarray(initial_rotation, np.float64)
    if r.shape != (bits, bits) or not np.allclose(r.T @ r, np.eye(bits), atol=1e-6):
      raise ValueError(f"initial_rotation must be an orthogonal [{bits}, {bits}] matrix, got shape "
                       f"{r.shape}{'' if r.shape != (bits, bits) else ' (not orthogonal)'}.")
  mean, comps, _ = _pca(x, bits)
  v = _project(x, mean, comps)
  z = v @ r
  losses = [float(np.sum((np.where(z >= 0, 1.0, -1.0) - z) ** 2))]
  for _ in range(iterations):
    b = np.where(z >= 0, 1.0, -1.0)
    s, _, s_hat_t = np.linalg.svd(b.T @ v)  # BᵀV = S Ω Ŝᵀ (ITQ.m: [UB, sigma, UA] = svd(B'V))
    r = s_hat_t.T @ s.T
    z = v @ r
    losses.append(float(np.sum((b - z) ** 2)))
  return ITQ(mean=mean, components=comps, rotation=r, losses=np.asarray(losses, np.float64))


def _sh_modes(r: np.ndarray, bits: int) -> np.ndarray:
  """``trainSH``'s mode selection: ``int32[bits, npca]`` for the ranges ``r = mx - mn`` ``[npca]``.

  Every component ``i`` offers the modes ``m = 1 .. maxMode_i - 1`` with ``maxMode_i =
  ceil((bits + 1) · r_i / max r)``; their eigenvalues are ``(m · π / r_i)²`` and the ``bits`` smallest are
  kept, ties in the order of ``trainSH``'s table (component, then mode; MATLAB's ``sort`` is stable).
  The widest component alone offers ``bits`` modes, so there are always enough.
  """
  npca = r.shape[0]
  with np.errstate(divide="ignore", invalid="ignore"):
    max_mode = np.where(r > 0, np.ceil((bits + 1) * r / r.max()), 1).astype(np.int64)
  max_mode = np.maximum(max_mode, 1)  # a zero-range component offers no mode
  comp = np.repeat(np.arange(npca), max_mode - 1)
  mode = np.concatenate([np.arange(1, m, dtype=np.int64) for m in max_mode])
  with np.errstate(divide="ignore"):
    omega0 = np.pi / r
  eig = (mode * omega0[comp]) ** 2
  keep = np.argsort(eig, kind="stable")[:bits]
  modes = np.zeros((bits, npca), np.int32)
  modes[np.arange(bits), comp[keep]] = mode[keep]
  return modes


def fit_sh(features: Any, bits: int) -> SH:
  """Spectral hashing (Weiss, Torralba & Fergus, NIPS 2008), the authors' ``trainSH.m`` algorithm.

  1. PCA to ``npca = min(bits, dim)`` components (``eigs(cov(X), npca)``).
  2. Uniform distribution on ``[mn, mx]`` per component: ``mn = min - eps``, ``mx = max + eps`` of the
     training coordinates.
  3. Analytical eigenfunctions ``sin(π/2 + m π (p - mn) / (mx - mn))`` of each component with eigenvalues
     ``(m π / (mx - mn))²``; the ``bits`` smallest (after the constant mode) are the bits.
  4. ``compressSH``: bit ``b`` is ``U_b > 0`` (here ``sign₀``).

  Args:
    features: ``[n, dim]`` training features, ``n >= 2``.
    bits: code length (any positive int: ``bits > dim`` and several modes along one component are
      allowed).

  Returns:
    An :class:`SH`.

  Raises:
    ValueError: features not a finite real ``[n, dim]`` matrix with ``n >= 2``, ``bits < 1``, or
      constant features (every principal range is zero).
  """
  x = _check_features(features, min_rows=2)
  bits = _check_bits(bits)
  npca = min(bits, x.shape[1])
  mean, comps, _ = _pca(x, npca)
  p = _project(x, mean, comps)
  lo, hi = p.min(axis=0), p.max(axis=0)
  if not np.any(hi > lo):
    raise ValueError("features are constant (every principal range is zero): spectral hashing needs "
                     "spread.")
  mn, mx = lo - _MATLAB_EPS, hi + _MATLAB_EPS
  return SH(mean=mean, components=comps, mn=mn, mx=mx, modes=_sh_modes(mx - mn, bits))


def fit(method: str, features: Any, bits: int, *, key: Any = None, **options: Any):
  """Fits the baseline named ``method`` (one of :data:`METHODS`).

  Args:
    method: ``"lsh"``, ``"pcah"``, ``"itq"`` or ``"sh"``.
    features: ``[n, dim]`` training features.
    bits: code length.
    key: int seed or ``jax.random.key`` (required by LSH and ITQ; ignored by the deterministic PCAH/SH).
    **options: passed on (``center`` for LSH, ``iterations``/``initial_rotation`` for ITQ).

  Returns:
    The fitted model (:class:`LSH`, :class:`PCAH`, :class:`ITQ` or :class:`SH`).
  """
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}.")
  if method == "lsh":
    return fit_lsh(features, bits, key=key, **options)
  if method == "itq":
    return fit_itq(features, bits, key=key, **options)
  if method == "pcah":
    return fit_pcah(features, bits, **options)
  return fit_sh(features, bits, **options)


def from_arrays(arrays: Mapping[str, Any]):
  """Rebuilds any baseline from its ``to_arrays()`` dict (dispatching on ``arrays["method"]``)."""
  if "method" not in arrays:
    raise ValueError("arrays lack the 'method' entry written by to_arrays().")
  method = str(np.asarray(arrays["method"]))
  if method not in _CLASSES:
    raise ValueError(f"arrays['method'] is {method!r}; expected one of {METHODS}.")
  return _CLASSES[method].from_arrays(arrays)
