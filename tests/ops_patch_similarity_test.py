"""WCH's mutual attention and max-mean patch similarity (methods.md §2.3) against float64 loops and
the dense [N, M, P, Q] einsum of the official code."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from unhash_jax import ops
from unhash_jax.patch_similarity import mutual_attention, patch_max_mean_similarity


def _np_mutual_attention(x1, x2, t):
  """The §2.3 formulas as loops over images and positions, float64."""
  x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
  n, p, _ = x1.shape
  y1, y2 = np.zeros_like(x1), np.zeros_like(x2)
  for b in range(n):
    a = np.array([[x1[b, i] @ x2[b, j] / (np.linalg.norm(x1[b, i]) * np.linalg.norm(x2[b, j]))
                   for j in range(p)] for i in range(p)])
    for j in range(p):            # x̃¹[j] = Σ_i softmax_i(A[i, j]/T) x¹[i]
      w = np.exp(a[:, j] / t)
      y1[b, j] = sum(w[i] / w.sum() * x1[b, i] for i in range(p))
    for i in range(p):            # x̃²[i] = Σ_j softmax_j(A[i, j]/T) x²[j]
      w = np.exp(a[i, :] / t)
      y2[b, i] = sum(w[j] / w.sum() * x2[b, j] for j in range(p))
  return y1, y2


def _np_max_mean(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  out = np.zeros((len(a), len(b)))
  for n in range(len(a)):
    for m in range(len(b)):
      out[n, m] = np.mean([max(a[n, i] @ b[m, j] / (np.linalg.norm(a[n, i]) *
                                                    np.linalg.norm(b[m, j]))
                               for j in range(b.shape[1])) for i in range(a.shape[1])])
  return out


def _dense(a, b):
  """The official einsum: materialises [N, M, P, Q]."""
  an = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
  bn = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
  return jnp.einsum("npd,mqd->nmpq", an, bn).max(-1).mean(-1)


def test_mutual_attention_matches_loops():
  rng = np.random.default_rng(0)
  x1, x2 = rng.normal(size=(2, 3, 5, 4))
  for t in (1.0, 0.3):
    y1, y2 = mutual_attention(jnp.asarray(x1, jnp.float32), jnp.asarray(x2, jnp.float32),
                              temperature=t)
    e1, e2 = _np_mutual_attention(x1, x2, t)
    np.testing.assert_allclose(np.asarray(y1), e1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(y2), e2, rtol=1e-5, atol=1e-6)


def test_mutual_attention_softmax_axes_are_not_swapped():
  # View 2 = view 1 with its patches permuted and rescaled; a sharp attention matches each
  # position with its counterpart, so x̃¹ is view 1 in view 2's order and x̃² view 2 in view 1's.
  rng = np.random.default_rng(1)
  x1 = np.linalg.qr(rng.normal(size=(6, 6)))[0][None] * 3.0     # orthogonal patches
  perm = np.array([3, 0, 5, 1, 2, 4])
  x2 = 0.5 * x1[:, perm]
  y1, y2 = mutual_attention(jnp.asarray(x1, jnp.float32), jnp.asarray(x2, jnp.float32),
                            temperature=1e-3)
  np.testing.assert_allclose(np.asarray(y1), x1[:, perm], atol=1e-5)
  np.testing.assert_allclose(np.asarray(y2), x2[:, np.argsort(perm)], atol=1e-5)


def test_mutual_attention_gradients_x64(x64):
  rng = np.random.default_rng(2)
  x1, x2 = (jnp.asarray(a) for a in rng.normal(size=(2, 2, 4, 3)))
  f = jax.jit(lambda a, b: sum(jnp.sum(jnp.sin(y))
                              for y in mutual_attention(a, b, temperature=0.7)))
  check_grads(f, (x1, x2), order=1, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("n,m,p,q,d,chunk", [(3, 4, 5, 6, 7, None), (3, 4, 5, 6, 7, 1),
                                             (2, 5, 3, 4, 6, 2), (4, 7, 2, 9, 3, 3),
                                             (1, 3, 1, 1, 2, 8)])
def test_max_mean_matches_loop_and_dense(n, m, p, q, d, chunk):
  rng = np.random.default_rng(n * m * p + q + d)
  a, b = rng.normal(size=(n, p, d)), rng.normal(size=(m, q, d))
  got = patch_max_mean_similarity(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
                                  chunk=chunk)
  assert got.shape == (n, m) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), _np_max_mean(a, b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [None, 3])  # one chunk; padded chunks
def test_max_mean_gradients_equal_dense_autodiff_x64(x64, chunk):
  rng = np.random.default_rng(3)
  a, b = jnp.asarray(rng.normal(size=(4, 6, 5))), jnp.asarray(rng.normal(size=(5, 7, 5)))
  w = jnp.asarray(rng.normal(size=(4, 5)))
  ours = jax.jit(jax.grad(lambda a, b: jnp.sum(w * patch_max_mean_similarity(a, b, chunk=chunk)),
                          argnums=(0, 1)))(a, b)
  dense = jax.jit(jax.grad(lambda a, b: jnp.sum(w * _dense(a, b)), argnums=(0, 1)))(a, b)
  for g, e in zip(ours, dense):
    np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-10, atol=1e-12)
  # Reverse mode only (custom VJP); a small step so the finite differences do not cross a kink
  # of the max (the default 1e-4 does for this draw).
  f = jax.jit(lambda a, b: jnp.sum(w * patch_max_mean_similarity(a, b, chunk=chunk)))
  check_grads(f, (a, b), order=1, modes=("rev",), atol=1e-6, rtol=1e-6, eps=1e-6)


def test_max_mean_jit_vmap_and_bf16():
  rng = np.random.default_rng(4)
  a = jnp.asarray(rng.normal(size=(2, 3, 4, 8)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(2, 5, 6, 8)), jnp.float32)
  eager = patch_max_mean_similarity(a[0], b[0], chunk=2)
  jitted = jax.jit(lambda x, y: patch_max_mean_similarity(x, y, chunk=2))(a[0], b[0])
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6)
  batched = jax.vmap(patch_max_mean_similarity)(a, b)
  np.testing.assert_allclose(np.asarray(batched[1]),
                             np.asarray(patch_max_mean_similarity(a[1], b[1])), rtol=1e-6)
  bf = patch_max_mean_similarity(a[0].astype(jnp.bfloat16), b[0].astype(jnp.bfloat16))
  assert bf.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(bf), np.asarray(eager), atol=0.03)


def test_max_mean_never_materialises_the_four_way_tensor():
  # N = M = 16, P = Q = 49: the dense tensor would hold 16·16·49·49 = 614,656 elements.
  a = jnp.ones((16, 49, 8))
  b = jnp.ones((16, 49, 8))
  jaxpr = jax.make_jaxpr(jax.grad(lambda a, b: patch_max_mean_similarity(a, b, chunk=2).sum(),
                                  argnums=(0, 1)))(a, b)

  def sizes(jx):
    for eqn in jx.eqns:
      for v in eqn.outvars:
        yield math.prod(getattr(v.aval, "shape", ()))
      for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else ():
        yield from sizes(sub)
      for param in eqn.params.values():
        inner = getattr(param, "jaxpr", None)
        if inner is not None:
          yield from sizes(getattr(inner, "jaxpr", inner))
  assert max(sizes(jaxpr.jaxpr)) <= 16 * 49 * 2 * 49


def test_ops_reexports_and_errors():
  assert ops.mutual_attention is mutual_attention
  assert ops.patch_max_mean_similarity is patch_max_mean_similarity
  with pytest.raises(ValueError, match="mutual_attention: x2 must be a floating"):
    mutual_attention(jnp.ones((1, 2, 3)), jnp.ones((1, 2, 3), jnp.int32))
  with pytest.raises(ValueError, match="same shape"):
    mutual_attention(jnp.ones((1, 2, 3)), jnp.ones((1, 3, 3)))
  with pytest.raises(ValueError, match="temperature"):
    mutual_attention(jnp.ones((1, 2, 3)), jnp.ones((1, 2, 3)), temperature=0.0)
  with pytest.raises(ValueError, match="patch_max_mean_similarity: a must be a non-empty 3-D"):
    patch_max_mean_similarity(jnp.ones((2, 3)), jnp.ones((1, 2, 3)))
  with pytest.raises(ValueError, match="token width"):
    patch_max_mean_similarity(jnp.ones((1, 2, 3)), jnp.ones((1, 2, 4)))
  with pytest.raises(ValueError, match="chunk"):
    patch_max_mean_similarity(jnp.ones((1, 2, 3)), jnp.ones((1, 2, 3)), chunk=0)
  # Lists are accepted.
  got = patch_max_mean_similarity([[[1.0, 0.0]]], [[[0.0, 2.0]], [[3.0, 0.0]]])
  np.testing.assert_allclose(np.asarray(got), [[0.0, 1.0]], atol=1e-7)
