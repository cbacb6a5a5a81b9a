"""Time DDH's pseudo-label construction (docs/methods.md §2.5) at training-set scale.

Random features ``[N, dim]`` (standard normal, float32; default N = 50,000, dim = 1280) go through

1. :func:`unhash_jax.ops.knn_indices` (cosine kNN, self first, ties to the lower index; blocked
   float32 matrix products and partitions), then
2. :func:`unhash_jax.ops.snn_pseudo_labels` (the K1 = 20, K2 = 30 shared-nearest-neighbour
   expansion into the int8 ``[N, N]`` ±1 matrix, 2.5 GB at N = 50,000) — the **label
   construction alone**, whose target is under 1 minute on the project's 2-core machines.

The label build is timed ``--reps`` times (median reported) on the same kNN ranking. The JSON also
records the kNN graph's hubness (largest reverse-neighbour list), the candidate pairs the sparse
overlap count visits, the fraction of +1 labels and the process's peak RSS.

Usage::

  python experiments/bench_pseudo_labels.py                       # N = 50,000, dim 1280
  python experiments/bench_pseudo_labels.py --n=10000 --reps=3

Writes ``experiments/results/bench_pseudo_labels.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments._bench_utils import machine_info, write_json  # noqa: E402
from unhash_jax import ops  # noqa: E402


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=50_000)
  parser.add_argument("--dim", type=int, default=1280)
  parser.add_argument("--k1", type=int, default=20)
  parser.add_argument("--k2", type=int, default=30)
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--knn_block", type=int, default=512)
  parser.add_argument("--label_block", type=int, default=4096)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "results", "bench_pseudo_labels.json"))
  args = parser.parse_args(argv)

  rng = np.random.default_rng(args.seed)
  features = rng.standard_normal((args.n, args.dim), dtype=np.float32)

  t0 = time.perf_counter()
  knn = ops.knn_indices(features, args.k1, block=args.knn_block)
  knn_s = time.perf_counter() - t0
  print(f"knn_indices: N={args.n} dim={args.dim} k={args.k1}: {knn_s:.1f} s", flush=True)
  del features

  label_s = []
  labels = None
  for _ in range(args.reps):
    del labels
    labels = None
    t0 = time.perf_counter()
    labels = ops.snn_pseudo_labels(knn, args.k1, args.k2, block=args.label_block)
    label_s.append(time.perf_counter() - t0)
    print(f"snn_pseudo_labels: {label_s[-1]:.2f} s", flush=True)

  reverse = np.bincount(knn[:, :args.k1 + 1].ravel(), minlength=args.n)
  result = {
      "n": args.n, "dim": args.dim, "k1": args.k1, "k2": args.k2,
      "knn_s": round(knn_s, 2),
      "labels_s": [round(s, 2) for s in label_s],
      "labels_median_s": round(statistics.median(label_s), 2),
      "labels_target_s": 60.0,
      "labels_within_target": statistics.median(label_s) < 60.0,
      "total_s": round(knn_s + statistics.median(label_s), 2),
      "labels_bytes": int(labels.nbytes),
      "positive_fraction": float(np.mean(labels == 1)),
      "diagonal_all_positive": bool((np.diagonal(labels) == 1).all()),
      "max_reverse_neighbours": int(reverse.max()),
      "candidate_pairs": int((reverse.astype(np.int64) ** 2).sum()),
      "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
      "machine": machine_info(),
      "command": "python experiments/bench_pseudo_labels.py " + " ".join(argv or sys.argv[1:]),
  }
  print(json.dumps(result, indent=2))
  write_json(args.out, result)
  return result


if __name__ == "__main__":
  main()
