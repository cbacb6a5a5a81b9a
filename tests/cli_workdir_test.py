"""The CLI and one workdir, as a hostile user drives them: two runs at once, a killed run, Ctrl-C,
resumes with other settings, a truncated checkpoint, collapsed codes, a data set too small."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from unhash_jax import checkpointing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--backbone=tiny", "--bits=16", "--batch_size=32", "--eval_every=0", "--log_every=1"]


def _env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def run_cli(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "unhash_jax.main", *args], cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=timeout)


def start_cli(stderr_path, *args):
  """Starts the CLI in the background, its stderr in the file ``stderr_path``. Not a pipe: nobody
  reads a pipe while the run trains, and ``--log_every=1`` (about 15 KB/s here) fills one (64 KiB)
  within seconds; the run then blocks on its next line."""
  with open(stderr_path, "w") as stderr:   # the child keeps its own descriptor
    return subprocess.Popen([sys.executable, "-m", "unhash_jax.main", *args], cwd=REPO,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=stderr)


def _wait_for_a_checkpoint(workdir, proc, stderr_path, timeout=180):
  """Waits until the run has committed a checkpoint (a step-named directory). Not a given step:
  with ``--checkpoint_every=5`` the early ones are rotated out within milliseconds."""
  checkpoints = checkpointing.checkpoint_dir(workdir)
  t0 = time.time()
  while not (os.path.isdir(checkpoints) and any(n.isdigit() for n in os.listdir(checkpoints))):
    if proc.poll() is not None:
      raise AssertionError(f"the run ended early: {stderr_path.read_text()[-3000:]}")
    if time.time() - t0 > timeout:
      raise AssertionError(f"no checkpoint appeared in {checkpoints} within {timeout} s: "
                           f"{stderr_path.read_text()[-3000:]}")
    time.sleep(0.2)


def _one_paragraph(stderr):
  """The CLI's own error line (absl INFO/WARNING lines aside) and no traceback."""
  assert "Traceback" not in stderr, stderr[-3000:]
  ours = [l for l in stderr.splitlines() if l.startswith("unhash_jax:")]
  assert len(ours) == 1, stderr[-3000:]
  return ours[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("data"))


@pytest.mark.slow
def test_second_run_on_a_busy_workdir_refuses_and_a_killed_run_does_not_block(tmp_path, data_dir):
  workdir = str(tmp_path / "run")
  args = [f"--workdir={workdir}", f"--data_dir={data_dir}", *FAST]
  log = tmp_path / "stderr.txt"
  first = start_cli(log, "--steps=100000", "--checkpoint_every=5", *args)
  try:
    _wait_for_a_checkpoint(workdir, first, log)
    second = run_cli("--steps=100000", "--checkpoint_every=5", *args)
    assert second.returncode == 1
    line = _one_paragraph(second.stderr)
    assert "in use by another run" in line and f"pid {first.pid}" in line
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
  # The killed run's lock died with it: the same command resumes (a longer run is allowed).
  resumed = run_cli("--steps=12", "--checkpoint_every=5", *args)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  events = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  resume = [e for e in events if e.get("event") == "resume"]
  assert len(resume) == 1 and resume[0]["step"] >= 5
  assert resume[0]["changed"]["steps"] == [100000, 12]
  assert json.load(open(os.path.join(workdir, "config.json")))["steps"] == 100000  # never rewritten


@pytest.mark.slow
def test_ctrl_c_exits_130_naming_the_last_checkpoint(tmp_path, data_dir):
  workdir = str(tmp_path / "run")
  log = tmp_path / "stderr.txt"
  proc = start_cli(log, "--steps=100000", "--checkpoint_every=5", f"--workdir={workdir}",
                   f"--data_dir={data_dir}", *FAST)
  _wait_for_a_checkpoint(workdir, proc, log)
  proc.send_signal(signal.SIGINT)
  proc.wait(timeout=120)
  stderr = log.read_text()
  assert proc.returncode == 130, stderr[-3000:]
  line = _one_paragraph(stderr)
  assert "interrupted at step" in line and "last checkpoint is step" in line
  assert os.path.join(workdir, "checkpoints") in line and "resume" in line


