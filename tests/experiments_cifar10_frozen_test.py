"""experiments/cifar10_frozen.py: ``run`` fails after the rest when a row failed; ``table --out``."""

import argparse
import json
import subprocess

import pytest


@pytest.fixture
def script(experiment_script):
  return experiment_script("cifar10_frozen")


def _args(tmp_path, methods):
  return argparse.Namespace(methods=methods, bits=[16, 32], archive="a.tar.gz", pretrained="w.pth",
                            backbone="mobilenet_v2", image_size=224, data_dir=None,
                            runs=str(tmp_path), extra=[], out=None)


def test_run_exits_non_zero_naming_the_failed_rows_after_running_all(script, tmp_path, monkeypatch,
                                                                    capsys):
  calls = []

  def fake_run(cmd, cwd):
    calls.append(cmd)
    failed = "--method=harr" in cmd and "--bits=32" in cmd
    return subprocess.CompletedProcess(cmd, 2 if failed else 0)

  monkeypatch.setattr(script.subprocess, "run", fake_run)
  with pytest.raises(SystemExit) as exit_info:
    script.run(_args(tmp_path, ["itq", "harr"]))
  assert len(calls) == 4
  assert "1 of 4 rows failed: harr 32 bits (exit 2)" in str(exit_info.value.code)
  assert "# exit 2" in capsys.readouterr().out


def test_run_returns_when_every_row_succeeds(script, tmp_path, monkeypatch):
  monkeypatch.setattr(script.subprocess, "run",
                      lambda cmd, cwd: subprocess.CompletedProcess(cmd, 0))
  assert script.run(_args(tmp_path, ["itq"])) is None


def test_table_out_writes_the_finished_rows_there_and_leaves_the_main_table(script, tmp_path,
                                                                             monkeypatch):
  main_table = tmp_path / "main.json"   # stands in for the repository's table, which stays untouched
  main_table.write_text('{"rows": []}')
  monkeypatch.setattr(script, "RESULTS", str(main_table))
  runs = tmp_path / "runs"
  workdir = runs / "itq-mobilenet_v2224-32b"
  workdir.mkdir(parents=True)
  (workdir / "results.json").write_text(json.dumps(
      {"map": 0.4369, "protocol": "cifar10-i", "topk": 1000, "fit_seconds": 1.0}))
  args = _args(runs, [])
  args.out = str(tmp_path / "other" / "table.json")
  script.table(args)
  rows = json.load(open(args.out))["rows"]
  assert [(r["method"], r["bits"], r["map"]) for r in rows] == [("itq", 32, 0.4369)]
  assert f"--workdir={workdir}" in rows[0]["command"]
  assert main_table.read_text() == '{"rows": []}'
