"""Training and evaluation: train state, pure jit-compiled steps, and ``train_and_evaluate``.

The functional NNX loop (Flax's guidance for jit-heavy code): the model is split once into a
``graphdef`` and two states — the trainable parameters and the rest (frozen parameters, batch
statistics, method state) — and ``jax.jit`` compiles a pure step over a :class:`TrainState` pytree.
The step key is ``fold_in(base_key, step)`` (big_vision), so a resumed run reproduces an
uninterrupted one bit for bit. Data parallelism: a 1-D ``data`` mesh over every device, batch
sharded, state replicated.

The trainer knows no method by name: everything method-specific comes through the
:class:`~unhash_jax.methods.MethodSpec` hooks (:mod:`unhash_jax.methods.contract`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx, struct

from unhash_jax import (cache, cached_training, checkpointing, evaluators, parallel, retrieval,
                        run_logging, xla_cpu)
from unhash_jax import workdir as workdir_lib
from unhash_jax.config import Config, ConfigError
from unhash_jax.data import augment, builders, loader, protocols
from unhash_jax.methods import MethodSpec, get_method, resolve_config
from unhash_jax.methods.contract import (BuildContext, PrepareContext, StepBatch, StepContext,
                                         check_tables)
from unhash_jax.models import IN_BACKBONE
from unhash_jax.optim import RunPlan, check_schedule, make_plan

# Kept for callers of the earlier API: a config that does not fit the data is a ConfigError.
RunConfigError = ConfigError


class NonFiniteLossError(RuntimeError):
  """The loss became NaN/inf; training stopped and the last good checkpoint was kept."""


class NonFiniteCodesError(NonFiniteLossError):
  """The model's test outputs (codes before ``sign₀``) hold NaN/inf: the model diverged."""


class _StopOnInterrupt:
  """Ctrl-C (SIGINT) during training: the step under way, and a checkpoint save under way, finish,
  then the loop stops (:class:`TrainingInterrupted`); a second Ctrl-C interrupts at once. Only in
  the main thread (elsewhere Python delivers no signals; KeyboardInterrupt keeps its meaning)."""

  def __init__(self):
    self.requested = False
    self._previous = None
    try:
      self._previous = signal.signal(signal.SIGINT, self._handle)
    except ValueError:   # not the main thread
      pass

  def _handle(self, signum, frame):
    if self.requested:
      raise KeyboardInterrupt
    self.requested = True
    logging.warning("Ctrl-C: stopping after this step (press it again to stop at once).")

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)
      self._previous = None


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C (SIGINT) during training; the message says where the last checkpoint is."""


class TrainState(struct.PyTreeNode):
  """Everything a step changes. ``graphdef`` and the optimizer live outside (static)."""

  step: jax.Array        # int32 scalar: number of completed steps
  params: nnx.State      # trainable parameters
  rest: nnx.State        # frozen parameters, batch statistics, method state
  opt_state: optax.OptState


def trainable_filter(config: Config):
  """Parameters the optimizer updates: all, or all outside the backbone when it is frozen."""
  if config.model.get("frozen_backbone", False):
    return nnx.All(nnx.Param, nnx.Not(IN_BACKBONE))
  return nnx.Param


@dataclasses.dataclass(frozen=True)
class Setup:
  """Static pieces of a run: the resolved config, its method, plan, graph and optimizer."""

  config: Config
  spec: MethodSpec
  plan: RunPlan
  graphdef: Any
  tx: optax.GradientTransformation | None   # None for a fitted method
  input_shape: tuple[int, ...]
  mesh: jax.sharding.Mesh


def build_model(config: Config, input_shape, plan: RunPlan) -> nnx.Module:
  """The method's model for a resolved config, initialised from ``config.seed``."""
  spec = get_method(config.method)
  ctx = BuildContext(input_shape=tuple(input_shape), num_train=plan.num_train,
                     rngs=nnx.Rngs(params=config.seed))
  return spec.make_model(config, ctx)


