"""Memory and step time of the NSH loss (docs/methods.md §2.2: P is n³, E is n²·latent_dim).

Reports, for the two ways of computing the sorted gather (``gather="dense"`` materialises
``E [n, n, d]``; ``"gram"`` gets the same numbers from ``[n, n]`` Gram matrices):

* the largest batch ``n`` whose jitted loss forward + backward fits in a memory budget (8 GiB by
  default), from XLA's buffer assignment of the compiled program (``memory_analysis()``: arguments +
  outputs + temporaries), found by bisection — nothing that large is allocated;
* a calibration row: the measured peak RSS growth of a child process that runs one step at a
  moderate ``n``, next to XLA's estimate for the same program;
* the median wall time of forward + backward of the loss alone at batch 64 and 256, and of a whole
  train step of the digits NSH model (MLP backbone, two views, Adam), for each gather.

Usage::

  python experiments/bench_nsh_memory.py                # 32 bits, latent 1024, 8 GiB
  python experiments/bench_nsh_memory.py --bits=64 --budget_gib=8 --reps=5

Timings on shared CPU machines are noisy: the script interleaves the variants and reports medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from unhash_jax.losses import nsh_loss  # noqa: E402

GIB = 1024 ** 3


def _inputs(n: int, bits: int, latent_dim: int, seed: int = 0):
  k = jax.random.split(jax.random.key(seed), 4)
  b1 = jnp.tanh(jax.random.normal(k[0], (n, bits)))
  b2 = jnp.tanh(jax.random.normal(k[1], (n, bits)))
  z1 = jax.random.normal(k[2], (n, latent_dim))
  z2 = jax.random.normal(k[3], (n, latent_dim))
  return b1, b2, z1, z2


def _grad_fn(gather: str):
  return jax.jit(jax.value_and_grad(lambda *a: nsh_loss(*a, gather=gather), argnums=(0, 1, 2, 3)))


def compiled_bytes(n: int, bits: int, latent_dim: int, gather: str) -> int:
  """XLA's total buffer bytes (arguments + outputs + temporaries) of loss forward + backward."""
  shapes = [jax.ShapeDtypeStruct((n, bits), jnp.float32)] * 2 + \
           [jax.ShapeDtypeStruct((n, latent_dim), jnp.float32)] * 2
  mem = _grad_fn(gather).lower(*shapes).compile().memory_analysis()
  return int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
             - mem.alias_size_in_bytes)


def largest_batch(budget: int, bits: int, latent_dim: int, gather: str) -> tuple[int, int]:
  """Bisection on n (a multiple of 8) for ``compiled_bytes(n) <= budget``: (n, bytes)."""
  lo, hi = 8, 8
  while compiled_bytes(hi, bits, latent_dim, gather) <= budget:
    lo, hi = hi, hi * 2
  while hi - lo > 8:
    mid = (lo + hi) // 16 * 8
    if compiled_bytes(mid, bits, latent_dim, gather) <= budget:
      lo = mid
    else:
      hi = mid
  return lo, compiled_bytes(lo, bits, latent_dim, gather)


