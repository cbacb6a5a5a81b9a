"""Command-line entry point: ``python -m unhash_jax.main`` (absl flags → Config → train_and_evaluate).

With no flags it trains CIBHash with 32 bits on the embedded digits data set and prints the retrieval
metrics. Exit status: 0 on success; 2 for usage errors (bad flags or values, settings that do not fit
the data, a resume with settings that would change the workdir's run); 1 for run errors (missing or
corrupt data, a checkpoint of another run or an unreadable one, a workdir in use by another run, an
``--init_backbone_from`` checkpoint that is missing or whose backbone does not fit, a non-finite
loss); 130 when interrupted (Ctrl-C), with the last checkpoint named.
"""

from __future__ import annotations

import dataclasses
import json
import logging as pylogging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags, logging  # noqa: E402

from unhash_jax import optim, xla_cpu  # noqa: E402
from unhash_jax.config import Config  # noqa: E402
from unhash_jax.methods import REGISTRY  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("method", "cibhash", f"Hashing method; one of: {', '.join(sorted(REGISTRY))}.")
flags.DEFINE_string("preset", None,
                    "The method's named preset (digits, cifar10, paper, common, ...); default: the "
                    "preset named like --dataset, if the method has one.")
flags.DEFINE_string("dataset", "digits", "Data set: digits (embedded), cifar10, image_folder.")
flags.DEFINE_string("protocol", None, "Split protocol (docs/methods.md §1.6); default: the data set's.")
flags.DEFINE_integer("bits", 32, "Code length in bits.")
flags.DEFINE_string("workdir", None, "Output directory; default ./runs/<method>-<dataset>-<bits>b.")
flags.DEFINE_string("data_dir", None, "Cache directory for built data sets (tfds data_dir).")
flags.DEFINE_string("archive", None,
                    "Image archive (.tar.gz) or unpacked <split>/<class>/<image> folder "
                    "(cifar10: e.g. ../shared/data/cifar10-jpeg.tar.gz).")
flags.DEFINE_string("backbone", None, "Backbone name; default: the method's preset.")
flags.DEFINE_integer("epochs", None, "Training epochs (ignored when --steps is set).")
flags.DEFINE_integer("steps", None, "Training steps.")
flags.DEFINE_integer("batch_size", None, "Global batch size (a multiple of the device count).")
flags.DEFINE_enum("optimizer", None, list(optim.OPTIMIZERS),
                  "Optimizer (coupled L2 weight decay); default: the method's preset (adam).")
flags.DEFINE_float("learning_rate", None, "Learning rate (the peak of the schedule).")
flags.DEFINE_enum("lr_schedule", None, list(optim.LR_SCHEDULES),
                  "Learning-rate schedule: constant, cosine (decay to 0 over the run), cosine_epoch "
                  "(the same, stepped per epoch), log_epoch (log-spaced per epoch down to "
                  "--final_learning_rate); default: the method's preset (constant).")
flags.DEFINE_float("final_learning_rate", None, "Last epoch's rate of the log_epoch schedule.")
flags.DEFINE_integer("warmup_steps", None,
                     "Steps of linear learning-rate warm-up from 0; default: the method's preset (0).")
flags.DEFINE_float("weight_decay", None, "Coupled L2 weight decay (PyTorch Adam semantics).")
flags.DEFINE_integer("image_size", None, "Side every view and test image is resized to (the model "
                     "is built for it); default: the preset's, else the data's.")
flags.DEFINE_list("view_recipes", None,
                  "Augmentation recipe of each view, comma-separated (e.g. cibhash,cibhash); "
                  "default: the method's preset.")
flags.DEFINE_integer("seed", 0, "Initialisation/augmentation/shuffling seed.")
flags.DEFINE_integer("split_seed", 0, "Seed of the protocol's random split.")
flags.DEFINE_integer("cache_seed", None,
                     "Seed of the feature cache's augmented views (--cached_views); default "
                     "--seed. Fix it to train several --seed values on one cache.")
flags.DEFINE_float("val_fraction", 0.1, "Share of the training split used as validation queries.")
flags.DEFINE_integer("eval_every", None,
                     "Steps between validation evaluations, and one at the end (0: none).")
