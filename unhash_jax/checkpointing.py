"""Orbax checkpoints of the train state (the only module that imports orbax).

Each checkpoint step holds the state (``StandardSave``) and a small JSON record of what made it
(method, bits, dataset, backbone), so that a workdir cannot silently be resumed by a different run.
Kept: the latest ``keep`` checkpoints plus the best one by validation mAP.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as cm

# Fields of the run that a resumed run must share with the checkpoint.
IDENTITY_FIELDS = ("method", "bits", "dataset", "backbone")


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be used (unreadable, or made by a different run)."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir: str, *, keep: int = 2, best_metric: str = "val_map"
                 ) -> ocp.CheckpointManager:
  """A ``CheckpointManager`` under ``workdir/checkpoints`` (saves only when :func:`save` says)."""
  options = ocp.CheckpointManagerOptions(
      preservation_policy=cm.AnyPreservationPolicy([
          cm.LatestN(n=max(int(keep), 1)),
          cm.BestN(get_metric_fn=lambda m: m[best_metric], n=1,
                   keep_checkpoints_without_metrics=False),
      ]),
      create=True,
  )
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, *, identity: Mapping[str, Any],
         metrics: Mapping[str, float] | None = None) -> None:
  """Saves ``state`` at ``step`` (asynchronously; call :func:`wait` before reading it back)."""
  manager.save(int(step),
               args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                       identity=ocp.args.JsonSave(dict(identity))),
               metrics=dict(metrics) if metrics else None, force=True)


def wait(manager: ocp.CheckpointManager) -> None:
  manager.wait_until_finished()


def latest_step(manager: ocp.CheckpointManager) -> int | None:
  return manager.latest_step()


def read_identity(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  try:
    restored = manager.restore(step, args=ocp.args.Composite(identity=ocp.args.JsonRestore()))
    return dict(restored["identity"])
  except Exception as e:  # orbax raises many types for missing/corrupt files
    raise CheckpointError(
        f"cannot read the checkpoint at step {step} in {manager.directory}: {e}") from e


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
  try:
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
  except Exception as e:
    raise CheckpointError(
        f"cannot restore the checkpoint at step {step} in {manager.directory} "
        f"(unreadable or corrupt): {type(e).__name__}: {e}") from e
  logging.info("Restored checkpoint step %d from %s", step, manager.directory)
  return restored["state"]