def create_train_state(config: Config, input_shape, mesh: jax.sharding.Mesh, *,
                       plan: RunPlan | None = None, init_backbone: bool = True,
                       model: nnx.Module | None = None) -> tuple[Setup, TrainState]:
  """Initialises the model (or takes ``model``) and the optimizer; the state is replicated on ``mesh``.

  ``plan`` is the run's length (:func:`unhash_jax.optim.make_plan`); without one (tests,
  benchmarks) the training split is taken to be one batch and the run ``config.steps`` (or
  ``config.epochs``) steps long.

  With ``config.init_backbone_from`` set and ``init_backbone`` true, the backbone's variables are
  then loaded from that workdir's latest checkpoint (:func:`init_backbone_from`).
  """
  spec = get_method(config.method)
  if plan is None:
    plan = RunPlan(num_train=config.batch_size, batch_size=config.batch_size, steps_per_epoch=1,
                   total_steps=int(config.steps or config.epochs or 1))
  if model is None:
    model = build_model(config, input_shape, plan)
  if init_backbone and config.init_backbone_from:
    init_backbone_from(model, config.init_backbone_from, backbone=config.backbone)
  graphdef, params, rest = nnx.split(model, trainable_filter(config), ...)
  tx = spec.make_optimizer(config, plan)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, rest=rest,
                     opt_state=tx.init(params))
  state = jax.device_put(state, parallel.replicated_sharding(mesh))
  setup = Setup(config=config, spec=spec, plan=plan, graphdef=graphdef, tx=tx,
                input_shape=tuple(input_shape), mesh=mesh)
  return setup, state


