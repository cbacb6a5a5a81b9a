"""Orbax checkpoints of the train state (the only module that imports orbax).

Each checkpoint step holds the state (``StandardSave``) and a small JSON record of what made it
(method, bits, dataset, backbone, and the whole resolved config), so that a workdir cannot silently
be resumed by a different run. An unreadable checkpoint gives one paragraph (:class:`CheckpointError`)
and is never deleted.
Kept: the latest ``keep`` checkpoints plus the best one by validation mAP.

:func:`read_backbone` reads only the backbone arrays of another run's checkpoint, read-only (a
label-free pretrained backbone for a second method: ``--init_backbone_from``).
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as cm

# Fields of the run that a resumed run must share with the checkpoint.
IDENTITY_FIELDS = ("method", "bits", "dataset", "backbone")


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be used (unreadable, or made by a different run)."""


class BackboneInitError(ValueError):
  """``init_backbone_from`` cannot be used: no such workdir or checkpoint, or its backbone differs."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir: str, *, keep: int = 2, best_metric: str = "val_map"
                 ) -> ocp.CheckpointManager:
  """A ``CheckpointManager`` under ``workdir/checkpoints`` (saves only when :func:`save` says)."""
  metric = lambda m: m[best_metric]  # noqa: E731
  options = ocp.CheckpointManagerOptions(
      preservation_policy=cm.AnyPreservationPolicy([
          cm.LatestN(n=max(int(keep), 1)),
          cm.BestN(get_metric_fn=metric, n=1, keep_checkpoints_without_metrics=False),
      ]),
      # Orbax writes a step's metrics to disk only when best_fn is set; without them a resumed
      # run's manager sees no metrics and deletes the best checkpoint at its next save.
      best_fn=metric,
      create=True,
  )
  _quiet_metricless_saves()
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


class _MetriclessSaveFilter(std_logging.Filter):
  """Drops orbax's warning for a save without metrics: only a validation improvement carries
  them (see train.py), by design."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return "did not provide metrics" not in str(record.msg)


def _quiet_metricless_saves() -> None:
  absl_logger = std_logging.getLogger("absl")
  if not any(isinstance(f, _MetriclessSaveFilter) for f in absl_logger.filters):
    absl_logger.addFilter(_MetriclessSaveFilter())


def save(manager: ocp.CheckpointManager, step: int, state: Any, *, identity: Mapping[str, Any],
         metrics: Mapping[str, float] | None = None,
         progress: Mapping[str, Any] | None = None) -> None:
  """Saves ``state`` at ``step`` (asynchronously; call :func:`wait` before reading it back).

  ``progress``: a small JSON record of the run so far that a resumed run continues from (the
  training time and the best validation result up to ``step``; :func:`read_progress`).
  """
  items = {"state": ocp.args.StandardSave(state), "identity": ocp.args.JsonSave(dict(identity))}
  if progress is not None:
    items["progress"] = ocp.args.JsonSave(dict(progress))
  manager.save(int(step), args=ocp.args.Composite(**items),
               metrics=dict(metrics) if metrics else None, force=True)


def wait(manager: ocp.CheckpointManager) -> None:
  manager.wait_until_finished()


def latest_step(manager: ocp.CheckpointManager) -> int | None:
  return manager.latest_step()


def all_steps(manager: ocp.CheckpointManager) -> list[int]:
  return list(manager.all_steps())


def _summary(e: BaseException) -> str:
  """One line of an orbax/TensorStore exception: its first line, without the TensorStore spec dump
  (hundreds of lines) that follows "See full TensorStore details"."""
  text = str(e).split("See full TensorStore details")[0].strip().splitlines()
  first = text[0].strip().rstrip(".") if text else ""
  return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _is_read_error(text: str) -> bool:
  return "TensorStore" in text or "error while reading array" in text


