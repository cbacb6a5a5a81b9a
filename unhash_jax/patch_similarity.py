"""WCH's patch-token operations: parameter-free mutual attention and the max-mean patch similarity.

docs/methods.md §2.3 (Yu, Qiu, Chen, Zhang, "Weighted Contrastive Hashing", ACCV 2022). Pure JAX;
re-exported by :mod:`unhash_jax.ops`. Inputs of any floating dtype are computed in (at least)
float32 and returned in it.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp

from unhash_jax._checks import as_array

# Elements of one [N, P, chunk, Q] similarity slab when ``chunk=None`` (32 MB of float32).
_SLAB_ELEMENTS = 1 << 23


def _tokens(fn: str, name: str, x) -> jax.Array:
  x = as_array(fn, name, x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{fn}: {name} must be a floating array [batch, patches, dim], got {x.dtype}.")
  if x.ndim != 3 or 0 in x.shape:
    raise ValueError(f"{fn}: {name} must be a non-empty 3-D array [batch, patches, dim], got shape "
                     f"{tuple(x.shape)}.")
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _unit(x: jax.Array) -> jax.Array:
  """Row-wise ``x/‖x‖`` over the last axis, norm in the graph; zero tokens stay zero."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))


def mutual_attention(x1: jax.Array, x2: jax.Array, *, temperature=1.0
                     ) -> tuple[jax.Array, jax.Array]:
  """WCH's parameter-free cross-view patch attention (docs/methods.md §2.3).

  For the two views of the same image ``n``, with ``A_n[i, j] = cos(x¹_n[i], x²_n[j])``
  ``[P, P]`` (rows: view-1 patches, columns: view-2 patches):

  * ``x̃¹_n[j] = Σ_i softmax_i(A_n[i, j]/T)·x¹_n[i]`` — the softmax runs over the view-1 axis
    ``i`` (down a column of ``A_n``), so each view-2 position ``j`` gathers view-1 content;
  * ``x̃²_n[i] = Σ_j softmax_j(A_n[i, j]/T)·x²_n[j]`` — the softmax runs over the view-2 axis
    ``j`` (along a row), so each view-1 position ``i`` gathers view-2 content.

  No Q/K/V projections and no parameters; the raw (un-normalised) tokens are aggregated and the
  cosines have the norms inside the autodiff graph.

  Args:
    x1: ``[N, P, D]`` patch tokens of view 1 (ViT-B/16: P = 196, D = 768, CLS dropped).
    x2: ``[N, P, D]`` patch tokens of view 2.
    temperature: ``T > 0`` (WCH: 1).

  Returns:
    ``(x̃¹, x̃²)``, each ``[N, P, D]`` (float32 for bf16/f16/f32 inputs).

  Raises:
    ValueError: if ``x1``/``x2`` are not non-empty floating ``[N, P, D]`` arrays of one shape, or
      ``T <= 0``.

  Examples:
    View 2 holds the same two patches in swapped order; with a small T the attention is one-to-one,
    so x̃¹ is view 1's content in view 2's layout and x̃² view 2's content in view 1's layout:

    >>> x1 = jnp.array([[[1.0, 0.0], [0.0, 2.0]]])
    >>> x2 = jnp.array([[[0.0, 3.0], [1.0, 0.0]]])
    >>> y1, y2 = mutual_attention(x1, x2, temperature=1e-3)
    >>> [[round(float(v), 3) for v in row] for row in y1[0]]
    [[0.0, 2.0], [1.0, 0.0]]
    >>> [[round(float(v), 3) for v in row] for row in y2[0]]
    [[1.0, 0.0], [0.0, 3.0]]

  References:
    Yu, Qiu, Chen, Zhang. Weighted Contrastive Hashing. ACCV 2022 (arXiv 2209.14099);
    docs/methods.md §2.3.
  """
  fn = "mutual_attention"
  x1, x2 = _tokens(fn, "x1", x1), _tokens(fn, "x2", x2)
  if x1.shape != x2.shape:
    raise ValueError(f"{fn}: x1 and x2 must have the same shape [batch, patches, dim], got "
                     f"{tuple(x1.shape)} and {tuple(x2.shape)}.")
  if (isinstance(temperature, numbers.Real) and not isinstance(temperature, jax.core.Tracer)
      and not temperature > 0):
    raise ValueError(f"{fn}: temperature must be > 0, got {temperature!r}.")
  logits = jnp.einsum("nid,njd->nij", _unit(x1), _unit(x2)) / temperature     # A_n / T
  x1_tilde = jnp.einsum("nij,nid->njd", jax.nn.softmax(logits, axis=1), x1)    # softmax over i
  x2_tilde = jnp.einsum("nij,njd->nid", jax.nn.softmax(logits, axis=2), x2)    # softmax over j
  return x1_tilde, x2_tilde


