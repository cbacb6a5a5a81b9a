"""Loss hyper-parameters declared once per method: default, type, valid range and help text.

A method lists its :class:`HParam` s; the CLI derives one flag per name from them (type and help), the
config resolution fills defaults and checks every value against its range, and the method reads
``ctx.hparams[name]`` in its loss. Nothing else spells the names.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any


@dataclasses.dataclass(frozen=True)
class HParam:
  """One loss hyper-parameter.

  Attributes:
    name: keyword of the method's loss and CLI flag ``--name``.
    default: default value; its type (bool, int or float) is the flag's type.
    help: one line for ``--help`` (what it is, its symbol in the paper, units).
    low / high: inclusive bounds (``None`` = unbounded); floats must also be finite.
    low_open: the lower bound itself is excluded (e.g. a temperature ``> 0``).
  """

  name: str
  default: Any
  help: str
  low: float | None = None
  high: float | None = None
  low_open: bool = False

  @property
  def kind(self) -> type:
    return type(self.default)

  def describe_range(self) -> str:
    if self.kind is bool:
      return "true or false"
    parts = []
    if self.low is not None:
      parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
    if self.high is not None:
      parts.append(f"<= {self.high:g}")
    if self.kind is float:
      parts.append("finite")
    return ", ".join(parts) or "any value"

  def check(self, value: Any, method: str) -> Any:
    """Returns ``value`` converted to the parameter's type; raises ValueError if it is out of range."""
    kind = self.kind
    bad = ValueError(f"--{self.name}={value!r} is not valid for {method}: {self.help} must be "
                     f"{self.describe_range()}.")
    if kind is bool:
      if not isinstance(value, (bool, int)) or value not in (0, 1):
        raise bad
      return bool(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise bad
    if kind is int:
      if value != int(value):
        raise bad
      value = int(value)
    else:
      value = float(value)
      if not math.isfinite(value):
        raise bad
    if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
      raise bad
    if self.high is not None and value > self.high:
      raise bad
    return value


def positive(name: str, default: float, help: str) -> HParam:
  """A finite float ``> 0`` (temperatures)."""
  return HParam(name, float(default), help, low=0.0, low_open=True)


def non_negative(name: str, default: float, help: str) -> HParam:
  """A finite float ``>= 0`` (loss weights)."""
  return HParam(name, float(default), help, low=0.0)


def flag(name: str, default: bool, help: str) -> HParam:
  return HParam(name, bool(default), help)
