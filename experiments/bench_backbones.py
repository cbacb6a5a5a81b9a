"""Feature-extraction throughput of our ImageNet backbones against torchvision's, same process, CPU.

Times ``backbone(images, train=False)`` (jitted, float32, batch 32 at 224 px by default) for our
MobileNetV2 and ResNet-50 in several variants (YNNPACK fusion sets of ``unhash_jax.xla_cpu``,
BatchNorm folding) and torchvision's models in NCHW (its default) and channels-last (the faster
PyTorch layout on CPU), interleaved (``_bench_utils.time_interleaved``) so that load spikes hit all
contenders alike. Then a depthwise-convolution micro-benchmark at MobileNetV2's shapes: our CPU
formulation (shifted multiply-adds), XLA's grouped convolution, and PyTorch's.

Run by hand (not a test), e.g.::

  nice python experiments/bench_backbones.py                      # everything, ~10 min on 2 cores
  nice python experiments/bench_backbones.py --models=mobilenet_v2 --no_depthwise

Writes ``experiments/results/bench_backbones.json`` (``--out``). Needs torch and torchvision (the
test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _bench_utils import machine_info, summarize, time_interleaved  # noqa: E402

from unhash_jax import xla_cpu  # noqa: E402
from unhash_jax.models import make_backbone  # noqa: E402
from unhash_jax.models.depthwise import depthwise_conv2d_lax, depthwise_conv2d_shifted  # noqa: E402

# Our variants: name -> (backbone kwargs, YNNPACK fusion set of unhash_jax.xla_cpu).
VARIANTS = {
    "ours": ({}, "dots_reductions"),
    "ours_xla_default": ({}, "xla"),
    "ours_dots": ({}, "dots"),
    "ours_fold_bn": ({"fold_bn": True}, "dots_reductions"),
    "ours_fold_bn_xla_default": ({"fold_bn": True}, "xla"),
}
DEPTHWISE_SHAPES = ((112, 96), (28, 192), (7, 960))   # MobileNetV2's (H = W, C) extremes


def _ours(name: str, kwargs: dict, ynn: str, x: jax.Array):
  module = make_backbone(name, x.shape[1:], rngs=nnx.Rngs(0), **kwargs)
  graphdef, state = nnx.split(module)

  def features(state, x):
    return nnx.merge(graphdef, state)(x, train=False).pooled

  options = xla_cpu.options_for(jax.devices(), ynn_fusions=ynn)
  compiled = jax.jit(features).lower(state, x).compile(options or {})
  return lambda n: [jax.block_until_ready(compiled(state, x)) for _ in range(n)]


def _torch(name: str, x: np.ndarray, channels_last: bool):
  import _torch_reference as ref  # noqa: PLC0415
  torch = ref.torch
  model = getattr(ref.torchvision.models, name)().eval()
  if name == "resnet50":
    model.fc = torch.nn.Identity()        # features: the global average
  else:
    model.classifier = torch.nn.Identity()
  t = ref.nchw(x)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
    t = t.contiguous(memory_format=torch.channels_last)

  def run(n):
    with torch.inference_mode():
      for _ in range(n):
        model(t)

  return run


def bench_models(args) -> dict:
  import _torch_reference as ref  # noqa: PLC0415
  ref.torch.set_num_threads(args.torch_threads)
  x = np.random.default_rng(0).normal(size=(args.batch, args.image_size, args.image_size, 3))
  x = x.astype(np.float32)
  xj = jnp.asarray(x)
  results = {}
  for name in args.models.split(","):
    runners = {}
    for v in args.variants.split(","):
      kwargs, ynn = VARIANTS[v]
      t0 = time.perf_counter()
      runners[v] = _ours(name, kwargs, ynn, xj)
      print(f"{name} {v}: built and compiled in {time.perf_counter() - t0:.1f} s", flush=True)
    runners["torch_nchw"] = _torch(name, x, channels_last=False)
    runners["torch_channels_last"] = _torch(name, x, channels_last=True)
    times = time_interleaved(runners, steps=1, repeats=args.repeats, warmup=1)
    res = {k: summarize(v, steps=1, batch=args.batch) for k, v in times.items()}
    for k in res:
      res[k]["seconds"] = [round(t, 4) for t in times[k]]
    for k in list(res):
      if k.startswith("ours"):
        for t in ("torch_nchw", "torch_channels_last"):
          res[k][f"ratio_vs_{t}"] = res[k]["images_per_s"] / res[t]["images_per_s"]
    results[name] = res
    for k, r in res.items():
      ratios = " ".join(f"{t[9:]} {r[t]:.2f}x" for t in r if t.startswith("ratio_vs_"))
      print(f"{name:13s} {k:26s} {r['images_per_s']:7.1f} img/s  "
            f"({r['median_s_per_step'] * 1e3:7.0f} ms/batch) {ratios}", flush=True)
  return results


def bench_depthwise(args) -> dict:
  import _torch_reference as ref  # noqa: PLC0415
  torch = ref.torch
  torch.set_num_threads(args.torch_threads)
  out = {}
  options = xla_cpu.options_for(jax.devices(), ynn_fusions="dots_reductions") or {}
  for hw, c in DEPTHWISE_SHAPES:
    for stride in (1, 2):
      rng = np.random.default_rng(0)
      x = rng.normal(size=(args.batch, hw, hw, c)).astype(np.float32)
      k = rng.normal(size=(3, 3, c)).astype(np.float32)
      xj, kj = jnp.asarray(x), jnp.asarray(k)
      fns = {}
      for impl, f in (("shifted", depthwise_conv2d_shifted), ("lax", depthwise_conv2d_lax)):
        compiled = jax.jit(lambda a, b, f=f: f(a, b, stride=stride, padding=1)).lower(
            xj, kj).compile(options)
        fns[impl] = compiled
      diff = float(jnp.abs(fns["shifted"](xj, kj) - fns["lax"](xj, kj)).max())
      conv = torch.nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False).eval()
      tx = ref.nchw(x)
      tx_cl = tx.contiguous(memory_format=torch.channels_last)
      conv_cl = torch.nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False).eval().to(
          memory_format=torch.channels_last)

      def jrun(f):
        return lambda n: [jax.block_until_ready(f(xj, kj)) for _ in range(n)]

      def trun(m, t):
        def run(n):
          with torch.inference_mode():
            for _ in range(n):
              m(t)
        return run

      runners = {"ours_shifted": jrun(fns["shifted"]), "xla_grouped_conv": jrun(fns["lax"]),
                 "torch_nchw": trun(conv, tx), "torch_channels_last": trun(conv_cl, tx_cl)}
      times = time_interleaved(runners, steps=1, repeats=args.dw_repeats, warmup=1)
      ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
      key = f"{hw}x{hw}x{c}_stride{stride}"
      out[key] = {"median_ms": ms, "max_abs_diff_vs_lax": diff,
                  "speedup_vs_lax": ms["xla_grouped_conv"] / ms["ours_shifted"]}
      print(f"depthwise {key:22s} " + "  ".join(f"{n} {v:8.2f} ms" for n, v in ms.items())
            + f"  max|diff| {diff:.1e}", flush=True)
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="mobilenet_v2,resnet50")
  p.add_argument("--variants", default=",".join(VARIANTS))
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--dw_repeats", type=int, default=5)
  p.add_argument("--torch_threads", type=int, default=2)
  p.add_argument("--no_depthwise", action="store_true")
  p.add_argument("--no_models", action="store_true")
  p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                               "results", "bench_backbones.json"))
  args = p.parse_args(argv)
  report = {"args": vars(args), "machine_before": machine_info(),
            "jax": jax.__version__, "backend": jax.default_backend()}
  if not args.no_models:
    report["models"] = bench_models(args)
  if not args.no_depthwise:
    report["depthwise"] = bench_depthwise(args)
  report["machine_after"] = machine_info()
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  print(f"wrote {args.out}; load average before {report['machine_before']['loadavg_1_5_15']}, "
        f"after {report['machine_after']['loadavg_1_5_15']}")


if __name__ == "__main__":
  main()