def init_backbone_from(model: nnx.Module, workdir: str, *, backbone: str | None = None,
                       step: int | None = None) -> dict[str, Any]:
  """Overwrites ``model``'s backbone with the one saved in another run's checkpoint (in place).

  Every variable under the model's ``backbone`` attribute (:data:`~unhash_jax.models.IN_BACKBONE`:
  parameters and BatchNorm statistics) is replaced by the array of the same path in the latest (or
  ``step``) checkpoint of ``workdir``; the heads keep their initialisation. The source run may be
  of any method (e.g. a contrastive run pretraining the backbone without labels for another
  method's heads) but must have the same backbone architecture and input shape. The source
  workdir is only read.

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


def make_views(images: jax.Array, key: jax.Array, config: Config) -> tuple[jax.Array, ...]:
  """The ``len(config.view_recipes)`` augmented views of a uint8 batch; view ``v`` uses
  ``jax.random.split(key, num_views)[v]`` (for two views the keys of
  :func:`unhash_jax.data.augment.two_views`)."""
  recipes = config.view_recipes
  keys = jax.random.split(key, len(recipes))
  return tuple(augment.augment(images, k, r, out_size=config.image_size)
               for k, r in zip(keys, recipes))


def make_train_step(setup: Setup) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
  """Returns ``train_step(state, batch, base_key) -> (state, metrics)``, jit-compiled, state donated.

  ``batch["image"]`` is uint8 ``[B, H, W, C]``, ``batch["position"]`` int32 ``[B]`` and
  ``batch["table:<name>"]`` the method's table rows; the views are augmented inside the step with
  per-example keys drawn from ``fold_in(base_key, state.step)``.
  """
  config, spec, graphdef, tx, plan = (setup.config, setup.spec, setup.graphdef, setup.tx,
                                      setup.plan)
  hparams = dict(config.hparams)

  def train_step(state: TrainState, batch: dict, base_key: jax.Array):
    key = jax.random.fold_in(base_key, state.step)
    aug_key, loss_key = jax.random.split(key)
    if f"{cached_training.VIEW_PREFIX}0" in batch:   # cached feature views, sampled on the host
      views = tuple(batch[f"{cached_training.VIEW_PREFIX}{v}"]
                    for v in range(len(config.view_recipes)))
    else:
      views = make_views(batch["image"], aug_key, config)
    position = batch.get("position")
    if position is None:  # a batch without positions (benchmarks, tests): rows 0..B-1
      position = jnp.arange(views[0].shape[0], dtype=jnp.int32)
    step_batch = StepBatch(
        views=views, position=position,
        tables={k[len(loader.TABLE_PREFIX):]: v for k, v in batch.items()
                if k.startswith(loader.TABLE_PREFIX)})
    ctx = StepContext(key=loss_key, step=state.step, total_steps=jnp.int32(plan.total_steps),
                      steps_per_epoch=plan.steps_per_epoch, num_train=plan.num_train,
                      hparams=hparams)

    def loss_fn(params):
      model = nnx.merge(graphdef, params, state.rest, copy=True)
      loss, aux = spec.compute_loss(model, step_batch, ctx)
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
  """Returns jitted ``encode(state, images uint8 [B,H,W,C]) -> float32 [B, bits]`` (test transform
  of the first view's recipe)."""
  config, spec, graphdef = setup.config, setup.spec, setup.graphdef
  recipe = augment.get_recipe(config.view_recipes[0])

  def encode(state: TrainState, images: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state.params, state.rest)
    if config.cached_views:   # the "images" are cached test features already
      x = images
    else:
      x = augment.eval_preprocess(images, recipe, out_size=config.image_size)
    return spec.encode(model, x).astype(jnp.float32)

  return jax.jit(encode, compiler_options=_compiler_options(setup))


def _compiler_options(setup: Setup) -> dict[str, str] | None:
  return xla_cpu.options_for(setup.mesh.devices.flat, ynn_fusions=setup.config.cpu_ynn_fusions)


def encode_indices(encode_fn, state, source: builders.Source, indices: np.ndarray,
                   *, batch_size: int, mesh) -> np.ndarray:
  """Real-valued outputs ``[len(indices), ...]`` of ``encode_fn(state, images)`` (numpy, in the
  order of ``indices``)."""
  chunks = []
  for batch in loader.eval_batches(source, indices, batch_size=batch_size, mesh=mesh):
    codes = encode_fn(state, batch["image"])
    codes = _to_host(codes)
    mask = _to_host(batch["mask"]).astype(bool)
    chunks.append(codes[mask])
  codes = np.concatenate(chunks, axis=0) if chunks else np.zeros((0, 0), np.float32)
  if len(codes) != len(indices):
    raise AssertionError(f"encoded {len(codes)} items for {len(indices)} indices")
  bad = ~np.isfinite(codes)
  if bad.any():
    raise NonFiniteCodesError(
        f"the model's outputs are non-finite for {int(bad.any(axis=1).sum())} of {len(codes)} "
        f"images (NaN/inf codes cannot be ranked): the model diverged. Try a lower --learning_rate.")
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
                   evaluator_names=("map",)) -> tuple[dict, np.ndarray, np.ndarray]:
  """Encodes both sides and runs the named evaluators. Returns (metrics, q codes, db codes)."""
  bs = _eval_batch_size(setup.config)
  q = encode_indices(encode_fn, state, source, query_idx, batch_size=bs, mesh=setup.mesh)
  db = encode_indices(encode_fn, state, source, database_idx, batch_size=bs, mesh=setup.mesh)
  metrics = evaluators.run_evaluators(evaluator_names, q, db, source.labels[query_idx],
                                      source.labels[database_idx], topk=topk)
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
  """What a checkpoint records of its run: the identity fields and the whole resolved config."""
  return {**{k: getattr(config, k) for k in checkpointing.IDENTITY_FIELDS},
          "config": config.to_dict()}


def _due(done: int, every: int) -> bool:
  return bool(every) and done % every == 0


class _PendingMetrics:
  """Per-step metrics still on device; pulled to the host at log/eval/checkpoint points."""

  def __init__(self, on_non_finite: Callable[[int, float], None]):
    self._items: list[tuple[int, dict]] = []
    self._on_non_finite = on_non_finite

  def add(self, step: int, metrics: dict) -> None:
    self._items.append((step, metrics))

  def flush(self) -> dict[str, float] | None:
    """Means over the pending steps; calls ``on_non_finite(step, loss)`` at the first bad loss."""
    if not self._items:
      return None
    host = jax.device_get([m for _, m in self._items])
    for (step, _), m in zip(self._items, host):
      if not np.isfinite(m["loss"]):
        self._on_non_finite(step, float(m["loss"]))
    mean = {k: float(np.mean([h[k] for h in host])) for k in host[-1]}
    self._items.clear()
    return mean


