"""CIFAR-10 (``cifar10-i``) on frozen ImageNet features: build the feature cache, run every row, table.

The rows of ``experiments/results/cifar10_frozen.json`` and the README: CIBHash, NSH, DDH, WCH, HARR,
FDBH (the ``common`` preset on a frozen backbone's feature cache), LSH, PCAH, ITQ, SH (fitted on the
same features), and cosine kNN on the raw pooled features, at 16/32/64 bits. Each row's command is
the ``python -m unhash_jax.main`` command that made it (recorded in the JSON).

  python experiments/cifar10_frozen.py cache          # extract once (resumable; tokens for WCH)
  python experiments/cifar10_frozen.py run cibhash itq --bits 16 32 64
  python experiments/cifar10_frozen.py knn
  python experiments/cifar10_frozen.py table          # JSON + markdown from the finished workdirs

Options name the data (``--archive``, ``--pretrained``), the backbone and image size.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
RESULTS = os.path.join(ROOT, "experiments", "results", "cifar10_frozen.json")
DEEP = ("cibhash", "nsh", "ddh", "wch", "harr", "fdbh")
CLASSICAL = ("lsh", "pcah", "itq", "sh")


def common_flags(args) -> list[str]:
  return [f"--dataset=cifar10", f"--archive={args.archive}", "--preset=common",
          f"--backbone={args.backbone}", f"--pretrained={args.pretrained}",
          f"--image_size={args.image_size}"] + (
              [f"--data_dir={args.data_dir}"] if args.data_dir else [])


def command(args, method: str, bits: int) -> list[str]:
  workdir = os.path.join(args.runs, f"{method}-{args.backbone}{args.image_size}-{bits}b")
  return ["python", "-m", "unhash_jax.main", f"--method={method}", f"--bits={bits}",
          *common_flags(args), f"--workdir={workdir}", *args.extra]


def _data(args):
  """The data set and the cifar10-i splits (the same for every method's ``common`` preset)."""
  from unhash_jax.data import builders, protocols
  config = _config(args, "cibhash")
  source = builders.load_source("cifar10", data_dir=config.data_dir, archive=config.archive)
  return source, protocols.make_splits(config.protocol, source, seed=config.split_seed)


def _config(args, method: str):
  from unhash_jax.config import Config
  from unhash_jax.methods import resolve_config
  return resolve_config(Config(method=method, dataset="cifar10", archive=args.archive,
                               preset="common", backbone=args.backbone,
                               pretrained=args.pretrained, image_size=args.image_size,
                               data_dir=args.data_dir))


def _open(args, source, splits, method: str = "cibhash"):
  """The cache as ``method``'s common preset opens it (with tokens for a token method)."""
  from unhash_jax import cached_training
  from unhash_jax.methods import get_method
  config = _config(args, method)
  return config, cached_training.open_cache(config, source, splits,
                                            tokens=get_method(method).feature_tokens)


def cache(args) -> None:
  """Builds the cache every ``common``-preset row shares: opened as each deep method's preset opens
  it, token methods first (WCH trains on the views' tokens; the others read the pooled parts, and
  CIBHash's and FDBH's clean view the test part). Resumable: run it again after a kill."""
  from absl import logging
  from unhash_jax.methods import get_method
  # The cache reports progress through the standard logging module: route it through absl's
  # handler, or a run whose stderr is not a terminal (no tqdm bar) would show no progress at all.
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  source, splits = _data(args)
  methods = [m for m in args.methods if m in DEEP] or list(DEEP)
  for method in sorted(methods, key=lambda m: not get_method(m).feature_tokens):
    t0 = time.perf_counter()
    _, feature_cache = _open(args, source, splits, method)
    print(json.dumps({"method": method, "cache": feature_cache.directory,
                      "seconds": round(time.perf_counter() - t0)}), flush=True)


def run(args) -> None:
  """Runs each row's command in turn; exits 1 after the last if any failed (a workdir that holds
  a run with other settings refuses the new one: move it aside, or pass ``--runs``)."""
  failed = []
  for method in args.methods:
    for bits in args.bits:
      cmd = command(args, method, bits)
      print(" ".join(shlex.quote(c) for c in cmd), flush=True)
      t0 = time.perf_counter()
      proc = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT)
      print(f"# exit {proc.returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
      if proc.returncode:
        failed.append(f"{method} {bits} bits (exit {proc.returncode})")
  if failed:
    sys.exit(f"cifar10_frozen.py run: {len(failed)} of {len(args.methods) * len(args.bits)} rows "
             f"failed: {', '.join(failed)}")


def knn(args) -> list[dict]:
  """Cosine kNN on the cached pooled test features: the real-valued references (mAP@1000), on the
  raw features and on features centred by the training split's mean (label-free; post-ReLU pooled
  features share a large common component that dominates their cosines)."""
  from unhash_jax import cosine_retrieval
  source, splits = _data(args)
  config, feature_cache = _open(args, source, splits)
  query = feature_cache.test_features(splits.query)
  database = feature_cache.test_features(splits.database)
  mean = feature_cache.test_features(splits.train).astype(np.float64).mean(axis=0)
  rows = []
  for name, shift in (("cosine_knn", None), ("cosine_knn_centered", mean)):
    t0 = time.perf_counter()
    q, db = (query, database) if shift is None else (
        (query - shift).astype(np.float32), (database - shift).astype(np.float32))
    value = cosine_retrieval.cosine_mean_average_precision(
        q, db, source.labels[splits.query], source.labels[splits.database], topk=splits.topk)
    row = {"method": name, "bits": None, "map": value, "backbone": args.backbone,
           "image_size": args.image_size, "protocol": config.protocol, "topk": splits.topk,
           "command": f"python experiments/cifar10_frozen.py knn --backbone={args.backbone} "
                      f"--image_size={args.image_size}",
           "seconds": round(time.perf_counter() - t0, 1),
           "feature_dim": int(feature_cache.feature_dim)}
    print(json.dumps(row), flush=True)
    rows.append(row)
  os.makedirs(args.runs, exist_ok=True)
  with open(_knn_path(args), "w") as f:
    json.dump(rows, f, indent=2)
  return rows


def _knn_path(args) -> str:
  return os.path.join(args.runs, f"cosine_knn-{args.backbone}{args.image_size}.json")


def _written_on(path: str) -> str:
  """The UTC date a file was last written, ``YYYY-MM-DD`` (a row's ``measured``)."""
  return time.strftime("%Y-%m-%d", time.gmtime(os.path.getmtime(path)))


def table(args) -> None:
  """Writes the rows of the finished workdirs (and the kNN file) into the results JSON
  (``--out``; the main table by default, another file for, e.g., another machine's runs). A row
  already there for the same method, length, backbone and image size that was not re-run here is
  kept as it was (each row records its command and the date it was measured)."""
  rows = []
  for method in (*DEEP, *CLASSICAL):
    for bits in (16, 32, 64):
      cmd = command(args, method, bits)
      workdir = cmd[[c.startswith("--workdir=") for c in cmd].index(True)].split("=", 1)[1]
      path = os.path.join(ROOT, workdir, "results.json")
      if not os.path.exists(path):
        continue
      r = json.load(open(path))
      rows.append({"method": method, "bits": bits, "map": r["map"], "backbone": args.backbone,
                   "image_size": args.image_size, "protocol": r["protocol"], "topk": r["topk"],
                   "command": " ".join(shlex.quote(c) for c in cmd),
                   "train_seconds": r.get("train_seconds", r.get("fit_seconds")),
                   "map@ddh_full": r.get("map@ddh_full"),
                   "measured": _written_on(path)})
  knn_path = _knn_path(args)
  if os.path.exists(knn_path):
    knn_rows, written = json.load(open(knn_path)), _written_on(knn_path)
    for r in knn_rows if isinstance(knn_rows, list) else [knn_rows]:
      rows.append({**r, "measured": r.get("measured", written)})

  def ident(r):
    return r["method"], r["bits"], r["backbone"], r["image_size"]

  if not rows:
    print(f"cifar10_frozen.py table: no finished runs under {args.runs} (nor a kNN file); "
          f"{args.out} keeps its rows.", file=sys.stderr)
  new = {ident(r) for r in rows}
  previous = json.load(open(args.out)) if os.path.exists(args.out) else {"rows": []}
  order = {m: i for i, m in enumerate((*DEEP, *CLASSICAL, "cosine_knn", "cosine_knn_centered"))}
  merged = sorted([r for r in previous["rows"] if ident(r) not in new] + rows,
                  key=lambda r: (r["backbone"], r["image_size"], order.get(r["method"], 99),
                                 r["bits"] or 0))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"rows": merged}, f, indent=2)
  for r in merged:
    print(f"| {r['method']} | {r['bits']} | {r['map']:.4f} | {r['backbone']} {r['image_size']} |")


def add_data_flags(parser: argparse.ArgumentParser) -> None:
  """The flags naming the data and the frozen backbone (what :func:`_data` and :func:`_open` read)."""
  parser.add_argument("--archive", default=os.path.join(SHARED, "cifar10-jpeg.tar.gz"))
  parser.add_argument("--pretrained", default=os.path.join(SHARED, "mobilenet_v2-b0353104.pth"))
  parser.add_argument("--backbone", default="mobilenet_v2")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--data_dir", default=None)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("what", choices=("cache", "run", "knn", "table"))
  parser.add_argument("methods", nargs="*", default=list(DEEP + CLASSICAL))
  parser.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
  add_data_flags(parser)
  parser.add_argument("--runs", default="runs/cifar10_frozen")
  parser.add_argument("--out", default=RESULTS, help="the JSON that `table` writes")
  parser.add_argument("--extra", default="", help='more flags for every run, one string: '
                      '--extra="--eval_every=1000 --epochs=20"')
  args = parser.parse_args()
  args.extra = shlex.split(args.extra)
  {"cache": cache, "run": run, "knn": knn, "table": table}[args.what](args)


if __name__ == "__main__":
  main()
