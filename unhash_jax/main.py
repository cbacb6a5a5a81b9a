"""Command-line entry point: ``python -m unhash_jax.main`` (absl flags → Config → train_and_evaluate).

With no flags it trains CIBHash with 32 bits on the embedded digits data set and prints the retrieval
metrics. Exit status: 0 on success, 2 for usage errors (bad flags), 1 for run errors (missing or
corrupt data, a checkpoint of another run, an ``--init_backbone_from`` checkpoint that is missing or
whose backbone does not fit, a non-finite loss).
"""

from __future__ import annotations

import logging as pylogging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags, logging  # noqa: E402

from unhash_jax import xla_cpu  # noqa: E402
from unhash_jax.config import Config  # noqa: E402
from unhash_jax.methods import REGISTRY  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("method", "cibhash", f"Hashing method; one of: {', '.join(sorted(REGISTRY))}.")
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
flags.DEFINE_float("learning_rate", None, "Learning rate.")
flags.DEFINE_enum("lr_schedule", None, ["constant", "cosine"],
                  "Learning-rate schedule: constant, or cosine decay to 0 over the run; default: "
                  "the method's preset (constant).")
flags.DEFINE_integer("warmup_steps", None,
                     "Steps of linear learning-rate warm-up from 0; default: the method's preset (0).")
flags.DEFINE_float("weight_decay", None, "Coupled L2 weight decay (PyTorch Adam semantics).")
flags.DEFINE_integer("image_size", None, "Side of the augmented views; default: method preset.")
flags.DEFINE_integer("seed", 0, "Initialisation/augmentation/shuffling seed.")
flags.DEFINE_integer("split_seed", 0, "Seed of the protocol's random split.")
flags.DEFINE_integer("eval_every", None, "Steps between validation evaluations (0: only at end).")
flags.DEFINE_integer("checkpoint_every", None, "Steps between checkpoints (0: only at end).")
flags.DEFINE_integer("keep_checkpoints", 2, "Recent checkpoints to keep (plus the best).")
flags.DEFINE_integer("log_every", 100, "Steps between progress lines.")
flags.DEFINE_bool("select_on_val", False, "Evaluate the best-validation state, not the last.")
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


def _hparam_flags() -> dict[str, tuple[type, set[str]]]:
  """Every loss hyper-parameter of every method: name -> (type, methods that have it)."""
  out: dict[str, tuple[type, set[str]]] = {}
  for spec in REGISTRY.values():
    for name, default in spec.hparams.items():
      kind, owners = out.get(name, (type(default), set()))
      owners.add(spec.name)
      out[name] = (kind, owners)
  return out


