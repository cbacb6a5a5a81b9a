"""Per-program XLA:CPU compiler options: which operations XLA hands to the YNNPACK library.

``jax.jit(..., compiler_options=...)`` scopes an XLA option to one compiled program, unlike the
process-wide ``XLA_FLAGS`` environment variable, which must be set before JAX starts and changes
every program, the user's own included.

The option is ``xla_cpu_experimental_ynn_fusion_type``: the list of operation kinds that XLA:CPU
lowers to YNNPACK fusions instead of emitting its own code. In jaxlib 0.10.2 XLA's default list
holds convolutions, matrix products, and elementwise and reduction fusions. :data:`YNN_FUSIONS`
names the sets this project measured (``Config.cpu_ynn_fusions``, CLI ``--cpu_ynn_fusions``):

* ``"xla"``: no option, XLA's default list.
* ``"dots"``: matrix products only. Convolutions, elementwise ops and reductions use XLA's code.
* ``"dots_reductions"`` (the default): matrix products and reductions.

Why: on CPU, YNNPACK's convolutions are slower than XLA's own; XLA's own reductions (BatchNorm's
batch statistics and their gradients, which XLA first splits into a ``reduce-window`` tree) are
slower than YNNPACK's; elementwise fusions are best left to XLA, which fuses them into their
neighbours. Measured on the small-CNN CIBHash step, batch 128 × 2 views, 2-core Xeon with
AVX-512, same process, median ms/step (``experiments/bench_train_step.py``):

* ``"xla"`` 739, ``"dots"`` 641, ``"dots_reductions"`` 455, products + reductions + elementwise
  1,035;
* the 4096-d feature encoder (matrix products and Adam): 13.8 / 13.8 / 13.9 / 20.0.

The option is experimental in XLA:

* It changes which library runs each operation, so results differ from XLA's default in the last
  float32 bits. A run is still bit-reproducible with itself.
* Its name or values may change between jaxlib releases. :func:`options_for` therefore compiles a
  small probe (a product and a reduction) first and returns ``None``, with a warning, when the
  installed XLA rejects the option: the program then compiles with XLA's default list.

It applies only when every device of the program is a CPU; on GPU and TPU it is a no-op.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from unhash_jax.config import Config

_OPTION = "xla_cpu_experimental_ynn_fusion_type"

YNN_FUSIONS: dict[str, str | None] = {
    "xla": None,
    "dots": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
    "dots_reductions": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}
DEFAULT_YNN_FUSIONS = Config.cpu_ynn_fusions  # "dots_reductions"


def _probe(x: jax.Array) -> jax.Array:
  return jnp.sum(x @ x, axis=0)


@functools.cache
def _accepted(items: tuple[tuple[str, str], ...]) -> bool:
  """Whether this jaxlib's XLA:CPU compiles a small product and reduction with these options."""
  x = jnp.ones((8, 8), jnp.float32, device=jax.devices("cpu")[0])
  try:
    jax.jit(_probe).lower(x).compile(compiler_options=dict(items))
  except Exception as e:  # noqa: BLE001  (XLA reports an unknown option/value as various errors)
    logging.warning("XLA:CPU rejected the compiler options %s (%s); compiling without them.",
                    dict(items), str(e).splitlines()[0])
    return False
  return True


def check_ynn_fusions(name: str) -> str:
  """Returns ``name`` if it is a key of :data:`YNN_FUSIONS`; raises ``ValueError`` naming the
  valid choices otherwise."""
  if name not in YNN_FUSIONS:
    raise ValueError(f"unknown YNNPACK fusion set {name!r}; valid choices: "
                     f"{', '.join(YNN_FUSIONS)}.")
  return name


def options_for(devices: Sequence[Any], *, ynn_fusions: str) -> dict[str, str] | None:
  """``compiler_options`` for ``jax.jit`` of a program that runs on ``devices``.

  Args:
    devices: the program's devices (e.g. ``mesh.devices.flat``).
    ynn_fusions: a key of :data:`YNN_FUSIONS` (see the module docstring).

  Returns:
    A dict for ``jax.jit(..., compiler_options=...)``, or ``None``: for ``"xla"``, when some device
    is not a CPU, or when the installed XLA rejects the option.

  Raises:
    ValueError: ``ynn_fusions`` is not a key of :data:`YNN_FUSIONS`.
  """
  value = YNN_FUSIONS[check_ynn_fusions(ynn_fusions)]
  if value is None or not all(d.platform == "cpu" for d in devices):
    return None
  items = ((_OPTION, value),)
  return dict(items) if _accepted(items) else None
