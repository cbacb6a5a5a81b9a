"""The method contract: what the trainer hands a method's hooks, and what they hand back.

A method is a :class:`~unhash_jax.methods.registry.MethodSpec` of pure hooks; the trainer
(``unhash_jax.train``) knows no method by name. Per step the jitted train step builds

* a :class:`StepBatch`: the augmented views, each example's ``position`` in the training split, and
  the rows of the method's per-example tables gathered with the batch (sharded like the images);
* a :class:`StepContext`: the step's PRNG key, the step counters (traced: an annealed constant such as
  FDBH's γ needs no recompilation), the run's length and the loss hyper-parameters;

and calls ``spec.compute_loss(model, batch, ctx) -> (loss, aux)``. Mutable method state (DDH's output
buffer) lives in the model as :class:`MethodState` variables: the step merges them in with the batch
statistics, the loss may overwrite them, and the new values are carried to the next step and
checkpointed like every other variable, so a resumed run stays bit-exact.

Before training, ``spec.prepare(config, PrepareContext) -> {name: array [N_train, ...]}`` computes the
method's tables (HARR's WTA codes, DDH's pseudo-label rows) from the data and a frozen network, cached
on disk under a key of everything they depend on (:meth:`PrepareContext.cached`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class MethodState(nnx.Variable):
  """Method-owned state carried through the jitted step and checkpointed (not trained).

  E.g. DDH's output buffer ``U [N_train, bits]``, overwritten at the batch's positions every step.
  It lands in the train state beside the batch statistics; the optimizer never sees it.
  """


class StepBatch(NamedTuple):
  """What a method's loss sees of the batch (a pytree; every array is sharded on the batch axis).

  Attributes:
    views: ``num_views`` float arrays ``[B, ...]``: augmented images ``[B, S, S, C]`` (or cached
      backbone features ``[B, D]`` / ``[B, P, D]`` when training on a feature cache).
    position: ``int32 [B]``: each example's row in the training split (and in the method's tables
      and state buffers).
    tables: ``{name: [B, ...]}``: rows ``position`` of each table the method's ``prepare`` returned.
  """

  views: tuple[jax.Array, ...]
  position: jax.Array
  tables: Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class StepContext:
  """Per-step context of a method's loss (built inside the jitted step).

  Attributes:
    key: the step's PRNG key for the loss (dropout, stochastic codes).
    step: ``int32`` scalar (traced): optimizer steps completed before this one.
    total_steps: ``int32`` scalar (traced): the run's length.
    steps_per_epoch: full batches per epoch (static).
    num_train: images in the training split (static).
    hparams: the resolved loss hyper-parameters (static Python values).
  """

  key: jax.Array
  step: jax.Array
  total_steps: jax.Array
  steps_per_epoch: int
  num_train: int
  hparams: Mapping[str, Any]

  @property
  def progress(self) -> jax.Array:
    """``step / (total_steps − 1)`` as a float32 scalar in [0, 1] (traced): 0 at the first step,
    1 at the last."""
    denominator = jnp.maximum(self.total_steps - 1, 1).astype(jnp.float32)
    return jnp.clip(self.step.astype(jnp.float32) / denominator, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class BuildContext:
  """What a method's ``make_model`` gets besides the config.

  Attributes:
    input_shape: ``(H, W, C)`` of the views (or the feature shape on a feature cache).
    num_train: images in the training split (sizes method state such as DDH's buffer).
    rngs: parameter initialisation streams.
  """

  input_shape: tuple[int, ...]
  num_train: int
  rngs: nnx.Rngs


@dataclasses.dataclass(frozen=True)
class PrepareContext:
  """What a method's ``prepare`` hook gets (host side, before training).

  Attributes:
    train_indices: ``int64 [N_train]`` source indices of the training split; row ``i`` of every
      table belongs to ``train_indices[i]`` (the batches' ``position``).
    pixels: ``pixels(indices) -> float32 [n, H*W*C]`` raw pixels in [0, 1] (label-free features of
      tiny images, e.g. digits).
    frozen_features: ``frozen_features(indices) -> float32 [n, D]``: the model's backbone (as built,
      pretrained weights loaded) on the un-augmented images (the test transform), pooled features,
      batched and jitted, with a progress line.
    cached: ``cached(name, key, build) -> np.ndarray``: ``build()``'s array, stored on disk under
      ``name`` and a digest of ``key`` (a JSON-able dict of everything the array depends on) and
      reused by later runs and resumes; multi-host safe (process 0 builds, the others wait and read).
    identity: JSON-able description of the data the tables are built from (dataset, protocol, split
      seed, backbone, weights digest): include it in ``key``.
  """

  train_indices: np.ndarray
  pixels: Callable[[np.ndarray], np.ndarray]
  frozen_features: Callable[[np.ndarray], np.ndarray]
  cached: Callable[[str, Mapping[str, Any], Callable[[], np.ndarray]], np.ndarray]
  identity: Mapping[str, Any]


PrepareFn = Callable[[Any, PrepareContext], Mapping[str, np.ndarray]]


def check_tables(tables: Mapping[str, Any], num_train: int, method: str) -> dict[str, np.ndarray]:
  """Validates a ``prepare`` result: every table has ``num_train`` rows. Returns a plain dict."""
  out = {}
  for name, table in tables.items():
    shape = np.shape(table)
    if not shape or shape[0] != num_train:
      raise ValueError(f"{method}.prepare returned table {name!r} of shape {shape}; tables need one "
                       f"row per training image ({num_train}).")
    out[str(name)] = table
  return out
