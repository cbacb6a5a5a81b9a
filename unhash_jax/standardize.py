"""FDBH's feature-distribution standardisation: per-bit batch standardisation without affine.

docs/methods.md §2.6 ("FDO standardisation"). Functional (the running statistics are passed in and
returned), pure JAX; re-exported by :mod:`unhash_jax.ops`. Numerically it is
``flax.nnx.BatchNorm(K, use_bias=False, use_scale=False, momentum=momentum, epsilon=eps)`` on
``[N, K]`` inputs, train and eval mode, running statistics included.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from unhash_jax._checks import as_array


def batch_standardize(h: jax.Array, running_mean: jax.Array, running_var: jax.Array, *,
                      train: bool, momentum=0.9, eps=1e-5, use_fast_variance: bool = True
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-bit standardisation ``ĥ = (h − μ_k)/√(σ²_k + ε)`` with running statistics (§2.6).

  * ``train=True``: ``μ, σ²`` are the batch mean and the **biased** batch variance
    (``mean_n (h − μ)²``, divided by N) of each bit, with gradients through both (as in batch
    norm). The running statistics are updated with Flax's convention,
    ``new = momentum·old + (1 − momentum)·batch``, using that same biased variance (PyTorch's
    BatchNorm would use the unbiased one here).
  * ``train=False``: ``μ, σ²`` are the running statistics, returned unchanged.

  There is no learned scale or bias (the map is invertible; FDBH's "no information lost").
  ``use_fast_variance`` computes ``σ² = max(0, mean(h²) − mean(h)²)`` in one pass, as Flax does
  by default; ``False`` computes ``mean((h − μ)²)`` (two passes, more accurate when
  ``|μ| ≫ σ``) like Flax's ``use_fast_variance=False``. Either way the result equals
  ``flax.nnx.BatchNorm(K, use_bias=False, use_scale=False, momentum=momentum, epsilon=eps,
  use_fast_variance=use_fast_variance)`` in the same mode (Flax's default momentum is 0.99;
  FDBH uses 0.9). The returned statistics carry no gradient.

  Args:
    h: ``[N, K]`` encoder outputs (any float dtype; computed in float32).
    running_mean: ``[K]`` running mean (initialise to zeros).
    running_var: ``[K]`` running variance (initialise to ones).
    train: Python bool: batch statistics (and update) or running statistics.
    momentum: decay of the running averages (FDBH: 0.9).
    eps: ε inside the square root (1e-5).
    use_fast_variance: the one-pass variance (Flax's default).

  Returns:
    ``(ĥ [N, K], new_mean [K], new_var [K])`` in float32 (float64 for float64 inputs).

  Raises:
    ValueError: on shapes other than ``[N, K]``/``[K]``/``[K]``, non-floating inputs, a non-bool
      ``train``, or ``momentum`` outside [0, 1] / ``eps`` below 0.

  Examples:
    >>> h = jnp.array([[1.0, 10.0], [3.0, 10.0]])
    >>> hh, m, v = batch_standardize(h, jnp.zeros(2), jnp.ones(2), train=True)
    >>> [[round(float(x), 4) for x in row] for row in hh]  # a constant bit maps to 0
    [[-1.0, 0.0], [1.0, 0.0]]
    >>> [round(float(x), 4) for x in m], [round(float(x), 4) for x in v]
    ([0.2, 1.0], [1.0, 0.9])

  References:
    Ioffe, Szegedy. Batch Normalization. ICML 2015. FDBH: docs/methods.md §2.6 (project
    formulation: follows the manuscript's description; constants chosen by this project).
  """
  fn = "batch_standardize"
  arrays = []
  for name, x, ndim, shape in (("h", h, 2, "[batch, bits]"), ("running_mean", running_mean, 1,
                                                              "[bits]"),
                               ("running_var", running_var, 1, "[bits]")):
    x = as_array(fn, name, x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"{fn}: {name} must be a floating array {shape}, got {x.dtype}.")
    if x.ndim != ndim or 0 in x.shape:
      raise ValueError(f"{fn}: {name} must be a non-empty {ndim}-D array {shape}, got shape "
                       f"{tuple(x.shape)}.")
    arrays.append(x)
  h, running_mean, running_var = arrays
  k = h.shape[1]
  if running_mean.shape != (k,) or running_var.shape != (k,):
    raise ValueError(f"{fn}: running_mean and running_var must have shape ({k},) for h of shape "
                     f"{tuple(h.shape)}, got {tuple(running_mean.shape)} and "
                     f"{tuple(running_var.shape)}.")
  if not isinstance(train, bool):
    raise ValueError(f"{fn}: train must be a Python bool (it selects the computation), got "
                     f"{train!r}.")
  if isinstance(momentum, numbers.Real) and not 0 <= momentum <= 1:
    raise ValueError(f"{fn}: momentum must lie in [0, 1], got {momentum!r}.")
  if isinstance(eps, numbers.Real) and not eps >= 0:
    raise ValueError(f"{fn}: eps must be >= 0, got {eps!r}.")
  dtype = jnp.promote_types(jnp.promote_types(h.dtype, running_mean.dtype),
                            jnp.promote_types(running_var.dtype, jnp.float32))
  h = h.astype(dtype)
  running_mean, running_var = running_mean.astype(dtype), running_var.astype(dtype)
  if train:
    mean = jnp.mean(h, axis=0)
    if use_fast_variance:
      var = jnp.maximum(0.0, jnp.mean(h * h, axis=0) - mean * mean)
    else:
      var = jnp.mean(jnp.square(h - mean), axis=0)
    sg = jax.lax.stop_gradient
    new_mean = sg(momentum * running_mean + (1 - momentum) * mean)
    new_var = sg(momentum * running_var + (1 - momentum) * var)
  else:
    mean, var = running_mean, running_var
    new_mean, new_var = running_mean, running_var
  return (h - mean) * jax.lax.rsqrt(var + eps), new_mean, new_var
