"""Winner-Take-All (WTA) hashing of features, HARR's similarity structure (docs/methods.md §2.4).

WTA hashing (Yagnik, Strelow, Ross, Lin, "The Power of Comparative Reasoning", ICCV 2011): each
of M random permutations looks at ``window`` feature dimensions and records which of them is the
largest; two features are similar when many of these ordinal codes agree. Pure JAX, jittable;
re-exported by :mod:`unhash_jax.ops`. HARR is a **project formulation**: the formulation follows
the paper's description; constants chosen by this project.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from unhash_jax._checks import as_array, count

# Above this many [N, N', codes] comparisons, wta_similarity loops over code slices.
_DIRECT_ELEMENTS = 1 << 24


def wta_permutations(seed_or_key, dim: int, num_codes: int, window: int) -> jax.Array:
  """The first ``window`` entries of ``num_codes`` random permutations of ``range(dim)``.

  Deterministic: the same ``seed_or_key`` gives the same permutations on every platform (JAX's
  counter-based PRNG; permutation ``m`` uses the ``m``-th key of ``jax.random.split(key, M)``).
  HARR draws them once from ``wta_seed`` (M = 512, w = 4).

  Args:
    seed_or_key: an int seed or a JAX PRNG key (new-style or raw ``uint32[2]``).
    dim: feature dimension ``d_f``.
    num_codes: ``M``.
    window: ``w``, ``2 <= w <= min(dim, 127)`` (codes are int8).

  Returns:
    ``int32[num_codes, window]`` feature indices: row ``m`` is ``π_m[:window]``.

  Raises:
    ValueError: on non-integer or out-of-range sizes.

  Examples:
    >>> p = wta_permutations(0, dim=10, num_codes=3, window=4)
    >>> p.shape, bool((wta_permutations(0, 10, 3, 4) == p).all())
    ((3, 4), True)
    >>> all(len(set(row)) == 4 for row in p.tolist())
    True
  """
  fn = "wta_permutations"
  dim = count(fn, "dim", dim, 1)
  num_codes = count(fn, "num_codes", num_codes, 1)
  window = count(fn, "window", window, 2)
  if window > min(dim, 127):
    raise ValueError(f"{fn}: window must be <= min(dim, 127) = {min(dim, 127)}, got {window}.")
  if isinstance(seed_or_key, (numbers.Integral, np.integer)) and not isinstance(seed_or_key, bool):
    key = jax.random.key(int(seed_or_key))
  else:
    key = as_array(fn, "seed_or_key", seed_or_key)
    if not (jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
            or (key.dtype == jnp.uint32 and key.shape == (2,))):
      raise ValueError(f"{fn}: seed_or_key must be an int seed or a PRNG key, got "
                       f"{type(seed_or_key).__name__} of dtype {key.dtype}.")
  keys = jax.random.split(key, num_codes)
  return jax.vmap(lambda k: jax.random.permutation(k, dim)[:window])(keys).astype(jnp.int32)


def wta_codes(features: jax.Array, permutations: jax.Array, window: int) -> jax.Array:
  """WTA codes ``c_m(x) = argmax_{r < w} x[π_m[r]]`` (docs/methods.md §2.4 step 1).

  Ties go to the first position (``jnp.argmax``). A NaN counts as the maximum (NumPy's rule);
  features are expected to be finite.

  Args:
    features: ``[N, d]`` real features (e.g. frozen VGG-16 fc7 of un-augmented images).
    permutations: ``int[M, L]`` with ``L >= window`` (:func:`wta_permutations`); the first
      ``window`` columns are used.
    window: ``w``.

  Returns:
    ``int8[N, M]`` codes in ``[0, window)``. Memory ``N·M·w`` elements (compute a large
    training set in batches of rows).

  Raises:
    ValueError: on wrong ranks/dtypes, ``window`` larger than ``L`` or above 127.

  Examples:
    >>> f = jnp.array([[0.1, 0.9, 0.5, 0.9]])
    >>> wta_codes(f, jnp.array([[0, 1, 2], [2, 0, 3], [3, 1, 0]]), 3).tolist()  # tie -> first
    [[1, 2, 0]]
  """
  fn = "wta_codes"
  f = as_array(fn, "features", features)
  perms = as_array(fn, "permutations", permutations)
  if f.ndim != 2 or not (jnp.issubdtype(f.dtype, jnp.floating)
                         or jnp.issubdtype(f.dtype, jnp.integer)):
    raise ValueError(f"{fn}: features must be a real 2-D array [N, d], got shape "
                     f"{tuple(f.shape)} and dtype {f.dtype}.")
  if perms.ndim != 2 or not jnp.issubdtype(perms.dtype, jnp.integer):
    raise ValueError(f"{fn}: permutations must be an integer array [M, >= window], got shape "
                     f"{tuple(perms.shape)} and dtype {perms.dtype}.")
  window = count(fn, "window", window, 2)
  if window > perms.shape[1] or window > 127:
    raise ValueError(f"{fn}: window = {window} must be <= the permutations' width "
                     f"{perms.shape[1]} and <= 127.")
  picked = jnp.take(f, perms[:, :window], axis=1)           # [N, M, w]
  return jnp.argmax(picked, axis=-1).astype(jnp.int8)


def wta_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """Fraction of matching WTA codes, ``s_ij = (1/M)·#{m : a_im = b_jm}`` (§2.4 step 1).

  Args:
    a: ``int[N, M]`` codes (:func:`wta_codes`).
    b: ``int[N', M]`` codes.

  Returns:
    ``float32[N, N']`` in [0, 1] (exact: counts are integers below 2²⁴). Memory ``N·N'`` plus at
    most 2²⁴ comparisons at a time.

  Raises:
    ValueError: on non-integer or non-2-D codes, or different code counts M.

  Examples:
    >>> a = jnp.array([[0, 1, 2, 3], [1, 1, 1, 1]], jnp.int8)
    >>> wta_similarity(a, a[:1]).tolist()
    [[1.0], [0.25]]
  """
  fn = "wta_similarity"
  arrays = []
  for name, x in (("a", a), ("b", b)):
    x = as_array(fn, name, x)
    if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
      raise ValueError(f"{fn}: {name} must be an integer array of codes [N, M], got shape "
                       f"{tuple(x.shape)} and dtype {x.dtype}.")
    arrays.append(x)
  a, b = arrays
  if a.shape[1] != b.shape[1] or a.shape[1] == 0:
    raise ValueError(f"{fn}: a and b must hold the same non-zero number of codes M, got "
                     f"{tuple(a.shape)} and {tuple(b.shape)}.")
  n, m = a.shape
  n2 = b.shape[0]
  step = max(1, min(m, _DIRECT_ELEMENTS // max(1, n * n2)))
  if step >= m:
    count = jnp.sum(a[:, None, :] == b[None, :, :], axis=-1, dtype=jnp.int32)
  else:
    steps = -(-m // step)
    pad = steps * step - m
    # Padding codes −1 (in a) and −2 (in b) never match.
    ap = jnp.pad(a.astype(jnp.int32), ((0, 0), (0, pad)), constant_values=-1)
    bp = jnp.pad(b.astype(jnp.int32), ((0, 0), (0, pad)), constant_values=-2)
    ap = jnp.moveaxis(ap.reshape(n, steps, step), 1, 0)
    bp = jnp.moveaxis(bp.reshape(n2, steps, step), 1, 0)

    def add(count, slices):
      sa, sb = slices
      return count + jnp.sum(sa[:, None, :] == sb[None, :, :], axis=-1, dtype=jnp.int32), None

    count = jax.lax.scan(add, jnp.zeros((n, n2), jnp.int32), (ap, bp))[0]
  return count.astype(jnp.float32) / m
