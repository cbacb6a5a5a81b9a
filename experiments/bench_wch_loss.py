"""Memory and time of the WCH loss (docs/methods.md §2.3): chunked patch similarity vs the dense einsum.

(a) **Memory.** XLA's buffer estimate of the jitted loss forward + backward (gradients for the
    codes and both views' tokens), ``jax.jit(...).lower(...).compile().memory_analysis()``:
    temp + argument + output bytes, for :func:`unhash_jax.losses.wch_loss` (Ŝ chunked over the
    second view with ``lax.map``, argmax VJP) and for the same loss with the official dense
    ``einsum("npd,mqd->nmpq")`` Ŝ and autodiff (written below), at batch 32/64/128, P = 196,
    D = 768, K = 64. Nothing that large is allocated: only compiled.

(b) **Time.** One forward + backward of mutual attention → WCH hash head (LayerNorm(768, eps 1e-6)
    of the mean patch token → Linear(768→1024) → ReLU → Linear(1024→K) → tanh) → loss, gradients
    for the head's parameters and both views' input tokens (the backbone is fine-tuned), at batch
    32, P = 196, on CPU:

    * ours: :func:`unhash_jax.ops.mutual_attention` + the head in plain JAX +
      :func:`unhash_jax.losses.wch_loss`, jitted; with XLA's default CPU code generation and with
      the trainer's CPU default (``Config.cpu_ynn_fusions``, YNNPACK matrix products and
      reductions, :mod:`unhash_jax.xla_cpu`);
    * PyTorch eager: a transcription of the official objective written here from the spec (dense
      einsum Ŝ, ``max``/``mean``, softmax weights divided by their diagonal, soft-target CE,
      view-1 regulariser) with the same head and mutual attention, autograd backward.

    The contenders run interleaved in one process (``experiments/_bench_utils.py``); medians are
    reported. Both compute the same loss value on the same inputs (checked, printed).

Usage::

  python experiments/bench_wch_loss.py                  # (a) at 32/64/128 and (b) at 32
  python experiments/bench_wch_loss.py --skip_time --batches=32,64

Writes ``experiments/results/bench_wch_loss.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments._bench_utils import machine_info, time_interleaved, write_json  # noqa: E402
from unhash_jax import ops  # noqa: E402
from unhash_jax.losses import _common, wch_loss  # noqa: E402

MIB = 2 ** 20


# ----------------------------------------------------------------------------------------------
# JAX: the dense reference loss (the official einsum), for the memory comparison.


def dense_wch_loss(t1, t2, x1, x2, *, temperature=0.3, weight_temperature=0.2):
  """The §2.3 objective with Ŝ from the dense [N, N, P, P] einsum and plain autodiff."""
  k = t1.shape[1]
  h1 = t1 + jax.lax.stop_gradient(jnp.where(t1 >= 0, 1.0, -1.0) - t1)
  h2 = t2 + jax.lax.stop_gradient(jnp.where(t2 >= 0, 1.0, -1.0) - t2)
  s_hat = jnp.einsum("npd,mqd->nmpq", _common.l2_normalize(x1), _common.l2_normalize(x2))
  s_hat = s_hat.max(-1).mean(-1)
  q = jax.nn.softmax(s_hat / weight_temperature, axis=-1)
  w = q / jnp.diagonal(q)[:, None]
  logits = h1 @ h2.T / (k * temperature)
  return _common.soft_target_ce(logits, w) + _common.bit_balance(h1) - jnp.mean(h1 * h1)


def compiled_bytes(loss_fn, n: int, p: int, d: int, k: int) -> dict[str, int]:
  shapes = [jax.ShapeDtypeStruct((n, k), jnp.float32)] * 2 + \
           [jax.ShapeDtypeStruct((n, p, d), jnp.float32)] * 2
  grad = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2, 3)))
  mem = grad.lower(*shapes).compile().memory_analysis()
  parts = {"temp": int(mem.temp_size_in_bytes), "argument": int(mem.argument_size_in_bytes),
           "output": int(mem.output_size_in_bytes)}
  parts["total"] = sum(parts.values())
  return parts


# ----------------------------------------------------------------------------------------------
# The hash head (same initialisation on both sides: numpy arrays).


def head_params(seed: int, d: int, hidden: int, k: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  # Kaiming-uniform on fan_out (gain √2) weights, N(0, 1) biases (the official init).
  def kaiming(fan_in, fan_out):
    bound = np.sqrt(2.0) * np.sqrt(3.0 / fan_out)
    return rng.uniform(-bound, bound, size=(fan_in, fan_out)).astype(np.float32)
  return {"ln_scale": np.ones(d, np.float32), "ln_bias": np.zeros(d, np.float32),
          "w1": kaiming(d, hidden), "b1": rng.standard_normal(hidden).astype(np.float32),
          "w2": kaiming(hidden, k), "b2": rng.standard_normal(k).astype(np.float32)}


def jax_head(params, x):
  g = jnp.mean(x, axis=1)
  mu = jnp.mean(g, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(g - mu), axis=-1, keepdims=True)
  g = (g - mu) * jax.lax.rsqrt(var + 1e-6) * params["ln_scale"] + params["ln_bias"]
  return jnp.tanh(jax.nn.relu(g @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"])


def jax_step_loss(params, x1, x2):
  y1, y2 = ops.mutual_attention(x1, x2)
  return wch_loss(jax_head(params, y1), jax_head(params, y2), y1, y2)


# ----------------------------------------------------------------------------------------------
# PyTorch eager transcription of the official objective (dense einsum Ŝ).


def torch_step(torch, params, x1, x2, *, temperature=0.3, weight_temperature=0.2):
  f = torch.nn.functional

  def head(x):
    g = f.layer_norm(x.mean(1), (x.shape[-1],), params["ln_scale"], params["ln_bias"], eps=1e-6)
    return torch.tanh(torch.relu(g @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"])

  a = torch.einsum("nid,njd->nij", f.normalize(x1, dim=-1), f.normalize(x2, dim=-1))
  y1 = torch.einsum("nij,nid->njd", torch.softmax(a, dim=1), x1)   # softmax over view-1 patches
  y2 = torch.einsum("nij,njd->nid", torch.softmax(a, dim=2), x2)   # softmax over view-2 patches
  t1, t2 = head(y1), head(y2)
  h1 = t1 + (torch.where(t1 >= 0, 1.0, -1.0) - t1).detach()
  h2 = t2 + (torch.where(t2 >= 0, 1.0, -1.0) - t2).detach()
  s_hat = torch.einsum("npd,mqd->nmpq", f.normalize(y1, dim=-1), f.normalize(y2, dim=-1))
  s_hat = s_hat.max(dim=-1)[0].mean(dim=-1)
  q = torch.softmax(s_hat / weight_temperature, dim=1)
  w = q / torch.diagonal(q)[:, None]
  logits = h1 @ h2.T / (h1.shape[1] * temperature)
  l_wc = -(w * torch.log_softmax(logits, dim=1)).sum(1).mean()
  reg = (h1.mean(0) ** 2).mean() - (h1 ** 2).mean()
  return l_wc + reg


def time_steps(batch: int, p: int, d: int, k: int, hidden: int, repeats: int, seed: int) -> dict:
  import torch
  from unhash_jax import xla_cpu

  rng = np.random.default_rng(seed)
  x1 = rng.standard_normal((batch, p, d), dtype=np.float32)
  x2 = (x1 + 0.5 * rng.standard_normal((batch, p, d), dtype=np.float32)).astype(np.float32)
  params = head_params(seed, d, hidden, k)

  jparams = jax.tree.map(jnp.asarray, params)
  jx1, jx2 = jnp.asarray(x1), jnp.asarray(x2)
  grad_fn = jax.value_and_grad(jax_step_loss, argnums=(0, 1, 2))
  ynn = xla_cpu.options_for(jax.devices("cpu"), ynn_fusions=xla_cpu.DEFAULT_YNN_FUSIONS)
  jax_fns = {"jax_xla_default": jax.jit(grad_fn)}
  if ynn is not None:
    jax_fns["jax_trainer_default_ynn"] = jax.jit(grad_fn, compiler_options=ynn)

  tparams = {name: torch.tensor(v, requires_grad=True) for name, v in params.items()}
  tx1 = torch.tensor(x1, requires_grad=True)
  tx2 = torch.tensor(x2, requires_grad=True)

  def torch_run(n):
    for _ in range(n):
      for t in list(tparams.values()) + [tx1, tx2]:
        t.grad = None
      loss = torch_step(torch, tparams, tx1, tx2)
      loss.backward()

  def jax_runner(fn):
    def run(n):
      for _ in range(n):
        jax.block_until_ready(fn(jparams, jx1, jx2))
    return run

  values = {name: float(fn(jparams, jx1, jx2)[0]) for name, fn in jax_fns.items()}
  values["torch_eager"] = float(torch_step(torch, tparams, tx1, tx2).detach())
  runners = {name: jax_runner(fn) for name, fn in jax_fns.items()}
  runners["torch_eager"] = torch_run
  times = time_interleaved(runners, steps=1, repeats=repeats, warmup=2)
  medians = {name: statistics.median(ts) for name, ts in times.items()}
  out = {"batch": batch, "patches": p, "dim": d, "bits": k, "hidden": hidden,
         "torch_threads": torch.get_num_threads(), "loss_values": values,
         "seconds_per_step": {n: [round(t, 4) for t in ts] for n, ts in times.items()},
         "median_s_per_step": {n: round(m, 4) for n, m in medians.items()}}
  out["speedup_vs_torch_eager"] = {n: round(medians["torch_eager"] / m, 2)
                                   for n, m in medians.items() if n != "torch_eager"}
  out["target_speedup"] = 1.5
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="32,64,128")
  parser.add_argument("--patches", type=int, default=196)
  parser.add_argument("--dim", type=int, default=768)
  parser.add_argument("--bits", type=int, default=64)
  parser.add_argument("--hidden", type=int, default=1024)
  parser.add_argument("--time_batch", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--skip_memory", action="store_true")
  parser.add_argument("--skip_time", action="store_true")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "results", "bench_wch_loss.json"))
  args = parser.parse_args(argv)
  result = {"machine": machine_info(), "jax": jax.__version__,
            "command": "python experiments/bench_wch_loss.py " + " ".join(argv or sys.argv[1:])}

  if not args.skip_memory:
    rows = []
    for n in (int(b) for b in args.batches.split(",")):
      chunked = compiled_bytes(wch_loss, n, args.patches, args.dim, args.bits)
      dense = compiled_bytes(dense_wch_loss, n, args.patches, args.dim, args.bits)
      row = {"batch": n, "chunked_mib": round(chunked["total"] / MIB, 1),
             "dense_mib": round(dense["total"] / MIB, 1),
             "dense_over_chunked": round(dense["total"] / chunked["total"], 2),
             "chunked_bytes": chunked, "dense_bytes": dense,
             "dense_four_way_tensor_mib": round(n * n * args.patches ** 2 * 4 / MIB, 1)}
      rows.append(row)
      print(f"memory batch {n}: chunked {row['chunked_mib']} MiB, dense {row['dense_mib']} MiB "
            f"({row['dense_over_chunked']}x)", flush=True)
    result["memory"] = rows

  if not args.skip_time:
    timing = time_steps(args.time_batch, args.patches, args.dim, args.bits, args.hidden,
                        args.repeats, args.seed)
    result["time"] = timing
    print(f"time batch {args.time_batch}: {timing['median_s_per_step']} s/step; speedup vs torch "
          f"eager {timing['speedup_vs_torch_eager']}; loss values {timing['loss_values']}",
          flush=True)

  write_json(args.out, result)
  return result


if __name__ == "__main__":
  main()