HPARAM_FLAGS = _hparam_flags()
for _name, (_kind, _owners) in sorted(HPARAM_FLAGS.items()):
  _help = f"Loss hyper-parameter of {', '.join(sorted(_owners))} (default: the method's)."
  if _kind is bool:
    flags.DEFINE_bool(_name, None, _help)
  elif _kind is int:
    flags.DEFINE_integer(_name, None, _help)
  else:
    flags.DEFINE_float(_name, None, _help)


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
  """Builds and validates the Config; raises UsageError naming the problem and the choices."""
  from unhash_jax.data import builders, protocols
  from unhash_jax.models import BACKBONES
  import jax

  if FLAGS.method not in REGISTRY:
    raise UsageError(f"unknown --method={FLAGS.method!r}; valid choices: "
                     f"{', '.join(sorted(REGISTRY))}.")
  if FLAGS.dataset not in builders.DATASETS:
    raise UsageError(f"unknown --dataset={FLAGS.dataset!r}; valid choices: "
                     f"{', '.join(builders.DATASETS)}.")
  if FLAGS.protocol is not None and FLAGS.protocol not in protocols.PROTOCOLS:
    raise UsageError(f"unknown --protocol={FLAGS.protocol!r}; valid choices: "
                     f"{', '.join(protocols.PROTOCOLS)}.")
  if FLAGS.backbone is not None and FLAGS.backbone not in BACKBONES:
    raise UsageError(f"unknown --backbone={FLAGS.backbone!r}; valid choices: "
                     f"{', '.join(sorted(BACKBONES))}.")
  spec = REGISTRY[FLAGS.method]
  if FLAGS.bits < max(1, spec.min_bits):
    raise UsageError(f"--bits={FLAGS.bits} is not supported by {spec.name}: it needs at least "
                     f"{max(1, spec.min_bits)} bits (16, 32 and 64 are the usual lengths).")
  if FLAGS.warmup_steps is not None and FLAGS.warmup_steps < 0:
    raise UsageError(f"--warmup_steps must be >= 0, got {FLAGS.warmup_steps}.")
  for name in ("epochs", "steps", "batch_size", "image_size"):
    value = getattr(FLAGS, name)
    if value is not None and value < 1:
      raise UsageError(f"--{name} must be >= 1, got {value}.")
  if FLAGS.init_backbone_from is not None and not os.path.isdir(FLAGS.init_backbone_from):
    raise UsageError(f"--init_backbone_from={FLAGS.init_backbone_from!r} is not a directory; pass "
                     f"the --workdir of a finished run (it holds checkpoints/).")
  if FLAGS.backbone_lr_scale is not None and FLAGS.backbone_lr_scale < 0:
    raise UsageError(f"--backbone_lr_scale must be >= 0, got {FLAGS.backbone_lr_scale}.")
  model = {name: getattr(FLAGS, name) for name in ("frozen_backbone", "backbone_lr_scale")
           if getattr(FLAGS, name) is not None}
  for name in ("learning_rate",):
    value = getattr(FLAGS, name)
    if value is not None and not value > 0:
      raise UsageError(f"--{name} must be > 0, got {value}.")
  hparams = {}
  for name, (_, owners) in HPARAM_FLAGS.items():
    value = getattr(FLAGS, name)
    if value is None:
      continue
    if spec.name not in owners:
      raise UsageError(f"--{name} is a hyper-parameter of {', '.join(sorted(owners))}, not of "
                       f"{spec.name}; {spec.name}'s are: {', '.join('--' + h for h in spec.hparams)}.")
    hparams[name] = value
  config = Config(
      method=FLAGS.method, dataset=FLAGS.dataset, protocol=FLAGS.protocol, bits=FLAGS.bits,
      backbone=FLAGS.backbone, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
      lr_schedule=FLAGS.lr_schedule, warmup_steps=FLAGS.warmup_steps,
      weight_decay=FLAGS.weight_decay, image_size=FLAGS.image_size, epochs=FLAGS.epochs,
      steps=FLAGS.steps, seed=FLAGS.seed, split_seed=FLAGS.split_seed,
      eval_every=FLAGS.eval_every, checkpoint_every=FLAGS.checkpoint_every,
      keep_checkpoints=FLAGS.keep_checkpoints, log_every=FLAGS.log_every,
      select_on_val=FLAGS.select_on_val, data_dir=FLAGS.data_dir, archive=FLAGS.archive,
      hparams=hparams, model=model, distributed=FLAGS.distributed,
      cpu_ynn_fusions=FLAGS.cpu_ynn_fusions,
      init_backbone_from=(os.path.abspath(FLAGS.init_backbone_from)
                          if FLAGS.init_backbone_from else None))
  from unhash_jax.methods import resolve_config
  try:
    resolved = resolve_config(config)
  except ValueError as e:
    raise UsageError(str(e)) from e
  n = jax.device_count()
  if resolved.batch_size % n:
    raise UsageError(f"--batch_size={resolved.batch_size} is not divisible by the number of "
                     f"devices ({n}); choose a multiple of {n}.")
  return config


def format_results(results: dict) -> str:
  lines = [f"{results['method']} on {results['dataset']} ({results['protocol']}), "
           f"{results['bits']} bits, k={results['topk']}, ties by database index:"]
  keys = ["map"] + sorted(k for k in results if k.startswith(("map@", "p@", "r@"))
                          and isinstance(results[k], float))
  keys += [k for k in ("p@h<=2", "empty_ball_fraction") if k in results]
  for k in dict.fromkeys(keys):
    lines.append(f"  {k:>24s}  {results[k]:.4f}")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    _fail("usage error", f"unexpected arguments {argv[1:]}; every option is a --flag "
          "(run with --helpfull).", 2)
  from unhash_jax import checkpointing, parallel, train
  from unhash_jax.data import DataError
  try:
    parallel.maybe_initialize_distributed(FLAGS.distributed)
    config = config_from_flags()
  except UsageError as e:
    _fail("usage error", str(e), 2)
  workdir = FLAGS.workdir or os.path.join(
      "runs", f"{config.method}-{config.dataset}-{config.bits}b")
  try:
    results = train.train_and_evaluate(config, workdir)
  except train.RunConfigError as e:
    _fail("usage error", str(e), 2)
  except (checkpointing.CheckpointError, checkpointing.BackboneInitError,
          train.NonFiniteLossError, DataError, FileNotFoundError, NotADirectoryError,
          PermissionError) as e:
    _fail("error", str(e), 1)
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