@dataclasses.dataclass
class _BestValidation:
  val_map: float = -1.0
  step: int = -1
  state: Any = None   # host copy of the best state, kept only with select_on_val

  def offer(self, val_map: float, step: int, state, *, keep_state: bool) -> bool:
    """Records ``state`` if ``val_map`` is the best so far; returns whether it was."""
    if val_map > self.val_map:
      self.val_map, self.step = val_map, step
      self.state = jax.device_get(state) if keep_state else None
      return True
    return False


def _abstract(state):
  """Shapes, dtypes and shardings of ``state``: what a checkpoint is restored into."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)


def _progress_record(train_seconds: float, best: _BestValidation) -> dict[str, float | int]:
  """What a checkpoint records of the run so far (:func:`checkpointing.read_progress`)."""
  return {"train_seconds": float(train_seconds), "best_val_map": float(best.val_map),
          "best_step": int(best.step)}


def _pixels_fn(source: builders.Source) -> Callable[[np.ndarray], np.ndarray]:
  def pixels(indices):
    images = source.get_images(np.asarray(indices))
    return images.reshape(len(images), -1).astype(np.float32) / 255.0
  return pixels


def _frozen_features_fn(setup: Setup, state: TrainState, source) -> Callable[[np.ndarray], np.ndarray]:
  """The model's backbone (as initialised: pretrained weights loaded) on test-transformed images;
  on a feature cache, the cached test features."""
  config, graphdef = setup.config, setup.graphdef
  if config.cached_views:
    return source.get_images
  recipe = augment.get_recipe(config.view_recipes[0])

  def features(st, images):
    model = nnx.merge(graphdef, st.params, st.rest)
    x = augment.eval_preprocess(images, recipe, out_size=config.image_size)
    return jax.lax.stop_gradient(model.backbone(x, train=False).pooled).astype(jnp.float32)

  compiled = jax.jit(features, compiler_options=_compiler_options(setup))

  def run(indices):
    t0 = time.perf_counter()
    out = encode_indices(compiled, state, source, np.asarray(indices),
                         batch_size=_eval_batch_size(config), mesh=setup.mesh)
    logging.info("Frozen features of %d images: %s in %.1f s.", len(indices), out.shape,
                 time.perf_counter() - t0)
    return out

  return run


def _weights_id(config: Config) -> str | None:
  """The pretrained weights' SHA-256 (tables and caches built from them are keyed by it)."""
  if not config.pretrained:
    return None
  from unhash_jax.models import weights_digest
  return f"sha256:{weights_digest(config.pretrained)}"


def _prepare_tables(setup: Setup, state: TrainState, source, splits) -> dict[str, np.ndarray]:
  """Runs the method's ``prepare`` hook (tables cached under the data directory)."""
  config, spec = setup.config, setup.spec
  if spec.prepare is None:
    return {}
  directory = os.path.join(config.data_dir or builders.default_data_dir(), "unhash_jax_tables")
  identity = {"dataset": config.dataset, "source": source.name, "num_images": len(source),
              "archive": os.path.basename(config.archive) if config.archive else None,
              "protocol": config.protocol, "split_seed": config.split_seed,
              "num_train": len(splits.train), "backbone": config.backbone,
              "image_size": config.image_size, "view_recipe": config.view_recipes[0],
              "init_backbone_from": config.init_backbone_from, "seed": config.seed,
              "backbone_kwargs": config.model.get("backbone_kwargs", {}),
              "weights": _weights_id(config), "cached_views": config.cached_views}
  ctx = PrepareContext(
      train_indices=np.asarray(splits.train), pixels=_pixels_fn(source),
      frozen_features=_frozen_features_fn(setup, state, source),
      cached=lambda name, key, build: cache.cached_array(directory, name, key, build),
      identity=identity)
  t0 = time.perf_counter()
  tables = check_tables(spec.prepare(config, ctx), len(splits.train), spec.name)
  logging.info("Prepared %s tables %s in %.1f s.", spec.name,
               {k: (np.shape(v), str(np.asarray(v[:0]).dtype)) for k, v in tables.items()},
               time.perf_counter() - t0)
  return tables


