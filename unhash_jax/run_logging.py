"""Run logging: progress lines with rates and ETA, JSON-lines metrics and TensorBoard events.

Only process 0 writes (big_vision). TensorBoard files are written with tensorboardX, which needs no
TensorFlow.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Mapping

import jax
from absl import logging


def is_writer() -> bool:
  return jax.process_index() == 0


def tensorboard_tag(name: str) -> str:
  """TensorBoard-legal tag for a metric name: ``map@1000`` → ``map_at_1000``, ``p@h<=2`` → ``p_at_h_le_2``."""
  return name.replace("@", "_at_").replace("<=", "_le_").replace(">=", "_ge_")


class MetricsWriter:
  """Appends ``{"step": s, **scalars}`` lines to ``workdir/metrics.jsonl`` and TensorBoard events."""

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self._enabled = is_writer()
    self._jsonl = None
    self._tb = None
    if not self._enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:  # optional: metrics.jsonl is the primary record
        logging.warning("tensorboardX is not installed; writing metrics.jsonl only.")

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self._enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in clean.items():
        self._tb.add_scalar(tensorboard_tag(k), v, int(step))

  def event(self, step: int, name: str, **fields: Any) -> None:
    """Appends ``{"step": s, "event": name, **fields}`` (e.g. a resume and what it changed)."""
    if not self._enabled:
      return
    self._jsonl.write(json.dumps({"step": int(step), "event": name, **fields}, default=str) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


class Progress:
  """Steps/s, images/s and ETA over the last logging interval; a tqdm bar when interactive."""

  def __init__(self, *, first_step: int, total_steps: int, batch_size: int,
               use_bar: bool | None = None):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self._last_step = first_step
    self._last_time = time.perf_counter()
    self._start = self._last_time
    self._bar = None
    if use_bar is None:
      use_bar = is_writer() and sys.stderr.isatty()
    if use_bar:
      try:
        from tqdm import tqdm
        self._bar = tqdm(total=total_steps, initial=first_step, unit="step", dynamic_ncols=True)
      except ImportError:
        pass

  def update(self, step: int) -> dict[str, float]:
    """Rates since the previous call; ``step`` is the number of completed steps."""
    now = time.perf_counter()
    steps = max(step - self._last_step, 0)
    dt = max(now - self._last_time, 1e-9)
    rate = steps / dt
    eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
    if self._bar is not None:
      self._bar.update(steps)
    self._last_step, self._last_time = step, now
    return {"steps_per_sec": rate, "images_per_sec": rate * self.batch_size, "eta_sec": eta,
            "elapsed_sec": now - self._start}

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def format_eta(seconds: float) -> str:
  if seconds == float("inf"):
    return "?"
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"
