"""Per-program XLA:CPU compiler options (opt-in speed-ups of the CPU backend).

``jax.jit(..., compiler_options=...)`` scopes an XLA option to one compiled program, unlike the
process-wide ``XLA_FLAGS`` environment variable, which must be set before JAX starts and changes
every program, the user's own included.

The one option here limits XLA:CPU's YNNPACK library fusions to single matrix products
(``xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``). The value replaces
XLA's default list. In jaxlib 0.10.2 that default also hands convolutions and elementwise/reduction
fusions to YNNPACK: the compiled small-CNN CIBHash step holds 121 YNNPACK fusions by default and 10
with this option.

On this project's 2-core Xeon, YNNPACK's convolutions are the slow part. Measured on the small CNN
at batch 128, per step:
* default: 1.3 to 1.7 s;
* this option: 0.85 to 1.15 s (about 1.5× faster), with XLA's own convolution emitters;
* the default with only convolutions removed (``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=
  -individual_convolution``): 0.94 to 1.06 s, about the same.
The 4096-d feature encoder (matrix products only) is unchanged, 26 vs 27 ms. See the README's
Performance section.

The option is experimental in XLA:
* It changes which library runs each operation, so results differ from the default in the last
  float32 bits. A run is still bit-reproducible with itself.
* The option name may change between jaxlib releases. jaxlib 0.10.2 and 0.11.2 accept it.
  :func:`options_for` therefore compiles a one-product probe first and returns ``None`` (with a
  warning) when the installed XLA rejects it.

It is off by default (``Config.cpu_ynnpack_dots``, CLI ``--cpu_ynnpack_dots``). It applies only
when every device of the program is a CPU; on GPU and TPU it is a no-op.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

YNNPACK_DOTS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@functools.cache
def _accepted(items: tuple[tuple[str, str], ...]) -> bool:
  """Whether this jaxlib's XLA:CPU compiles a small product with these options."""
  x = jnp.ones((8, 8), jnp.float32, device=jax.devices("cpu")[0])
  try:
    jax.jit(jnp.dot).lower(x, x).compile(compiler_options=dict(items))
  except Exception as e:  # noqa: BLE001  (XLA reports an unknown option/value as various errors)
    logging.warning("XLA:CPU rejected the compiler options %s (%s); compiling without them.",
                    dict(items), str(e).splitlines()[0])
    return False
  return True


def options_for(devices: Sequence[Any], *, ynnpack_dots: bool) -> dict[str, str] | None:
  """``compiler_options`` for ``jax.jit`` of a program that runs on ``devices``.

  Args:
    devices: the program's devices (e.g. ``mesh.devices.flat``).
    ynnpack_dots: keep YNNPACK for matrix products only (XLA:CPU only; see the module docstring).

  Returns:
    A dict for ``jax.jit(..., compiler_options=...)``, or ``None``. It is ``None`` when nothing is
    asked for, when some device is not a CPU, or when the installed XLA rejects the option.
  """
  if not ynnpack_dots or not all(d.platform == "cpu" for d in devices):
    return None
  items = tuple(sorted(YNNPACK_DOTS.items()))
  return dict(items) if _accepted(items) else None