@pytest.mark.slow
def test_resume_with_training_settings_changed_is_refused_and_config_kept(tmp_path, data_dir):
  workdir = tmp_path / "run"
  args = [f"--workdir={workdir}", f"--data_dir={data_dir}", *FAST]
  assert run_cli("--steps=2", *args).returncode == 0
  config_bytes = (workdir / "config.json").read_bytes()
  metrics_bytes = (workdir / "metrics.jsonl").read_bytes()
  # One refused run names every setting that differs, so one process checks all three.
  proc = run_cli("--steps=4", "--learning_rate=1e38", "--seed=3", "--kl_weight=0.5", *args)
  assert proc.returncode == 2, proc.stderr[-3000:]
  line = _one_paragraph(proc.stderr)
  for needle in ("--learning_rate: 0.001 there, 1e+38 now", "--seed: 0 there, 3 now", "--hparams"):
    assert needle in line, line
  assert "nothing was changed" in line
  assert (workdir / "config.json").read_bytes() == config_bytes
  assert (workdir / "metrics.jsonl").read_bytes() == metrics_bytes
  # Under a length-dependent schedule the length cannot change either.
  cosine = tmp_path / "cosine"
  assert run_cli("--steps=2", "--lr_schedule=cosine", f"--workdir={cosine}",
                 f"--data_dir={data_dir}", *FAST).returncode == 0
  proc = run_cli("--steps=4", "--lr_schedule=cosine", f"--workdir={cosine}",
                 f"--data_dir={data_dir}", *FAST)
  assert proc.returncode == 2 and "depends on the run's length" in _one_paragraph(proc.stderr)


@pytest.mark.slow
def test_truncated_checkpoint_gives_one_paragraph_and_is_kept(tmp_path, data_dir):
  workdir = tmp_path / "run"
  args = [f"--workdir={workdir}", f"--data_dir={data_dir}", *FAST]
  assert run_cli("--steps=4", "--checkpoint_every=2", *args).returncode == 0
  files = [os.path.join(r, f) for r, _, fs in os.walk(workdir / "checkpoints" / "4" / "state")
           for f in fs]
  biggest = max(files, key=os.path.getsize)
  os.truncate(biggest, os.path.getsize(biggest) // 3)
  size = os.path.getsize(biggest)
  proc = run_cli("--steps=6", "--checkpoint_every=2", *args)
  assert proc.returncode == 1
  line = _one_paragraph(proc.stderr)
  assert "unreadable or corrupt" in line and "step 4" in line and "steps [2]" in line
  assert "TensorStore({" not in proc.stderr and len(proc.stderr.splitlines()) < 40
  assert os.path.getsize(biggest) == size


@pytest.mark.slow
def test_collapsed_codes_are_reported(tmp_path, data_dir):
  workdir = tmp_path / "run"
  proc = run_cli("--steps=60", "--learning_rate=1e4", f"--workdir={workdir}",
                 f"--data_dir={data_dir}", *FAST)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "WARNING:" in proc.stdout and "collapsed" in proc.stdout
  results = json.load(open(workdir / "results.json"))
  assert results["warnings"] and results["distinct_codes"] < 15
  assert "Collapsed codes" in proc.stderr


@pytest.mark.slow
def test_folder_too_small_for_its_protocol_is_a_run_error(tmp_path):
  from PIL import Image
  root = tmp_path / "tiny_folder"
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    for cls in ("a", "b"):
      os.makedirs(root / split / cls)
      for i in range(3):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
            root / split / cls / f"{i}.png")
  proc = run_cli("--dataset=image_folder", f"--archive={root}", "--protocol=cifar10-i",
                 f"--workdir={tmp_path / 'w'}", f"--data_dir={tmp_path / 'cache'}", *FAST)
  assert proc.returncode == 1
  line = _one_paragraph(proc.stderr)
  assert "cannot hold protocol 'cifar10-i'" in line and "at least 600 images of class" in line