def _load_data(config: Config):
  source = builders.load_source(config.dataset, data_dir=config.data_dir, archive=config.archive)
  try:
    splits = protocols.make_splits(config.protocol, source, seed=config.split_seed,
                                   val_fraction=config.val_fraction)
  except ValueError as e:
    raise builders.DataError(f"the data set {source.name!r} cannot hold protocol "
                             f"{config.protocol!r}: {e}") from None
  return source, splits


def _check_resume(manager, workdir: str, config: Config, start_step: int | None
                  ) -> dict[str, tuple[Any, Any]]:
  """Refuses a checkpoint of another run and a resume that would change the training.

  Returns the allowed changes (logged and recorded in ``metrics.jsonl``).
  """
  saved, what = None, None
  if start_step is not None:
    checkpointing.check_identity(manager, start_step, _identity(config))
    saved = checkpointing.read_identity(manager, start_step).get("config")
    what = f"its checkpoint at step {start_step}"
  if saved is None:
    saved = workdir_lib.read_saved_config(workdir)
    what = f"{os.path.join(os.path.abspath(workdir), workdir_lib.CONFIG_FILE)}"
  return workdir_lib.resume_changes(saved, config, what=what) if saved is not None else {}


def train_and_evaluate(config: Config, workdir: str) -> dict[str, Any]:
  """Trains ``config.method`` and evaluates it on the protocol's query/database split.

  Holds the workdir's lock for the whole run (a second run on the same workdir refuses). Resumes
  from ``workdir/checkpoints`` when present, refusing a checkpoint of another method, bit length,
  dataset or backbone (:class:`~unhash_jax.checkpointing.CheckpointError`) and a resume whose
  settings would change the training (:class:`~unhash_jax.workdir.ResumeMismatchError`). Writes
  ``config.json`` (once, when the run starts fresh), ``metrics.jsonl`` (with a record of every
  resume), TensorBoard events, checkpoints, and at the end ``results.json``, ``codes.npz`` and
  ``pr_curve.png``.

  Returns:
    The flat results dict that is written to ``results.json``.

  Raises:
    ConfigError: a config that does not fit itself, the data or the workdir's run.
    TrainingInterrupted: Ctrl-C; the message names the last checkpoint.
  """
  config = resolve_config(config)
  logging.info("Process %d/%d, %d local / %d global devices (%s), workdir %s",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform, workdir)
  source, splits = _load_data(config)
  config = resolve_config(config, image_shape=source.image_shape)
  try:
    plan = make_plan(config, len(splits.train))
    if get_method(config.method).fit is None:
      check_schedule(config, plan)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  inputs = _model_inputs(config, source, splits)
  # Built before the workdir is touched: a backbone that cannot take the input size is a ConfigError.
  model = build_model(config, inputs.input_shape, plan)
  # Nothing was written to the workdir so far; from here on it is this run's alone.
  if run_logging.is_writer():
    with workdir_lib.WorkdirLock(workdir):
      return _train_and_evaluate(config, workdir, inputs, splits, plan, model)
  return _train_and_evaluate(config, workdir, inputs, splits, plan, model)


@dataclasses.dataclass(frozen=True)
class _Inputs:
  """What the model reads: images (augmented on device) or a feature cache (views on the host)."""

  source: Any                   # builders.Source, or cached_training.CachedFeatureSource
  input_shape: tuple[int, ...]
  view_sampler: Callable | None = None


def _model_inputs(config: Config, source, splits) -> _Inputs:
  if not config.cached_views:   # the model sees the test transform's / augmentations' output size
    return _Inputs(source, (config.image_size, config.image_size, source.image_shape[-1]))
  spec = get_method(config.method)
  tokens, trains = spec.feature_tokens, spec.fit is None   # a fit reads only the test part
  feature_cache = cached_training.open_cache(config, source, splits, tokens=tokens, views=trains)
  shape = (feature_cache.token_shape() if tokens else None) or (feature_cache.feature_dim,)
  return _Inputs(cached_training.CachedFeatureSource(source, feature_cache), tuple(shape),
                 cached_training.view_sampler(feature_cache, config, tokens=tokens)
                 if trains else None)