def _child_peak(n: int, bits: int, latent_dim: int, gather: str) -> dict:
  """Runs one step in a fresh process; peak RSS growth over the post-import baseline (bytes)."""
  code = f"""
import json, resource, sys
sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})
import jax, jax.numpy as jnp
from experiments.bench_nsh_memory import _grad_fn, _inputs
x = _inputs({n}, {bits}, {latent_dim})
f = _grad_fn({gather!r})
compiled = f.lower(*x).compile()
jax.block_until_ready(x)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
jax.block_until_ready(compiled(*x))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"base": base, "peak": peak}}))
"""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def _median_time(fn, args, reps: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def loss_step_times(ns, bits, latent_dim, reps) -> dict:
  out = {}
  for n in ns:
    x = _inputs(n, bits, latent_dim)
    fns = {g: _grad_fn(g) for g in ("dense", "gram")}
    for g, f in fns.items():
      jax.block_until_ready(f(*x))
    samples = {g: [] for g in fns}
    for _ in range(reps):  # interleaved, so drift hits both alike
      for g, f in fns.items():
        samples[g].append(_median_time(f, x, 1))
    for g in fns:
      out[(n, g)] = statistics.median(samples[g])
  return out


def train_step_times(ns, bits, reps) -> dict:
  """A whole jitted train step (augmentation excluded) of the digits NSH model, per gather."""
  import optax
  from flax import nnx

  from unhash_jax.config import Config
  from unhash_jax.losses.nsh import nsh_loss_with_aux
  from unhash_jax.methods import nsh as nsh_method
  from unhash_jax.methods import resolve_config

  config = resolve_config(Config(method="nsh", dataset="digits", bits=bits))
  from unhash_jax.methods.contract import BuildContext
  model = nsh_method.make_model(config, BuildContext(input_shape=(8, 8, 1), num_train=max(ns),
                                                     rngs=nnx.Rngs(params=0)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.adam(1e-3)
  kw = nsh_method.loss_kwargs(config.hparams)
  out = {}
  for n in ns:
    k1, k2 = jax.random.split(jax.random.key(n))
    v1, v2 = jax.random.normal(k1, (n, 8, 8, 1)), jax.random.normal(k2, (n, 8, 8, 1))
    steps = {}
    for gather in ("dense", "gram"):
      def step(params, opt_state, v1, v2, gather=gather):
        def loss_fn(p):
          m = nnx.merge(graphdef, p, rest)
          b1, z1 = m(v1, train=True)
          b2, z2 = m(v2, train=True)
          return nsh_loss_with_aux(b1, b2, z1, z2, gather=gather, **kw)[0]
        loss, g = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss
      steps[gather] = jax.jit(step)
    opt_state = tx.init(params)
    samples = {g: [] for g in steps}
    for g, f in steps.items():
      jax.block_until_ready(f(params, opt_state, v1, v2))
    for _ in range(reps):
      for g, f in steps.items():
        samples[g].append(_median_time(f, (params, opt_state, v1, v2), 1))
    for g in steps:
      out[(n, g)] = statistics.median(samples[g])
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--bits", type=int, default=32)
  parser.add_argument("--latent_dim", type=int, default=1024)
  parser.add_argument("--budget_gib", type=float, default=8.0)
  parser.add_argument("--reps", type=int, default=7)
  parser.add_argument("--calibrate_n", type=int, default=256)
  parser.add_argument("--parts", default="memory,calibrate,time",
                      help="comma-separated subset of memory,calibrate,time")
  parser.add_argument("--json", default=None, help="also write the numbers here")
  args = parser.parse_args()
  parts = set(args.parts.split(","))
  budget = int(args.budget_gib * GIB)
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs; bits "
        f"{args.bits}, latent_dim {args.latent_dim}, float32")
  report = {"bits": args.bits, "latent_dim": args.latent_dim, "budget_gib": args.budget_gib}

  if "memory" in parts:
    _memory(args, budget, report)
  if "calibrate" in parts:
    _calibrate(args, report)
  if "time" in parts:
    _time(args, report)
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)


def _memory(args, budget, report):
  print(f"\nLargest batch whose loss forward+backward fits in {args.budget_gib:g} GiB "
        "(XLA buffer assignment):")
  print("| gather | largest n | XLA bytes at that n | bytes at n=64 | bytes at n=256 |")
  print("|---|---|---|---|---|")
  for gather in ("dense", "gram"):
    n_max, used = largest_batch(budget, args.bits, args.latent_dim, gather)
    b64 = compiled_bytes(64, args.bits, args.latent_dim, gather)
    b256 = compiled_bytes(256, args.bits, args.latent_dim, gather)
    report[f"largest_n_{gather}"] = n_max
    print(f"| {gather} | {n_max} | {used / GIB:.2f} GiB | {b64 / 2**20:.1f} MiB | "
          f"{b256 / 2**20:.0f} MiB |")


def _calibrate(args, report):
  print(f"\nCalibration at n={args.calibrate_n}: measured peak RSS growth of one step vs XLA:")
  print("| gather | XLA estimate | measured peak RSS growth |")
  print("|---|---|---|")
  for gather in ("dense", "gram"):
    est = compiled_bytes(args.calibrate_n, args.bits, args.latent_dim, gather)
    r = _child_peak(args.calibrate_n, args.bits, args.latent_dim, gather)
    report[f"calib_{gather}"] = {"xla": est, "rss_growth": r["peak"] - r["base"]}
    print(f"| {gather} | {est / 2**20:.0f} MiB | {(r['peak'] - r['base']) / 2**20:.0f} MiB |")


def _time(args, report):
  print(f"\nMedian step time (ms), {args.reps} interleaved repetitions:")
  print("| n | loss fwd+bwd, dense | loss fwd+bwd, gram | digits train step, dense | "
        "digits train step, gram |")
  print("|---|---|---|---|---|")
  lt = loss_step_times((64, 256), args.bits, args.latent_dim, args.reps)
  tt = train_step_times((64, 256), args.bits, args.reps)
  for n in (64, 256):
    print(f"| {n} | {lt[(n, 'dense')] * 1e3:.1f} | {lt[(n, 'gram')] * 1e3:.1f} | "
          f"{tt[(n, 'dense')] * 1e3:.1f} | {tt[(n, 'gram')] * 1e3:.1f} |")
    report[f"loss_ms_{n}"] = {g: lt[(n, g)] * 1e3 for g in ("dense", "gram")}
    report[f"train_step_ms_{n}"] = {g: tt[(n, g)] * 1e3 for g in ("dense", "gram")}


if __name__ == "__main__":
  main()