class _AbandonedReadFilter(std_logging.Filter):
  """Drops asyncio's "Task exception was never retrieved" for the other array reads of a failed
  restore (orbax gathers one task per array; once one fails the rest are never awaited)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if "exception was never retrieved" not in str(record.msg):
      return True
    exc = record.exc_info[1] if record.exc_info else None
    text = f"{exc!r} {exc.__cause__!r}" if exc is not None else str(record.args)
    if _is_read_error(text):
      logging.debug("After an unreadable checkpoint: %s", text[:500])
      return False
    return True


def _quiet_abandoned_reads() -> None:
  """After a failed restore, TensorStore's reads still in flight finish on threads whose asyncio
  loop is gone, or are dropped unawaited, and print tracebacks (with the TensorStore spec dump) that
  add nothing to the one-paragraph error: those messages, and only those, go to the debug log. Installed once, on the first failed read."""
  asyncio_logger = std_logging.getLogger("asyncio")
  if any(isinstance(f, _AbandonedReadFilter) for f in asyncio_logger.filters):
    return
  asyncio_logger.addFilter(_AbandonedReadFilter())
  previous = sys.unraisablehook

  def hook(unraisable):
    text = str(unraisable.exc_value)
    if text == "Event loop is closed" or _is_read_error(text):
      logging.debug("After an unreadable checkpoint: %s", text[:500])
      return
    previous(unraisable)

  sys.unraisablehook = hook


def _unreadable(manager: ocp.CheckpointManager, step: int, what: str, e: BaseException
                ) -> CheckpointError:
  logging.debug("Full error reading checkpoint step %d: %r", step, e)
  others = [s for s in manager.all_steps() if s != step]
  earlier = (f" Other checkpoints in that folder: steps {sorted(others)}; move the step-{step} folder "
             f"aside to resume from the latest of them." if others else "")
  return CheckpointError(
      f"cannot read {what} of the checkpoint at step {step} in {manager.directory}: it is "
      f"unreadable or corrupt (a file may be truncated, e.g. by a full disk or an interrupted "
      f"copy) [{_summary(e)}]. The checkpoint was left untouched.{earlier} Or pass another "
      f"--workdir to start a new run.")


def read_identity(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  _quiet_abandoned_reads()
  try:
    restored = manager.restore(step, args=ocp.args.Composite(identity=ocp.args.JsonRestore()))
    return dict(restored["identity"])
  except Exception as e:  # orbax raises many types for missing/corrupt files
    raise _unreadable(manager, step, "the run record", e) from None


def read_progress(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The ``progress`` record saved with ``step`` by :func:`save`; ``{}`` for a checkpoint written
  without one (before the record existed)."""
  if not os.path.isdir(os.path.join(str(manager.directory), str(int(step)), "progress")):
    return {}
  _quiet_abandoned_reads()
  try:
    restored = manager.restore(step, args=ocp.args.Composite(progress=ocp.args.JsonRestore()))
    return dict(restored["progress"])
  except Exception as e:
    raise _unreadable(manager, step, "the run's progress record", e) from None


def check_identity(manager: ocp.CheckpointManager, step: int, identity: Mapping[str, Any]) -> None:
  """Refuses to resume a checkpoint made by a run that differs in :data:`IDENTITY_FIELDS`."""
  saved = read_identity(manager, step)
  diffs = [f"{k}: checkpoint has {saved.get(k)!r}, this run {identity.get(k)!r}"
           for k in IDENTITY_FIELDS if saved.get(k) != identity.get(k)]
  if diffs:
    raise CheckpointError(
        f"the workdir's checkpoint ({manager.directory}, step {step}) was made by a different run "
        f"({'; '.join(diffs)}). Refusing to resume or overwrite it: pass another --workdir.")


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> Any:
  """Restores the state saved at ``step`` into the structure/shardings of ``abstract_state``."""
  _quiet_abandoned_reads()
  try:
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
  except Exception as e:
    raise _unreadable(manager, step, "the train state", e) from None
  logging.info("Restored checkpoint step %d from %s", step, manager.directory)
  return restored["state"]


