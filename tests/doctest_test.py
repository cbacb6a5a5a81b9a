"""Runs the docstring examples of the public light modules (they are part of the documentation)."""

import doctest
import importlib

import pytest

MODULES = ["unhash_jax.ops", "unhash_jax.dropout", "unhash_jax.losses.cibhash", "unhash_jax.sorting",
           "unhash_jax.retrieval", "unhash_jax.data.augment", "unhash_jax.losses.nsh"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(name)
  import jax
  import jax.numpy as jnp
  result = doctest.testmod(module, extraglobs={"jax": jax, "jnp": jnp},
                           optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def test_light_modules_do_not_import_the_training_stack():
  import subprocess
  import sys
  code = ("import sys; import unhash_jax.ops, unhash_jax.losses, unhash_jax.sorting,"
          " unhash_jax.retrieval, unhash_jax.dropout;"
          "bad = [m for m in ('flax', 'tensorflow', 'orbax', 'optax', 'tensorflow_datasets')"
          " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr
