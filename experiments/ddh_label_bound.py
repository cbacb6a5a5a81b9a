"""How far can DDH's pseudo labels carry a code? An estimate on cifar10-i's frozen features (diagnostic).

DDH (docs/methods.md §2.5) regresses the code inner products ``u_iᵀU_j/K`` onto the shared-nearest-
neighbour labels ``S ∈ {±1}^{N×N}`` of the training split. This script scores the minimiser of that
objective relaxed to real codes (no sign, no quantization term), with DDH's optimiser and its fc8 out of
the way:

* **in sample** (the sweeps' validation split: its queries and database are training images, mAP@83):
  ``sign₀`` of the rank-K spectral embedding ``E = V_K·√λ_K`` of ``S`` (the top-K eigenpairs; ``EEᵀ``
  is the best rank-K positive semidefinite approximation of ``S`` in Frobenius norm, as the Gram
  matrix of K-dimensional codes must be);
* **out of sample** (the test split, mAP@1000): ``E`` regressed from the frozen pooled features by
  (a) a linear map with a bias (ridge, λ 1: the function class of DDH's fc8 on a frozen backbone) and
  (b) the head of the other ``common`` presets (the library's ``FeatureInput``: feature scaled to
  unit mean square, dropout 0.5; then ``HashHead``: ``Linear(1024) → ReLU → Linear(K)``; squared
  error on the column-standardised ``E``, Adam 1e-3, 6,000 steps of 64), codes ``sign₀`` of the
  prediction;
* ITQ on the same features (seed 0, as ``--method=itq``) on both splits, for scale.

Every fit is label-free; the labels only score. The kNN and labels are those of the ``common`` preset
(cosine on the cached test-transform features) with ``--k1``/``--k2``: 20 / 45 by default, the
preset's until 2026-12-06 (40 / 90 since).

  python experiments/ddh_label_bound.py [--bits 16 32 64] [--k1 20] [--k2 45]

Prints one JSON line per code length (``elapsed_s``: seconds since the start, labels included) and
writes them to ``--out`` (``experiments/results/ddh_label_bound.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from experiments import cifar10_frozen  # noqa: E402

RESULTS = os.path.join(ROOT, "experiments", "results", "ddh_label_bound.json")


def spectral_embedding(labels: np.ndarray, bits: int) -> np.ndarray:
  """``[N, bits]`` top-``bits`` eigenvectors of the symmetric ``labels`` scaled by √eigenvalue."""
  w, v = np.linalg.eigh(labels.astype(np.float64))
  return v[:, -bits:] * np.sqrt(np.maximum(w[-bits:], 0.0))


def fit_linear(x: np.ndarray, target: np.ndarray, ridge: float = 1.0):
  """Least squares ``[x, 1] W ≈ target`` with an L2 penalty ``ridge`` (bias included)."""
  xa = np.concatenate([x, np.ones((len(x), 1))], 1).astype(np.float64)
  w = np.linalg.solve(xa.T @ xa + ridge * np.eye(xa.shape[1]), xa.T @ target)
  return lambda z: np.concatenate([z, np.ones((len(z), 1))], 1) @ w


def fit_mlp(x: np.ndarray, target: np.ndarray, *, seed: int = 0, steps: int = 6000,
            batch: int = 64, hidden: int = 1024, learning_rate: float = 1e-3):
  """The ``common`` presets' head — :class:`FeatureInput` (L2, dropout 0.5) then :class:`HashHead` —
  regressed on ``target`` (squared error, Adam); returns the fitted map ``[n, d] -> [n, K]``."""
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx
  from unhash_jax.models import HashHead
  from unhash_jax.models.feature_input import FeatureInput

  feature_input = FeatureInput(x.shape[1], norm="l2", dropout_rate=0.5)
  graphdef, params = nnx.split(HashHead(x.shape[1], target.shape[1], hidden=hidden,
                                        rngs=nnx.Rngs(seed)))

  def forward(params, z, *, train=False, key=None):
    return nnx.merge(graphdef, params)(feature_input(z, train=train, key=key))

  opt = optax.adam(learning_rate)
  xs, ts = jnp.asarray(x, jnp.float32), jnp.asarray(target, jnp.float32)
  dropout_key = jax.random.key(seed + 1)

  @jax.jit
  def step(params, opt_state, idx, t):
    key = jax.random.fold_in(dropout_key, t)
    grads = jax.grad(lambda p: jnp.mean((forward(p, xs[idx], train=True, key=key) - ts[idx]) ** 2)
                     )(params)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  opt_state = opt.init(params)
  rng = np.random.default_rng(seed)
  for t in range(steps):
    params, opt_state = step(params, opt_state, rng.integers(0, len(x), batch), t)
  return lambda z: np.asarray(forward(params, jnp.asarray(z, jnp.float32)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
  parser.add_argument("--k1", type=int, default=20)
  parser.add_argument("--k2", type=int, default=45)
  cifar10_frozen.add_data_flags(parser)
  parser.add_argument("--out", default=RESULTS, help="the JSON to write")
  args = parser.parse_args()

  import jax
  from unhash_jax import baselines, pseudo_labels, retrieval

  source, splits = cifar10_frozen._data(args)
  _, cache = cifar10_frozen._open(args, source, splits, "ddh")
  train = cache.test_features(splits.train)
  position = {int(s): i for i, s in enumerate(splits.train)}
  val_q = np.array([position[int(s)] for s in splits.val_query])
  val_db = np.array([position[int(s)] for s in splits.val_database])
  query, database = cache.test_features(splits.query), cache.test_features(splits.database)
  labels = source.labels

  def val_map(codes):   # in sample: codes of training images
    return retrieval.mean_average_precision(codes[val_q], codes[val_db], labels[splits.val_query],
                                            labels[splits.val_database], topk=83)

  def test_map(encode):
    return retrieval.mean_average_precision(encode(query), encode(database), labels[splits.query],
                                            labels[splits.database], topk=splits.topk)

  # The evaluator takes real codes and applies sign₀ itself.
  t0 = time.perf_counter()
  k1 = min(args.k1, len(train) - 1)
  s = pseudo_labels.snn_pseudo_labels(pseudo_labels.knn_indices(train, k1), k1, args.k2)
  # One eigendecomposition: each length's embedding is the last `bits` columns of the longest one.
  embedding = spectral_embedding(s, max(args.bits))
  rows = []
  for bits in args.bits:
    emb = embedding[:, -bits:]
    target = emb / emb.std(axis=0)
    linear, mlp = fit_linear(train, target), fit_mlp(train, target)
    itq = baselines.fit("itq", train, bits, key=jax.random.key(0))
    row = {"bits": bits, "k1": args.k1, "k2": args.k2,
           "val_map83": {"spectral_sign": val_map(emb), "spectral_linear": val_map(linear(train)),
                         "spectral_mlp": val_map(mlp(train)), "itq": val_map(itq.encode(train))},
           "test_map1000": {"spectral_linear": test_map(linear), "spectral_mlp": test_map(mlp),
                            "itq": test_map(itq.encode)},
           "elapsed_s": round(time.perf_counter() - t0, 1)}
    for split in ("val_map83", "test_map1000"):
      row[split] = {k: round(float(v), 4) for k, v in row[split].items()}
    print(json.dumps(row), flush=True)
    rows.append(row)
  with open(args.out, "w") as f:
    json.dump({"rows": rows, "command": " ".join(["python", "experiments/ddh_label_bound.py",
                                                  *sys.argv[1:]])}, f, indent=2)


if __name__ == "__main__":
  main()