# The model attribute that holds the backbone (models.IN_BACKBONE selects the same subtree), and the
# train-state fields that hold model variables (trainable parameters; frozen ones + BN statistics).
_BACKBONE_KEY = "backbone"
_MODEL_FIELDS = ("params", "rest")


def read_backbone(workdir: str, *, step: int | None = None
                  ) -> tuple[dict[tuple[str, ...], np.ndarray], dict[str, Any], int]:
  """Reads the backbone variables saved in another run's checkpoint, without writing to it.

  Only the arrays under the model's ``backbone`` attribute are read (orbax partial restore; the
  heads and the optimizer state are not loaded), whichever method trained them, from both the
  trainable parameters and the rest (a frozen backbone's parameters, BatchNorm statistics).

  Args:
    workdir: the other run's workdir (the folder that holds ``checkpoints/``).
    step: checkpoint step to read; None = the latest.

  Returns:
    ``(arrays, identity, step)``: ``{model path -> numpy array}`` with paths as tuples of strings
    starting with ``"backbone"`` (e.g. ``("backbone", "layers", "0", "kernel")``), the checkpoint's
    identity record (method, bits, dataset, backbone) and the step read.

  Raises:
    BackboneInitError: ``workdir`` or its checkpoints do not exist, the step is missing, or the
      checkpoint holds no backbone variables. CheckpointError: the checkpoint cannot be read.
  """
  root = os.path.abspath(workdir)
  if not os.path.isdir(root):
    raise BackboneInitError(f"init_backbone_from: {workdir!r} is not a directory (expected the "
                            f"workdir of a finished run, holding checkpoints/).")
  directory = checkpoint_dir(root)
  if not os.path.isdir(directory):
    raise BackboneInitError(f"init_backbone_from: {workdir!r} has no checkpoints/ folder; pass the "
                            f"--workdir of a run that saved a checkpoint.")
  handlers = {"state": ocp.PyTreeCheckpointHandler(), "identity": ocp.JsonCheckpointHandler()}
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False),
      item_handlers=handlers)
  try:
    steps = manager.all_steps()
    if not steps:
      raise BackboneInitError(f"init_backbone_from: {directory} holds no checkpoint.")
    if step is None:
      step = max(steps)
    elif step not in steps:
      raise BackboneInitError(f"init_backbone_from: {directory} has no checkpoint at step {step}; "
                              f"its steps are {sorted(steps)}.")
    identity = read_identity(manager, step)
    try:
      metadata = manager.item_metadata(step)["state"]
    except Exception as e:  # orbax raises many types for missing/corrupt files
      raise _unreadable(manager, step, "the metadata", e) from None
    tree = getattr(metadata, "tree", metadata)
    wanted = {f: {_BACKBONE_KEY: tree[f][_BACKBONE_KEY]} for f in _MODEL_FIELDS
              if isinstance(tree, Mapping) and isinstance(tree.get(f), Mapping)
              and _BACKBONE_KEY in tree[f]}
    if not wanted:
      raise BackboneInitError(
          f"init_backbone_from: the checkpoint at step {step} in {directory} holds no backbone "
          f"variables (made by {identity.get('method')!r} with backbone "
          f"{identity.get('backbone')!r}).")
    item = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), wanted)
    restore_args = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    _quiet_abandoned_reads()
    try:
      restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item=item, restore_args=restore_args, partial_restore=True)))["state"]
    except Exception as e:
      raise _unreadable(manager, step, "the backbone", e) from None
  finally:
    manager.close()
  arrays: dict[tuple[str, ...], np.ndarray] = {}
  for path, value in jax.tree.leaves_with_path(restored):
    # Paths are (field, "backbone", ..., "value"): drop the train-state field and a variable's
    # trailing "value" key to get the model path.
    keys = tuple(str(k.key) for k in path[1:])
    arrays[keys[:-1] if keys and keys[-1] == "value" else keys] = np.asarray(value)
  return arrays, identity, int(step)
