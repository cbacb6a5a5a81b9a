"""Loss building blocks shared by the methods (docs/methods.md §3).

Imports only jax and numpy. Every function upcasts its inputs to float32 (bf16/f16 activations are
accepted) and returns float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def as_float32(*arrays: jax.Array) -> tuple[jax.Array, ...]:
  """Upcasts floating inputs (bf16/f16/f32) to float32; float64 stays float64 (x64 tests)."""
  out = []
  for a in arrays:
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
      raise ValueError(f"expected a floating-point array, got dtype {a.dtype}.")
    out.append(a.astype(jnp.promote_types(a.dtype, jnp.float32)))
  return tuple(out)


def check_pair(name: str, a: jax.Array, b: jax.Array, *, rank: int = 2) -> None:
  """Raises ValueError unless ``a`` and ``b`` have the same ``rank``-D shape with nonzero dims."""
  if a.ndim != rank or b.ndim != rank or a.shape != b.shape or 0 in a.shape:
    raise ValueError(
        f"{name}: expected two non-empty arrays of the same shape [batch, features], got "
        f"{tuple(a.shape)} and {tuple(b.shape)}.")


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
