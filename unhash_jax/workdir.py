"""A run's workdir: one run at a time, a config written once, and what a resume may change.

* :class:`WorkdirLock`: an exclusive ``flock`` on ``workdir/.lock`` held for the whole run. A second run
  on the same workdir refuses, naming the holder (pid, host, start time, command). The kernel releases
  the lock when its process dies, so a run that was killed never blocks the resume; the file itself
  is left in place (deleting lock files races). Local file systems only: ``flock`` on some network
  file systems does not exclude other hosts.
* ``config.json`` is written when a run starts fresh and never rewritten; checkpoints also record the
  resolved config. A resume (or a restart before the first checkpoint) whose settings differ in a
  field that changes the training is refused (:class:`ResumeMismatchError`, CLI exit 2) with
  ``config.json`` untouched. :data:`RESUME_MAY_CHANGE` lists the fields that may differ; the length
  (``steps``/``epochs``) only when the learning-rate schedule does not depend on it.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from typing import Any, Mapping

from unhash_jax.config import Config, ConfigError
from unhash_jax.optim import LENGTH_DEPENDENT_SCHEDULES

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"

# Fields that only say where data lives, how often to log/evaluate/save, or how fast to compute:
# a resume may change them (extending the run too, see resume_changes). Not ``val_topk``: the best
# validation checkpoint is chosen by comparing values measured before and after the resume.
RESUME_MAY_CHANGE = ("steps", "epochs", "eval_every", "checkpoint_every", "keep_checkpoints",
                     "log_every", "eval_batch_size", "data_dir", "archive", "distributed",
                     "cpu_ynn_fusions", "select_on_val", "init_backbone_from", "pretrained",
                     "feature_cache_dir")
_LENGTH_FIELDS = ("steps", "epochs")


class WorkdirBusyError(RuntimeError):
  """Another live run holds the workdir's lock."""


class ResumeMismatchError(ConfigError):
  """The workdir's run was made with settings that this run would change."""


class WorkdirLock:
  """Exclusive lock of a workdir for one run (a context manager; see the module docstring)."""

  def __init__(self, workdir: str):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_FILE)
    self._fd: int | None = None

  def acquire(self) -> "WorkdirLock":
    import fcntl  # POSIX only
    _check_can_be_a_directory(self.workdir)
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise WorkdirBusyError(
          f"the workdir {self.workdir} is in use by another run ({holder}); two runs on one workdir "
          f"would write into each other's checkpoints and metrics. Wait for that run to finish (or "
          f"stop it), or pass another --workdir.") from None
    os.ftruncate(fd, 0)
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": " ".join(sys.argv)}
    os.write(fd, (json.dumps(record) + "\n").encode())
    os.fsync(fd)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is None:
      return
    import fcntl
    os.ftruncate(self._fd, 0)
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def _check_can_be_a_directory(path: str) -> None:
  """A workdir that is a file, or lies under one, is a usage error (not a traceback)."""
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    where = "is" if existing == path else f"lies under {existing}, which is"
    raise ConfigError(f"--workdir={path} {where} a file, not a directory; pass a directory (new or "
                      f"one of an earlier run). Nothing was written.")


def _read_holder(fd: int) -> str:
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    record = json.loads(os.read(fd, 65536).decode() or "{}")
  except (OSError, ValueError):
    record = {}
  if not record:
    return "holder unknown"
  return (f"pid {record.get('pid')} on {record.get('host')}, started {record.get('started')}: "
          f"{record.get('command')}")


def read_saved_config(workdir: str) -> dict[str, Any] | None:
  """``workdir/config.json`` as a dict, or None when there is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path} exists but cannot be read as JSON ({e}); it describes the run in "
                      f"this workdir, so it is left untouched: repair it or pass another "
                      f"--workdir.") from None


def write_config_once(workdir: str, config: Config) -> bool:
  """Writes ``config.json`` unless it exists (atomically). Returns whether it was written."""
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    return False
  os.makedirs(workdir, exist_ok=True)
  tmp = path + f".tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(config.to_json())
  os.replace(tmp, path)
  return True


def _comparable(d: Mapping[str, Any]) -> dict[str, Any]:
  """A config dict with JSON's list/tuple difference removed."""
  return json.loads(json.dumps(dict(d), sort_keys=True))


def resume_changes(saved: Mapping[str, Any], config: Config, *, what: str
                   ) -> dict[str, tuple[Any, Any]]:
  """The fields in which ``config`` differs from the ``saved`` (resolved) config of the workdir.

  Args:
    saved: the saved run's resolved config (from its checkpoint or ``config.json``).
    config: this run's resolved config.
    what: where ``saved`` came from, for the message (e.g. ``"the checkpoint at step 400"``).

  Returns:
    ``{field: (saved value, this value)}`` of the changes a resume may make.

  Raises:
    ResumeMismatchError: a field outside :data:`RESUME_MAY_CHANGE` differs, or the length changes
      under a length-dependent learning-rate schedule. The message names every such field with
      both values.
  """
  old, new = _comparable(saved), _comparable(config.to_dict())
  changed = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
             if old.get(k) != new.get(k)}
  allowed = set(RESUME_MAY_CHANGE)
  if new.get("lr_schedule") in LENGTH_DEPENDENT_SCHEDULES:
    allowed -= set(_LENGTH_FIELDS)
  refused = {k: v for k, v in changed.items() if k not in allowed}
  if refused:
    detail = "; ".join(f"--{k}: {a!r} there, {b!r} now" for k, (a, b) in refused.items())
    length_note = ""
    if set(refused) & set(_LENGTH_FIELDS):
      length_note = (f" The {new.get('lr_schedule')} learning-rate schedule depends on the run's "
                     f"length, so the length cannot change on resume either.")
    raise ResumeMismatchError(
        f"this workdir holds a run with other settings ({what}): {detail}. Resuming would change "
        f"its training, so nothing was changed.{length_note} Run with the same settings to resume "
        f"(only {', '.join('--' + f for f in RESUME_MAY_CHANGE[:6])}, ... may change), or pass "
        f"another --workdir for a new run.")
  return changed
