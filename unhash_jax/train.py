"""Training and evaluation: train state, pure jit-compiled steps, and ``train_and_evaluate``.

The functional NNX loop (Flax's guidance for jit-heavy code): the model is split once into a
``graphdef`` and two states — the trainable parameters and the rest (frozen parameters, batch
statistics) — and ``jax.jit`` compiles a pure step over a :class:`TrainState` pytree. The step key is
``fold_in(base_key, step)`` (big_vision), so a resumed run reproduces an uninterrupted one bit for bit.
Data parallelism: a 1-D ``data`` mesh over every device, batch sharded, state replicated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx, struct

from unhash_jax import checkpointing, parallel, retrieval, xla_cpu
from unhash_jax import logging as run_logging
from unhash_jax.config import Config
from unhash_jax.data import augment, builders, loader, protocols
from unhash_jax.methods import MethodSpec, get_method, resolve_config
from unhash_jax.methods.registry import check_lr_schedule
from unhash_jax.models import IN_BACKBONE


class RunConfigError(ValueError):
  """The config does not fit the data or itself (e.g. a batch larger than the training split)."""


class NonFiniteLossError(RuntimeError):
  """The loss became NaN/inf; training stopped and the last good checkpoint was kept."""


class TrainState(struct.PyTreeNode):
  """Everything a step changes. ``graphdef`` and the optimizer live outside (static)."""

  step: jax.Array        # int32 scalar: number of completed steps
  params: nnx.State      # trainable parameters
  rest: nnx.State        # frozen parameters, batch statistics
  opt_state: optax.OptState


def trainable_filter(config: Config):
  """Parameters the optimizer updates: all, or all outside the backbone when it is frozen."""
  if config.model.get("frozen_backbone", False):
    return nnx.All(nnx.Param, nnx.Not(IN_BACKBONE))
  return nnx.Param


@dataclasses.dataclass(frozen=True)
class Setup:
  """Static pieces of a run: the resolved config, its method, the graph and the optimizer."""

  config: Config
  spec: MethodSpec
  graphdef: Any
  tx: optax.GradientTransformation
  input_shape: tuple[int, int, int]
  mesh: jax.sharding.Mesh


def create_train_state(config: Config, input_shape, mesh: jax.sharding.Mesh, *,
                       init_backbone: bool = True, total_steps: int | None = None
                       ) -> tuple[Setup, TrainState]:
  """Initialises the model and optimizer; the state is placed replicated on ``mesh``.

  ``total_steps`` is the run's length, which a cosine learning-rate schedule decays over.

  With ``config.init_backbone_from`` set and ``init_backbone`` true, the backbone's variables are
  then loaded from that workdir's latest checkpoint (:func:`init_backbone_from`).
  """
  spec = get_method(config.method)
  model = spec.make_model(config, input_shape, nnx.Rngs(params=config.seed))
  if init_backbone and config.init_backbone_from:
    init_backbone_from(model, config.init_backbone_from, backbone=config.backbone)
  graphdef, params, rest = nnx.split(model, trainable_filter(config), ...)
  tx = spec.make_optimizer(config, total_steps)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, rest=rest,
                     opt_state=tx.init(params))
  state = jax.device_put(state, parallel.replicated_sharding(mesh))
  setup = Setup(config=config, spec=spec, graphdef=graphdef, tx=tx,
                input_shape=tuple(input_shape), mesh=mesh)
  return setup, state


def init_backbone_from(model: nnx.Module, workdir: str, *, backbone: str | None = None,
                       step: int | None = None) -> dict[str, Any]:
  """Overwrites ``model``'s backbone with the one saved in another run's checkpoint (in place).

  Every variable under the model's ``backbone`` attribute (:data:`~unhash_jax.models.IN_BACKBONE`:
  parameters and BatchNorm statistics) is replaced by the array of the same path in the latest (or
  ``step``) checkpoint of ``workdir``; the heads keep their initialisation. The source run may be
  of any method (e.g. a CIBHash run pretraining the backbone without labels for NSH's heads) but
  must have the same backbone architecture and input shape. The source workdir is only read.

  Args:
    model: an NNX model whose backbone lives in its ``backbone`` attribute.
    workdir: the source run's workdir.
    backbone: this run's backbone name; when given, it must equal the checkpoint's.
    step: the checkpoint step to read (None = latest).

  Returns:
    ``{"workdir", "step", "method", "backbone", "num_arrays"}`` of the source.

  Raises:
    checkpointing.BackboneInitError (a ValueError): no such workdir/checkpoint, another backbone
      name, or variables whose paths or shapes differ (the message names them).
  """
  arrays, identity, step = checkpointing.read_backbone(workdir, step=step)
  if backbone is not None and identity.get("backbone") not in (None, backbone):
    raise checkpointing.BackboneInitError(
        f"init_backbone_from: the checkpoint in {workdir!r} has backbone "
        f"{identity.get('backbone')!r}, this run {backbone!r}; both runs need the same backbone.")
  target = nnx.state(model, IN_BACKBONE)
  model_path = lambda path: tuple(str(k) for k in path)  # noqa: E731  (read_backbone's key form)
  paths = {model_path(path): variable for path, variable in nnx.to_flat_state(target)}
  missing = sorted(set(paths) - set(arrays))
  extra = sorted(set(arrays) - set(paths))
  bad_shapes = [f"{'/'.join(p)}: checkpoint {arrays[p].shape}, this model {tuple(v.shape)}"
                for p, v in paths.items() if p in arrays and arrays[p].shape != tuple(v.shape)]
  if missing or extra or bad_shapes:
    problems = []
    if missing:
      problems.append(f"missing in the checkpoint: {', '.join('/'.join(p) for p in missing[:5])}")
    if extra:
      problems.append(f"not in this model: {', '.join('/'.join(p) for p in extra[:5])}")
    if bad_shapes:
      problems.append(f"shape mismatch: {'; '.join(bad_shapes[:5])}")
    raise checkpointing.BackboneInitError(
        f"init_backbone_from: the backbone in {workdir!r} (step {step}, method "
        f"{identity.get('method')!r}) does not fit this model's backbone ({' | '.join(problems)}); "
        f"the same backbone, backbone options and input size are needed.")

  def load(path, variable):
    return variable.replace(value=jnp.asarray(arrays[model_path(path)], dtype=variable.dtype))

  nnx.update(model, nnx.map_state(load, target))
  logging.info("Initialised the backbone (%d arrays) from %s, step %d (method %s).", len(paths),
               workdir, step, identity.get("method"))
  return {"workdir": os.path.abspath(workdir), "step": step, "method": identity.get("method"),
          "backbone": identity.get("backbone"), "num_arrays": len(paths)}


def make_train_step(setup: Setup) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
  """Returns ``train_step(state, batch, base_key) -> (state, metrics)``, jit-compiled, state donated.

  ``batch["image"]`` is uint8 ``[B, H, W, C]``; the two views are augmented inside the step with
  per-example keys drawn from ``fold_in(base_key, state.step)``.
  """
  config, spec, graphdef, tx = setup.config, setup.spec, setup.graphdef, setup.tx
  recipe1, recipe2 = (augment.get_recipe(n) for n in spec.recipe_names(config.dataset))
  image_size = config.image_size
  hparams = dict(config.hparams)

  def train_step(state: TrainState, batch: dict, base_key: jax.Array):
    key = jax.random.fold_in(base_key, state.step)
    aug_key, loss_key = jax.random.split(key)
    view1, view2 = augment.two_views(batch["image"], aug_key, recipe1, recipe2,
                                     out_size=image_size)

    def loss_fn(params):
      model = nnx.merge(graphdef, params, state.rest, copy=True)
      loss, aux = spec.compute_loss(model, view1, view2, key=loss_key, hparams=hparams)
      _, _, new_rest = nnx.split(model, trainable_filter(config), ...)
      return loss, (aux, new_rest)

    (loss, (aux, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads),
               "param_norm": optax.tree.norm(params)}
    new_state = state.replace(step=state.step + 1, params=params, rest=rest, opt_state=opt_state)
    return new_state, metrics

  replicated = parallel.replicated_sharding(setup.mesh)
  return jax.jit(train_step, donate_argnums=0, out_shardings=(replicated, replicated),
                 compiler_options=_compiler_options(setup))


def make_encode_fn(setup: Setup) -> Callable[[TrainState, jax.Array], jax.Array]:
  """Returns jitted ``encode(state, images uint8 [B,H,W,C]) -> float32 [B, bits]`` (test transform)."""
  config, spec, graphdef = setup.config, setup.spec, setup.graphdef
  recipe = augment.get_recipe(spec.recipe_names(config.dataset)[0])

  def encode(state: TrainState, images: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state.params, state.rest)
    x = augment.eval_preprocess(images, recipe, out_size=config.image_size)
    return spec.encode(model, x).astype(jnp.float32)

  return jax.jit(encode, compiler_options=_compiler_options(setup))


def _compiler_options(setup: Setup) -> dict[str, str] | None:
  return xla_cpu.options_for(setup.mesh.devices.flat, ynn_fusions=setup.config.cpu_ynn_fusions)


def encode_indices(encode_fn, state: TrainState, source: builders.Source, indices: np.ndarray,
                   *, batch_size: int, mesh) -> np.ndarray:
  """Real-valued codes ``[len(indices), bits]`` (numpy, in the order of ``indices``)."""
  chunks = []
  for batch in loader.eval_batches(source, indices, batch_size=batch_size, mesh=mesh):
    codes = encode_fn(state, batch["image"])
    codes = _to_host(codes)
    mask = _to_host(batch["mask"]).astype(bool)
    chunks.append(codes[mask])
  codes = np.concatenate(chunks, axis=0) if chunks else np.zeros((0, 0), np.float32)
  if len(codes) != len(indices):
    raise AssertionError(f"encoded {len(codes)} items for {len(indices)} indices")
  return codes


def _to_host(x) -> np.ndarray:
  """A global array as one numpy array on every host (all-gathered across processes)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def _eval_batch_size(config: Config) -> int:
  n = jax.device_count()
  return max(n, int(math.ceil(config.eval_batch_size / n)) * n)


def evaluate_split(setup: Setup, encode_fn, state, source, query_idx, database_idx, topk,
                   **eval_kwargs) -> tuple[dict, np.ndarray, np.ndarray]:
  """Encodes both sides and runs the Hamming-ranking evaluator. Returns (metrics, q codes, db codes)."""
  bs = _eval_batch_size(setup.config)
  q = encode_indices(encode_fn, state, source, query_idx, batch_size=bs, mesh=setup.mesh)
  db = encode_indices(encode_fn, state, source, database_idx, batch_size=bs, mesh=setup.mesh)
  metrics = retrieval.evaluate(q, db, source.labels[query_idx], source.labels[database_idx],
                               topk=topk, **eval_kwargs)
  return metrics, q, db


def _scalars(metrics: dict) -> dict[str, float | int]:
  """The scalar entries of an evaluator result (ints stay ints)."""
  out = {}
  for k, v in metrics.items():
    if isinstance(v, (bool, np.bool_)):
      continue
    if isinstance(v, (int, np.integer)):
      out[k] = int(v)
    elif isinstance(v, (float, np.floating)):
      out[k] = float(v)
  return out


def _identity(config: Config) -> dict[str, Any]:
  return {k: getattr(config, k) for k in checkpointing.IDENTITY_FIELDS}


def _plan(config: Config, num_train: int) -> tuple[int, int]:
  """(steps_per_epoch, total_steps); the training remainder is dropped.

  Raises:
    RunConfigError: fewer training images than one batch, or a learning-rate schedule that does
      not fit the run (:func:`~unhash_jax.methods.registry.check_lr_schedule`).
  """
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch < 1:
    raise RunConfigError(f"the training split has {num_train} images, fewer than one batch of "
                         f"{config.batch_size}; lower --batch_size.")
  total = int(config.steps if config.steps else config.epochs * steps_per_epoch)
  try:
    check_lr_schedule(config, total)
  except ValueError as e:
    raise RunConfigError(str(e)) from None
  return steps_per_epoch, total


def check_batch_size(batch_size: int) -> None:
  n = jax.device_count()
  if batch_size < 1 or batch_size % n:
    raise ValueError(f"batch size {batch_size} is not divisible by the number of devices ({n}); "
                     f"choose a multiple of {n}.")


def train_and_evaluate(config: Config, workdir: str) -> dict[str, Any]:
  """Trains ``config.method`` and evaluates it on the protocol's query/database split.

  Resumes from ``workdir/checkpoints`` when present (refusing a checkpoint of another method, bit
  length, dataset or backbone). Writes ``config.json``, ``metrics.jsonl``, TensorBoard events,
  checkpoints, and at the end ``results.json``, ``codes.npz`` and ``pr_curve.png``.

  Returns:
    The flat results dict that is written to ``results.json``.
  """
  config = resolve_config(config)
  if config.protocol is None:
    config = config.replace(protocol=protocols.DEFAULT_PROTOCOL[config.dataset])
  check_batch_size(config.batch_size)
  writer_process = run_logging.is_writer()
  logging.info("Process %d/%d, %d local / %d global devices (%s), workdir %s",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform, workdir)

  source = builders.load_source(config.dataset, data_dir=config.data_dir, archive=config.archive)
  splits = protocols.make_splits(config.protocol, source, seed=config.split_seed,
                                 val_fraction=config.val_fraction)
  steps_per_epoch, total_steps = _plan(config, len(splits.train))
  if config.image_size is None:
    config = config.replace(image_size=source.image_shape[0])
  mesh = parallel.make_data_mesh()
  manager = checkpointing.make_manager(workdir, keep=config.keep_checkpoints)
  start_step = checkpointing.latest_step(manager)
  # A resumed run restores its own backbone: the source is read only for a fresh start.
  setup, state = create_train_state(config, source.image_shape, mesh,
                                    init_backbone=start_step is None, total_steps=total_steps)
  if start_step is not None:
    checkpointing.check_identity(manager, start_step, _identity(config))
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)
    state = checkpointing.restore(manager, start_step, abstract)
    logging.info("Resuming from the checkpoint at step %d in %s", start_step, workdir)
  else:
    start_step = 0

  if writer_process:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json())
  writer = run_logging.MetricsWriter(workdir)
  n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(state.params))
  logging.info("%s on %s/%s, %d bits, backbone %s: %d trainable parameters; %d steps "
               "(%d per epoch, batch %d, lr %g %s, warm-up %d); train %d, val %d+%d, query %d, "
               "database %d, k=%s",
               config.method, config.dataset, config.protocol, config.bits, config.backbone,
               n_params, total_steps, steps_per_epoch, config.batch_size, config.learning_rate,
               config.lr_schedule, config.warmup_steps, len(splits.train),
               len(splits.val_query), len(splits.val_database), len(splits.query),
               len(splits.database), splits.topk)

  train_step = make_train_step(setup)
  encode_fn = make_encode_fn(setup)
  base_key = jax.random.key(config.seed)
  identity = _identity(config)

  def validate(st) -> float:
    m, _, _ = evaluate_split(setup, encode_fn, st, source, splits.val_query, splits.val_database,
                             splits.topk)
    return float(m["map"])

  best = {"val_map": -1.0, "step": -1, "state": None}
  pending: list[tuple[int, dict]] = []   # per-step metrics still on device

  def flush_pending() -> dict[str, float] | None:
    """Pulls pending step metrics to the host; raises on the first non-finite loss."""
    if not pending:
      return None
    host = jax.device_get([m for _, m in pending])
    for (s, _), m in zip(pending, host):
      if not np.isfinite(m["loss"]):
        last = checkpointing.latest_step(manager)
        raise NonFiniteLossError(
            f"the loss became non-finite ({m['loss']}) at step {s}; training stopped. The last "
            f"good checkpoint is {'step %d' % last if last is not None else 'none'} in "
            f"{checkpointing.checkpoint_dir(workdir)} (kept). Try a lower --learning_rate.")
    mean = {k: float(np.mean([h[k] for h in host])) for k in host[-1]}
    pending.clear()
    return mean

  progress = run_logging.Progress(first_step=start_step, total_steps=total_steps,
                                  batch_size=config.batch_size)
  batches: Iterator[dict] = loader.train_batches(
      source, splits.train, batch_size=config.batch_size, seed=config.seed,
      start_step=start_step, mesh=mesh)
  if start_step < total_steps:
    logging.info("Compiling the train step (first step is slower)...")
  t0 = time.perf_counter()
  try:
    for step in range(start_step, total_steps):
      batch = next(batches)
      state, metrics = train_step(state, batch, base_key)
      done = step + 1
      pending.append((done, metrics))
      is_last = done == total_steps
      log_now = done % config.log_every == 0 or is_last or done == start_step + 1
      eval_now = bool(config.eval_every) and (done % config.eval_every == 0 or is_last)
      ckpt_now = (bool(config.checkpoint_every) and done % config.checkpoint_every == 0) or is_last
      if log_now or eval_now or ckpt_now:
        mean = flush_pending()
        if done == start_step + 1:
          logging.info("First step (compilation included) took %.1f s.", time.perf_counter() - t0)
          progress.update(done)  # restart the rate clock after compilation
        elif log_now and mean is not None:
          rates = progress.update(done)
          writer.write(done, {**{f"train/{k}": v for k, v in mean.items()},
                              "train/steps_per_sec": rates["steps_per_sec"]})
          logging.info("step %d/%d  %s  %.1f steps/s  %.0f images/s  ETA %s", done, total_steps,
                       "  ".join(f"{k} {v:.4g}" for k, v in mean.items()),
                       rates["steps_per_sec"], rates["images_per_sec"],
                       run_logging.format_eta(rates["eta_sec"]))
      ckpt_metrics = None
      if eval_now:
        val_map = validate(state)
        writer.write(done, {"val/map": val_map})
        logging.info("step %d: validation mAP@%s = %.4f (best %.4f)", done, splits.topk or "all",
                     val_map, max(val_map, best["val_map"]))
        ckpt_metrics = {"val_map": val_map}
        if val_map > best["val_map"]:
          best.update(val_map=val_map, step=done,
                      state=jax.device_get(state) if config.select_on_val else None)
      if ckpt_now:
        checkpointing.save(manager, done, state, identity=identity, metrics=ckpt_metrics)
  finally:
    # Stop the prefetch thread now: a daemon thread still inside XLA's C++ when the interpreter exits
    # aborts the process ("FATAL: exception not rethrown").
    batches.close()
    checkpointing.wait(manager)
    progress.close()
  train_seconds = time.perf_counter() - t0

  if config.select_on_val and best["state"] is not None:
    logging.info("Evaluating the best validation state (step %d, val mAP %.4f)", best["step"],
                 best["val_map"])
    state = jax.device_put(best["state"], parallel.replicated_sharding(mesh))

  metrics, q_codes, db_codes = evaluate_split(setup, encode_fn, state, source, splits.query,
                                              splits.database, splits.topk)
  results = {"method": config.method, "dataset": config.dataset, "protocol": config.protocol,
             "bits": config.bits, "topk": metrics.get("topk", splits.topk),
             "map": float(metrics["map"]), "backbone": config.backbone,
             "tie_policy": "index", "steps": total_steps, "train_seconds": train_seconds,
             "best_val_map": best["val_map"] if best["step"] >= 0 else None,
             **{k: v for k, v in _scalars(metrics).items()
                if k not in ("map", "topk", "bits")}}
  if writer_process:
    with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2)
    np.savez_compressed(
        os.path.join(workdir, "codes.npz"),
        query_codes=np.asarray(retrieval.binarize(q_codes)),
        database_codes=np.asarray(retrieval.binarize(db_codes)),
        query_labels=source.labels[splits.query], database_labels=source.labels[splits.database],
        query_index=np.asarray(splits.query), database_index=np.asarray(splits.database))
    retrieval.plot_pr_curve(metrics, os.path.join(workdir, "pr_curve.png"))
  writer.write(total_steps, {f"test/{k}": v for k, v in _scalars(metrics).items()})
  writer.close()
  return results
