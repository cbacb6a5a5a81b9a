"""Elementary code operations shared by every method and by the evaluator.

Imports only ``jax`` and ``numpy`` so that ``from unhash_jax import ops`` is cheap and TPU-safe.

Method-specific operations live in one module per idea and are re-exported here, so users call
``ops.X``: :func:`knn_indices`, :func:`snn_pseudo_labels` (DDH, :mod:`unhash_jax.pseudo_labels`,
NumPy, host-side); :func:`mutual_attention`, :func:`patch_max_mean_similarity` (WCH,
:mod:`unhash_jax.patch_similarity`); :func:`wta_permutations`, :func:`wta_codes`,
:func:`wta_similarity` (HARR, :mod:`unhash_jax.wta`); :func:`batch_standardize` (FDBH,
:mod:`unhash_jax.standardize`).

Conventions (docs/methods.md §1.1, §3):
  * ``sign₀(x) = +1 if x >= 0 else -1`` — exact zeros map to +1, never ``jnp.sign``.
  * Codes are int8 ``{-1, +1}`` arrays ``[..., bits]``; packed codes are
    ``uint32[..., ceil(bits / 32)]`` where bit ``j`` (LSB first) of word ``w`` holds code index
    ``32 * w + j`` and a set bit means ``+1``. Padding bits of the last word are 0, so they never
    contribute to a Hamming distance.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from unhash_jax.patch_similarity import mutual_attention, patch_max_mean_similarity
from unhash_jax.pseudo_labels import knn_indices, snn_pseudo_labels
from unhash_jax.standardize import batch_standardize
from unhash_jax.wta import wta_codes, wta_permutations, wta_similarity

__all__ = [
    "WORD_BITS", "batch_standardize", "bernoulli_codes", "binarize", "knn_indices",
    "mutual_attention", "num_words", "pack_bits", "patch_max_mean_similarity",
    "snn_pseudo_labels", "ste_sign", "unpack_bits", "wta_codes", "wta_permutations",
    "wta_similarity",
]

WORD_BITS = 32


def binarize(x: jax.Array) -> jax.Array:
  """Maps real values to int8 ±1 codes with ``0 -> +1`` (docs/methods.md §1.1).

  Args:
    x: ``[..., bits]`` real (or already ±1) array.

  Returns:
    ``int8[..., bits]`` with values in ``{-1, +1}``.

  Examples:
    >>> binarize(jnp.array([-0.5, 0.0, 2.0])).tolist()
    [-1, 1, 1]
  """
  x = jnp.asarray(x)
  return jnp.where(x >= 0, jnp.int8(1), jnp.int8(-1))


def num_words(bits: int) -> int:
  """Number of uint32 words needed to pack ``bits`` bits."""
  return -(-int(bits) // WORD_BITS)


def pack_bits(codes: jax.Array) -> jax.Array:
  """Packs ``[..., bits]`` codes into ``uint32[..., ceil(bits/32)]`` (bit 1 ↔ +1).

  ``codes`` may be real-valued: they are binarized with :func:`binarize` first.

  Examples:
    >>> pack_bits(jnp.array([1, -1, 1, 1])).tolist()
    [13]
  """
  codes = jnp.asarray(codes)
  if codes.ndim < 1 or codes.shape[-1] < 1:
    raise ValueError(f"pack_bits needs codes of shape [..., bits] with bits >= 1, got {codes.shape}.")
  bits = codes.shape[-1]
  words = num_words(bits)
  on = (codes >= 0).astype(jnp.uint32)
  pad = words * WORD_BITS - bits
  if pad:
    on = jnp.pad(on, [(0, 0)] * (on.ndim - 1) + [(0, pad)])
  on = on.reshape(*on.shape[:-1], words, WORD_BITS)
  shifts = jnp.arange(WORD_BITS, dtype=jnp.uint32)
  # Distinct powers of two: the sum is an exact bitwise OR.
  return jnp.sum(on << shifts, axis=-1, dtype=jnp.uint32)


def unpack_bits(packed: jax.Array, bits: int) -> jax.Array:
  """Inverse of :func:`pack_bits`: ``uint32[..., words]`` → ``int8[..., bits]`` ±1.

  Examples:
    >>> unpack_bits(jnp.array([13], jnp.uint32), 4).tolist()
    [1, -1, 1, 1]
  """
  packed = jnp.asarray(packed)
  if packed.dtype != jnp.uint32:
    raise ValueError(f"unpack_bits needs uint32 words, got {packed.dtype}.")
  bits = int(bits)
  if bits < 1 or num_words(bits) != packed.shape[-1]:
    raise ValueError(
        f"unpack_bits: {bits} bits need {num_words(max(bits, 1))} words, got {packed.shape[-1]}.")
  shifts = jnp.arange(WORD_BITS, dtype=jnp.uint32)
  on = (packed[..., None] >> shifts) & jnp.uint32(1)
  on = on.reshape(*packed.shape[:-1], -1)[..., :bits]
  return jnp.where(on == 1, jnp.int8(1), jnp.int8(-1))


def ste_sign(x: jax.Array) -> jax.Array:
  """Straight-through sign: forward ``sign₀(x)``, backward identity (docs/methods.md §3).

  ``x + sg(sign₀(x) − x)``; the output has ``x``'s dtype.

  Examples:
    >>> ste_sign(jnp.array([-0.3, 0.0, 0.7])).tolist()
    [-1.0, 1.0, 1.0]
    >>> jax.grad(lambda x: ste_sign(x).sum())(jnp.array([-0.3, 0.7])).tolist()
    [1.0, 1.0]
  """
  hard = jnp.where(x >= 0, 1.0, -1.0).astype(x.dtype)
  return x + jax.lax.stop_gradient(hard - x)


def bernoulli_codes(p: jax.Array, *, key: jax.Array) -> jax.Array:
  """Samples ±1 codes with ``P(+1) = p`` and a straight-through gradient into ``p``.

  The paper-style stochastic binary layer of CIBHash (docs/methods.md §2.1, ``stochastic_codes=True``):
  forward ``2·Bernoulli(p) − 1``, backward the gradient of ``2p − 1``.

  Args:
    p: ``[..., bits]`` probabilities in [0, 1].
    key: a PRNG key.

  Returns:
    ``[..., bits]`` ±1 values with ``p``'s dtype.
  """
  sample = jax.random.bernoulli(key, p).astype(p.dtype) * 2 - 1
  soft = 2 * p - 1
  return soft + jax.lax.stop_gradient(sample - soft)
