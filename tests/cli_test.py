"""The absl CLI in a subprocess: a short run, bad input (exit 2 / exit 1) and nothing deleted."""

import json
import os
import subprocess
import sys
import tarfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--backbone=tiny", "--bits=16", "--batch_size=32", "--eval_every=0", "--log_every=1"]


def run_cli(*args, devices=1, timeout=300):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-m", "unhash_jax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)
  return proc


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("data"))


def _assert_usage_error(proc, *needles):
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  for n in needles:
    assert n in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_two_step_run_prints_metrics_and_writes_results(tmp_path, data_dir):
  workdir = str(tmp_path / "run")
  proc = run_cli("--steps=2", f"--workdir={workdir}", f"--data_dir={data_dir}", *FAST)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "map" in proc.stdout
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert results["method"] == "cibhash" and results["bits"] == 16 and results["steps"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("flag,needles", [
    ("--method=nope", ["unknown --method='nope'", "cibhash"]),
    ("--dataset=mnist", ["unknown --dataset='mnist'", "digits"]),
    ("--protocol=cifar10-x", ["unknown --protocol", "cifar10-i"]),
    ("--bits=0", ["--bits=0"]),
    ("--backbone=resnet9000", ["unknown --backbone", "mlp"]),
    ("--nce_temperature=0.1", ["--nce_temperature"]),
    ("--bits=sixteen", ["usage error"]),
    ("--no_such_flag=1", ["usage error"]),
    ("--lr_schedule=linear", ["usage error", "cosine"]),
    ("--cpu_ynn_fusions=convs", ["usage error", "dots_reductions"]),
    ("--warmup_steps=-1", ["--warmup_steps must be an integer >= 0, got -1"]),
    ("--batch_size=4096", ["1497 images, fewer than one batch of 4096"]),
    ("--lr_schedule=cosine --warmup_steps=5 --steps=5", ["--warmup_steps=5", "5-step run"]),
    # Degenerate values: each names the flag and what it must be.
    ("--temperature=0", ["--temperature=0.0", "> 0"]),
    ("--temperature=inf", ["--temperature=inf", "finite"]),
    ("--kl_weight=-5", ["--kl_weight=-5.0", ">= 0"]),
    ("--num_positives=0 --method=nsh", ["--num_positives=0", ">= 1"]),
    ("--eval_every=-1", ["--eval_every must be an integer >= 0, got -1"]),
    ("--checkpoint_every=-3", ["--checkpoint_every must be an integer >= 0, got -3"]),
    ("--val_topk=0", ["--val_topk must be an integer >= 1, got 0"]),
    ("--log_every=0", ["--log_every must be an integer >= 1, got 0"]),
    ("--learning_rate=inf", ["--learning_rate must be a finite number > 0, got inf"]),
    ("--learning_rate=0", ["--learning_rate must be a finite number > 0"]),
    ("--weight_decay=-1", ["--weight_decay must be finite and >= 0"]),
    ("--val_fraction=1.5", ["--val_fraction must lie in [0, 1)"]),
    ("--dataset=digits --archive=/tmp/x.tar.gz", ["--dataset=digits", "embedded"]),
    ("--dataset=image_folder", ["--dataset=image_folder needs --archive"]),
    ("--preset=nope", ["no preset 'nope'", "digits"]),
    ("--view_recipes=digits", ["2 view(s)", "--view_recipes names 1"]),
    ("--view_recipes=digits,blurry", ["unknown augmentation recipe 'blurry'"]),
    ("--lr_schedule=log_epoch", ["--final_learning_rate > 0"]),
    ("--select_on_val --eval_every=0", ["--select_on_val", "--eval_every=0"]),
    ("--select_on_val --method=itq", ["--select_on_val", "method 'itq'"]),
    # An input size the architecture cannot take (an abstract build, before the workdir exists).
    ("--backbone=resnet50 --image_size=16", ["--backbone=resnet50 cannot take 16x16x1", "32x32"]),
    ("--backbone=vit_b16 --image_size=40", ["--image_size=40", "multiple of the patch size 16"]),
])
def test_usage_errors_exit_2_with_a_clear_message(flag, needles, data_dir, tmp_path):
  if flag == "--nce_temperature=0.1":
    pytest.importorskip("unhash_jax.losses.nsh")
  proc = run_cli(*flag.split(), f"--workdir={tmp_path / 'w'}", f"--data_dir={data_dir}")
  _assert_usage_error(proc, *needles)
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.slow
def test_batch_size_not_divisible_by_devices(tmp_path, data_dir):
  proc = run_cli("--batch_size=12", f"--workdir={tmp_path / 'w'}", f"--data_dir={data_dir}",
                 devices=8)
  _assert_usage_error(proc, "--batch_size=12", "8")


@pytest.mark.slow
def test_missing_and_corrupt_archive_exit_1(tmp_path, data_dir):
  proc = run_cli("--dataset=cifar10", f"--archive={tmp_path / 'missing.tar.gz'}",
                 f"--workdir={tmp_path / 'w'}", f"--data_dir={tmp_path / 'cache'}")
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "missing.tar.gz" in proc.stderr and "Traceback" not in proc.stderr

  corrupt = tmp_path / "corrupt.tar.gz"
  corrupt.write_bytes(b"\x1f\x8b\x08\x00this is not a gzip stream" * 10)
  proc = run_cli("--dataset=cifar10", f"--archive={corrupt}", f"--workdir={tmp_path / 'w'}",
                 f"--data_dir={tmp_path / 'cache'}")
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "corrupt.tar.gz" in proc.stderr and "Traceback" not in proc.stderr
  assert corrupt.exists()


@pytest.mark.slow
def test_checkpoint_of_other_run_is_refused_and_kept(tmp_path, data_dir):
  workdir = tmp_path / "run"
  proc = run_cli("--steps=2", f"--workdir={workdir}", f"--data_dir={data_dir}", *FAST)
  assert proc.returncode == 0, proc.stderr[-3000:]
  ckpts = sorted(os.listdir(workdir / "checkpoints"))
  results = (workdir / "results.json").read_bytes()
  proc = run_cli("--steps=4", "--bits=32", f"--workdir={workdir}", f"--data_dir={data_dir}",
                 *[f for f in FAST if not f.startswith("--bits")])
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "bits" in proc.stderr and "Traceback" not in proc.stderr
  assert sorted(os.listdir(workdir / "checkpoints")) == ckpts
  assert (workdir / "results.json").read_bytes() == results

  # An unreadable checkpoint: clobber the saved arrays, keep the directory.
  step_dir = workdir / "checkpoints" / ckpts[-1] / "state"
  for root, _, files in os.walk(step_dir):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"garbage")
  proc = run_cli("--steps=4", f"--workdir={workdir}", f"--data_dir={data_dir}", *FAST)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "checkpoint" in proc.stderr and "Traceback" not in proc.stderr
  assert sorted(os.listdir(workdir / "checkpoints")) == ckpts


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir):
  workdir = tmp_path / "run"
  proc = run_cli("--steps=40", "--checkpoint_every=1", "--learning_rate=1e38",
                 f"--workdir={workdir}", f"--data_dir={data_dir}", *FAST)
  assert proc.returncode == 1, (proc.stdout[-2000:], proc.stderr[-2000:])
  assert "non-finite" in proc.stderr and "at step" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (workdir / "results.json").exists()
