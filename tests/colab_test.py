"""The Colab notebooks run top to bottom (code cells as one script; the install cell is a no-op here)."""

import json
import os
import subprocess
import sys

import pytest

COLAB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colab")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quickstart.ipynb", "losses_playground.ipynb"])
def test_notebook_runs(name, tmp_path):
  nb = json.load(open(os.path.join(COLAB, name)))
  code = "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
  script = tmp_path / "nb.py"
  script.write_text(code)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             TFDS_DATA_DIR=str(tmp_path / "data"), UNHASH_JAX_DATA_DIR=str(tmp_path / "data"))
  proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
