"""Classical hashing baselines (LSH, PCAH, ITQ, SH) and the cosine reference on scikit-learn's digits.

A sanity check, run by hand (not a test): the 1,797 8×8 digits as 64-d pixel features (0..16), 300
queries (30 per class, drawn with ``--seed``), the other 1,497 images as the database and the training
set of every baseline (the usual unsupervised protocol: fit on the database). It prints mAP@all (the
Hamming evaluator's default semantics: ties by lower index) for each method and code length, the
real-valued cosine ranking of the raw pixels (the features' own retrieval quality), and each fit's wall
time. LSH is averaged over ``--lsh_seeds`` seeds (its spread is printed).

``--fit_timing`` instead times the fits (best and median of ``--repeats``) on random 5,000 × 1,280 float32 features (the size of a
pretrained backbone's training features) at 16/32/64 bits.

Usage:
  python experiments/baselines_digits.py                      # 32 bits
  python experiments/baselines_digits.py --bits 16 32 64
  python experiments/baselines_digits.py --fit_timing
  python experiments/baselines_digits.py --out /tmp/baselines_digits.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from unhash_jax import baselines, cosine_retrieval, retrieval  # noqa: E402


def split_digits(seed: int, per_class: int = 30):
  """Pixel features, and a query/database split with ``per_class`` queries of every class."""
  from sklearn.datasets import load_digits  # noqa: PLC0415 (only this script needs it)

  data = load_digits()
  x = data.data.astype(np.float32)
  y = data.target.astype(np.int32)
  rng = np.random.default_rng(seed)
  q_idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                                  for c in range(10)]))
  db_idx = np.setdiff1d(np.arange(len(y)), q_idx)
  return x[q_idx], y[q_idx], x[db_idx], y[db_idx]


def timed(fn, *args, **kwargs):
  t = time.perf_counter()
  out = fn(*args, **kwargs)
  return out, time.perf_counter() - t


def digits_table(bits_list, seed, lsh_seeds, itq_iterations):
  xq, yq, xdb, ydb = split_digits(seed)
  print(f"digits: {len(yq)} queries, {len(ydb)} database items (training set), dim {xq.shape[1]}")
  rows = []
  cos = cosine_retrieval.cosine_mean_average_precision(xq, xdb, yq, ydb)
  print(f"{'cosine (raw pixels)':>22s}  mAP@all {cos:.4f}")
  rows.append({"method": "cosine", "bits": None, "map@all": cos})
  for bits in bits_list:
    for method in baselines.METHODS:
      if method in ("pcah", "itq") and bits > xq.shape[1]:
        print(f"{method:>10s} {bits:3d} bits  skipped: bits > dim {xq.shape[1]}")
        continue
      seeds = range(lsh_seeds) if method == "lsh" else [0]
      opts = {"iterations": itq_iterations} if method == "itq" else {}
      baselines.fit(method, xdb, bits, key=0, **opts)  # warm-up: jax.random compiles once per shape
      maps, times = [], []
      for s in seeds:
        model, dt = timed(baselines.fit, method, xdb, bits, key=s, **opts)
        m = retrieval.mean_average_precision(model.encode(xq), model.encode(xdb), yq, ydb)
        maps.append(m)
        times.append(dt)
      spread = f" ± {np.std(maps):.4f} over {len(maps)} seeds" if len(maps) > 1 else ""
      print(f"{method:>10s} {bits:3d} bits  mAP@all {np.mean(maps):.4f}{spread}   "
            f"fit {np.mean(times) * 1e3:7.1f} ms")
      rows.append({"method": method, "bits": bits, "map@all": float(np.mean(maps)),
                   "map@all_std": float(np.std(maps)), "fit_s": float(np.mean(times)),
                   "seeds": len(maps)})
  return rows


def fit_timing(repeats, itq_iterations):
  rng = np.random.default_rng(0)
  # Correlated, offset features with a decaying spectrum, like pooled CNN features.
  x = (rng.standard_normal((5000, 256)) @ rng.standard_normal((256, 1280)) / 16
       + rng.standard_normal((5000, 1280)) * 0.1 + 1.0).astype(np.float32)
  print(f"fit times on {x.shape[0]} x {x.shape[1]} float32 features (best and median of {repeats}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs):")
  rows = []
  for bits in (16, 32, 64):
    for method in baselines.METHODS:
      opts = {"iterations": itq_iterations} if method == "itq" else {}
      baselines.fit(method, x[:200], min(bits, 200), key=0, **opts)  # warm-up (jax.random compile)
      times = [timed(baselines.fit, method, x, bits, key=r, **opts)[1] for r in range(repeats)]
      model = baselines.fit(method, x, bits, key=0, **opts)
      _, enc = timed(lambda: np.asarray(model.encode(x)))
      print(f"{method:>6s} {bits:3d} bits  fit {min(times):6.3f} s (median {np.median(times):6.3f} s)"
            f"   encode {enc:6.3f} s")
      rows.append({"method": method, "bits": bits, "fit_s_best": float(min(times)),
                   "fit_s_median": float(np.median(times)), "encode_s": enc})
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--bits", type=int, nargs="+", default=[32])
  p.add_argument("--seed", type=int, default=0, help="seed of the query draw")
  p.add_argument("--lsh_seeds", type=int, default=5)
  p.add_argument("--itq_iterations", type=int, default=50)
  p.add_argument("--fit_timing", action="store_true")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out", default=None, help="write the rows as JSON here")
  a = p.parse_args()
  rows = (fit_timing(a.repeats, a.itq_iterations) if a.fit_timing
          else digits_table(a.bits, a.seed, a.lsh_seeds, a.itq_iterations))
  if a.out:
    with open(a.out, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
