"""unhash_jax.workdir: the run lock and the resume rules, without a training run."""

import json
import os
import subprocess
import sys

import pytest

from unhash_jax import workdir
from unhash_jax.config import Config
from unhash_jax.methods import resolve_config


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
  with workdir.WorkdirLock(str(tmp_path / "w")):
    record = json.loads(open(tmp_path / "w" / ".lock").read())
    assert record["pid"] == os.getpid()
    # Another process (flock locks belong to the open file, so a second process is the real test).
    code = ("import sys; from unhash_jax import workdir\n"
            "try:\n  workdir.WorkdirLock(sys.argv[1]).acquire()\n"
            "except workdir.WorkdirBusyError as e:\n  print(e); sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w")], capture_output=True,
                          text=True)
    assert proc.returncode == 3, proc.stderr
    assert f"pid {os.getpid()}" in proc.stdout and "another --workdir" in proc.stdout
  # Released: the lock can be taken again, and a leftover lock file of a dead run does not block.
  (tmp_path / "w" / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone"}))
  with workdir.WorkdirLock(str(tmp_path / "w")):
    pass


@pytest.mark.parametrize("inside", [False, True])
def test_a_workdir_that_is_a_file_is_a_usage_error_and_the_file_is_kept(tmp_path, inside):
  """Before, a file given as --workdir ended in os.makedirs' FileExistsError traceback."""
  a_file = tmp_path / "results.txt"
  a_file.write_text("a user's file")
  path = a_file / "run" if inside else a_file
  with pytest.raises(workdir.ConfigError, match="a file, not a directory") as e:
    workdir.WorkdirLock(str(path)).acquire()
  assert str(a_file) in str(e.value)
  assert a_file.read_text() == "a user's file"


def _resolved(**kw):
  return resolve_config(Config(**kw))


def test_resume_may_extend_a_constant_schedule_run_but_not_change_its_training():
  saved = _resolved(steps=100).to_dict()
  assert workdir.resume_changes(saved, _resolved(steps=100), what="x") == {}
  assert workdir.resume_changes(saved, _resolved(steps=300, eval_every=7), what="x") == {
      "steps": (100, 300), "eval_every": (1000, 7)}
  for change, field in (({"learning_rate": 0.01}, "--learning_rate"), ({"seed": 1}, "--seed"),
                        ({"bits": 16}, "--bits"), ({"hparams": {"kl_weight": 0.0}}, "--hparams"),
                        ({"method": "nsh", "batch_size": 128}, "--method"),
                        ({"val_topk": 83}, "--val_topk")):
    with pytest.raises(workdir.ResumeMismatchError, match=field):
      workdir.resume_changes(saved, _resolved(steps=100, **change), what="the checkpoint")


def test_length_cannot_change_under_a_length_dependent_schedule():
  saved = _resolved(steps=100, lr_schedule="cosine").to_dict()
  with pytest.raises(workdir.ResumeMismatchError, match="depends on the run's length"):
    workdir.resume_changes(saved, _resolved(steps=200, lr_schedule="cosine"), what="x")


def test_config_json_is_written_once(tmp_path):
  assert workdir.write_config_once(str(tmp_path), _resolved(steps=5))
  before = (tmp_path / "config.json").read_bytes()
  assert not workdir.write_config_once(str(tmp_path), _resolved(steps=9))
  assert (tmp_path / "config.json").read_bytes() == before
  assert workdir.read_saved_config(str(tmp_path))["steps"] == 5
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(ValueError, match="left untouched"):
    workdir.read_saved_config(str(tmp_path))