flags.DEFINE_integer("val_topk", None, "k of the validation mAP@k (default: the protocol's k).")
flags.DEFINE_integer("checkpoint_every", None, "Steps between checkpoints (0: only at end).")
flags.DEFINE_integer("keep_checkpoints", 2, "Recent checkpoints to keep (plus the best).")
flags.DEFINE_integer("log_every", 100, "Steps between progress lines.")
flags.DEFINE_integer("eval_batch_size", 512, "Batch size of the encoding passes.")
flags.DEFINE_bool("select_on_val", False, "Evaluate the best-validation state, not the last.")
flags.DEFINE_string("pretrained", None,
                    "Weights of --backbone: a torchvision/timm state dict (.pth/.bin/.safetensors, "
                    "read without PyTorch), e.g. ../shared/data/mobilenet_v2-b0353104.pth.")
flags.DEFINE_integer("cached_views", None,
                     "E > 0: train on a cache of the frozen backbone's features (test transform + E "
                     "augmented views per training image, computed once, resumable); 0: run the "
                     "backbone on augmented images every step; default: the method's preset (0).")
flags.DEFINE_string("feature_cache_dir", None,
                    "Folder of feature caches; default <data_dir>/unhash_jax_features.")
flags.DEFINE_bool("cache_only", False,
                  "Build the feature cache (--cached_views) and the method's tables, then exit "
                  "without training (e.g. on an accelerator machine, for training on a CPU one).")
flags.DEFINE_string("init_backbone_from", None,
                    "Workdir of another run (any method, same backbone and input size) whose latest "
                    "checkpoint initialises the backbone, e.g. a CIBHash run for NSH's heads. Read "
                    "only; ignored when this run resumes from its own checkpoint.")
flags.DEFINE_bool("frozen_backbone", None,
                  "Keep the backbone fixed (no gradient, BatchNorm in inference mode); default: the "
                  "method's preset. Model option frozen_backbone.")
flags.DEFINE_float("backbone_lr_scale", None,
                   "Multiplies the backbone's learning rate (heads keep --learning_rate); default: "
                   "the method's preset (1). Model option backbone_lr_scale.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host TPU pods).")
flags.DEFINE_enum("cpu_ynn_fusions", xla_cpu.DEFAULT_YNN_FUSIONS, list(xla_cpu.YNN_FUSIONS),
                  "On CPU, which operations XLA hands to its experimental YNNPACK library: matrix "
                  "products and reductions (1.6x faster small-CNN steps on 2 cores than 'xla'), "
                  "products only, or XLA's own default list ('xla'; last-bit float differences "
                  "between the choices). No effect on GPU/TPU.")

_MODEL_FLAGS = ("frozen_backbone", "backbone_lr_scale")


def _hparam_flags() -> dict[str, tuple[type, dict[str, str]]]:
  """Every loss hyper-parameter of every method: name -> (type, {method: help})."""
  out: dict[str, tuple[type, dict[str, str]]] = {}
  for spec in REGISTRY.values():
    for h in spec.hparams:
      kind, owners = out.get(h.name, (h.kind, {}))
      if kind is not h.kind:
        raise TypeError(f"hyper-parameter {h.name!r} has type {kind.__name__} in one method and "
                        f"{h.kind.__name__} in {spec.name}; one flag cannot carry both.")
      owners[spec.name] = f"{h.help} ({h.describe_range()}; default {h.default})"
      out[h.name] = (kind, owners)
  return out


HPARAM_FLAGS = _hparam_flags()
for _name, (_kind, _owners) in sorted(HPARAM_FLAGS.items()):
  _help = "Loss hyper-parameter; " + "; ".join(f"{m}: {t}" for m, t in sorted(_owners.items()))
  {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}[_kind](
      _name, None, _help)


class UsageError(ValueError):
  pass


def _fail(kind: str, message: str, status: int) -> None:
  print(f"unhash_jax: {kind}: {message}", file=sys.stderr)
  sys.exit(status)