def _chunk_size(chunk, n: int, p: int, m: int, q: int) -> int:
  if chunk is None:
    return max(1, min(m, _SLAB_ELEMENTS // max(1, n * p * q)))
  if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
    raise ValueError(f"patch_max_mean_similarity: chunk must be None or an integer >= 1, got "
                     f"{chunk!r}.")
  return min(chunk, m)


def _max_mean_forward(a: jax.Array, b: jax.Array, chunk: int):
  """``(Ŝ [N, M], argmax j [N, P, M])`` for unit tokens, ``chunk`` rows of ``b`` at a time."""
  n, p, d = a.shape
  m, q, _ = b.shape
  steps = -(-m // chunk)
  # Zero tokens pad the last chunk (cosine 0); their columns are sliced off below.
  bp = jnp.pad(b, ((0, steps * chunk - m), (0, 0), (0, 0))).reshape(steps, chunk * q, d)
  a2 = a.reshape(n * p, d)

  def one_chunk(bc):                                      # [chunk·Q, D]
    s = (a2 @ bc.T).reshape(n, p, chunk, q)               # cos(a_n,i, b_m,j)
    return jnp.mean(jnp.max(s, axis=-1), axis=1), jnp.argmax(s, axis=-1).astype(jnp.int32)

  vals, idx = jax.lax.map(one_chunk, bp)                  # [steps, N, chunk], [steps, N, P, chunk]
  sim = jnp.moveaxis(vals, 0, 1).reshape(n, steps * chunk)[:, :m]
  idx = jnp.moveaxis(idx, 0, 2).reshape(n, p, steps * chunk)[:, :, :m]
  return sim, idx


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _max_mean(a: jax.Array, b: jax.Array, chunk: int) -> jax.Array:
  return _max_mean_forward(a, b, chunk)[0]


def _max_mean_fwd(a, b, chunk):
  sim, idx = _max_mean_forward(a, b, chunk)
  return sim, (a, b, idx)


def _max_mean_bwd(chunk, res, g):
  """Backward of ``(1/P) Σ_i max_j ⟨a_n,i, b_m,j⟩``: the gradient of each max goes to its argmax.

  ``∂/∂a_n,i = Σ_m (g_nm/P)·b_m,j*(n,i,m)`` (a gather) and ``∂/∂b_m,j = Σ_{(n,i): j* = j}
  (g_nm/P)·a_n,i`` (a segment sum), one ``m`` at a time: ``O(N·P·M·D)`` work instead of the dense
  form's ``O(N·P·M·Q·D)`` and ``[N, P, D]`` memory per step.
  """
  del chunk
  a, b, idx = res
  n, p, d = a.shape
  _, q, _ = b.shape
  w = g / p                                               # [N, M]

  def step(grad_a, inputs):
    bm, idm, wm = inputs                                  # [Q, D], [N, P], [N]
    grad_a = grad_a + wm[:, None, None] * jnp.take(bm, idm, axis=0)
    contrib = (wm[:, None, None] * a).reshape(n * p, d)
    grad_bm = jax.ops.segment_sum(contrib, idm.reshape(-1), num_segments=q)
    return grad_a, grad_bm

  grad_a, grad_b = jax.lax.scan(step, jnp.zeros_like(a),
                                (b, jnp.moveaxis(idx, 2, 0), w.T.astype(a.dtype)))
  return grad_a, grad_b.astype(b.dtype)


_max_mean.defvjp(_max_mean_fwd, _max_mean_bwd)


def patch_max_mean_similarity(a: jax.Array, b: jax.Array, *, chunk: int | None = None
                              ) -> jax.Array:
  """WCH's patch-level similarity ``Ŝ[n, m] = (1/P) Σ_i max_j cos(a_n,i, b_m,j)`` (§2.3 step 1).

  Computed ``chunk`` rows of ``b`` at a time with ``lax.map``, so at most an
  ``[N, P, chunk, Q]`` slab of cosines exists, never the ``[N, M, P, Q]`` tensor of the official
  einsum (157 MB at N = M = 32, P = Q = 196; 630 MB at 64). The values equal the dense form.

  The backward pass is a custom VJP (reverse mode only; ``jax.jvp`` is not supported): the
  gradient of every max goes to its maximiser (the first one at an exact tie, like
  ``torch.max``; JAX's own ``max`` would split it among tied entries), computed with a gather
  and a segment sum instead of the dense form's second and third ``N·P·M·Q·D`` products. The
  cosines' norms are in the autodiff graph.

  Args:
    a: ``[N, P, D]`` tokens (WCH: the mutually-attended view-1 tokens x̃¹).
    b: ``[M, Q, D]`` tokens (x̃²).
    chunk: rows of ``b`` per step; ``None`` picks the largest chunk whose slab holds at most 2²³
      elements (32 MB of float32).

  Returns:
    ``[N, M]`` (float32 for bf16/f16/f32 inputs).

  Raises:
    ValueError: on non-floating or non-3-D inputs, different token widths D, or a bad ``chunk``.

  Examples:
    >>> a = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])
    >>> b = jnp.array([[[2.0, 0.0], [1.0, 1.0]], [[0.0, 3.0], [0.0, 1.0]]])
    >>> [round(float(v), 4) for v in patch_max_mean_similarity(a, b)[0]]  # (1 + 0.7071)/2, 1/2
    [0.8536, 0.5]

  References:
    Yu, Qiu, Chen, Zhang. Weighted Contrastive Hashing. ACCV 2022 (arXiv 2209.14099);
    docs/methods.md §2.3.
  """
  fn = "patch_max_mean_similarity"
  a, b = _tokens(fn, "a", a), _tokens(fn, "b", b)
  if a.shape[-1] != b.shape[-1]:
    raise ValueError(f"{fn}: a and b must have the same token width D, got {tuple(a.shape)} and "
                     f"{tuple(b.shape)}.")
  dtype = jnp.promote_types(a.dtype, b.dtype)
  a, b = a.astype(dtype), b.astype(dtype)
  n, p, _ = a.shape
  m, q, _ = b.shape
  return _max_mean(_unit(a), _unit(b), _chunk_size(chunk, n, p, m, q))

