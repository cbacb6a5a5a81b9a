"""The CIBHash train step on a frozen-feature cache against the same step on images, same process.

Both are ``unhash_jax.train.make_train_step`` of the ``common`` preset (frozen backbone, CIBHash
head, batch 64), built by the trainer's own functions:

* **image step**: uint8 CIFAR-sized images → two on-device CIBHash views at ``--image_size`` → the
  frozen pretrained backbone → head, loss, Adam (what training without a cache runs every step);
* **cached step**: two cached pooled views ``[64, D]`` → head, loss, Adam, plus the host-side view
  sampling from the memory-mapped cache (what ``--cached_views`` runs every step).

Medians of interleaved repeats (``_bench_utils.time_interleaved``). Run by hand, e.g.::

  nice python experiments/bench_cached_step.py --backbone=mobilenet_v2 \\
      --pretrained=../shared/data/mobilenet_v2-b0353104.pth

Writes ``experiments/results/bench_cached_step.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from _bench_utils import machine_info, summarize, time_interleaved  # noqa: E402

from unhash_jax import cached_training, parallel, train  # noqa: E402
from unhash_jax.config import Config  # noqa: E402
from unhash_jax.data import feature_cache  # noqa: E402
from unhash_jax.methods import resolve_config  # noqa: E402
from unhash_jax.optim import RunPlan  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "shared", "data")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--backbone", default="mobilenet_v2")
  parser.add_argument("--pretrained", default=os.path.join(SHARED, "mobilenet_v2-b0353104.pth"))
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--bits", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "results", "bench_cached_step.json"))
  args = parser.parse_args()
  b = args.batch_size
  base = dict(method="cibhash", dataset="cifar10", preset="common", bits=args.bits,
              backbone=args.backbone, pretrained=args.pretrained, image_size=args.image_size,
              batch_size=b)
  mesh = parallel.make_data_mesh()
  plan = RunPlan(num_train=b * 10, batch_size=b, steps_per_epoch=10, total_steps=1000)
  rng = np.random.default_rng(0)
  key = jax.random.key(0)

  # The image step: the frozen pretrained backbone on two augmented views every step.
  image_cfg = resolve_config(Config(**base, cached_views=0))
  setup_i, state_i = train.create_train_state(image_cfg, (32, 32, 3), mesh, plan=plan)
  step_i = train.make_train_step(setup_i)
  images = parallel.global_batch(mesh, {"image": rng.integers(0, 256, (b, 32, 32, 3), np.uint8),
                                        "position": np.arange(b, dtype=np.int32)}, b)

  # The cached step: a real (small) cache on disk, views sampled on the host as in training.
  image_shape = (32, 32, 3)
  with tempfile.TemporaryDirectory() as tmp:
    cached_cfg = resolve_config(Config(**base, cached_views=8, feature_cache_dir=tmp))

    extract = cached_training._extractor(cached_cfg, image_shape)
    pooled = extract(np.zeros((1, args.image_size, args.image_size, 3), np.float32))[0]
    n = b * 10
    fake = feature_cache.FeatureCache(
        tmp, {"num_views": 8}, {"test:pooled": rng.random((n, 1, pooled.shape[-1]), np.float32),
                                "views:cibhash:pooled": rng.random((n, 8, pooled.shape[-1]),
                                                                   np.float32).astype(np.float16)},
        np.arange(n), np.arange(n))
    sample = cached_training.view_sampler(fake, cached_cfg, tokens=False)
    setup_c, state_c = train.create_train_state(cached_cfg, (pooled.shape[-1],), mesh, plan=plan)
    step_c = train.make_train_step(setup_c)
    positions = np.arange(b)

    def run_image(k):
      nonlocal state_i
      for _ in range(k):
        state_i, m = step_i(state_i, images, key)
      jax.block_until_ready(m["loss"])

    counter = {"step": 0}

    def run_cached(k):
      nonlocal state_c
      for _ in range(k):
        counter["step"] += 1
        host = {"position": positions.astype(np.int32), **sample(positions, counter["step"])}
        batch = parallel.global_batch(mesh, host, b)
        state_c, m = step_c(state_c, batch, key)
      jax.block_until_ready(m["loss"])

    times = time_interleaved({"image_step": run_image, "cached_step": run_cached}, steps=5,
                             repeats=args.repeats)
  stats = {name: summarize(t, steps=5, batch=b) for name, t in times.items()}
  ratio = stats["image_step"]["median_s_per_step"] / stats["cached_step"]["median_s_per_step"]
  report = {"machine": machine_info(), "config": vars(args), "per_step": stats,
            "cached_speedup": ratio}
  print(json.dumps(report, indent=2))
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)


if __name__ == "__main__":
  main()
