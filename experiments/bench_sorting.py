"""Forward + backward time of soft_rank: unhash_jax vs torchsort vs NeuralSort (run by hand).

Times ``grad(sum(w * soft_rank(x)))`` (L2, strength 1, x ~ N(0, 1), float32) for the sizes of
the issue, our pure-JAX PAV beside torchsort's C++ CPU extension and a NeuralSort-in-JAX
baseline, interleaved in one process (the machine is shared: compare ratios, not absolutes), then
the scaling of ours and torchsort from n = 256 to 16,384 at a fixed batch.

torch/torchsort are not dependencies of unhash_jax; run from the repository root with a venv
that has both jax and torchsort, e.g.::

  /work/venv-bench/bin/python experiments/bench_sorting.py

torchsort is skipped with a message if it is not importable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from unhash_jax import sorting  # noqa: E402

try:
  import torch
  import torchsort
except ImportError as e:  # pragma: no cover - depends on the venv
  torch = torchsort = None
  TORCHSORT_MISSING = f"torchsort not importable ({e}); its column is skipped"
else:
  TORCHSORT_MISSING = None

SIZES = [(64, 256), (256, 256), (64, 1024), (256, 1024), (256, 4096), (16, 16384)]
SCALING_BATCH = 16
SCALING_N = [256, 1024, 4096, 16384]
NEURALSORT_MAX_ENTRIES = 2**27  # B·n² floats; beyond this NeuralSort's [B, n, n] is skipped


def _jax_fn(kind):
  if kind == "ours":
    rank = lambda x: sorting.soft_rank(x, regularization_strength=1.0)  # noqa: E731
  else:  # NeuralSort ranks: r_j = Σ_r (r + 1) P[r, j], P sorted ascending.
    def rank(x):
      p = sorting.neuralsort(x, temperature=1.0, descending=False)
      return jnp.einsum("...rj,r->...j", p, jnp.arange(1, x.shape[-1] + 1, dtype=x.dtype))
  return jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(w * rank(x))))


def _timer(kind, x, w):
  if kind == "torchsort":
    xt = torch.from_numpy(np.asarray(x)).requires_grad_(True)
    wt = torch.from_numpy(np.asarray(w))

    def run():
      xt.grad = None
      loss = (wt * torchsort.soft_rank(xt, regularization_strength=1.0)).sum()
      loss.backward()
      return xt.grad
  else:
    f = _jax_fn(kind)
    xj, wj = jnp.asarray(x), jnp.asarray(w)

    def run():
      return jax.block_until_ready(f(xj, wj))
  run()  # compile / warm up
  return run


def _median_ms(run, repeats, budget_s):
  ts = []
  start = time.perf_counter()
  for _ in range(repeats):
    t0 = time.perf_counter()
    run()
    ts.append(time.perf_counter() - t0)
    if time.perf_counter() - start > budget_s:
      break
  return 1e3 * float(np.median(ts)), len(ts)


def _bench(sizes, kinds, repeats, budget_s):
  rows = []
  for b, n in sizes:
    rng = np.random.default_rng(b * n)
    x = rng.normal(size=(b, n)).astype(np.float32)
    w = rng.normal(size=(b, n)).astype(np.float32)
    runs = {}
    row = {"batch": b, "n": n}
    for k in kinds:
      if k == "torchsort" and torchsort is None:
        row[k] = None
        continue
      if k == "neuralsort" and b * n * n > NEURALSORT_MAX_ENTRIES:
        row[k] = None
        row["neuralsort_note"] = f"skipped: [B, n, n] has {b * n * n:.1e} entries"
        continue
      runs[k] = _timer(k, x, w)
    # Interleave ours and torchsort so that load changes on a shared machine hit both alike. The slow
    # NeuralSort baseline runs afterwards on its own: interleaved, its multi-threaded XLA work left the
    # thread pool busy into the next small call and inflated ours at 64×256 by ~2×.
    paired = {k: r for k, r in runs.items() if k != "neuralsort"}
    times = {k: [] for k in paired}
    for _ in range(repeats):
      for k, run in paired.items():
        t0 = time.perf_counter()
        run()
        times[k].append(time.perf_counter() - t0)
      if sum(sum(v) for v in times.values()) > budget_s:
        break
    for k, v in times.items():
      row[k] = 1e3 * float(np.median(v))
    row["repeats"] = len(next(iter(times.values())))
    if "neuralsort" in runs:
      row["neuralsort"] = _median_ms(runs["neuralsort"], repeats, budget_s)[0]
    if row.get("ours") and row.get("torchsort"):
      row["ours_over_torchsort"] = row["ours"] / row["torchsort"]
    if torchsort is not None:  # values agree with torchsort's soft_rank?
      ours = np.asarray(sorting.soft_rank(jnp.asarray(x), regularization_strength=1.0))
      ref = torchsort.soft_rank(torch.from_numpy(x), regularization_strength=1.0).numpy()
      row["max_abs_diff_vs_torchsort"] = float(np.abs(ours - ref).max())
    rows.append(row)
    print(json.dumps(row), flush=True)
  return rows


def _table(rows, cols):
  head = "| B×n | " + " | ".join(cols) + " |"
  out = [head, "|" + "---|" * (len(cols) + 1)]
  for r in rows:
    cells = []
    for c in cols:
      v = r.get(c)
      cells.append("–" if v is None else (f"{v:.2f}" if c.endswith("torchsort") and "over" in c
                                          else f"{v:.2f} ms" if isinstance(v, float) else str(v)))
    out.append(f"| {r['batch']}×{r['n']} | " + " | ".join(cells) + " |")
  return "\n".join(out)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--repeats", type=int, default=15)
  ap.add_argument("--budget-s", type=float, default=30.0, help="time cap per size")
  ap.add_argument("--torch-threads", type=int, default=1,
                  help="torch intra-op threads; 2 threads showed a ~190 ms floor per call from "
                       "256x256 up on the shared 2-core machine, 1 thread did not")
  ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                "bench_sorting.json"))
  args = ap.parse_args()
  if TORCHSORT_MISSING:
    print(TORCHSORT_MISSING, file=sys.stderr)
  else:
    torch.set_num_threads(args.torch_threads)
  main_rows = _bench(SIZES, ["ours", "torchsort", "neuralsort"], args.repeats, args.budget_s)
  scaling = _bench([(SCALING_BATCH, n) for n in SCALING_N], ["ours", "torchsort"], args.repeats,
                   args.budget_s)
  slopes = {}
  for k in ("ours", "torchsort"):
    pts = [(r["n"], r[k]) for r in scaling if r.get(k)]
    if len(pts) > 1:
      ln, lt = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
      slopes[k] = float(np.polyfit(ln, lt, 1)[0])
  result = {
      "what": "median ms of value_and_grad(sum(w * soft_rank(x))), L2, strength 1, float32",
      "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                  "jax": jax.__version__, "torch": getattr(torch, "__version__", None),
                  "torch_threads": args.torch_threads if torch is not None else None,
                  "loadavg_at_end": os.getloadavg()},
      "torchsort_note": TORCHSORT_MISSING,
      "sizes": main_rows,
      "scaling_batch": SCALING_BATCH,
      "scaling": scaling,
      "loglog_slope_time_vs_n": slopes,
  }
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  print(_table(main_rows, ["ours", "torchsort", "neuralsort", "ours_over_torchsort"]))
  print(_table(scaling, ["ours", "torchsort", "ours_over_torchsort"]))
  print("log-log slope of time vs n (1 = linear):", slopes)


if __name__ == "__main__":
  main()
