"""Loss building blocks shared by the methods (docs/methods.md §3).

Imports only jax and numpy. Every function upcasts its inputs to float32 (bf16/f16 activations are
accepted) and returns float32 (float64 stays float64, for x64 tests).

Also the input checks every loss runs at trace time (:func:`floating_input`, :func:`same_shape`,
:func:`check_number`): arguments may be any array-like (jax or numpy arrays, nested lists), and a
wrong rank, an empty axis or a non-floating dtype raises a ``ValueError`` that names the loss and
the argument. Values are never checked (they are not known under ``jit``): non-finite inputs
propagate to a non-finite loss.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from unhash_jax._checks import as_array  # noqa: F401  (re-exported for the losses)


def _sign0(x: jax.Array) -> jax.Array:
  """``sign₀(x)``: +1 where ``x >= 0`` (exact zeros included), −1 elsewhere, in ``x``'s dtype."""
  return jnp.where(x >= 0, 1, -1).astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# Input checks shared by the losses (trace-time: shapes and dtypes, never values).


def floating_input(fn: str, name: str, x, *, shape: str = "[batch, bits]", ndim: int = 2
                   ) -> jax.Array:
  """Checks that ``x`` is a non-empty floating ``ndim``-D array-like; upcasts to float32.

  bf16/f16 become float32, float64 stays float64. Raises ``ValueError`` such as
  ``"cibhash_loss: logits2 must be a floating array [batch, bits], got int32"``.
  """
  x = as_array(fn, name, x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{fn}: {name} must be a floating array {shape}, got {x.dtype} "
                     f"(cast it explicitly, e.g. x.astype(jnp.float32)).")
  if x.ndim != ndim or 0 in x.shape:
    raise ValueError(f"{fn}: {name} must be a non-empty {ndim}-D array {shape}, got shape "
                     f"{tuple(x.shape)}.")
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def same_shape(fn: str, names: tuple[str, str], a: jax.Array, b: jax.Array, *,
               shape: str = "[batch, bits]") -> None:
  """Raises ``ValueError`` naming both arguments unless ``a.shape == b.shape``."""
  if a.shape != b.shape:
    raise ValueError(f"{fn}: {names[0]} and {names[1]} must have the same shape {shape}, got "
                     f"{tuple(a.shape)} and {tuple(b.shape)}.")


def min_batch(fn: str, name: str, x: jax.Array, minimum: int = 2) -> None:
  """Raises ``ValueError`` unless ``x`` has at least ``minimum`` rows (a contrastive batch)."""
  if x.shape[0] < minimum:
    raise ValueError(f"{fn} needs a batch of at least {minimum} images, got {x.shape[0]} "
                     f"({name} has shape {tuple(x.shape)}).")


def check_number(fn: str, name: str, value, *, positive: bool = False,
                 nonnegative: bool = False, allow_traced: bool = True) -> None:
  """Checks a concrete scalar hyper-parameter (finite; ``> 0`` or ``>= 0`` if asked).

  A traced value (a hyper-parameter passed through ``jit``, e.g. an annealed γ) cannot be checked
  and is accepted when ``allow_traced``.
  """
  if isinstance(value, jax.core.Tracer):
    if allow_traced:
      return
    raise ValueError(f"{fn}: {name} must be a concrete Python number, got a traced value.")
  try:
    v = float(np.asarray(value))
  except (TypeError, ValueError) as e:
    raise ValueError(f"{fn}: {name} must be a real scalar, got {value!r}.") from e
  if isinstance(value, bool) or not math.isfinite(v):
    raise ValueError(f"{fn}: {name} must be a finite real number, got {value!r}.")
  if positive and not v > 0:
    raise ValueError(f"{fn}: {name} must be > 0, got {value!r}.")
  if nonnegative and not v >= 0:
    raise ValueError(f"{fn}: {name} must be >= 0, got {value!r}.")


def check_int(fn: str, name: str, value, *, minimum: int) -> int:
  """Returns ``value`` as ``int`` if it is an integer >= ``minimum``, else raises ``ValueError``."""
  if (not isinstance(value, (numbers.Integral, np.integer)) or isinstance(value, bool)
      or value < minimum):
    raise ValueError(f"{fn}: {name} must be an integer >= {minimum}, got {value!r}.")
  return int(value)