def prepare_inputs(config: Config) -> dict[str, Any]:
  """Builds what a run reads before training, without a workdir: the data set, the feature cache
  (``config.cached_views``) and the method's tables (``--cache_only``). Returns a summary."""
  config = resolve_config(config)
  source, splits = _load_data(config)
  config = resolve_config(config, image_shape=source.image_shape)
  try:
    plan = make_plan(config, len(splits.train))
  except ValueError as e:
    raise ConfigError(str(e)) from None
  inputs = _model_inputs(config, source, splits)
  setup, state = create_train_state(config, inputs.input_shape, parallel.make_data_mesh(),
                                    plan=plan)
  tables = _prepare_tables(setup, state, inputs.source, splits)
  summary = {"dataset": config.dataset, "protocol": config.protocol, "input_shape":
             inputs.input_shape, "tables": {k: list(np.shape(v)) for k, v in tables.items()}}
  if config.cached_views:
    summary["feature_cache"] = inputs.source.cache.directory
  return summary


def _train_and_evaluate(config: Config, workdir: str, inputs: _Inputs, splits, plan: RunPlan,
                        model: nnx.Module) -> dict[str, Any]:
  writer_process = run_logging.is_writer()
  spec = get_method(config.method)
  if spec.fit is not None:
    return _fit_and_evaluate(config, workdir, inputs, splits, plan, model)
  source = inputs.source
  mesh = parallel.make_data_mesh()
  manager = checkpointing.make_manager(workdir, keep=config.keep_checkpoints)
  start_step = checkpointing.latest_step(manager)
  changes = _check_resume(manager, workdir, config, start_step)
  # A resumed run restores its own backbone, so the source is read only for a fresh start, or for
  # the method's prepare hook (its tables come from the initial backbone) when it is still there.
  init_backbone = start_step is None or (spec.prepare is not None and bool(config.init_backbone_from)
                                         and os.path.isdir(config.init_backbone_from))
  setup, state = create_train_state(config, inputs.input_shape, mesh, plan=plan,
                                    init_backbone=init_backbone, model=model)
  tables = _prepare_tables(setup, state, source, splits)
  if start_step is not None:
    state = checkpointing.restore(manager, start_step, _abstract(state))
    logging.info("Resuming from the checkpoint at step %d in %s", start_step, workdir)
  else:
    start_step = 0
  if writer_process:
    workdir_lib.write_config_once(workdir, config)
  writer = run_logging.MetricsWriter(workdir)
  if start_step or changes:
    writer.event(start_step, "resume", changed={k: list(v) for k, v in changes.items()})
    if changes:
      logging.info("Resumed with changed settings: %s", changes)
  total_steps = plan.total_steps
  n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(state.params))
  logging.info("%s on %s/%s (preset %s), %d bits, backbone %s: %d trainable parameters; %d steps "
               "(%d per epoch, batch %d, %s lr %g %s, warm-up %d); train %d, val %d+%d, query %d, "
               "database %d, k=%s",
               config.method, config.dataset, config.protocol, config.preset, config.bits,
               config.backbone, n_params, total_steps, plan.steps_per_epoch, config.batch_size,
               config.optimizer, config.learning_rate, config.lr_schedule, config.warmup_steps,
               len(splits.train), len(splits.val_query), len(splits.val_database),
               len(splits.query), len(splits.database), splits.topk)

  train_step = make_train_step(setup)
  encode_fn = make_encode_fn(setup)
  base_key = jax.random.key(config.seed)
  identity = _identity(config)

  val_topk = config.val_topk or splits.topk

  def validate(st) -> float:
    m, _, _ = evaluate_split(setup, encode_fn, st, source, splits.val_query, splits.val_database,
                             val_topk)
    return float(m["map"])

  def non_finite(step: int, loss: float) -> None:
    last = checkpointing.latest_step(manager)
    raise NonFiniteLossError(
        f"the loss became non-finite ({loss}) at step {step}; training stopped. The last good "
        f"checkpoint is {'step %d' % last if last is not None else 'none'} in "
        f"{checkpointing.checkpoint_dir(workdir)} (kept). Try a lower --learning_rate.")

  # A resumed run continues the training clock and the best validation result of the run so far
  # (the best state itself is a kept checkpoint: with select_on_val every improvement is saved).
  progress_so_far = checkpointing.read_progress(manager, start_step) if start_step else {}
  seconds_before = float(progress_so_far.get("train_seconds", 0.0))
  best = _BestValidation(val_map=float(progress_so_far.get("best_val_map", -1.0)),
                         step=int(progress_so_far.get("best_step", -1)))
  pending = _PendingMetrics(non_finite)
  progress = run_logging.Progress(first_step=start_step, total_steps=total_steps,
                                  batch_size=config.batch_size)
  batches: Iterator[dict] = loader.train_batches(
      source, splits.train, batch_size=config.batch_size, seed=config.seed,
      start_step=start_step, mesh=mesh, tables=tables, view_sampler=inputs.view_sampler)
  if start_step < total_steps:
    logging.info("Compiling the train step (first step is slower)...")
  t0 = time.perf_counter()
  train_seconds = seconds_before
  done = start_step
  stop = _StopOnInterrupt()
  try:
    for step in range(start_step, total_steps):
      if stop.requested:
        raise KeyboardInterrupt
      batch = next(batches)
      state, metrics = train_step(state, batch, base_key)
      done = step + 1
      pending.add(done, metrics)
      is_last = done == total_steps
      first = done == start_step + 1
      log_now = _due(done, config.log_every) or is_last or first
      eval_now = bool(config.eval_every) and (_due(done, config.eval_every) or is_last)
      ckpt_now = _due(done, config.checkpoint_every) or is_last
      if not (log_now or eval_now or ckpt_now):
        continue
      mean = pending.flush()
      if first:
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
        logging.info("step %d: validation mAP@%s = %.4f (best %.4f)", done, val_topk or "all",
                     val_map, max(val_map, best.val_map))
        improved = best.offer(val_map, done, state, keep_state=config.select_on_val)
        # Only improvements carry the metric, so the checkpoint the manager keeps as the best is
        # the step in `best`; with select_on_val every improvement is saved, so that the best
        # state outlives an interruption or a re-run of the finished run.
        ckpt_metrics = {"val_map": val_map} if improved else None
        ckpt_now = ckpt_now or (config.select_on_val and improved)
      if ckpt_now:
        train_seconds = seconds_before + time.perf_counter() - t0
        checkpointing.save(manager, done, state, identity=identity, metrics=ckpt_metrics,
                           progress=_progress_record(train_seconds, best))
  except KeyboardInterrupt:
    checkpointing.wait(manager)
    last = checkpointing.latest_step(manager)
    where = ("none yet (the run restarts from step 0)" if last is None else
             f"step {last} in {checkpointing.checkpoint_dir(workdir)}")
    raise TrainingInterrupted(f"interrupted at step {done} of {total_steps}. The last checkpoint is "
                              f"{where}; run the same command again to resume.") from None
  finally:
    stop.close()
    # Stop the prefetch thread now: a daemon thread still inside XLA's C++ when the interpreter exits
    # aborts the process ("FATAL: exception not rethrown").
    batches.close()
    checkpointing.wait(manager)
    progress.close()
  # train_seconds: the run's training time (every process that trained it) up to the final
  # checkpoint, which the last step always writes; a finished run run again adds nothing.

  if config.select_on_val and best.step >= 0:
    logging.info("Evaluating the best validation state (step %d, val mAP %.4f)", best.step,
                 best.val_map)
    if best.state is not None:
      state = jax.device_put(best.state, parallel.replicated_sharding(mesh))
    elif best.step != total_steps:   # found before a resume: read back its kept checkpoint
      if best.step in checkpointing.all_steps(manager):
        state = checkpointing.restore(manager, best.step, _abstract(state))
      else:
        logging.warning("The best validation state (step %d) was not checkpointed: that part of "
                        "the run ran without --select_on_val. Evaluating the last state instead.",
                        best.step)

  metrics, q_codes, db_codes = evaluate_split(setup, encode_fn, state, source, splits.query,
                                              splits.database, splits.topk, spec.evaluators)
  results = _finish(config, workdir, source, splits, metrics, q_codes, db_codes,
                    steps=total_steps, train_seconds=train_seconds,
                    best_val_map=best.val_map if best.step >= 0 else None)
  writer.write(total_steps, {f"test/{k}": v for k, v in _scalars(metrics).items()})
  writer.close()
  return results


