r"""Benchmark: the CIBHash train step in JAX (unhash_jax) beside PyTorch eager, in one process.

Two workloads (docs/methods.md §2.1):

* ``features``: the official CIBHash setting — a frozen VGG-16 whose fc7 features (4096-d, after ReLU)
  are already extracted; the trainable encoder is ``Linear(4096→1024) → ReLU → Linear(1024→64)``,
  batch 64. The features get dropout 0.5 inside the step on both sides (the official code keeps VGG's
  fc7 dropout active while training; ``--feature_dropout 0`` turns it off).
* ``cnn``: the library's ``small_cnn`` backbone (3 stages × 2 [conv3×3 → BN → ReLU], widths 32/64/128)
  with the same hash head, from scratch on 32×32×3 images, batch 128.

What is timed:

(a) ``jax_step`` vs ``torch_eager``: one optimizer step on two *already prepared* views — forward of
    both views, CIBHash loss (STE codes, cosine NT-Xent, stop-gradient Bernoulli KL), backward, Adam
    (lr 1e-3), float32 on both sides. The JAX step is built from the library pieces the way
    ``unhash_jax.train.make_train_step`` is (``nnx.split`` once, a pure ``jax.jit`` step over
    ``(params, rest, opt_state)`` with donation, ``methods.cibhash.compute_loss``) minus the
    augmentation. The PyTorch model and loss below are written to the same math; before timing the
    script checks that both give the same loss and gradients on the same inputs and weights (JAX
    weights copied into torch) and prints the check. On ``features`` (no BatchNorm) the library
    runs both views as one interleaved batch (``methods.cibhash.logits_of_views``); PyTorch is timed
    both ways, as the official code does it (``torch_eager``, one forward per view) and with the same
    batched forward (``torch_eager_batched``), and the ratio is taken against the faster of the two.
    On ``cnn`` PyTorch is also timed with the model and views in the "channels last" memory format
    (``torch_eager_channels_last``, same weights and math), where oneDNN's CPU convolutions are
    faster; again the ratio is against the faster PyTorch. ``jax_step`` is compiled with the
    library's default ``Config.cpu_ynn_fusions``; ``--cpu_ynn_fusions`` adds the same step with
    other YNNPACK fusion sets (``jax_step[<name>]``, :mod:`unhash_jax.xla_cpu`).
(b) ``jax_library_step`` (``cnn`` only, when ``unhash_jax.data.augment`` is importable): the full
    ``unhash_jax.train.make_train_step`` step on a uint8 batch, i.e. (a) plus the on-device two-view
    augmentation. It has no PyTorch counterpart here; it is timed in the same interleaved loop so its
    cost relative to (a) is a same-run figure.
(c) ``conv_bound`` (``cnn`` on CPU, ``--conv_bound``): each side's six convolutions alone (forward,
    filter and input gradients of both views at the step's shapes; PyTorch in channels last) and an
    fp32 2048³ matrix product, beside the time the 1.5× target leaves for the whole step (the
    faster PyTorch step / 1.5). The step can be no faster than its convolutions, so this says how
    far the target is from what each library's convolutions, and the machine's fp32 rate, allow.

Timing: warm-up (compilation) first, then ``--repeats`` rounds of ``--steps`` steps per contender,
interleaved (so machine-load spikes hit both alike), median per contender; JAX is synchronised with
``jax.block_until_ready`` on the final state and loss (PyTorch CPU eager is synchronous; with
``--torch_device cuda`` each timed call ends with ``torch.cuda.synchronize()``).
``torch.set_num_threads(2)``; JAX uses its default CPU thread pool.

Threads matter more than the framework on a loaded machine: with other processes on the 2 cores,
PyTorch's 2 OpenMP threads lose most of their speed (in our runs torch with ``--torch_threads 1`` was
5× faster on ``features`` than with 2), so compare at the best thread setting of each side
(``--torch_threads`` here; for a one-core JAX pin the process, ``taskset -c 0``: in jaxlib 0.10.2
``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"`` leaves XLA:CPU on
both cores, a 2048³ product at 347 vs 350 GFLOP/s, against 177 under ``taskset``) and quote the
machine load.

Usage (the JAX stack plus ``torch==2.13.0`` CPU in one environment: ``pip install -e .
torch==2.13.0`` in the project's venv; on this machine kind pip takes the CPU wheel from disk)::

  python experiments/bench_train_step.py --out experiments/results/bench_train_step.json
  python experiments/bench_train_step.py --quick   # smoke run
  python experiments/bench_train_step.py --torch_device cuda   # on a GPU machine: both on the GPU

Without torch installed the script says so and times the JAX side only.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from absl import app, flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _bench_utils  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from unhash_jax import xla_cpu  # noqa: E402
from unhash_jax.config import Config  # noqa: E402
from unhash_jax.methods import cibhash as cibhash_method  # noqa: E402
from unhash_jax.methods import resolve_config  # noqa: E402
from unhash_jax.methods.contract import BuildContext, StepBatch, StepContext  # noqa: E402
from unhash_jax.optim import RunPlan  # noqa: E402

try:
  import torch
  import torch.nn.functional as F
  from torch import nn
  TORCH_ERROR = None
except ImportError as e:  # pragma: no cover - depends on the environment
  torch = None
  TORCH_ERROR = repr(e)

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", None, "steps per timed repeat (default: features 10, cnn 3)")
flags.DEFINE_integer("repeats", 5, "timed repeats per contender (median reported)")
flags.DEFINE_string("out", None, "write the results as JSON here")
flags.DEFINE_bool("quick", False, "smoke run: 2 steps x 2 repeats")
flags.DEFINE_list("cases", ["features", "cnn"], "workloads: features, cnn")
flags.DEFINE_integer("bits", 64, "code length K")
flags.DEFINE_float("feature_dropout", 0.5, "dropout on the 4096-d features (both sides)")
flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads")
flags.DEFINE_enum("torch_device", "cpu", ["cpu", "cuda"],
                  "where the timed PyTorch contenders run (the equivalence check stays on CPU); "
                  "use cuda beside JAX on a GPU")
flags.DEFINE_bool("check", True, "run the JAX/PyTorch equivalence check before timing")
flags.DEFINE_list("cpu_ynn_fusions", ["xla"],
                  "besides jax_step (the library's default, Config.cpu_ynn_fusions="
                  f"{xla_cpu.DEFAULT_YNN_FUSIONS!r}), also time the step compiled with these "
                  "YNNPACK fusion sets (jax_step[<name>]; unhash_jax.xla_cpu.YNN_FUSIONS; CPU only)")
flags.DEFINE_bool("library_step", True, "also time unhash_jax.train's full step (cnn, needs augment)")
flags.DEFINE_bool("conv_bound", True,
                  "cnn: also time the step's six convolutions alone (forward + gradients) on each "
                  "side and an fp32 2048^3 matrix product, and report the speed target's budget "
                  "against them (CPU only)")

CHECK_STEPS = 3
LOSS_TOL = 1e-5


# ----------------------------------------------------------------------------------------------
# JAX side


def _config(case: str, bits: int, dropout: float) -> Config:
  if case == "features":
    cfg = Config(method="cibhash", dataset="cifar10", backbone="flatten", bits=bits, batch_size=64,
                 model={"hidden": 1024, "feature_dropout": dropout})
  else:
    cfg = Config(method="cibhash", dataset="cifar10", backbone="small_cnn", bits=bits,
                 batch_size=128, image_size=32, model={"hidden": 1024})
  return resolve_config(cfg)


def _input_shape(case: str) -> tuple[int, ...]:
  return (4096,) if case == "features" else (32, 32, 3)


def build_jax(case: str, bits: int, dropout: float, seed: int = 0):
  """Model, its split and the optimizer exactly as unhash_jax.train.create_train_state does."""
  config = _config(case, bits, dropout)
  spec = cibhash_method.CIBHASH
  model = spec.make_model(config, BuildContext(input_shape=_input_shape(case),
                                               num_train=config.batch_size,
                                               rngs=nnx.Rngs(params=seed)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = spec.make_optimizer(config, RunPlan(num_train=config.batch_size,
                                           batch_size=config.batch_size, steps_per_epoch=1,
                                           total_steps=1))
  return model, graphdef, params, rest, tx, config


def _batch(view1, view2) -> StepBatch:
  return StepBatch(views=(view1, view2), position=jnp.arange(view1.shape[0]), tables={})


def _ctx(key, hparams) -> StepContext:
  return StepContext(key=key, step=jnp.int32(0), total_steps=jnp.int32(1), steps_per_epoch=1,
                     num_train=1, hparams=hparams)


def make_jax_step(graphdef, tx, hparams, compiler_options=None):
  """Pure jitted ``step(i, params, rest, opt_state, v1, v2, base_key)``, state donated.

  The body mirrors ``unhash_jax.train.make_train_step`` without the augmentation (and without the
  logging-only metrics): ``fold_in(base_key, step)`` key, merge, ``compute_loss``, Adam.
  """

  def step(i, params, rest, opt_state, view1, view2, base_key):
    key = jax.random.fold_in(base_key, i)

    def loss_fn(p):
      model = nnx.merge(graphdef, p, rest, copy=True)  # fresh Variables at this trace level (BN)
      loss, _ = cibhash_method.compute_loss(model, _batch(view1, view2), _ctx(key, hparams))
      _, _, new_rest = nnx.split(model, nnx.Param, ...)
      return loss, new_rest

    (loss, new_rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return i + 1, params, new_rest, opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1, 2, 3), compiler_options=compiler_options)


def make_jax_loss_and_grads(graphdef, hparams):
  """Non-donating ``(loss, grads)`` at given params (for the equivalence check)."""

  def f(params, rest, view1, view2, key):
    def loss_fn(p):
      model = nnx.merge(graphdef, p, rest, copy=True)  # fresh Variables at this trace level (BN)
      return cibhash_method.compute_loss(model, _batch(view1, view2), _ctx(key, hparams))[0]
    return jax.value_and_grad(loss_fn)(params)

  return jax.jit(f)


def jax_arrays_in_torch_layout(model, case: str) -> dict[str, np.ndarray]:
  """The NNX model's parameters (and BN statistics) named and laid out as the torch model's."""
  a = lambda v: np.array(v[...])  # noqa: E731  (a writable copy, dtype kept)
  out = {}
  for name in ("fc1", "fc2"):
    lin = getattr(model.head, name)
    out[f"head.{name}.weight"] = a(lin.kernel).T.copy()   # [in, out] -> [out, in]
    out[f"head.{name}.bias"] = a(lin.bias)
  if case == "cnn":
    for i, (conv, norm) in enumerate(zip(model.backbone.convs, model.backbone.norms)):
      out[f"backbone.convs.{i}.weight"] = np.transpose(a(conv.kernel), (3, 2, 0, 1)).copy()  # HWIO->OIHW
      out[f"backbone.norms.{i}.weight"] = a(norm.scale)
      out[f"backbone.norms.{i}.bias"] = a(norm.bias)
      out[f"backbone.norms.{i}.running_mean"] = a(norm.mean)
      out[f"backbone.norms.{i}.running_var"] = a(norm.var)
  return out


# ----------------------------------------------------------------------------------------------
# PyTorch side: the same model and loss, written independently.

if torch is not None:

  class TorchSmallCNN(nn.Module):
    """3 stages × 2 [conv3×3 (no bias, padding 1) → BN → ReLU], 2×2 max-pool between, global avg."""

    def __init__(self, in_channels: int = 3, widths=(32, 64, 128)):
      super().__init__()
      convs, norms, c = [], [], in_channels
      for w in widths:
        for _ in range(2):
          convs.append(nn.Conv2d(c, w, 3, padding=1, bias=False))
          # flax momentum 0.9 (weight of the old value) == torch momentum 0.1; eps 1e-5 both.
          norms.append(nn.BatchNorm2d(w, eps=1e-5, momentum=0.1))
          c = w
      self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
      self.num_stages = len(widths)
      self.feature_dim = c

    def forward(self, x):  # x: [B, C, H, W]
      h = x
      for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
        h = F.relu(norm(conv(h)))
        if i % 2 == 1 and i // 2 < self.num_stages - 1:
          h = F.max_pool2d(h, 2)
      return h.mean(dim=(2, 3))

  class TorchFlatten(nn.Module):
    def __init__(self, dim: int):
      super().__init__()
      self.feature_dim = dim

    def forward(self, x):
      return x.reshape(x.shape[0], -1)

  class TorchHashHead(nn.Module):
    def __init__(self, in_features: int, bits: int, hidden: int = 1024):
      super().__init__()
      self.fc1 = nn.Linear(in_features, hidden)
      self.fc2 = nn.Linear(hidden, bits)

    def forward(self, x):
      return self.fc2(F.relu(self.fc1(x)))

  class TorchHashEncoder(nn.Module):
    def __init__(self, backbone: nn.Module, bits: int, *, dropout: float = 0.0):
      super().__init__()
      self.backbone = backbone
      self.head = TorchHashHead(backbone.feature_dim, bits)
      self.dropout = dropout

    def forward(self, x):
      h = self.backbone(x)
      if self.dropout > 0:
        h = F.dropout(h, p=self.dropout, training=self.training)
      return self.head(h)

  def torch_cibhash_loss(logits1, logits2, *, temperature: float = 0.3, kl_weight: float = 1e-3):
    """CIBHash loss from logits: STE codes, cosine NT-Xent (self excluded), stop-grad Bernoulli KL."""

    def codes(logits):
      soft = torch.sigmoid(logits) - 0.5
      hard = torch.where(logits >= 0, 1.0, -1.0).to(logits.dtype)  # sign₀(σ(ℓ) − ½) = sign₀(ℓ)
      return soft + (hard - soft).detach()

    z1, z2 = codes(logits1), codes(logits2)
    n = z1.shape[0]
    z = torch.cat([z1, z2], dim=0)
    z = z * torch.rsqrt(torch.clamp_min((z * z).sum(dim=-1, keepdim=True), 1e-24))
    sim = (z @ z.T) / temperature
    dev = logits1.device
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=dev), float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n, device=dev), torch.arange(n, device=dev)])
    contrastive = F.cross_entropy(sim, positive)

    def kl(lp, lq):  # KL(Bern(σ(lp)) ‖ Bern(σ(lq))) summed over bits
      p = torch.sigmoid(lp)
      return (p * (F.logsigmoid(lp) - F.logsigmoid(lq))
              + (1 - p) * (F.logsigmoid(-lp) - F.logsigmoid(-lq))).sum(dim=-1)

    kl_term = 0.5 * (kl(logits1, logits2.detach()).mean() + kl(logits2, logits1.detach()).mean())
    return contrastive + kl_weight * kl_term

  def build_torch(case: str, bits: int, dropout: float, arrays: dict[str, np.ndarray], *,
                  dtype=torch.float32, device: str = "cpu"):
    backbone = TorchFlatten(4096) if case == "features" else TorchSmallCNN()
    model = TorchHashEncoder(backbone, bits, dropout=dropout if case == "features" else 0.0)
    model = model.to(dtype=dtype, device=device)
    sd = model.state_dict()
    missing = set(k for k in sd if not k.endswith("num_batches_tracked")) - set(arrays)
    if missing:
      raise AssertionError(f"no JAX value for torch tensors {sorted(missing)}")
    with torch.no_grad():
      for k, v in arrays.items():
        sd[k].copy_(torch.from_numpy(v))
    model.train()
    # Adam as optax.adam defaults (b1 .9, b2 .999, eps 1e-8 outside the sqrt); the fastest variant
    # of each device (foreach on CPU, the fused kernel on CUDA).
    fast = {"fused": True} if device == "cuda" else {"foreach": True}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, **fast)
    return model, opt

  def torch_step(model, opt, v1, v2, hparams, *, batched_views: bool = False):
    """One Adam step; ``batched_views`` runs both views as one interleaved batch (only valid for
    a model without BatchNorm), the same trick as ``unhash_jax.methods.cibhash.logits_of_views``."""
    opt.zero_grad(set_to_none=True)
    if batched_views:
      n = v1.shape[0]
      logits = model(torch.stack([v1, v2], dim=1).reshape(2 * n, *v1.shape[1:])).reshape(n, 2, -1)
      logits1, logits2 = logits[:, 0], logits[:, 1]
    else:
      logits1, logits2 = model(v1), model(v2)
    loss = torch_cibhash_loss(logits1, logits2, temperature=hparams["temperature"],
                              kl_weight=hparams["kl_weight"])
    loss.backward()
    opt.step()
    return loss.detach()


# ----------------------------------------------------------------------------------------------


def make_views(case: str, seed: int = 1):
  """Two prepared views: NHWC float32 for JAX and the same values (NCHW for the CNN) for torch."""
  rng = np.random.default_rng(seed)
  if case == "features":
    # fc7 features are post-ReLU: non-negative, about half zeros.
    v = [np.maximum(rng.standard_normal((64, 4096), dtype=np.float32), 0) for _ in range(2)]
    t = v
  else:
    v = [rng.standard_normal((128, 32, 32, 3), dtype=np.float32) for _ in range(2)]
    t = [np.ascontiguousarray(x.transpose(0, 3, 1, 2)) for x in v]
  return v, t


def _grad_rel_err(tm, grads_torch_layout) -> float:
  """max over tensors of max|g_torch − g_jax| / max|g_torch|."""
  err = 0.0
  for name, p in tm.named_parameters():
    g_t = p.grad.numpy()
    err = max(err, float(np.max(np.abs(g_t - grads_torch_layout[name]))
                         / (np.max(np.abs(g_t)) + 1e-30)))
  return err


def _check_once(case: str, bits: int, batch: int | None, dtype) -> dict:
  """Loss and gradients at the same weights/inputs, then CHECK_STEPS Adam steps on both sides."""
  model, graphdef, params, rest, tx, config = build_jax(case, bits, dropout=0.0)
  hparams = dict(config.hparams)
  (v1, v2), (t1, t2) = make_views(case)
  if batch is not None:
    v1, v2, t1, t2 = (x[:batch] for x in (v1, v2, t1, t2))
  v1, v2, t1, t2 = (np.asarray(x, dtype) for x in (v1, v2, t1, t2))
  cast = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)  # noqa: E731
  params, rest = cast(params), cast(rest)
  arrays = jax_arrays_in_torch_layout(nnx.merge(graphdef, params, rest), case)
  key = jax.random.key(0)
  loss_j, grads_j = make_jax_loss_and_grads(graphdef, hparams)(params, rest, v1, v2, key)
  grads_t_layout = jax_arrays_in_torch_layout(nnx.merge(graphdef, grads_j, rest), case)
  tdtype = torch.float64 if dtype == np.float64 else torch.float32
  t1, t2 = torch.from_numpy(t1), torch.from_numpy(t2)
  tm, _ = build_torch(case, bits, 0.0, arrays, dtype=tdtype)
  loss_t = torch_cibhash_loss(tm(t1), tm(t2), temperature=hparams["temperature"],
                              kl_weight=hparams["kl_weight"])
  loss_t.backward()
  out = {"batch": int(v1.shape[0]), "loss_jax": float(loss_j), "loss_torch": loss_t.item(),
         "loss_abs_diff": abs(float(loss_j) - loss_t.item()),
         "grad_max_rel_err": _grad_rel_err(tm, grads_t_layout)}
  # Fresh torch model (the forward above moved its BN running statistics), then the timed steps.
  tm, topt = build_torch(case, bits, 0.0, arrays, dtype=tdtype)
  step = make_jax_step(graphdef, tx, hparams)
  carry = (jnp.zeros((), jnp.int32), params, rest, tx.init(params))
  losses_j, losses_t = [], []
  for _ in range(CHECK_STEPS):
    *carry, l = step(*carry, v1, v2, key)
    losses_j.append(float(l))
    losses_t.append(torch_step(tm, topt, t1, t2, hparams).item())
  final = jax_arrays_in_torch_layout(nnx.merge(graphdef, carry[1], carry[2]), case)
  sd = tm.state_dict()
  out.update({
      "losses_jax": losses_j, "losses_torch": losses_t,
      "max_abs_loss_diff_over_steps": max(abs(a - b) for a, b in zip(losses_j, losses_t)),
      "max_abs_param_diff_after_steps": max(
          float(np.max(np.abs(sd[k].numpy() - final[k]))) for k, _ in tm.named_parameters()),
      "max_abs_bn_running_mean_diff": max(
          [float(np.max(np.abs(sd[k].numpy() - v))) for k, v in final.items()
           if k.endswith("running_mean")] or [0.0]),
  })
  return out


def check_equivalence(case: str, bits: int) -> dict:
  """Same weights and inputs on both sides, dropout off.

  * float32, the benchmark's batch: the loss values must agree to ``LOSS_TOL``. Float32 gradients of
    the CNN agree only to ~1e-2 relative: a few BN outputs sit within rounding of the ReLU kink and
    flip between implementations (the head's gradients agree to ~1e-9), and Adam amplifies that.
  * float64 (both sides), a batch of 16 for the CNN: gradients and the losses/parameters over
    ``CHECK_STEPS`` Adam steps must agree to ~1e-9, which shows the math (STE, cosine NT-Xent, KL,
    BN, pooling, Adam) is the same.
  """
  # Full float32 matmuls on the JAX side (GPU defaults to TF32): this checks the math, not precision.
  with jax.default_matmul_precision("highest"):
    f32 = _check_once(case, bits, None, np.float32)
  with jax.enable_x64(True):
    f64 = _check_once(case, bits, 16 if case == "cnn" else None, np.float64)
  passed = (f32["loss_abs_diff"] <= LOSS_TOL and f64["grad_max_rel_err"] <= 1e-9
            and f64["max_abs_loss_diff_over_steps"] <= 1e-9
            and f64["max_abs_param_diff_after_steps"] <= 1e-9)
  return {"float32": f32, "float64": f64, "passed": bool(passed)}


def make_library_runner(bits: int):
  """Runner for unhash_jax.train.make_train_step on a uint8 batch (None if not importable)."""
  try:
    from unhash_jax import parallel, train
  except ImportError as e:
    return None, f"unhash_jax.train not importable ({e!r}); (b) skipped"
  config = _config("cnn", bits, 0.0)
  mesh = parallel.make_data_mesh(jax.devices()[:1])
  setup, state = train.create_train_state(config, (32, 32, 3), mesh)
  step = train.make_train_step(setup)
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, size=(128, 32, 32, 3), dtype=np.uint8)
  batch = {"image": jax.device_put(images, parallel.data_sharding(mesh))}
  base_key = jax.random.key(0)
  holder = {"state": state}

  def run(n):
    s = holder["state"]
    for _ in range(n):
      s, metrics = step(s, batch, base_key)
    jax.block_until_ready((s, metrics))
    holder["state"] = s

  return run, None


def bench_case(case: str, *, bits: int, dropout: float, steps: int, repeats: int,
               library_step: bool, check: bool = True, conv_bound_on: bool = False) -> dict:
  batch = 64 if case == "features" else 128
  dropout = dropout if case == "features" else 0.0
  result: dict = {"case": case, "steps_per_repeat": steps, "repeats": repeats, "batch": batch, "bits": bits, "feature_dropout": dropout,
                  "input": "[64, 4096] features" if case == "features" else
                  "[128, 32, 32, 3] float32 (torch: [128, 3, 32, 32])"}
  if torch is not None and check:
    t0 = time.perf_counter()
    check = check_equivalence(case, bits)
    result["check"] = check
    f32, f64 = check["float32"], check["float64"]
    print(f"[{case}] equivalence check, same weights & inputs, dropout off:\n"
          f"  float32 batch {f32['batch']}: loss jax {f32['loss_jax']:.7f} torch "
          f"{f32['loss_torch']:.7f} |diff| {f32['loss_abs_diff']:.1e} (tol {LOSS_TOL:g}); grad max "
          f"rel err {f32['grad_max_rel_err']:.1e}; over {CHECK_STEPS} Adam steps max |Δloss| "
          f"{f32['max_abs_loss_diff_over_steps']:.1e}\n"
          f"  float64 batch {f64['batch']}: |Δloss| {f64['loss_abs_diff']:.1e}; grad max rel err "
          f"{f64['grad_max_rel_err']:.1e}; over {CHECK_STEPS} Adam steps max |Δloss| "
          f"{f64['max_abs_loss_diff_over_steps']:.1e}, max |Δparam| "
          f"{f64['max_abs_param_diff_after_steps']:.1e}\n"
          f"  -> {'PASS' if check['passed'] else 'FAIL'} ({time.perf_counter() - t0:.0f} s)",
          flush=True)

  model, graphdef, params, rest, tx, config = build_jax(case, bits, dropout)
  hparams = dict(config.hparams)
  (v1, v2), (t1, t2) = make_views(case)
  runners = {}
  arrays = jax_arrays_in_torch_layout(model, case)   # before the donated step invalidates them
  layers = conv_layers(model) if case == "cnn" else []
  v1, v2 = jax.device_put(v1), jax.device_put(v2)
  base_key = jax.random.key(0)

  def jax_runner(params, rest, compiler_options=None):
    """``run(n)``: n donated steps from ``(params, rest)``, carried across calls."""
    jstep = make_jax_step(graphdef, tx, hparams, compiler_options=compiler_options)
    carry = {"c": (jnp.zeros((), jnp.int32), params, rest, tx.init(params))}

    def run(n):
      c = carry["c"]
      for _ in range(n):
        *c, loss = jstep(*c, v1, v2, base_key)
      jax.block_until_ready((c, loss))
      carry["c"] = c

    return run

  # Runners donate their state only when they run, so the copies below still see the initial state.
  devices = jax.devices()[:1]
  default = xla_cpu.DEFAULT_YNN_FUSIONS
  runners["jax_step"] = jax_runner(params, rest, xla_cpu.options_for(devices, ynn_fusions=default))
  result["jax_step_cpu_ynn_fusions"] = default
  if devices[0].platform == "cpu":
    for name in FLAGS.cpu_ynn_fusions:
      if name != default:
        runners[f"jax_step[{name}]"] = jax_runner(
            *jax.tree.map(jnp.copy, (params, rest)), xla_cpu.options_for(devices, ynn_fusions=name))
  if torch is not None:
    dev = FLAGS.torch_device
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    tm, topt = build_torch(case, bits, dropout, arrays, device=dev)
    t1, t2 = torch.from_numpy(t1).to(dev), torch.from_numpy(t2).to(dev)

    def run_torch(n):
      for _ in range(n):
        torch_step(tm, topt, t1, t2, hparams)
      sync()

    runners["torch_eager"] = run_torch
    if case == "features":  # no BatchNorm: torch gets the batched-views forward the JAX step uses
      tmb, toptb = build_torch(case, bits, dropout, arrays, device=dev)

      def run_torch_batched(n):
        for _ in range(n):
          torch_step(tmb, toptb, t1, t2, hparams, batched_views=True)
        sync()

      runners["torch_eager_batched"] = run_torch_batched
    else:  # oneDNN's convolutions are faster on NHWC ("channels last") tensors on CPU
      tmc, toptc = build_torch(case, bits, dropout, arrays, device=dev)
      tmc = tmc.to(memory_format=torch.channels_last)
      c1, c2 = (t.contiguous(memory_format=torch.channels_last) for t in (t1, t2))

      def run_torch_channels_last(n):
        for _ in range(n):
          torch_step(tmc, toptc, c1, c2, hparams)
        sync()

      runners["torch_eager_channels_last"] = run_torch_channels_last
  if case == "cnn" and library_step:
    run_lib, why = make_library_runner(bits)
    if run_lib is None:
      print(f"[{case}] {why}", flush=True)
      result["library_step_skipped"] = why
    else:
      runners["jax_library_step"] = run_lib

  t0 = time.perf_counter()
  times = _bench_utils.time_interleaved(runners, steps=steps, repeats=repeats)
  result["timing_s"] = times
  result["summary"] = {k: _bench_utils.summarize(v, steps=steps, batch=batch)
                       for k, v in times.items()}
  if "torch_eager" in times:
    med = {k: statistics.median(v) for k, v in times.items()}
    best_torch = min((k for k in times if k.startswith("torch_eager")), key=med.get)
    result["best_torch"] = best_torch
    result["speedup_jax_over_torch"] = med[best_torch] / med["jax_step"]
    result["speedup_per_repeat_median"] = statistics.median(
        t / j for t, j in zip(times[best_torch], times["jax_step"]))
    for k in times:
      if k.startswith("jax_step["):
        result[f"speedup_{k}_over_torch"] = med[best_torch] / med[k]
  result["bench_seconds"] = time.perf_counter() - t0
  if case == "cnn" and conv_bound_on and jax.devices()[0].platform == "cpu" and (
      torch is None or FLAGS.torch_device == "cpu"):
    best = result.get("best_torch")
    result["conv_bound"] = conv_bound(
        layers, batch=batch, repeats=repeats,
        best_torch_step_s=None if best is None else statistics.median(times[best]) / steps)
    print_conv_bound(result["conv_bound"])
  return result


# ----------------------------------------------------------------------------------------------
# (c) What the speed target leaves for the step, against each side's convolutions alone.

GEMM_N = 2048
TARGET_SPEEDUP = 1.5


def conv_layers(model, image_shape: tuple[int, ...] = (32, 32, 3)) -> list[dict]:
  """The backbone's convolutions as ``{"hw", "cin", "cout", "grad_input"}`` rows, in order.

  Read off the traced forward (``jax.make_jaxpr``), so the shapes are the model's own; the first
  convolution's input is the image, whose gradient no step computes.
  """
  x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  jaxpr = jax.make_jaxpr(lambda x: model.backbone(x, train=False))(x)
  rows = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name != "conv_general_dilated":
      continue
    (_, h, w, cin), (kh, kw, _, cout) = (v.aval.shape for v in eqn.invars)
    if (h, kh, kw) != (w, 3, 3) or tuple(eqn.params["window_strides"]) != (1, 1):
      raise AssertionError(f"conv_flops counts square 3x3 stride-1 convolutions, got input "
                           f"{h}x{w}, kernel {kh}x{kw}, strides {eqn.params['window_strides']}")
    rows.append({"hw": int(h), "cin": int(cin), "cout": int(cout), "grad_input": bool(rows)})
  return rows


def conv_flops(layer: dict, batch: int) -> float:
  """2 × multiply-adds of forward, filter gradient and (if needed) input gradient, one view.

  Only taps that land inside the image count (a 3×3 "SAME" convolution over n positions has
  3n − 2 in-image (position, tap) pairs per axis), as in XLA's cost analysis; counting the zero
  border too would overstate the rate by 4 % at 32×32 and 19 % at 8×8.
  """
  taps = (3 * layer["hw"] - 2) ** 2
  one = 2.0 * batch * taps * layer["cin"] * layer["cout"]
  return one * (3 if layer["grad_input"] else 2)


def conv_runners(layer: dict, batch: int, compiler_options) -> dict:
  """``run(n)`` for each side: n × (forward + gradients of one conv layer on both views)."""
  rng = np.random.default_rng(3)
  hw, cin, cout = layer["hw"], layer["cin"], layer["cout"]
  xs = [rng.standard_normal((batch, hw, hw, cin), dtype=np.float32) for _ in range(2)]
  gs = [rng.standard_normal((batch, hw, hw, cout), dtype=np.float32) for _ in range(2)]
  w = (0.1 * rng.standard_normal((3, 3, cin, cout))).astype(np.float32)

  def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def fwd_bwd(x, k, g):
    y, vjp = jax.vjp(conv, x, k)
    dx, dk = vjp(g)
    return (y, dx, dk) if layer["grad_input"] else (y, dk)  # unused dx is compiled away

  f = jax.jit(fwd_bwd, compiler_options=compiler_options)
  jx, jg, jw = [jnp.asarray(x) for x in xs], [jnp.asarray(g) for g in gs], jnp.asarray(w)

  def run_jax(n):
    jax.block_until_ready([f(x, jw, g) for _ in range(n) for x, g in zip(jx, jg)])

  runners = {"jax": run_jax}
  if torch is not None:
    cl = torch.channels_last
    tx = [torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=cl)
          .requires_grad_(layer["grad_input"]) for x in xs]
    tg = [torch.from_numpy(g).permute(0, 3, 1, 2).contiguous(memory_format=cl) for g in gs]
    tw = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous(memory_format=cl).requires_grad_(True)

    def run_torch(n):
      for _ in range(n):
        for x, g in zip(tx, tg):
          F.conv2d(x, tw, padding=1).backward(g)

    runners["torch_channels_last"] = run_torch
  return runners


def gemm_runners(compiler_options) -> dict:
  a = np.random.default_rng(4).standard_normal((GEMM_N, GEMM_N), dtype=np.float32)
  f = jax.jit(lambda x: x @ x, compiler_options=compiler_options)
  ja = jnp.asarray(a)
  runners = {"jax": lambda n: jax.block_until_ready([f(ja) for _ in range(n)])}
  if torch is not None:
    ta = torch.from_numpy(a)
    runners["torch_channels_last"] = lambda n: [ta @ ta for _ in range(n)]
  return runners


def conv_bound(layers: list[dict], *, batch: int, best_torch_step_s: float | None,
               repeats: int) -> dict:
  """Times each side's convolutions alone and an fp32 GEMM; the target's budget beside them.

  The step runs every convolution of both views forward and backward, so its time is at least the
  convolutions' time. ``budget_ms`` is the faster PyTorch step divided by the target speed-up: a
  JAX step meets the target only if everything it does fits in it.
  """
  opts = xla_cpu.options_for(jax.devices()[:1], ynn_fusions=xla_cpu.DEFAULT_YNN_FUSIONS)
  out: dict = {"batch_per_view": batch, "views": 2, "layers": [], "gemm_n": GEMM_N}
  totals: dict[str, float] = {}
  for layer in layers:
    times = _bench_utils.time_interleaved(conv_runners(layer, batch, opts), steps=2,
                                          repeats=repeats)
    flops = 2 * conv_flops(layer, batch)  # both views
    row = dict(layer, gflop=flops / 1e9)
    for side, ts in times.items():
      ms = 1e3 * statistics.median(ts) / 2
      row[f"{side}_ms"], row[f"{side}_gflop_per_s"] = ms, flops / ms / 1e6
      totals[side] = totals.get(side, 0.0) + ms
    out["layers"].append(row)
  out["gflop"] = sum(r["gflop"] for r in out["layers"])
  for side, ms in totals.items():
    out[f"{side}_convs_ms"], out[f"{side}_convs_gflop_per_s"] = ms, out["gflop"] / ms * 1e3
  gemm = _bench_utils.time_interleaved(gemm_runners(opts), steps=3, repeats=repeats)
  for side, ts in gemm.items():
    out[f"{side}_gemm_gflop_per_s"] = 2 * GEMM_N ** 3 / (statistics.median(ts) / 3) / 1e9
  if best_torch_step_s is not None:
    out["target_speedup"] = TARGET_SPEEDUP
    out["budget_ms"] = 1e3 * best_torch_step_s / TARGET_SPEEDUP
    best_rate = max(v for k, v in out.items() if k.endswith("_gflop_per_s"))
    out["convs_at_best_rate_ms"] = out["gflop"] / best_rate * 1e3
  return out


def print_conv_bound(b: dict) -> None:
  print(f"\n[cnn] the step's convolutions alone (forward + gradients, {b['views']} views × batch "
        f"{b['batch_per_view']}, {b['gflop']:.1f} GFLOP), median ms:")
  print("| layer | GFLOP | JAX ms (GFLOP/s) | PyTorch channels-last ms (GFLOP/s) |")
  print("|---|---|---|---|")
  for r in b["layers"]:
    torch_cell = (f"{r['torch_channels_last_ms']:.1f} ({r['torch_channels_last_gflop_per_s']:.0f})"
                  if "torch_channels_last_ms" in r else "—")
    print(f"| {r['hw']}×{r['hw']} {r['cin']}→{r['cout']} | {r['gflop']:.1f} | {r['jax_ms']:.1f} "
          f"({r['jax_gflop_per_s']:.0f}) | {torch_cell} |")
  line = f"all convolutions: JAX {b['jax_convs_ms']:.0f} ms"
  if "torch_channels_last_convs_ms" in b:
    line += f", PyTorch {b['torch_channels_last_convs_ms']:.0f} ms"
  line += f"; fp32 {b['gemm_n']}³ GEMM: JAX {b['jax_gemm_gflop_per_s']:.0f} GFLOP/s"
  if "torch_channels_last_gemm_gflop_per_s" in b:
    line += f", PyTorch {b['torch_channels_last_gemm_gflop_per_s']:.0f} GFLOP/s"
  print(line)
  if "budget_ms" in b:
    print(f"the {b['target_speedup']:g}× target leaves {b['budget_ms']:.0f} ms for the whole JAX "
          f"step; the convolutions alone take {b['jax_convs_ms']:.0f} ms in JAX, "
          f"{b['torch_channels_last_convs_ms']:.0f} ms in PyTorch and "
          f"{b['convs_at_best_rate_ms']:.0f} ms at the best rate measured above")


def print_table(results: list[dict]) -> None:
  print("\n| workload | implementation | steps/s | images/s | ms/step (median) | speed vs the faster "
        "PyTorch |")
  print("|---|---|---|---|---|---|")
  for r in results:
    best = r.get("best_torch", "torch_eager")
    name = (f"features 4096-d, batch {r['batch']}, dropout {r['feature_dropout']:g}"
            if r["case"] == "features" else f"small CNN 32×32, batch {r['batch']}")
    for impl, s in r["summary"].items():
      ratio = ""
      if best in r["summary"]:  # every contender against the faster PyTorch, same median
        ratio = f"{s['steps_per_s'] / r['summary'][best]['steps_per_s']:.2f}×"
        ratio += " (incl. aug.)" if impl == "jax_library_step" else ""
      print(f"| {name} | {impl} | {s['steps_per_s']:.2f} | {s['images_per_s']:.0f} | "
            f"{1e3 * s['median_s_per_step']:.1f} | {ratio} |")


def main(argv):
  del argv
  default_steps = {"features": 10, "cnn": 3}
  if FLAGS.quick:
    steps_of, repeats = (lambda case: 2), 2
  else:
    steps_of, repeats = (lambda case: FLAGS.steps or default_steps[case]), FLAGS.repeats
  if torch is None:
    print(f"PyTorch is not importable ({TORCH_ERROR}); timing the JAX side only. Install "
          "torch==2.13.0 (CPU) next to the JAX stack to get the comparison.", flush=True)
  else:
    torch.set_num_threads(FLAGS.torch_threads)
  info = _bench_utils.machine_info()
  info.update(jax=jax.__version__, jax_devices=[str(d) for d in jax.devices()],
              torch=None if torch is None else torch.__version__,
              torch_threads=None if torch is None else torch.get_num_threads(),
              torch_device=None if torch is None else FLAGS.torch_device,
              repeats=repeats)
  print(f"machine: {info}", flush=True)
  results = []
  for case in FLAGS.cases:
    if case not in ("features", "cnn"):
      raise app.UsageError(f"unknown case {case!r}; valid: features, cnn")
    results.append(bench_case(case, bits=FLAGS.bits, dropout=FLAGS.feature_dropout,
                              steps=steps_of(case),
                              repeats=repeats, library_step=FLAGS.library_step,
                              check=FLAGS.check, conv_bound_on=FLAGS.conv_bound))
  info["loadavg_after"] = _bench_utils.machine_info()["loadavg_1_5_15"]
  print_table(results)
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w", encoding="utf-8") as f:
      json.dump({"machine": info, "results": results}, f, indent=2)
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
