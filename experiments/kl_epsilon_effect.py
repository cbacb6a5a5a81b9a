"""Effect of computing CIBHash's Bernoulli KL exactly instead of the official code's ``+1e-8``.

The official loss (zexuanqiu/CIBHash, ``compute_kl``) is
``p·(log(p + ε) − log(q + ε)) + (1 − p)·(log(1 − p + ε) − log(1 − q + ε))`` with ε = 1e-8, summed
over bits and averaged over the batch, on probabilities from a sigmoid in float32. The library
computes the same KL from the logits with ``log_sigmoid`` (no ε). This script measures

1. the KL values of both forms on logits of growing magnitude (float32 and float64), and
2. the digits main job (``python -m unhash_jax.main`` at 16/32/64 bits, test mAP) trained with each
   form, the official one patched into the loss.

Run by hand: ``python experiments/kl_epsilon_effect.py [--bits 32] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from unhash_jax.losses import _common  # noqa: E402

EPS = 1e-8


def official_kl(logits_p, logits_q):
  """The official ε-form of KL(Bernoulli(σ(ℓ_p)) ‖ Bernoulli(σ(ℓ_q))), summed over the last axis."""
  p, q = jax.nn.sigmoid(logits_p), jax.nn.sigmoid(logits_q)
  return jnp.sum(p * (jnp.log(p + EPS) - jnp.log(q + EPS))
                 + (1 - p) * (jnp.log(1 - p + EPS) - jnp.log(1 - q + EPS)), axis=-1)


def official_symmetric_kl(logits1, logits2):
  sg = jax.lax.stop_gradient
  return 0.5 * (jnp.mean(official_kl(logits1, sg(logits2)))
                + jnp.mean(official_kl(logits2, sg(logits1))))


def value_table() -> list[dict]:
  rng = np.random.default_rng(0)
  rows = []
  for scale in (1.0, 5.0, 10.0, 20.0, 30.0):
    l1 = rng.normal(size=(64, 32)) * scale
    l2 = l1 + rng.normal(size=(64, 32)) * 0.5 * scale
    row = {"logit_scale": scale}
    for dtype in ("float32", "float64"):
      with jax.enable_x64(dtype == "float64"):
        a, b = jnp.asarray(l1, dtype), jnp.asarray(l2, dtype)
        row[f"exact_{dtype}"] = float(jnp.mean(_common.bernoulli_kl_from_logits(a, b)))
        row[f"official_{dtype}"] = float(jnp.mean(official_kl(a, b)))
    rows.append(row)
  return rows


def digits_map(bits: int, official: bool) -> dict:
  from unhash_jax import train
  from unhash_jax.config import Config
  original = _common.symmetric_bernoulli_kl
  if official:
    _common.symmetric_bernoulli_kl = official_symmetric_kl
  form = "official_eps_1e-8" if official else "exact"
  try:
    with tempfile.TemporaryDirectory() as tmp:
      t0 = time.perf_counter()
      try:
        results = train.train_and_evaluate(Config(method="cibhash", bits=bits), tmp)
      except train.NonFiniteLossError as e:
        return {"bits": bits, "kl_form": form, "map": None, "error": str(e).split(";")[0]}
      wall = time.perf_counter() - t0
      rows = [json.loads(l) for l in open(os.path.join(tmp, "metrics.jsonl"))]
  finally:
    _common.symmetric_bernoulli_kl = original
  kl = [r["train/kl"] for r in rows if "train/kl" in r]
  return {"bits": bits, "kl_form": form, "map": results["map"], "p@1": results.get("p@1"),
          "final_train_kl": kl[-1], "wall_s": round(wall, 1)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  report = {"values": value_table(), "digits": []}
  for row in report["values"]:
    print(json.dumps(row))
  for bits in args.bits:
    for official in (False, True):
      r = digits_map(bits, official)
      report["digits"].append(r)
      print(json.dumps(r))
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)


if __name__ == "__main__":
  main()
