"""Optimizers and learning-rate schedules of a run (``Config.optimizer`` / ``Config.lr_schedule``).

* Optimizers: ``adam`` (default of the contrastive methods) and ``sgd`` (plain, no momentum: DDH,
  docs/methods.md §2.5). A nonzero ``weight_decay`` is PyTorch's *coupled* L2: ``wd·w`` is added to the
  gradient before the optimizer (``optax.add_decayed_weights`` first), not AdamW's decoupled decay.
* Schedules, functions of the optimizer's step count (which checkpoints carry, so a resumed run
  continues its schedule where it stopped):

  * ``constant``: ``learning_rate``;
  * ``cosine``: cosine decay from ``learning_rate`` to 0 at the run's last step (Loshchilov & Hutter,
    "SGDR", ICLR 2017), stepped every step;
  * ``cosine_epoch``: the same curve stepped once per epoch, PyTorch's ``CosineAnnealingLR(T_max =
    epochs)`` called after every epoch (WCH's official schedule): epoch ``e`` of ``E`` uses
    ``lr·½(1 + cos(π e/E))``;
  * ``log_epoch``: log-spaced per epoch from ``learning_rate`` (first epoch) to
    ``final_learning_rate`` (last epoch), ``lr_e = lr·(final/lr)^(e/(E−1))`` (DDH's official
    ``logspace(-2, -6, 100)``).

  ``warmup_steps`` > 0 ramps linearly from 0 to the schedule's value first (the warm-up steps count
  towards the run's length).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import optax
from flax import nnx

from unhash_jax.config import Config
from unhash_jax.models import IN_BACKBONE

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine", "cosine_epoch", "log_epoch")
# Schedules whose values depend on the run's length (a resumed run may not change --steps/--epochs).
LENGTH_DEPENDENT_SCHEDULES = ("cosine", "cosine_epoch", "log_epoch")


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """The length of a run, derived from the config and the training split.

  Attributes:
    num_train: images in the training split.
    batch_size: global batch size.
    steps_per_epoch: full batches per epoch (the remainder of every epoch is dropped).
    total_steps: the run's length in optimizer steps.
  """

  num_train: int
  batch_size: int
  steps_per_epoch: int
  total_steps: int

  @property
  def num_epochs(self) -> int:
    """Epochs the run touches (the last one may be partial)."""
    return max(1, -(-self.total_steps // self.steps_per_epoch))


def make_plan(config: Config, num_train: int) -> RunPlan:
  """``RunPlan`` of a resolved config on a training split of ``num_train`` images.

  Raises:
    ValueError: fewer training images than one batch.
  """
  steps_per_epoch = int(num_train) // int(config.batch_size)
  if steps_per_epoch < 1:
    raise ValueError(f"the training split has {num_train} images, fewer than one batch of "
                     f"{config.batch_size}; lower --batch_size.")
  total = int(config.steps if config.steps else (config.epochs or 0) * steps_per_epoch)
  return RunPlan(num_train=int(num_train), batch_size=int(config.batch_size),
                 steps_per_epoch=steps_per_epoch, total_steps=total)


def check_schedule(config: Config, plan: RunPlan | None = None) -> None:
  """Raises ValueError when the resolved config's optimizer/schedule fields cannot make a schedule.

  Invalid: an unknown ``optimizer`` or ``lr_schedule``, a negative ``warmup_steps``, a
  ``log_epoch`` schedule without a positive finite ``final_learning_rate``, or (given ``plan``) a
  warm-up that leaves nothing of the run for a length-dependent schedule.
  """
  if config.optimizer not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {config.optimizer!r}; valid choices: "
                     f"{', '.join(OPTIMIZERS)}.")
  schedule, warmup = config.lr_schedule, config.warmup_steps
  if schedule not in LR_SCHEDULES:
    raise ValueError(f"unknown lr_schedule {schedule!r}; valid choices: {', '.join(LR_SCHEDULES)}.")
  if warmup < 0:
    raise ValueError(f"warmup_steps must be >= 0, got {warmup}.")
  if schedule == "log_epoch":
    final = config.final_learning_rate
    if final is None or not (math.isfinite(final) and final > 0):
      raise ValueError(f"the log_epoch schedule needs --final_learning_rate > 0 (finite), got "
                       f"{final}.")
  if plan is not None and schedule in LENGTH_DEPENDENT_SCHEDULES and plan.total_steps <= warmup:
    raise ValueError(f"--warmup_steps={warmup} leaves nothing of the {plan.total_steps}-step run "
                     f"for the {schedule} schedule, which needs total_steps > warmup_steps "
                     f"({warmup}); use fewer warm-up steps than training steps.")


def learning_rate_schedule(config: Config, plan: RunPlan) -> optax.ScalarOrSchedule:
  """``config.learning_rate`` as a float (constant, no warm-up) or an optax schedule of the step.

  Raises:
    ValueError: see :func:`check_schedule`.
  """
  check_schedule(config, plan)
  lr, warmup, schedule = config.learning_rate, config.warmup_steps, config.lr_schedule
  if schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, plan.total_steps, end_value=0.0)
  if schedule == "constant":
    main = None if not warmup else optax.constant_schedule(lr)
  else:
    main = _epoch_schedule(config, plan)
  if not warmup:
    return lr if main is None else main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def _epoch_schedule(config: Config, plan: RunPlan) -> optax.Schedule:
  """A schedule constant within each epoch: ``cosine_epoch`` or ``log_epoch``."""
  lr, spe, epochs = config.learning_rate, plan.steps_per_epoch, plan.num_epochs
  if config.lr_schedule == "cosine_epoch":
    def value(e):
      return lr * 0.5 * (1.0 + jnp.cos(jnp.pi * e / epochs))
  else:
    ratio = math.log(config.final_learning_rate / lr)
    def value(e):
      return lr * jnp.exp(ratio * e / max(epochs - 1, 1))

  def schedule(count):
    # join_schedules hands the post-warm-up part its own count from 0; the epoch is that of the
    # run's step, so add the warm-up back.
    step = count + config.warmup_steps
    return value(jnp.minimum(step // spe, epochs - 1).astype(jnp.float32))

  return schedule


def make_optimizer(config: Config, plan: RunPlan) -> optax.GradientTransformation:
  """The run's optimizer: ``config.optimizer`` on :func:`learning_rate_schedule`, coupled L2 first.

  ``config.model["backbone_lr_scale"]`` (default 1) multiplies the learning rate of the backbone's
  parameters (heads keep ``learning_rate``); 0 leaves the backbone at its initialisation while its
  BatchNorm statistics, if any, still update.
  """
  schedule = learning_rate_schedule(config, plan)
  base = optax.adam(learning_rate=schedule) if config.optimizer == "adam" else optax.sgd(schedule)
  if config.weight_decay:
    base = optax.chain(optax.add_decayed_weights(config.weight_decay), base)
  scale = float(config.model.get("backbone_lr_scale", 1.0))
  if scale < 0:
    raise ValueError(f"model option backbone_lr_scale must be >= 0, got {scale}.")
  if scale == 1.0:
    return base
  return optax.multi_transform(
      {"head": base, "backbone": optax.chain(base, optax.scale(scale))}, _backbone_labels)


def _backbone_labels(params: nnx.State) -> nnx.State:
  """``"backbone"`` for the backbone's parameters (:data:`~unhash_jax.models.IN_BACKBONE`), else
  ``"head"``."""
  return nnx.map_state(lambda path, value: "backbone" if IN_BACKBONE(path, value) else "head", params)
