"""The format of the tables that map PyTorch state-dict names to NNX variables.

Each architecture module (vgg, resnet, mobilenet, vit) has a ``torch_weight_table(model, keys)``
that lists, for a built module, every PyTorch tensor it takes: the torch name, the path of the NNX
variable it fills, and the layout change between the two (:class:`Transform`). The loader
(:mod:`unhash_jax.models.pretrained`) applies any table the same way and checks it completely.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

Path = tuple  # an NNX variable path, e.g. ("stages", 0, 1, "conv1", "conv", "kernel")


@dataclasses.dataclass(frozen=True)
class Transform:
  """A layout change from a torch tensor to an NNX array.

  Attributes:
    name: shown in error messages.
    apply: torch array → NNX array.
    torch_shape: NNX shape → the torch shape that ``apply`` maps to it (for error messages).
  """
  name: str
  apply: Callable[[np.ndarray], np.ndarray]
  torch_shape: Callable[[tuple[int, ...]], tuple[int, ...]]


COPY = Transform("copy", lambda a: a, lambda s: s)
# torch Conv2d weight [out, in/groups, kh, kw] → HWIO [kh, kw, in/groups, out].
CONV = Transform("conv OIHW->HWIO", lambda a: a.transpose(2, 3, 1, 0),
                 lambda s: (s[3], s[2], s[0], s[1]))
# torch Linear weight [out, in] → flax kernel [in, out].
LINEAR = Transform("linear [out,in]->[in,out]", lambda a: a.T, lambda s: (s[1], s[0]))


@dataclasses.dataclass(frozen=True)
class WeightEntry:
  torch_key: str
  path: Path
  transform: Transform = COPY


@dataclasses.dataclass(frozen=True)
class WeightTable:
  """Everything a module takes from a torch state dict.

  Attributes:
    entries: one per tensor the module needs.
    ignored_prefixes / ignored_suffixes: file keys the module does not need and that are no error
      (BatchNorm's ``num_batches_tracked``, the ImageNet classifier of a module built without it).
    source: the naming scheme matched (e.g. ``"torchvision"``, ``"timm"``), for messages.
  """
  entries: tuple[WeightEntry, ...]
  ignored_prefixes: tuple[str, ...] = ()
  ignored_suffixes: tuple[str, ...] = ("num_batches_tracked",)
  source: str = "torchvision"

  def ignores(self, key: str) -> bool:
    return key.startswith(self.ignored_prefixes) or key.endswith(self.ignored_suffixes)


def conv_bn_entries(torch_conv: str, torch_bn: str, path: Sequence) -> list[WeightEntry]:
  """A :class:`~unhash_jax.models.layers.ConvBN` at ``path``: torch's conv ``weight`` and
  BatchNorm ``weight``/``bias``/``running_mean``/``running_var``."""
  path = tuple(path)
  return [WeightEntry(f"{torch_conv}.weight", (*path, "conv", "kernel"), CONV),
          *bn_entries(torch_bn, (*path, "bn"))]


def bn_entries(torch_bn: str, path: Sequence) -> list[WeightEntry]:
  path = tuple(path)
  return [WeightEntry(f"{torch_bn}.weight", (*path, "scale")),
          WeightEntry(f"{torch_bn}.bias", (*path, "bias")),
          WeightEntry(f"{torch_bn}.running_mean", (*path, "mean")),
          WeightEntry(f"{torch_bn}.running_var", (*path, "var"))]


def linear_entries(torch_linear: str, path: Sequence, *, bias: bool = True,
                   transform: Transform = LINEAR) -> list[WeightEntry]:
  """A ``torch.nn.Linear`` → ``nnx.Linear`` (``kernel`` [in, out], ``bias``)."""
  path = tuple(path)
  out = [WeightEntry(f"{torch_linear}.weight", (*path, "kernel"), transform)]
  if bias:
    out.append(WeightEntry(f"{torch_linear}.bias", (*path, "bias")))
  return out


def layer_norm_entries(torch_ln: str, path: Sequence) -> list[WeightEntry]:
  path = tuple(path)
  return [WeightEntry(f"{torch_ln}.weight", (*path, "scale")),
          WeightEntry(f"{torch_ln}.bias", (*path, "bias"))]