def parse_flags(argv):
  """absl's parser, with bad flags reported in one paragraph and exit status 2."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _fail("usage error", f"{e}. Run with --helpfull for every flag.", 2)


def config_from_flags() -> Config:
  """Builds the Config from the flags and resolves it (:func:`unhash_jax.methods.resolve_config`,
  the one place where settings are checked); raises UsageError naming the problem."""
  from unhash_jax.methods import resolve_config

  if FLAGS.method not in REGISTRY:
    raise UsageError(f"unknown --method={FLAGS.method!r}; valid choices: "
                     f"{', '.join(sorted(REGISTRY))}.")
  spec = REGISTRY[FLAGS.method]
  if FLAGS.init_backbone_from is not None and not os.path.isdir(FLAGS.init_backbone_from):
    raise UsageError(f"--init_backbone_from={FLAGS.init_backbone_from!r} is not a directory; pass "
                     f"the --workdir of a finished run (it holds checkpoints/).")
  hparams = {}
  for name, (_, owners) in HPARAM_FLAGS.items():
    value = getattr(FLAGS, name)
    if value is None:
      continue
    if spec.name not in owners:
      raise UsageError(f"--{name} is a hyper-parameter of {', '.join(sorted(owners))}, not of "
                       f"{spec.name}; {spec.name}'s are: "
                       f"{', '.join('--' + h.name for h in spec.hparams)}.")
    hparams[name] = value
  fields = {f.name for f in dataclasses.fields(Config)}
  values = {name: getattr(FLAGS, name) for name in fields
            if name not in ("hparams", "model", "init_backbone_from", "pretrained") and name in FLAGS}
  values["pretrained"] = os.path.abspath(FLAGS.pretrained) if FLAGS.pretrained else None
  values["view_recipes"] = tuple(FLAGS.view_recipes) if FLAGS.view_recipes else None
  config = Config(**values, hparams=hparams,
                  model={n: getattr(FLAGS, n) for n in _MODEL_FLAGS if getattr(FLAGS, n) is not None},
                  init_backbone_from=(os.path.abspath(FLAGS.init_backbone_from)
                                      if FLAGS.init_backbone_from else None))
  try:
    resolve_config(config)
  except ValueError as e:
    raise UsageError(str(e)) from e
  return config


def format_results(results: dict) -> str:
  ties = {"index": "ties by database index"}.get(results.get("tie_policy"),
                                                 f"ties: {results.get('tie_policy')}")
  lines = [f"{results['method']} on {results['dataset']} ({results['protocol']}), "
           f"{results['bits']} bits, k={results['topk']}, {ties}:"]
  keys = ["map"] + sorted(k for k in results if k.startswith(("map@", "p@", "r@"))
                          and isinstance(results[k], float))
  keys += [k for k in ("p@h<=2", "empty_ball_fraction") if k in results]
  for k in dict.fromkeys(keys):
    lines.append(f"  {k:>24s}  {results[k]:.4f}")
  for warning in results.get("warnings", []):
    lines.append(f"WARNING: {warning}")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    _fail("usage error", f"unexpected arguments {argv[1:]}; every option is a --flag "
          "(run with --helpfull).", 2)
  from unhash_jax import checkpointing, parallel, train, workdir as workdir_lib
  from unhash_jax.config import ConfigError
  from unhash_jax.data import DataError
  from unhash_jax.data.feature_cache import FeatureCacheError
  from unhash_jax.models import PretrainedWeightsError
  try:
    parallel.maybe_initialize_distributed(FLAGS.distributed)
    config = config_from_flags()
  except UsageError as e:
    _fail("usage error", str(e), 2)
  workdir = FLAGS.workdir or os.path.join(
      "runs", f"{config.method}-{config.dataset}-{config.bits}b")
  try:
    if FLAGS.cache_only:
      print(json.dumps(train.prepare_inputs(config), indent=2))
      return
    results = train.train_and_evaluate(config, workdir)
  except ConfigError as e:
    _fail("usage error", str(e), 2)
  except (checkpointing.CheckpointError, checkpointing.BackboneInitError,
          train.NonFiniteLossError, workdir_lib.WorkdirBusyError, DataError, PretrainedWeightsError,
          FeatureCacheError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
    _fail("error", str(e), 1)
  except KeyboardInterrupt as e:  # train.TrainingInterrupted names the last checkpoint
    _fail("interrupted", str(e) or "interrupted before training started; nothing was written.",
          130)
  print(format_results(results))
  print(f"Wrote {os.path.join(workdir, 'results.json')}, codes.npz and pr_curve.png.")


class _QuietLibraries(pylogging.Filter):
  """Drops the INFO chatter of orbax and tfds so that progress lines stay readable."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    noisy = ("orbax", "tensorflow_datasets", "xla_bridge")
    return record.levelno >= pylogging.WARNING or not any(n in record.pathname for n in noisy)


def run():
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