def _finish(config: Config, workdir: str, source, splits, metrics: dict, q_codes, db_codes,
            **extra) -> dict[str, Any]:
  """The results dict (with code-collapse statistics), written with the codes and the PR curve."""
  stats = evaluators.code_statistics(db_codes)
  for warning in stats["collapse_warnings"]:
    logging.warning("Collapsed codes: %s", warning)
  results = {"method": config.method, "dataset": config.dataset, "protocol": config.protocol,
             "preset": config.preset, "bits": config.bits,
             "topk": metrics.get("topk", splits.topk), "map": float(metrics["map"]),
             "backbone": config.backbone, "tie_policy": metrics["tie_policy"], **extra,
             **{k: v for k, v in _scalars(metrics).items() if k not in ("map", "topk", "bits")},
             "distinct_codes": stats["distinct_codes"], "code_bit_balance": stats["bit_balance"],
             "constant_bits": stats["constant_bits"], "warnings": stats["collapse_warnings"]}
  if run_logging.is_writer():
    with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2)
    np.savez_compressed(
        os.path.join(workdir, "codes.npz"),
        query_codes=np.asarray(retrieval.binarize(q_codes)),
        database_codes=np.asarray(retrieval.binarize(db_codes)),
        query_labels=source.labels[splits.query], database_labels=source.labels[splits.database],
        query_index=np.asarray(splits.query), database_index=np.asarray(splits.database))
    retrieval.plot_pr_curve(metrics, os.path.join(workdir, "pr_curve.png"))
  return results


