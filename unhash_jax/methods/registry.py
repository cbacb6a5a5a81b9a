"""The method registry and the one place where a run's config is resolved and checked.

A method is a :class:`MethodSpec`: a model factory, a loss over the step's batch and context, a test
encoder, its hyper-parameters, defaults and named presets, and optional hooks (``prepare`` for
per-example tables, its optimizer, its evaluators). Like big_vision's registries, registering a
second method under a taken name raises.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import optax
from flax import nnx

from unhash_jax import optim, xla_cpu
from unhash_jax.config import Config, ConfigError
from unhash_jax.methods.contract import BuildContext, PrepareFn, StepBatch, StepContext
from unhash_jax.methods.hparams import HParam
from unhash_jax.models import BACKBONES, make_backbone

# Config fields that a method's presets and defaults fill when the user left them None.
RESOLVABLE_FIELDS = ("protocol", "backbone", "batch_size", "optimizer", "learning_rate",
                     "lr_schedule", "final_learning_rate", "warmup_steps", "weight_decay",
                     "image_size", "view_recipes", "cached_views", "epochs", "steps",
                     "eval_every", "checkpoint_every")

# What a resolvable field falls back to when neither the preset nor the method's defaults name it.
FALLBACKS = {"optimizer": "adam", "lr_schedule": "constant", "warmup_steps": 0, "weight_decay": 0.0,
             "eval_every": 0, "checkpoint_every": 0, "cached_views": 0}


def common_preset(**overrides) -> dict[str, Any]:
  """docs/methods.md's ``common`` preset: one frozen ImageNet backbone for every method (VGG-16 fc7;
  ``--backbone``/``--pretrained`` name another) and CIBHash's augmentations with crops of 80-100 %
  of the image instead of 50-100 % (recipe ``cibhash_crop08``: every augmenting method chose it on
  cifar10-i's validation split, experiments/configs/cifar10_frozen.py), trained head-only on a
  feature cache of 8 views per image, so numbers compare across methods [project choice: one
  backbone, hence one cache, for all methods; a preset may name another recipe for its views,
  which adds that recipe's part to the same cache]."""
  model = {"frozen_backbone": True, **overrides.pop("model", {})}
  return {"backbone": "vgg16", "image_size": 224, "cached_views": 8,
          "view_recipes": ("cibhash_crop08", "cibhash_crop08"), "model": model, **overrides}

# Keys a preset or the defaults may hold besides RESOLVABLE_FIELDS.
_PRESET_EXTRA_KEYS = ("hparams", "model")
# A preset's key for values that apply at one code length only: ``{"by_bits": {16: {...}}}``.
BY_BITS = "by_bits"


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """A hashing method as the trainer sees it (see :mod:`unhash_jax.methods.contract`).

  Attributes:
    name: registry key (``--method``).
    description: one line for ``--help``.
    make_model: ``(config, BuildContext) -> nnx.Module``.
    compute_loss: ``(model, StepBatch, StepContext) -> (loss, aux)``: ``loss`` a float32 scalar,
      ``aux`` a dict of float32 scalars (logged); the model is in training mode and may overwrite
      its :class:`~unhash_jax.methods.contract.MethodState` variables. None for a ``fit`` method.
    encode: ``(model, images) -> [B, bits]`` real values whose ``sign₀`` is the test code.
    fit: instead of a training loop (classical baselines): ``(config, train_features [N, D]) ->
      encoder`` with ``encoder.encode(features) -> [n, bits]`` and ``encoder.to_arrays()``; the
      features are the model's frozen backbone (or the feature cache) on the test transform.
    hparams: the loss hyper-parameters (:class:`~unhash_jax.methods.hparams.HParam`; each is a CLI
      flag and is checked against its range).
    defaults: values of :data:`RESOLVABLE_FIELDS`, ``model`` and ``hparams`` used when neither the
      user nor the preset sets them; ``view_recipes`` here fixes the method's number of views.
    presets: named overrides of ``defaults`` (same keys). The preset named like the dataset applies
      by default; others (``paper``, ``common``) are chosen with ``--preset``. A preset may also hold
      ``by_bits``, ``{code length: overrides}`` (same keys), applied over the rest of the preset at
      that ``--bits`` only (a value chosen per code length); the user's flags still win.
    prepare: optional hook computing per-example tables before training
      (:data:`~unhash_jax.methods.contract.PrepareFn`).
    make_optimizer: ``(config, RunPlan) -> optax.GradientTransformation``; default
      :func:`unhash_jax.optim.make_optimizer` (``config.optimizer``, ``config.lr_schedule``).
    evaluators: names in :data:`unhash_jax.evaluators.EVALUATORS` run on the test codes.
    feature_tokens: the method trains on the backbone's patch tokens (a feature cache stores them).
    min_bits: smallest supported code length.
  """

  name: str
  description: str
  make_model: Callable[[Config, BuildContext], nnx.Module]
  compute_loss: Callable[[nnx.Module, StepBatch, StepContext], tuple[jax.Array, dict]] | None
  encode: Callable[[nnx.Module, jax.Array], jax.Array] | None
  hparams: Sequence[HParam]
  defaults: Mapping[str, Any]
  presets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  prepare: PrepareFn | None = None
  make_optimizer: Callable[[Config, optim.RunPlan], optax.GradientTransformation] = (
      optim.make_optimizer)
  evaluators: tuple[str, ...] = ("map",)
  feature_tokens: bool = False
  fit: Callable[[Config, Any], Any] | None = None
  min_bits: int = 1

  def __post_init__(self):
    if (self.fit is None) == (self.compute_loss is None or self.encode is None):
      raise ValueError(f"method {self.name!r}: give either compute_loss and encode (a trained "
                       f"method) or fit (a fitted one).")
    names = [h.name for h in self.hparams]
    if len(set(names)) != len(names):
      raise ValueError(f"method {self.name!r} declares a hyper-parameter twice: {names}.")
    fields = set(RESOLVABLE_FIELDS) | set(_PRESET_EXTRA_KEYS)
    known_hparams = set(names)

    def check_layer(where: str, layer: Mapping[str, Any], allowed: set[str]) -> None:
      unknown = set(layer) - allowed
      unknown_h = set(layer.get("hparams", {})) - known_hparams
      if unknown or unknown_h:
        raise ValueError(f"method {self.name!r}, preset {where!r}: unknown keys "
                         f"{sorted(unknown | unknown_h)}.")

    check_layer("defaults", self.defaults, fields)
    for preset_name, preset in self.presets.items():
      check_layer(preset_name, preset, fields | {BY_BITS})
      by_bits = preset.get(BY_BITS, {})
      if not isinstance(by_bits, Mapping):
        raise ValueError(f"method {self.name!r}, preset {preset_name!r}: {BY_BITS} must map code "
                         f"lengths to overrides, got {type(by_bits).__name__}.")
      for bits, layer in by_bits.items():
        if not _is_int(bits) or bits < 1 or not isinstance(layer, Mapping):
          raise ValueError(f"method {self.name!r}, preset {preset_name!r}: {BY_BITS} maps code "
                           f"lengths (positive ints) to overrides (dicts), got {bits!r}: "
                           f"{type(layer).__name__}.")
        check_layer(f"{preset_name}.{BY_BITS}[{bits}]", layer, fields)
    if not self.defaults.get("view_recipes"):
      raise ValueError(f"method {self.name!r}: defaults must name its view_recipes (one per view).")

  @property
  def num_views(self) -> int:
    return len(self.defaults["view_recipes"])

  @property
  def hparam_defaults(self) -> dict[str, Any]:
    return {h.name: h.default for h in self.hparams}

  def hparam(self, name: str) -> HParam:
    return {h.name: h for h in self.hparams}[name]


def build_backbone(config: Config, ctx: BuildContext) -> nnx.Module:
  """The backbone ``config.backbone`` with ``config.model["backbone_kwargs"]`` (methods' factories),
  with ``config.pretrained`` weights loaded; on a feature cache (``config.cached_views``) the
  parameter-free :class:`~unhash_jax.models.cached.CachedFeatures` of the cached features."""
  if config.cached_views:
    from unhash_jax.models.cached import CachedFeatures
    return CachedFeatures(ctx.input_shape)
  try:
    backbone = make_backbone(config.backbone, ctx.input_shape, rngs=ctx.rngs,
                             **config.model.get("backbone_kwargs", {}))
  except ValueError as e:   # an input size or option the architecture cannot take
    shape = "x".join(str(int(d)) for d in ctx.input_shape)
    raise ConfigError(f"--backbone={config.backbone} cannot take {shape} inputs (--image_size="
                      f"{config.image_size}): {e}") from None
  if config.pretrained:
    from unhash_jax.models import load_weights_into
    load_weights_into(backbone, config.backbone, config.pretrained)
  return backbone


REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
  """Adds ``spec`` to :data:`REGISTRY`; a duplicate name raises ValueError."""
  if spec.name in REGISTRY:
    raise ValueError(f"method {spec.name!r} is already registered.")
  REGISTRY[spec.name] = spec
  return spec


def get_method(name: str) -> MethodSpec:
  if name not in REGISTRY:
    raise ConfigError(f"unknown method {name!r}; valid choices: {', '.join(sorted(REGISTRY))}.")
  return REGISTRY[name]


def preset_name(config: Config, spec: MethodSpec) -> str | None:
  """The preset a config uses: ``config.preset``, else the one named like the dataset, else None."""
  if config.preset is not None:
    if config.preset not in spec.presets:
      raise ConfigError(f"method {spec.name!r} has no preset {config.preset!r}; its presets are: "
                        f"{', '.join(sorted(spec.presets)) or 'none'}.")
    return config.preset
  return config.dataset if config.dataset in spec.presets else None


def resolve_config(config: Config, *, image_shape: Sequence[int] | None = None) -> Config:
  """Completes and checks a config: the only place where this happens (idempotent).

  Fills each ``None`` field of :data:`RESOLVABLE_FIELDS` with, in order of precedence, what the user
  set > the preset (:func:`preset_name`; its ``by_bits`` entry for ``config.bits`` over the rest:
  :func:`preset_at_bits`) > the method's defaults > :data:`FALLBACKS`; ``hparams`` and
  ``model`` dicts merge key by key with the same precedence; ``protocol`` falls back to the dataset's
  default and ``image_size`` to ``image_shape[0]`` (the data's size) when given.

  Raises:
    ConfigError: an unknown method, preset, dataset, protocol, backbone, recipe or hyper-parameter,
      or a value out of range (non-positive or non-finite learning rate or temperature, negative
      weights, intervals, a batch size the device count does not divide, ...). The message names the
      field (as its CLI flag) and the valid choices.
  """
  spec = get_method(config.method)
  name = preset_name(config, spec)
  preset = preset_at_bits(spec.presets.get(name, {}), config.bits) if name else {}
  changes: dict[str, Any] = {"preset": name}
  for field in RESOLVABLE_FIELDS:
    if getattr(config, field) is None:
      changes[field] = preset.get(field, spec.defaults.get(field, FALLBACKS.get(field)))
  unknown = set(config.hparams) - set(spec.hparam_defaults)
  if unknown:
    raise ConfigError(
        f"method {spec.name!r} has no hyper-parameter(s) {sorted(unknown)}; its hyper-parameters "
        f"are: {', '.join(sorted(spec.hparam_defaults))}.")
  merged = {**spec.hparam_defaults, **spec.defaults.get("hparams", {}),
            **preset.get("hparams", {}), **config.hparams}
  try:
    changes["hparams"] = {k: spec.hparam(k).check(v, spec.name) for k, v in merged.items()}
  except ValueError as e:
    raise ConfigError(str(e)) from None
  backbone = config.backbone if config.backbone is not None else changes["backbone"]
  changes["model"] = {**_model_options(spec.defaults, spec.defaults.get("backbone"), backbone),
                      **_model_options(preset, preset.get("backbone", spec.defaults.get("backbone")),
                                       backbone),
                      **config.model}
  resolved = config.replace(**changes)
  if resolved.protocol is None:
    from unhash_jax.data import protocols  # light: numpy only
    resolved = resolved.replace(protocol=protocols.DEFAULT_PROTOCOL.get(resolved.dataset))
  if resolved.image_size is None and image_shape is not None:
    resolved = resolved.replace(image_size=int(image_shape[0]))
  if resolved.view_recipes is not None:
    resolved = resolved.replace(view_recipes=tuple(resolved.view_recipes))
  _check(resolved, spec)
  return resolved


def preset_at_bits(preset: Mapping[str, Any], bits: int) -> dict[str, Any]:
  """``preset`` with its ``by_bits[bits]`` overrides applied (``hparams`` and ``model`` merged key
  by key) and the ``by_bits`` table itself dropped."""
  layer = dict(preset.get(BY_BITS, {}).get(bits, {}))
  merged = {k: v for k, v in preset.items() if k != BY_BITS}
  for key in _PRESET_EXTRA_KEYS:
    if key in layer:
      merged[key] = {**merged.get(key, {}), **layer.pop(key)}
  return {**merged, **layer}


def _model_options(layer: Mapping[str, Any], layer_backbone: str | None, backbone: str
                   ) -> dict[str, Any]:
  """A preset's (or the defaults') model options; its ``backbone_kwargs`` are for its own backbone
  only (a preset's CNN widths must not reach ``--backbone=tiny``)."""
  options = dict(layer.get("model", {}))
  if "backbone_kwargs" in options and layer_backbone != backbone:
    del options["backbone_kwargs"]
  return options


def _check(config: Config, spec: MethodSpec) -> None:
  """Raises ConfigError naming the first invalid field of a resolved config."""
  from unhash_jax.data import augment, builders, protocols  # light: numpy/jax only

  def need(ok: bool, message: str) -> None:
    if not ok:
      raise ConfigError(message)

  need(config.dataset in builders.DATASETS, f"unknown --dataset={config.dataset!r}; valid choices: "
       f"{', '.join(builders.DATASETS)}.")
  need(config.protocol in protocols.PROTOCOLS, f"unknown --protocol={config.protocol!r}; valid "
       f"choices: {', '.join(protocols.PROTOCOLS)}.")
  need(config.backbone in BACKBONES, f"unknown --backbone={config.backbone!r}; valid choices: "
       f"{', '.join(sorted(BACKBONES))}.")
  need(config.dataset != "digits" or config.archive is None,
       f"--archive={config.archive!r} was given with --dataset=digits, which is embedded (it needs "
       f"no file); --archive is for --dataset=cifar10 or image_folder.")
  need(config.dataset != "image_folder" or config.archive is not None,
       "--dataset=image_folder needs --archive=<folder or .tar.gz of <split>/<class>/<image>>.")
  need(_is_int(config.bits) and config.bits >= max(1, spec.min_bits),
       f"--bits={config.bits} is not supported by {spec.name}: it needs at least "
       f"{max(1, spec.min_bits)} bits (16, 32 and 64 are the usual lengths).")
  n = jax.device_count()
  need(_is_int(config.batch_size) and config.batch_size >= 1,
       f"--batch_size must be >= 1, got {config.batch_size}.")
  need(config.batch_size % n == 0, f"--batch_size={config.batch_size} is not divisible by the "
       f"number of devices ({n}); choose a multiple of {n}.")
  trained = spec.fit is None
  need(not trained or (_is_number(config.learning_rate) and math.isfinite(config.learning_rate)
                       and config.learning_rate > 0),
       f"--learning_rate must be a finite number > 0, got {config.learning_rate}.")
  need(_is_number(config.weight_decay) and math.isfinite(config.weight_decay)
       and config.weight_decay >= 0, f"--weight_decay must be finite and >= 0, got "
       f"{config.weight_decay}.")
  need(spec.fit is not None or config.steps is not None or config.epochs is not None,
       f"method {spec.name!r} names neither steps nor epochs; pass --steps or --epochs.")
  for field, low in (("steps", 1), ("epochs", 1), ("eval_every", 0), ("val_topk", 1),
                     ("checkpoint_every", 0), ("log_every", 1), ("keep_checkpoints", 1),
                     ("eval_batch_size", 1), ("image_size", 1), ("seed", 0), ("split_seed", 0),
                     ("cache_seed", 0), ("warmup_steps", 0)):
    value = getattr(config, field)
    need(value is None or (_is_int(value) and value >= low),
         f"--{field} must be an integer >= {low}, got {value}.")
  need(_is_number(config.val_fraction) and 0.0 <= config.val_fraction < 1.0,
       f"--val_fraction must lie in [0, 1), got {config.val_fraction}.")
  need(not config.select_on_val or (trained and config.eval_every and config.val_fraction > 0),
       f"--select_on_val evaluates the state of the best validation mAP, so it needs a trained "
       f"method with --eval_every > 0 and --val_fraction > 0; got method {spec.name!r}, "
       f"--eval_every={config.eval_every}, --val_fraction={config.val_fraction}.")
  recipes = config.view_recipes
  need(len(recipes) == spec.num_views, f"{spec.name} trains on {spec.num_views} view(s), but "
       f"--view_recipes names {len(recipes)}: {','.join(recipes)}.")
  for r in recipes:
    need(r in augment.PRESETS, f"unknown augmentation recipe {r!r} in --view_recipes; valid "
         f"names: {', '.join(sorted(augment.PRESETS))}.")
  try:
    if trained:
      optim.check_schedule(config)
    xla_cpu.check_ynn_fusions(config.cpu_ynn_fusions)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  need(_is_int(config.cached_views) and config.cached_views >= 0,
       f"--cached_views must be an integer >= 0, got {config.cached_views}.")
  if config.pretrained is not None:
    from unhash_jax.models.pretrained import TABLES
    need(config.backbone in TABLES, f"--pretrained weights can be loaded into the backbones "
         f"{', '.join(sorted(TABLES))}, not --backbone={config.backbone}.")
  scale = config.model.get("backbone_lr_scale", 1.0)
  need(_is_number(scale) and math.isfinite(scale) and scale >= 0,
       f"--backbone_lr_scale must be finite and >= 0, got {scale}.")


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)
