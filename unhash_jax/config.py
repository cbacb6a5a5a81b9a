"""The run configuration: one frozen, JSON-serialisable dataclass.

``None`` fields are resolved from the method's preset and defaults by
:func:`unhash_jax.methods.resolve_config`, the one place where a config is completed and checked; the
resolved config is what a run saves as ``workdir/config.json``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any


class ConfigError(ValueError):
  """A config field is invalid or does not fit the method, the data or the devices (CLI exit 2)."""


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a training run.

  Attributes:
    method: registered method name (``unhash_jax.methods.REGISTRY``).
    dataset: ``digits``, ``cifar10`` or ``image_folder``.
    preset: the method's named preset (``digits``, ``cifar10``, ``paper``, ``common``...) whose values
      fill the unset fields; None = the preset named like the dataset, if the method has one.
    protocol: split protocol (docs/methods.md §1.6); None = the dataset's default.
    bits: code length K.
    backbone: registered backbone name; None = the method's preset for the dataset.
    batch_size: global batch size (divisible by the number of devices).
    optimizer: ``"adam"`` or ``"sgd"`` (:mod:`unhash_jax.optim`); None = the method's preset.
    learning_rate: optimizer learning rate (the peak of the schedule).
    lr_schedule: ``"constant"``, ``"cosine"`` (decay to 0 over the run's steps, Loshchilov & Hutter
      2017), ``"cosine_epoch"`` (the same, stepped per epoch) or ``"log_epoch"`` (log-spaced per
      epoch down to ``final_learning_rate``); None = the method's preset (constant when it names
      none).
    final_learning_rate: last epoch's rate of the ``log_epoch`` schedule.
    warmup_steps: steps of linear warm-up from 0 to ``learning_rate`` before the schedule; None = the
      method's preset (0 when it names none).
    weight_decay: coupled L2 weight decay added to the gradient before Adam (PyTorch semantics).
    image_size: side of the augmented views fed to the backbone; None = the method's preset, else
      the data set's image size.
    view_recipes: one augmentation recipe name per view (``unhash_jax.data.augment.PRESETS``); the
      method's number of views; None = the method's preset.
    epochs / steps: training length; ``steps`` wins when both are set.
    seed: model initialisation, augmentation and shuffling seed.
    split_seed: seed of the protocol's random draws.
    cache_seed: seed of the feature cache's augmented views (and of a random-init cached
      backbone); None = ``seed``. Fixing it lets runs of several seeds share one cache (the
      heads' initialisation, shuffling and view draws still follow ``seed``).
    val_fraction: share of the training split carved out for validation.
    eval_every: steps between validation evaluations, and one at the end (0 = no validation).
    val_topk: k of the validation mAP@k; None = the protocol's k. The validation database is
      smaller than the test one (cifar10-i: 4,500 vs 54,000), so the protocol's k covers a larger
      share of it; ``k · |val database| / |database|`` (83 on cifar10-i) covers the same share.
    checkpoint_every: steps between checkpoints (0 = only at the end).
    keep_checkpoints: how many recent checkpoints are kept (plus the best validation one).
    log_every: steps between progress lines.
    select_on_val: evaluate the best-validation state instead of the last one.
    data_dir: cache/tfds directory; archive: path of an image archive or folder (cifar10, image_folder).
    eval_batch_size: batch size of the encoding passes.
    hparams: the method's loss hyper-parameters (keyword arguments of its loss).
    model: model options (e.g. hidden widths, dropout), method specific.
    distributed: call ``jax.distributed.initialize()`` first (multi-host TPU pods).
    pretrained: a torchvision/timm weights file of ``backbone`` (``.pth``/``.bin``/``.safetensors``,
      read without PyTorch: :func:`unhash_jax.models.load_pretrained`); None = its random init.
    cached_views: E > 0 trains on a frozen-feature cache (:mod:`unhash_jax.cached_training`): the
      frozen backbone's test features and E augmented views per training image, computed once;
      0 = the backbone runs on augmented images every step; None = the method's preset (0 when it
      names none).
    feature_cache_dir: where feature caches live; None = ``<data_dir>/unhash_jax_features``.
    init_backbone_from: workdir of another run (any method, same backbone and input size) whose
      latest checkpoint initialises the backbone before training; only read, never written. None
      = the backbone's own initialisation.
    cpu_ynn_fusions: on CPU, which operations the train and encode steps hand to XLA's YNNPACK
      library: ``"dots_reductions"`` (matrix products and reductions), ``"dots"``, or ``"xla"``
      (XLA's own default list). See :mod:`unhash_jax.xla_cpu`: the default made small-CNN steps
      1.6× faster than ``"xla"`` on 2 cores. Floats differ from ``"xla"`` in the last bits. No
      effect on GPU/TPU.
  """

  method: str = "cibhash"
  dataset: str = "digits"
  preset: str | None = None
  protocol: str | None = None
  bits: int = 32
  backbone: str | None = None
  batch_size: int | None = None
  optimizer: str | None = None
  learning_rate: float | None = None
  lr_schedule: str | None = None
  final_learning_rate: float | None = None
  warmup_steps: int | None = None
  weight_decay: float | None = None
  image_size: int | None = None
  view_recipes: tuple[str, ...] | None = None
  epochs: int | None = None
  steps: int | None = None
  seed: int = 0
  split_seed: int = 0
  cache_seed: int | None = None
  val_fraction: float = 0.1
  eval_every: int | None = None
  val_topk: int | None = None
  checkpoint_every: int | None = None
  keep_checkpoints: int = 2
  log_every: int = 100
  select_on_val: bool = False
  data_dir: str | None = None
  archive: str | None = None
  eval_batch_size: int = 512
  hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
  model: dict[str, Any] = dataclasses.field(default_factory=dict)
  distributed: bool = False
  pretrained: str | None = None
  cached_views: int | None = None
  feature_cache_dir: str | None = None
  init_backbone_from: str | None = None
  cpu_ynn_fusions: str = "dots_reductions"

  def replace(self, **changes: Any) -> "Config":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "Config":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
      raise ValueError(f"unknown config fields {sorted(unknown)}; valid fields: {sorted(names)}.")
    d = dict(d)
    if d.get("view_recipes") is not None:  # JSON has no tuples
      d["view_recipes"] = tuple(d["view_recipes"])
    return cls(**d)