def _fit_and_evaluate(config: Config, workdir: str, inputs: _Inputs, splits, plan: RunPlan,
                      model: nnx.Module) -> dict[str, Any]:
  """A fitted method (``spec.fit``, no training loop) on the frozen features of the splits."""
  spec = get_method(config.method)
  saved = workdir_lib.read_saved_config(workdir)
  if saved is not None:
    workdir_lib.resume_changes(saved, config, what=os.path.join(workdir, workdir_lib.CONFIG_FILE))
  mesh = parallel.make_data_mesh()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  state = jax.device_put(TrainState(step=jnp.zeros((), jnp.int32), params=params, rest=rest,
                                    opt_state=()), parallel.replicated_sharding(mesh))
  setup = Setup(config=config, spec=spec, plan=plan, graphdef=graphdef, tx=None,
                input_shape=tuple(inputs.input_shape), mesh=mesh)
  features = _frozen_features_fn(setup, state, inputs.source)
  t0 = time.perf_counter()
  fitted = spec.fit(config, features(splits.train))
  fit_seconds = time.perf_counter() - t0
  logging.info("Fitted %s on %d training images in %.2f s.", config.method, len(splits.train),
               fit_seconds)
  q_codes = np.asarray(fitted.encode(features(splits.query)), np.float32)
  db_codes = np.asarray(fitted.encode(features(splits.database)), np.float32)
  metrics = evaluators.run_evaluators(spec.evaluators, q_codes, db_codes,
                                      inputs.source.labels[splits.query],
                                      inputs.source.labels[splits.database], topk=splits.topk)
  if run_logging.is_writer():
    workdir_lib.write_config_once(workdir, config)
    np.savez(os.path.join(workdir, "fitted.npz"), **fitted.to_arrays())
  return _finish(config, workdir, inputs.source, splits, metrics, q_codes, db_codes, steps=0,
                 fit_seconds=fit_seconds)
