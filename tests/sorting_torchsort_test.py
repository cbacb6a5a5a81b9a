"""Agreement with torchsort's soft_rank/soft_sort (skipped unless torch + torchsort importable).

torch is not a dependency; run with a venv that has it, e.g. /work/venv-bench (see
experiments/bench_sorting.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unhash_jax import sorting

torch = pytest.importorskip("torch")
torchsort = pytest.importorskip("torchsort")


@pytest.mark.parametrize("regularization", ["l2", "kl"])
@pytest.mark.parametrize("eps", [0.1, 1.0, 3.0])
def test_values_and_grads_match_torchsort(regularization, eps):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 200)).astype(np.float32)
  w = rng.normal(size=(3, 200)).astype(np.float32)
  kw = dict(regularization_strength=eps, regularization=regularization)
  np.testing.assert_allclose(sorting.soft_rank(x, **kw),
                             torchsort.soft_rank(torch.from_numpy(x), **kw).numpy(),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(sorting.soft_sort(x, **kw),
                             torchsort.soft_sort(torch.from_numpy(x), **kw).numpy(),
                             rtol=1e-4, atol=1e-4)
  xt = torch.from_numpy(x).requires_grad_(True)
  (torch.from_numpy(w) * torchsort.soft_rank(xt, **kw)).sum().backward()
  g = jax.grad(lambda v: jnp.sum(w * sorting.soft_rank(v, **kw)))(jnp.asarray(x))
  np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-3, atol=1e-4)
