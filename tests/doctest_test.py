"""Runs the docstring examples of the public light modules (they are part of the documentation)."""

import doctest
import importlib

import pytest

MODULES = ["unhash_jax.ops", "unhash_jax.losses.cibhash", "unhash_jax.losses._common",
           "unhash_jax.sorting", "unhash_jax.retrieval", "unhash_jax.losses.nsh"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  try:
    module = importlib.import_module(name)
  except ModuleNotFoundError as e:
    if e.name == name:
      pytest.skip(f"{name} not present")
    raise
  import jax
  import jax.numpy as jnp
  result = doctest.testmod(module, extraglobs={"jax": jax, "jnp": jnp},
                           optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def test_light_modules_do_not_import_the_training_stack():
  import subprocess
  import sys
  code = ("import sys; import unhash_jax.ops, unhash_jax.losses;"
          "import importlib.util as u;"
          "[importlib.import_module(m) for m in ('unhash_jax.sorting', 'unhash_jax.retrieval')"
          " if u.find_spec(m)] if (importlib := __import__('importlib')) else None;"
          "bad = [m for m in ('flax', 'tensorflow', 'orbax', 'optax', 'tensorflow_datasets')"
          " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr
