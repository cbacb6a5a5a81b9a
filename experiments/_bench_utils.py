"""Small helpers shared by the benchmarks in ``experiments/`` (timing, machine description).

Benchmarks on the project's shared 2-core machines are noisy (other processes come and go), so every
comparison here runs its contenders *interleaved in one process*: repeat r times {time A for N steps,
time B for N steps} and compare medians, so that a load spike hits both sides alike.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Callable, Mapping


def time_interleaved(runners: Mapping[str, Callable[[int], None]], *, steps: int, repeats: int,
                     warmup: int = 2) -> dict[str, list[float]]:
  """Wall-clock seconds per call of ``runner(steps)`` for each runner, interleaved.

  Args:
    runners: name -> ``run(n)`` that performs ``n`` steps and returns only when they are finished
      (the runner itself must synchronise, e.g. ``jax.block_until_ready``).
    steps: steps per timed call.
    repeats: timed calls per runner.
    warmup: untimed calls of ``run(1)`` per runner first (compilation, allocator warm-up).

  Returns:
    name -> list of ``repeats`` durations in seconds (each for ``steps`` steps).
  """
  for run in runners.values():
    for _ in range(warmup):
      run(1)
  times: dict[str, list[float]] = {name: [] for name in runners}
  for r in range(repeats):
    # Alternate the order so neither side always runs right after the other's thread pool was busy.
    order = list(runners) if r % 2 == 0 else list(reversed(list(runners)))
    for name in order:
      t0 = time.perf_counter()
      runners[name](steps)
      times[name].append(time.perf_counter() - t0)
  return times


def summarize(seconds: list[float], *, steps: int, batch: int) -> dict[str, float]:
  """Median steps/s and images/s of ``seconds`` (each for ``steps`` steps of ``batch`` images)."""
  med = statistics.median(seconds)
  return {"median_s_per_step": med / steps, "steps_per_s": steps / med,
          "images_per_s": steps * batch / med, "min_s_per_step": min(seconds) / steps,
          "max_s_per_step": max(seconds) / steps}


def machine_info() -> dict[str, object]:
  """CPU model, core count, load average and the environment variables that change timings."""
  cpu = platform.processor() or "unknown"
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  try:
    load = os.getloadavg()
  except OSError:
    load = (float("nan"),) * 3
  return {"cpu": cpu, "os_cpu_count": os.cpu_count(),
          "sched_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
          "loadavg_1_5_15": [round(x, 2) for x in load], "python": platform.python_version(),
          "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
          "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}


def write_json(path: str, result: Mapping[str, object]) -> None:
  """Writes a benchmark's result (indented JSON, trailing newline), creating its folder."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
