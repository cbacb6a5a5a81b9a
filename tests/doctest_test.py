"""Runs the docstring examples of the public light modules (they are part of the documentation)."""

import doctest
import importlib

import pytest

MODULES = ["unhash_jax.ops", "unhash_jax.dropout", "unhash_jax.losses.cibhash", "unhash_jax.sorting",
           "unhash_jax.retrieval", "unhash_jax.data.augment", "unhash_jax.losses.nsh",
           "unhash_jax.losses._common", "unhash_jax.losses.ddh", "unhash_jax.losses.wch",
           "unhash_jax.losses.harr", "unhash_jax.losses.fdbh", "unhash_jax.pseudo_labels",
           "unhash_jax.patch_similarity", "unhash_jax.wta", "unhash_jax.standardize"]


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
          " unhash_jax.retrieval, unhash_jax.dropout, unhash_jax.pseudo_labels,"
          " unhash_jax.patch_similarity, unhash_jax.wta, unhash_jax.standardize;"
          " from unhash_jax.losses import ddh_loss, wch_loss, harr_loss, fdbh_loss;"
          "bad = [m for m in ('flax', 'tensorflow', 'orbax', 'optax', 'tensorflow_datasets')"
          " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr
