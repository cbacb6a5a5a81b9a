"""CIBHash's forward of the two views (methods/cibhash.py) against float64 numpy forwards."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from unhash_jax.methods.cibhash import logits_of_views
from unhash_jax.models import HashEncoder, make_backbone


def _a(v):
  return np.asarray(v[...], np.float64)


def _head(model, h):
  h = np.maximum(h @ _a(model.head.fc1.kernel) + _a(model.head.fc1.bias), 0)
  return h @ _a(model.head.fc2.kernel) + _a(model.head.fc2.bias)


def _views(shape, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(6, *shape)).astype(np.float32) for _ in range(2))


def test_batch_independent_model_gives_each_views_own_logits(x64):
  """flatten backbone (no BatchNorm): one interleaved forward, split back per view."""
  model = HashEncoder(make_backbone("flatten", (5,), rngs=nnx.Rngs(0)), 7, hidden=9, rngs=nnx.Rngs(1))
  v1, v2 = _views((5,))
  l1, l2 = logits_of_views(model, jnp.asarray(v1), jnp.asarray(v2), key=jax.random.key(0))
  np.testing.assert_allclose(l1, _head(model, v1.astype(np.float64)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(l2, _head(model, v2.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_batchnorm_model_normalises_each_view_by_its_own_statistics():
  """tiny backbone (Linear → BatchNorm → ReLU): batch statistics must come from one view only."""
  model = HashEncoder(make_backbone("tiny", (3,), rngs=nnx.Rngs(0)), 4, hidden=8, rngs=nnx.Rngs(1))
  v1, v2 = _views((3,), seed=1)
  v2 = v2 * 5 + 3  # very different statistics from v1
  l1, l2 = logits_of_views(model, jnp.asarray(v1), jnp.asarray(v2), key=jax.random.key(0))
  bb = model.backbone

  def backbone(x):
    h = x.astype(np.float64) @ _a(bb.proj.kernel) + _a(bb.proj.bias)
    mean, var = h.mean(0), h.var(0)
    return np.maximum((h - mean) / np.sqrt(var + 1e-5) * _a(bb.norm.scale) + _a(bb.norm.bias), 0)

  np.testing.assert_allclose(l1, _head(model, backbone(v1)), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(l2, _head(model, backbone(v2)), rtol=1e-4, atol=1e-5)


def test_feature_dropout_draws_differ_between_views_and_follow_the_key():
  model = HashEncoder(make_backbone("flatten", (64,), rngs=nnx.Rngs(0)), 8, hidden=16,
                      feature_dropout=0.5, rngs=nnx.Rngs(1))
  v = jnp.ones((4, 64))
  a1, a2 = logits_of_views(model, v, v, key=jax.random.key(3))
  b1, _ = logits_of_views(model, v, v, key=jax.random.key(3))
  c1, _ = logits_of_views(model, v, v, key=jax.random.key(4))
  np.testing.assert_array_equal(a1, b1)
  assert not np.allclose(a1, a2)   # same input, different dropout masks for the two views
  assert not np.allclose(a1, c1)
