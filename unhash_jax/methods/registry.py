"""The method registry: each method = model factory + loss + augmentation recipes + defaults.

Like big_vision's registries, registering a second method under a taken name raises.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import optax
from flax import nnx

from unhash_jax import xla_cpu
from unhash_jax.config import Config
from unhash_jax.models import IN_BACKBONE, make_backbone

# Config fields that a method's defaults and per-dataset presets may fill when the user left them None.
RESOLVABLE_FIELDS = ("protocol", "backbone", "batch_size", "learning_rate", "lr_schedule",
                     "warmup_steps", "weight_decay", "image_size", "epochs", "steps", "eval_every",
                     "checkpoint_every")

# What a resolvable field falls back to when neither the preset nor the method's defaults name it.
FALLBACKS = {"lr_schedule": "constant", "warmup_steps": 0}

LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """A hashing method as the trainer sees it.

  Attributes:
    name: registry key (``--method``).
    description: one line for ``--help``.
    make_model: ``(config, input_shape (H, W, C), rngs) -> nnx.Module``.
    compute_loss: ``(model, view1, view2, *, key, hparams) -> (loss, aux)``; views are
      ``[B, S, S, C]`` float images, ``loss`` a float32 scalar, ``aux`` a dict of float32 scalars
      (logged); the model is in training mode.
    encode: ``(model, images) -> [B, bits]`` real values whose ``sign₀`` is the test code.
    hparams: defaults of the loss hyper-parameters (each becomes a CLI flag).
    defaults: defaults of :data:`RESOLVABLE_FIELDS` and of ``config.model``.
    presets: per-dataset overrides of ``defaults`` (keys as in defaults, plus ``hparams``).
    recipes: per-dataset ``(view1, view2)`` augmentation preset names; key ``"*"`` is the fallback.
    eval_recipe: per-dataset preset whose deterministic test transform (resize + normalise) is used.
    min_bits: smallest supported code length.
  """

  name: str
  description: str
  make_model: Callable[[Config, Sequence[int], nnx.Rngs], nnx.Module]
  compute_loss: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
  encode: Callable[[nnx.Module, jax.Array], jax.Array]
  hparams: Mapping[str, Any]
  defaults: Mapping[str, Any]
  presets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  recipes: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
  min_bits: int = 1

  def recipe_names(self, dataset: str) -> tuple[str, str]:
    return self.recipes.get(dataset, self.recipes["*"])

  def make_optimizer(self, config: Config, total_steps: int | None = None
                     ) -> optax.GradientTransformation:
    """Adam; a nonzero ``weight_decay`` is PyTorch's coupled L2 (added to the gradient first).

    The learning rate follows :func:`learning_rate_schedule` (``total_steps`` is needed by the
    cosine schedule). ``config.model["backbone_lr_scale"]`` (default 1) multiplies the learning
    rate of the backbone's parameters (heads keep ``learning_rate``); 0 leaves the backbone at its
    initialisation while its BatchNorm statistics, if any, still update.
    """
    adam = optax.adam(learning_rate=learning_rate_schedule(config, total_steps))
    if config.weight_decay:
      adam = optax.chain(optax.add_decayed_weights(config.weight_decay), adam)
    scale = float(config.model.get("backbone_lr_scale", 1.0))
    if scale < 0:
      raise ValueError(f"model option backbone_lr_scale must be >= 0, got {scale}.")
    if scale == 1.0:
      return adam
    return optax.multi_transform(
        {"head": adam, "backbone": optax.chain(adam, optax.scale(scale))}, _backbone_labels)


def check_lr_schedule(config: Config, total_steps: int | None = None) -> None:
  """Raises ValueError when ``config``'s schedule fields (resolved) cannot make a schedule.

  Invalid: an unknown ``lr_schedule``, a negative ``warmup_steps``, or a cosine schedule without
  ``total_steps`` or whose warm-up is not shorter than ``total_steps``.
  """
  schedule, warmup = config.lr_schedule, config.warmup_steps
  if schedule not in LR_SCHEDULES:
    raise ValueError(f"unknown lr_schedule {schedule!r}; valid choices: {', '.join(LR_SCHEDULES)}.")
  if warmup < 0:
    raise ValueError(f"warmup_steps must be >= 0, got {warmup}.")
  if schedule == "cosine" and total_steps is None:
    raise ValueError("the cosine schedule needs total_steps (the run's length).")
  if schedule == "cosine" and total_steps <= warmup:
    raise ValueError(f"--warmup_steps={warmup} leaves nothing of the {total_steps}-step run for the "
                     f"cosine decay, which needs total_steps > warmup_steps ({warmup}); use fewer "
                     f"warm-up steps than training steps.")


def learning_rate_schedule(config: Config, total_steps: int | None = None) -> optax.ScalarOrSchedule:
  """``config.learning_rate`` as a float (constant, no warm-up) or an optax schedule of the step.

  ``config`` is resolved (:func:`resolve_config` fills ``lr_schedule``/``warmup_steps``).
  ``lr_schedule="cosine"`` decays from ``learning_rate`` to 0 at ``total_steps`` (after the warm-up,
  which counts towards ``total_steps``); ``warmup_steps`` > 0 ramps linearly from 0 first. The
  schedule is a function of the optimizer's step count, which checkpoints carry, so a resumed run
  continues it where it stopped.

  Raises:
    ValueError: see :func:`check_lr_schedule`.
  """
  check_lr_schedule(config, total_steps)
  lr, warmup = config.learning_rate, config.warmup_steps
  if config.lr_schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total_steps, end_value=0.0)
  if not warmup:
    return lr
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])


def _backbone_labels(params: nnx.State) -> nnx.State:
  """``"backbone"`` for the backbone's parameters (:data:`~unhash_jax.models.IN_BACKBONE`), else
  ``"head"``."""
  return nnx.map_state(lambda path, value: "backbone" if IN_BACKBONE(path, value) else "head", params)


def build_backbone(config: Config, input_shape: Sequence[int], rngs: nnx.Rngs) -> nnx.Module:
  """The backbone ``config.backbone`` with ``config.model["backbone_kwargs"]`` (methods' factories)."""
  return make_backbone(config.backbone, input_shape, rngs=rngs,
                       **config.model.get("backbone_kwargs", {}))


REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
  """Adds ``spec`` to :data:`REGISTRY`; a duplicate name raises ValueError."""
  if spec.name in REGISTRY:
    raise ValueError(f"method {spec.name!r} is already registered.")
  REGISTRY[spec.name] = spec
  return spec


def get_method(name: str) -> MethodSpec:
  if name not in REGISTRY:
    raise ValueError(f"unknown method {name!r}; valid choices: {', '.join(sorted(REGISTRY))}.")
  return REGISTRY[name]


def resolve_config(config: Config) -> Config:
  """Fills the ``None`` fields from the method's preset for the dataset, then its defaults.

  Precedence: what the user set > ``presets[dataset]`` > ``defaults``. ``hparams`` and ``model``
  dicts merge key by key with the same precedence; unknown loss hyper-parameters raise ValueError.
  """
  spec = get_method(config.method)
  preset = dict(spec.presets.get(config.dataset, {}))
  changes: dict[str, Any] = {}
  for name in RESOLVABLE_FIELDS:
    if getattr(config, name) is None:
      changes[name] = preset.get(name, spec.defaults.get(name, FALLBACKS.get(name)))
  unknown = set(config.hparams) - set(spec.hparams)
  if unknown:
    raise ValueError(
        f"method {spec.name!r} has no hyper-parameter(s) {sorted(unknown)}; its hyper-parameters "
        f"are: {', '.join(sorted(spec.hparams))}.")
  changes["hparams"] = {**spec.hparams, **preset.get("hparams", {}), **config.hparams}
  changes["model"] = {**spec.defaults.get("model", {}), **preset.get("model", {}), **config.model}
  resolved = config.replace(**changes)
  if resolved.bits < spec.min_bits:
    raise ValueError(f"method {spec.name!r} needs bits >= {spec.min_bits}, got {resolved.bits}.")
  xla_cpu.check_ynn_fusions(resolved.cpu_ynn_fusions)
  return resolved
