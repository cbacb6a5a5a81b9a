"""Benchmark of the Hamming-ranking evaluator against a blocked numpy reference and faiss-cpu.

Run by hand (not a test). In one process, for each workload it times

* ``lib``: ``unhash_jax.retrieval.mean_average_precision`` (tie policy "index", default ``engine="auto"``,
  i.e. the numba counting-sort engine on CPU), full evaluation from real-valued codes to mAP@k;
* ``lib-jax``: the same with ``engine="jax"`` (the jit-compiled XLA kernels used on accelerators);
* ``lib-average``: ``tie_policy="average"`` (histograms only, no selection; default engine);
* ``numpy``: blocked numpy (float32 matmul distances, ``argpartition`` on the exact key ``d·n + j``,
  then a sort of the k selected, float64 AP);
* ``faiss``: faiss-cpu ``IndexBinaryFlat.search`` + numpy mAP (faiss is a benchmark extra only);

checks that lib, numpy and faiss agree on mAP to 1e-6, prints seconds (median of ``--repeats``) and
query×database pairs per second, and writes everything as JSON.

Workloads (performance.md): database 59,000 codes; 1,000 and 10,000 queries; 16/32/64 bits; 10 classes,
k = 1000; and multi-label (21 labels, k = 5000; 80 labels, k = 5000) with ~2-3 labels per item. Codes are
a class prototype with 20 % of the bits flipped.

Usage:
  python experiments/bench_retrieval.py                  # full table
  python experiments/bench_retrieval.py --quick          # 1,000 queries, 64 bits + one multi-label row
  python experiments/bench_retrieval.py --memory         # 10,000 × 1,000,000 at 64 bits, peak RSS
  python experiments/bench_retrieval.py --memory --engine jax   # the same with the JAX engine
  python experiments/bench_retrieval.py --only labels    # only the multi-label rows
  python experiments/bench_retrieval.py --out experiments/results/bench_retrieval.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from unhash_jax import retrieval  # noqa: E402


def make_workload(nq, ndb, bits, classes, *, multi, seed=0):
  """Prototype codes with 20 % flipped bits; single labels or 2-3 labels per item."""
  rng = np.random.default_rng(seed)
  proto = rng.choice([-1.0, 1.0], size=(classes, bits)).astype(np.float32)
  n = nq + ndb
  first = rng.integers(0, classes, n)
  codes = proto[first] * np.where(rng.random((n, bits)) < 0.2, -1.0, 1.0).astype(np.float32)
  codes *= rng.uniform(0.5, 1.5, size=codes.shape).astype(np.float32)
  if multi:
    labels = np.zeros((n, classes), np.uint8)
    labels[np.arange(n), first] = 1
    extra = rng.integers(1, 3, n)  # 1 or 2 more labels: 2-3 in all
    for e in range(2):
      pick = rng.integers(0, classes, n)
      labels[np.arange(n)[extra > e], pick[extra > e]] = 1
  else:
    labels = first.astype(np.int32)
  return codes[:nq], codes[nq:], labels[:nq], labels[nq:]


def _relevance_np(ql_blk, dl):
  if dl.ndim == 1:
    return ql_blk[:, None] == dl[None, :]
  return (ql_blk.astype(np.float32) @ dl.T.astype(np.float32)) > 0


def _ap_from_rel(rel_sorted):
  cum = np.cumsum(rel_sorted, axis=1, dtype=np.int64)
  k = rel_sorted.shape[1]
  num = np.where(rel_sorted, cum / np.arange(1, k + 1, dtype=np.float64), 0.0).sum(1)
  t = cum[:, -1]
  return np.where(t > 0, num / np.maximum(t, 1), 0.0)


def numpy_map(q, db, ql, dl, k, block=256):
  """Blocked numpy reference: float32 matmul distances, exact-key argpartition, float64 AP."""
  qb = np.where(q >= 0, 1.0, -1.0).astype(np.float32)
  dbb = np.where(db >= 0, 1.0, -1.0).astype(np.float32)
  bits, n = q.shape[1], db.shape[0]
  k = min(k, n)
  aps = []
  arange = np.arange(n, dtype=np.int64)
  for s in range(0, len(q), block):
    d = ((bits - qb[s:s + block] @ dbb.T) / 2).round().astype(np.int64)
    key = d * n + arange
    part = np.argpartition(key, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(part, np.argsort(np.take_along_axis(key, part, 1), axis=1), 1)
    rel = np.take_along_axis(_relevance_np(ql[s:s + block], dl), order, 1)
    aps.append(_ap_from_rel(rel))
  return float(np.concatenate(aps).mean())


def faiss_map(q, db, ql, dl, k, block=1024):
  import faiss  # noqa: PLC0415  (benchmark extra)

  bits = q.shape[1]
  pq = np.packbits(q >= 0, axis=1)
  pdb = np.packbits(db >= 0, axis=1)
  index = faiss.IndexBinaryFlat(bits)
  index.add(pdb)
  _, ids = index.search(pq, min(k, len(db)))
  aps = []
  for s in range(0, len(q), block):
    idx = ids[s:s + block]
    if dl.ndim == 1:
      rel = ql[s:s + block, None] == dl[idx]
    else:
      rel = np.einsum("bc,bkc->bk", ql[s:s + block].astype(np.int32), dl[idx].astype(np.int32)) > 0
    aps.append(_ap_from_rel(rel))
  return float(np.concatenate(aps).mean())


def timed(fn, repeats, warmup=None):
  """Median wall time of ``repeats`` calls; ``warmup`` (e.g. the library on a query subset with the same
  block shapes, so compilation is excluded) runs first when given."""
  if warmup is not None:
    warmup()
  out = None
  ts = []
  for _ in range(repeats):
    t = time.perf_counter()
    out = fn()
    ts.append(time.perf_counter() - t)
  return out, float(np.median(ts)), [float(x) for x in ts]


def run_table(rows, repeats, skip_numpy_above):
  results = []
  for name, nq, ndb, bits, classes, multi, k in rows:
    q, db, ql, dl = make_workload(nq, ndb, bits, classes, multi=multi)
    # The library's variants, each with a warm-up on a query subset with the same block shapes (so
    # compilation is excluded from the timing).
    lib_kwargs = {"lib": {}, "lib-jax": {"engine": "jax"}, "lib-average": {"tie_policy": "average"}}
    sub = slice(0, min(nq, 512))
    impls, warm = {}, {}
    for impl, kw in lib_kwargs.items():
      impls[impl] = functools.partial(retrieval.mean_average_precision, q, db, ql, dl, topk=k, **kw)
      warm[impl] = functools.partial(retrieval.mean_average_precision, q[sub], db, ql[sub], dl, topk=k,
                                     **kw)
    impls["faiss"] = lambda: faiss_map(q, db, ql, dl, k)
    if nq * ndb <= skip_numpy_above:
      impls["numpy"] = lambda: numpy_map(q, db, ql, dl, k)
    row = {"workload": name, "queries": nq, "database": ndb, "bits": bits, "classes": classes,
           "multi_label": multi, "k": k}
    maps = {}
    for impl, fn in impls.items():
      m, sec, all_s = timed(fn, repeats, warm.get(impl))
      maps[impl] = m
      row[impl] = {"map": m, "seconds": sec, "all_seconds": all_s, "pairs_per_s": nq * ndb / sec}
      print(f"  {name:28s} {impl:12s} mAP {m:.6f}  {sec:8.3f} s  {nq * ndb / sec:9.3g} pairs/s",
            flush=True)
    agree = [maps["lib"], maps["lib-jax"], maps["faiss"]] + ([maps["numpy"]] if "numpy" in maps else [])
    row["agree_1e-6"] = bool(max(agree) - min(agree) <= 1e-6)
    row["lib_vs_faiss_speedup"] = row["faiss"]["seconds"] / row["lib"]["seconds"]
    row["lib_jax_vs_faiss_speedup"] = row["faiss"]["seconds"] / row["lib-jax"]["seconds"]
    if "numpy" in maps:
      row["lib_vs_numpy_speedup"] = row["numpy"]["seconds"] / row["lib"]["seconds"]
    results.append(row)
  return results


def print_table(results):
  head = "| workload | bits | queries | k | lib (s) | lib-jax (s) | lib-average (s) | numpy (s) | faiss (s) | lib pairs/s | lib vs faiss | lib vs numpy | mAP agree 1e-6 |"
  print(head)
  print("|---" * (head.count("|") - 1) + "|")
  for r in results:
    np_s = f"{r['numpy']['seconds']:.3f}" if "numpy" in r else "–"
    np_x = f"{r['lib_vs_numpy_speedup']:.1f}×" if "numpy" in r else "–"
    print(f"| {r['workload']} | {r['bits']} | {r['queries']} | {r['k']} | {r['lib']['seconds']:.3f} | "
          f"{r['lib-jax']['seconds']:.3f} | {r['lib-average']['seconds']:.3f} | {np_s} | {r['faiss']['seconds']:.3f} | "
          f"{r['lib']['pairs_per_s']:.3g} | {r['lib_vs_faiss_speedup']:.2f}× | {np_x} | "
          f"{'yes' if r['agree_1e-6'] else 'NO'} |")


def memory_run(nq, ndb, bits, k, engine="auto"):
  """Runs in a fresh process so ru_maxrss is this evaluation's peak."""
  # int8 ±1 codes generated in slices, so the baseline RSS is small and the peak is the evaluation's.
  rng = np.random.default_rng(0)
  proto = rng.choice(np.array([-1, 1], np.int8), size=(10, bits))
  labels = rng.integers(0, 10, nq + ndb).astype(np.int32)
  codes = np.empty((nq + ndb, bits), np.int8)
  for s in range(0, nq + ndb, 100_000):
    lab = labels[s:s + 100_000]
    flip = np.where(rng.random((len(lab), bits), dtype=np.float32) < 0.2, -1, 1).astype(np.int8)
    codes[s:s + 100_000] = proto[lab] * flip
  q, db, ql, dl = codes[:nq], codes[nq:], labels[:nq], labels[nq:]
  retrieval.mean_average_precision(q[:8], db[:4096], ql[:8], dl[:4096], topk=k,
                                   engine=engine)  # imports, small compile
  base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  t = time.perf_counter()
  m = retrieval.mean_average_precision(q, db, ql, dl, topk=k, engine=engine)
  sec = time.perf_counter() - t
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  inputs_mb = (q.nbytes + db.nbytes + ql.nbytes + dl.nbytes) / 2**20
  full_mb = nq * ndb * 4 / 2**20
  return {"engine": engine, "queries": nq, "database": ndb, "bits": bits, "k": k, "map": m,
          "seconds": sec,
          "peak_rss_mb": peak / 1024, "rss_before_eval_mb": base / 1024, "inputs_mb": inputs_mb,
          "full_int32_distance_matrix_mb": full_mb}


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true", help="a fast subset")
  ap.add_argument("--memory", action="store_true", help="10k x 1M at 64 bits in a subprocess; peak RSS")
  ap.add_argument("--memory-child", nargs=4, type=int, help=argparse.SUPPRESS)
  ap.add_argument("--engine", default="auto", help="evaluator engine of the --memory run")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--only", default=None,
                  help="comma-separated substrings; run only workloads whose name contains one")
  ap.add_argument("--out", default=None, help="JSON output path")
  args = ap.parse_args()

  if args.memory_child:
    print(json.dumps(memory_run(*args.memory_child, engine=args.engine)))
    return

  import jax  # noqa: PLC0415

  meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
          "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
          "load_avg_start": os.getloadavg(), "repeats": args.repeats,
          "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
  try:
    import faiss  # noqa: PLC0415
    meta["faiss"] = faiss.__version__
  except ImportError:
    sys.exit("faiss-cpu is needed for the benchmark: pip install 'unhash_jax[bench]'")
  out = {"meta": meta}
  if not args.memory:
    if args.quick:
      rows = [("cifar 1k q", 1000, 59000, 64, 10, False, 1000),
              ("nus-like 21 labels 1k q", 1000, 59000, 32, 21, True, 5000)]
    else:
      rows = []
      for nq in (1000, 10000):
        for bits in (16, 32, 64):
          rows.append((f"cifar {nq // 1000}k q", nq, 59000, bits, 10, False, 1000))
      rows += [("nus-like 21 labels 1k q", 1000, 59000, 32, 21, True, 5000),
               ("coco-like 80 labels 1k q", 1000, 59000, 32, 80, True, 5000)]
    if args.only:
      keep = [w.strip() for w in args.only.split(",")]
      rows = [r for r in rows if any(w in r[0] for w in keep)]
    results = run_table(rows, args.repeats, skip_numpy_above=10_000 * 59_000)
    meta["load_avg_end"] = os.getloadavg()
    print()
    print_table(results)
    out["table"] = results
  else:
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", "10000", "1000000", "64", "1000",
           "--engine", args.engine]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    mem = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(mem, indent=1))
    out["memory"] = mem
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(out, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
