"""Device mesh, shardings and multi-host helpers (data parallelism on one ``"data"`` axis).

Batches are split along their leading (batch) axis over the mesh axis ``"data"``; parameters and
optimizer state are replicated. Each host feeds only its own slice of every global batch
(:func:`host_slice`), which :func:`global_batch` turns into one global ``jax.Array`` with
``jax.make_array_from_process_local_data``.

Multi-host (TPU pods, multi-node GPU): call :func:`maybe_initialize_distributed` with ``True``
*before any other JAX call*; on Cloud TPU and SLURM ``jax.distributed.initialize()`` discovers the
coordinator itself. Run the same command on every host, e.g.::

  gcloud compute tpus tpu-vm ssh NAME --worker=all --command="python -m unhash_jax.main \\
      --distributed ..."

Every host must see the same data files (or build them itself: the builds are deterministic).
"""

from __future__ import annotations

import logging

import jax
import numpy as np

DATA_AXIS = "data"


def maybe_initialize_distributed(enabled: bool, **kwargs) -> None:
  """Calls ``jax.distributed.initialize(**kwargs)`` when ``enabled`` (once; later calls no-op).

  Must run before anything touches the devices. ``kwargs`` (``coordinator_address``,
  ``num_processes``, ``process_id``) are needed only where JAX cannot detect the cluster
  (Cloud TPU, SLURM and GKE are detected).
  """
  if not enabled:
    return
  if jax.distributed.is_initialized():
    return
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed initialized: process %d of %d, %d local / %d global devices.",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def make_data_mesh(devices=None, *, axis_types=None) -> jax.sharding.Mesh:
  """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices of all hosts).

  Args:
    devices: devices to use; ``None`` = ``jax.devices()``.
    axis_types: passed to ``jax.make_mesh`` (``None`` = ``Auto``).
  """
  # Auto (GSPMD-propagated) sharding: the steps are written for the global batch and XLA inserts the
  # collectives; Explicit axes would force sharding annotations into every vmapped op.
  if axis_types is None:
    axis_types = (jax.sharding.AxisType.Auto,)
  if devices is None:
    n = jax.device_count()
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=axis_types)
  devices = list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=axis_types, devices=devices)


def data_sharding(mesh: jax.sharding.Mesh) -> jax.NamedSharding:
  """Leading (batch) axis split over ``"data"``, the other axes whole."""
  return jax.NamedSharding(mesh, jax.P(DATA_AXIS))


def replicated_sharding(mesh: jax.sharding.Mesh) -> jax.NamedSharding:
  """Every device holds the whole array."""
  return jax.NamedSharding(mesh, jax.P())


def host_slice(mesh: jax.sharding.Mesh, global_batch_size: int) -> slice:
  """Rows ``[start, stop)`` of a global batch that this process's devices hold.

  Raises:
    ValueError: ``global_batch_size`` is not divisible by the mesh size, or this process's rows
      are not contiguous (a mesh whose devices are not grouped by host).
  """
  n = mesh.devices.size
  if global_batch_size % n:
    raise ValueError(f"Global batch size {global_batch_size} must be divisible by the number of "
                     f"devices in the mesh ({n}).")
  index_map = data_sharding(mesh).addressable_devices_indices_map((global_batch_size,))
  if not index_map:
    raise ValueError("The mesh has no device of this process; every process must feed data.")
  starts = sorted({(s[0].start or 0) for s in index_map.values()})
  per = global_batch_size // n
  stops = sorted({(s[0].stop if s[0].stop is not None else global_batch_size)
                  for s in index_map.values()})
  start, stop = starts[0], stops[-1]
  if stop - start != per * len(starts):
    raise ValueError("This process's devices do not hold a contiguous block of the batch; build "
                     "the mesh with make_data_mesh() so devices are grouped by host.")
  return slice(start, stop)


def global_batch(mesh: jax.sharding.Mesh, local: dict, global_batch_size: int) -> dict:
  """Turns this host's rows (``{name: np.ndarray [host_batch, ...]}``) into global ``jax.Array``s.

  Each array is sharded with :func:`data_sharding`; its global shape is
  ``(global_batch_size,) + local.shape[1:]``.
  """
  sharding = data_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(
      sharding, np.asarray(v), (global_batch_size,) + np.shape(v)[1:]) for k, v in local.items()}