def as_float32(*arrays: jax.Array) -> tuple[jax.Array, ...]:
  """Upcasts floating inputs (bf16/f16/f32) to float32; float64 stays float64 (x64 tests)."""
  out = []
  for a in arrays:
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
      raise ValueError(f"expected a floating-point array, got dtype {a.dtype}.")
    out.append(a.astype(jnp.promote_types(a.dtype, jnp.float32)))
  return tuple(out)


def l2_normalize(x: jax.Array) -> jax.Array:
  """Row-wise ``x/‖x‖`` ``[..., d]`` with the norm in the autodiff graph; the floor guards zero rows."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))


def nt_xent(z1: jax.Array, z2: jax.Array, *, temperature: float) -> jax.Array:
  """NT-Xent over 2N samples with cosine similarity (SimCLR; docs/methods.md §2.1, §3).

  Stacks the views into ``z = [z1; z2]`` ``[2N, d]``, forms ``s_ab = cos(z_a, z_b)/τ`` with the norms
  inside the autodiff graph, and returns
  ``(1/2N) Σ_a −log[exp(s_{a,a⁺}) / Σ_{b≠a} exp(s_ab)]`` where ``a⁺`` is the other view of ``a``.

  Args:
    z1: ``[N, d]`` first view (codes or features); N >= 2.
    z2: ``[N, d]`` second view.
    temperature: τ > 0.

  Returns:
    float32 scalar.
  """
  z1, z2 = as_float32(z1, z2)
  n = z1.shape[0]
  z = jnp.concatenate([z1, z2], axis=0)
  z = l2_normalize(z)  # cosine with the norms in the graph
  sim = (z @ z.T) / temperature
  sim = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, sim)
  positive = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
  log_prob = jax.nn.log_softmax(sim, axis=-1)
  return -jnp.mean(jnp.take_along_axis(log_prob, positive[:, None], axis=-1))


def bernoulli_kl_from_logits(logits_p: jax.Array, logits_q: jax.Array) -> jax.Array:
  """KL(Bernoulli(σ(ℓ_p)) ‖ Bernoulli(σ(ℓ_q))) summed over the last axis → ``[...]``.

  ``Σ_k p log(p/q) + (1−p) log((1−p)/(1−q))`` computed with ``log_sigmoid`` so it stays finite in
  float32 for saturated logits (the ε-inside-the-log form of the official code produced NaN after a
  few thousand steps).
  """
  p = jax.nn.sigmoid(logits_p)
  log_p, log_1mp = jax.nn.log_sigmoid(logits_p), jax.nn.log_sigmoid(-logits_p)
  log_q, log_1mq = jax.nn.log_sigmoid(logits_q), jax.nn.log_sigmoid(-logits_q)
  return jnp.sum(p * (log_p - log_q) + (1 - p) * (log_1mp - log_1mq), axis=-1)


def symmetric_bernoulli_kl(logits1: jax.Array, logits2: jax.Array) -> jax.Array:
  """``½[mean_n KL(p¹‖sg p²) + mean_n KL(p²‖sg p¹)]`` of CIBHash (docs/methods.md §2.1) → scalar."""
  sg = jax.lax.stop_gradient
  return 0.5 * (jnp.mean(bernoulli_kl_from_logits(logits1, sg(logits2)))
                + jnp.mean(bernoulli_kl_from_logits(logits2, sg(logits1))))


def bit_balance(h: jax.Array) -> jax.Array:
  """``mean_k (mean_n h_nk)²`` for ``h`` ``[N, K]`` (WCH, FDBH)."""
  return jnp.mean(jnp.square(jnp.mean(h, axis=0)))


def quant_mse(u: jax.Array) -> jax.Array:
  """``mean (u − sign₀ u)²`` (NSH's quantization term, per view)."""
  return jnp.mean(jnp.square(u - jnp.where(u >= 0, 1.0, -1.0).astype(u.dtype)))


def soft_target_ce(logits: jax.Array, weights: jax.Array) -> jax.Array:
  """Soft-target cross-entropy ``(1/N) Σ_n Σ_m −w_nm · log softmax_m(logits_n)`` (WCH, §3).

  The targets ``w`` are used as given: no renormalisation (WCH's weights have a unit diagonal and
  rows that do not sum to 1), and gradients flow into them unless the caller stops them.

  Args:
    logits: ``[N, M]``.
    weights: ``[N, M]`` non-negative targets.

  Returns:
    scalar, the mean over the N rows.

  Examples:
    >>> round(float(soft_target_ce(jnp.zeros((1, 2)), jnp.array([[1.0, 0.0]]))), 4)  # log 2
    0.6931
  """
  return -jnp.mean(jnp.sum(weights * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def quant_l2_sum(u: jax.Array) -> jax.Array:
  """``Σ_n ‖u_n − sg(sign₀ u_n)‖²`` summed over every entry (DDH's quantization term, §2.5).

  Examples:
    >>> float(quant_l2_sum(jnp.array([[0.5, -2.0], [0.0, 1.0]])))  # 0.25 + 1 + 1 + 0
    2.25
  """
  return jnp.sum(jnp.square(u - jax.lax.stop_gradient(_sign0(u))))


def quant_cosine(u: jax.Array) -> jax.Array:
  """``mean_n (1 − cos(u_n, sign₀ u_n))`` for ``u`` ``[N, K]`` (HARR's quantization term, §2.4).

  ``cos(u, sign₀ u) = ‖u‖₁/(√K·‖u‖₂)``, with the norm in the autodiff graph; an all-zero row counts
  as cosine 0 (its sign₀ code is all +1).

  Examples:
    >>> round(float(quant_cosine(jnp.array([[1.0, -1.0], [1.0, 0.0]]))), 4)  # 0 and 1 − 1/√2
    0.1464
  """
  k = u.shape[-1]
  dot = jnp.sum(u * jax.lax.stop_gradient(_sign0(u)), axis=-1)            # ‖u‖₁
  cos = dot * jax.lax.rsqrt(jnp.maximum(jnp.sum(u * u, axis=-1), 1e-24)) / math.sqrt(k)
  return jnp.mean(1.0 - cos)


def polarization(t: jax.Array) -> jax.Array:
  """``mean (1 − |t|)²`` over every entry (FDBH's polarization term, §2.6).

  Examples:
    >>> float(polarization(jnp.array([[1.0, -0.5], [0.0, -1.0]])))
    0.3125
  """
  return jnp.mean(jnp.square(1.0 - jnp.abs(t)))


def _standardize_columns(u: jax.Array, eps) -> jax.Array:
  """``(u − μ_k)/(σ_k + ε)`` per column with the biased (population) standard deviation.

  ``σ`` is taken with a safe square root, so a constant column (σ = 0) gives zeros and finite
  gradients instead of NaN.
  """
  centred = u - jnp.mean(u, axis=0, keepdims=True)
  var = jnp.mean(jnp.square(centred), axis=0, keepdims=True)
  positive = var > 0
  std = jnp.where(positive, jnp.sqrt(jnp.where(positive, var, 1.0)), 0.0)
  return centred / (std + eps)


def barlow_cross_corr(u1: jax.Array, u2: jax.Array, *, lambda_off, eps=1e-5) -> jax.Array:
  """HARR's bit-correlation reduction ``L_bc`` (Barlow Twins form; docs/methods.md §2.4 step 4).

  ``ẑ^v_nk = (u^v_nk − μ^v_k)/(σ^v_k + ε)`` per bit over the batch, with the biased (population)
  standard deviation ``σ = √(mean_n (u − μ)²)`` (so ``C_kk = 1`` exactly for identical views when
  ε = 0); ``C = ẑ¹ᵀẑ²/N`` ``[K, K]``;
  ``L_bc = Σ_k (1 − C_kk)² + λ_off·Σ_{k≠l} C_kl²``.

  Args:
    u1: ``[N, K]`` view 1.
    u2: ``[N, K]`` view 2.
    lambda_off: weight of the off-diagonal terms (HARR: 1/K).
    eps: ε added to σ.

  Returns:
    scalar.

  Examples:
    >>> u = jnp.array([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    >>> float(barlow_cross_corr(u, u, lambda_off=0.5, eps=0.0))  # C = I
    0.0
    >>> float(barlow_cross_corr(u, u[:, ::-1], lambda_off=0.5, eps=0.0))  # C = [[0, 1], [1, 0]]
    3.0
  """
  n = u1.shape[0]
  z1, z2 = _standardize_columns(u1, eps), _standardize_columns(u2, eps)
  c = z1.T @ z2 / n
  diag = jnp.diagonal(c)
  on = jnp.sum(jnp.square(1.0 - diag))
  off = jnp.sum(jnp.square(c)) - jnp.sum(jnp.square(diag))
  return on + lambda_off * off
