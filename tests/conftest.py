"""Shared fixtures. 8 fake CPU devices are requested before JAX starts (sharding tests)."""

import importlib.util
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# One persistent XLA compilation cache for the whole session: its xdist workers and the CLI
# subprocesses inherit the variables. Every training test builds a fresh jitted step for the same
# tiny model, and compiling it (3-6 s on 2 cores) is most of such a test; with the cache a repeated
# step is read back (the suite's time on 2 cores is in the README's opening lines). The key holds
# the HLO, the XLA flags and the jax version, so a hit is the same executable. The directory is new
# for each session (started cold, as CI's) and removed at its end; a user's own
# JAX_COMPILATION_CACHE_DIR is kept.
_OWN_COMPILATION_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_COMPILATION_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="unhash_jax_tests_xla_cache_")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

import jax  # noqa: E402
import pytest  # noqa: E402

# The tests compare float32 results with float64 references to ~1e-5. On GPU (TF32) and TPU (bf16
# passes) JAX's default float32 matmul precision is lower than that, so pin full float32 matmuls: the
# tests check the math, not the accelerator's speed/precision trade-off. (No effect on CPU.)
jax.config.update("jax_default_matmul_precision", "highest")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ../shared/data beside the checkout, or $UNHASH_JAX_SHARED_DATA (e.g. from a git worktree).
SHARED_DATA = os.environ.get("UNHASH_JAX_SHARED_DATA",
                             os.path.join(os.path.dirname(REPO_ROOT), "shared", "data"))


@pytest.fixture
def rng():
  return jax.random.key(0)


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


@pytest.fixture
def shared_data_dir():
  if not os.path.isdir(SHARED_DATA):
    pytest.skip(f"real data folder {SHARED_DATA} not present")
  return SHARED_DATA


@pytest.fixture
def experiment_script():
  """``experiment_script(name)``: ``experiments/<name>.py`` imported as a fresh module."""
  def load(name):
    spec = importlib.util.spec_from_file_location(
        f"{name}_script", os.path.join(REPO_ROOT, "experiments", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
  return load


@pytest.fixture
def crash_at_step(monkeypatch):
  """``crash_at_step(n)``: the trainer's batches raise KeyboardInterrupt when fetching step ``n``'s
  batch (a simulated kill after step ``n - 1``); ``crash_at_step(None)`` restores the real batches."""
  from unhash_jax import train
  real_batches = train.loader.train_batches

  def arm(step_to_crash):
    if step_to_crash is None:
      monkeypatch.setattr(train.loader, "train_batches", real_batches)
      return

    def crashing_batches(*args, **kwargs):
      step = kwargs.get("start_step", 0)
      for batch in real_batches(*args, **kwargs):
        if step == step_to_crash:
          raise KeyboardInterrupt("simulated kill")
        step += 1
        yield batch

    monkeypatch.setattr(train.loader, "train_batches", crashing_batches)

  return arm


def pytest_sessionfinish(session, exitstatus):
  """Removes the session's compilation cache, in the process that made it (xdist workers inherit
  the variable, so only the controller made one)."""
  del session, exitstatus
  if _OWN_COMPILATION_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
