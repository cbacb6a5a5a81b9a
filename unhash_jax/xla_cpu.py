"""Per-program XLA:CPU compiler options (opt-in speed-ups of the CPU backend).

``jax.jit(..., compiler_options=...)`` scopes an XLA option to one compiled program, unlike the
process-wide ``XLA_FLAGS`` environment variable, which must be set before JAX starts and changes
every program, the user's own included.

The one option here routes XLA:CPU's matrix products (``dot``) to YNNPACK
(``xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``). On this project's
2-core Xeon it sped up the small CNN's CIBHash train step by about 1.5×, from 1.3 to 1.5 s down to
0.85 to 1.0 s per step at batch 128. XLA emits the convolution gradients of that step as products,
so they get faster too. The 4096-d feature encoder went from 32 to 29 ms. See the README's
Performance section.

The option is experimental in XLA:
* Products are summed in a different order, so results differ from the default in the last float32
  bits. A run is still bit-reproducible with itself.
* The option name may change between jaxlib releases. :func:`options_for` therefore compiles a
  one-product probe first and returns ``None`` (with a warning) when the installed XLA rejects it.

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
    ynnpack_dots: route matrix products to YNNPACK (XLA:CPU only; see the module docstring).

  Returns:
    A dict for ``jax.jit(..., compiler_options=...)``, or ``None``. It is ``None`` when nothing is
    asked for, when some device is not a CPU, or when the installed XLA rejects the option.
  """
  if not ynnpack_dots or not all(d.platform == "cpu" for d in devices):
    return None
  items = tuple(sorted(YNNPACK_DOTS.items()))
  return dict(items) if _accepted(items) else None
