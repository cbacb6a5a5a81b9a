"""Argument checks shared by the light modules (ops, losses): errors that name the function and the
argument. Imports only jax and numpy."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def as_array(fn: str, name: str, x) -> jax.Array:
  """``jnp.asarray(x)``, or a ``ValueError`` naming ``fn`` and ``name`` if ``x`` is no array-like."""
  if isinstance(x, jax.Array):
    return x
  try:
    return jnp.asarray(x)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{fn}: {name} must be an array (jax/numpy array or nested list of numbers), "
                     f"got {type(x).__name__}: {e}") from e


def count(fn: str, name: str, value, minimum: int) -> int:
  """``value`` as an int, or a ``ValueError`` unless it is an integer ``>= minimum``."""
  if (not isinstance(value, (numbers.Integral, np.integer)) or isinstance(value, bool)
      or value < minimum):
    raise ValueError(f"{fn}: {name} must be an integer >= {minimum}, got {value!r}.")
  return int(value)
