"""Validation-only tuning harness for NSH on ``digits`` (the record in configs/nsh_digits.py).

Each setting is one in-process ``train_and_evaluate`` run in a fresh temporary workdir; the script
prints the validation mAP at every evaluation and the train-side diagnostics averaged over the last
``log_every`` steps (``self_top1``, ``bit_balance``), plus the wall time. The test split is evaluated
by the trainer at the end but deliberately NOT printed: tune on validation only.

Usage (one setting per invocation; JSON overrides of Config fields, ``model``/``hparams`` merged
by the method's preset; optional label; optional workdir to keep, e.g. a pretraining run)::

  nice -n 19 python experiments/nsh_digits_sweep.py '{"steps": 400, "model": {"hash_init_scale": 4}}'
  nice -n 19 python experiments/nsh_digits_sweep.py '{"method": "cibhash"}' cib32 /tmp/cib32
  nice -n 19 python experiments/nsh_digits_sweep.py \
      '{"init_backbone_from": "/tmp/cib32", "model": {"frozen_backbone": true}}'
  nice -n 19 python experiments/nsh_digits_sweep.py '{"_recipes": ["digits", "digits"]}'

``_recipes`` (harness only) replaces the method's ``(view1, view2)`` augmentation presets on digits.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Import this checkout's package, not an installed copy (the script's own folder is sys.path[0]).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv: list[str]) -> None:
  from absl import logging
  from unhash_jax import train
  from unhash_jax.config import Config
  logging.set_verbosity(logging.WARNING)

  overrides = json.loads(argv[1]) if len(argv) > 1 else {}
  label = argv[2] if len(argv) > 2 else json.dumps(overrides, sort_keys=True)
  base = {"method": "nsh", "dataset": "digits", "bits": 32}
  recipes = overrides.pop("_recipes", None)
  if recipes is not None:  # earlier sweeps' key for the (view1, view2) recipes: a config field now
    overrides["view_recipes"] = tuple(recipes)
  config = Config.from_dict({**base, **overrides})
  with tempfile.TemporaryDirectory() as tmp:
    workdir = argv[3] if len(argv) > 3 else tmp
    t0 = time.perf_counter()
    train.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  val = [(r["step"], r["val/map"]) for r in rows if "val/map" in r]
  last_train = [r for r in rows if "train/loss" in r][-1]
  print(json.dumps({
      "setting": label,
      "val_map": {s: round(v, 4) for s, v in val},
      "self_top1": round(last_train.get("train/self_top1", float("nan")), 3),
      "bit_balance": round(last_train["train/bit_balance"], 3),
      "wall_s": round(wall, 1)}))


if __name__ == "__main__":
  main(sys.argv)
