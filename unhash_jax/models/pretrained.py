"""ImageNet backbones with torchvision/timm weights: build a registered backbone and fill it from a
PyTorch or safetensors file, checked against the architecture's name table.

* :func:`load_pretrained` builds ``vgg16``/``resnet50``/``mobilenet_v2``/``vit_b16`` and loads a file.
* :func:`load_weights_into` fills a module that already exists (e.g. the trainer's backbone).
* :func:`weights_digest` is the file's sha256, for cache keys.

The files are read without torch (:mod:`unhash_jax.models.torch_format`). Each architecture module
has a table from torch names to NNX variables (:mod:`unhash_jax.models.weight_table`); loading is
all or nothing: missing keys, unexpected keys and shape mismatches raise one
:class:`~unhash_jax.models.torch_format.PretrainedWeightsError` that lists them (the first few of
each), and names the architecture the file looks like when it is another one.

The modules expect RGB images ``[B, H, W, 3]`` scaled to [0, 1] then normalised with
:data:`IMAGENET_MEAN` / :data:`IMAGENET_STD` (torchvision's weights and timm's original
``vit_base_patch16_224``; timm's later ViT weights use mean = std = 0.5: check the model card).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from typing import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from unhash_jax.models import mobilenet, resnet, vgg, vit
from unhash_jax.models.backbones import make_backbone
from unhash_jax.models.torch_format import PretrainedWeightsError, read_state_dict
from unhash_jax.models.weight_table import WeightTable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Registered backbone name → the architecture's table function.
TABLES: dict[str, Callable[..., WeightTable]] = {
    "vgg16": vgg.torch_weight_table,
    "resnet50": resnet.torch_weight_table,
    "mobilenet_v2": mobilenet.torch_weight_table,
    "vit_b16": vit.torch_weight_table,
}
_SHOW = 5   # keys listed per kind of problem in an error message


def normalize_imagenet(images: jnp.ndarray) -> jnp.ndarray:
  """``[..., 3]`` RGB in [0, 1] → ImageNet-normalised (torchvision's ``Normalize``)."""
  return (images - jnp.asarray(IMAGENET_MEAN, images.dtype)) / jnp.asarray(IMAGENET_STD, images.dtype)


# ---------------------------------------------------------------------------------------------
# Which architecture a state dict is.


def _max_index(keys, pattern: str) -> int:
  """1 + the largest integer captured by ``pattern`` in ``keys`` (0 if none)."""
  found = [int(m.group(1)) for k in keys if (m := re.match(pattern, k))]
  return max(found) + 1 if found else 0


def guess_architecture(state: dict[str, np.ndarray]) -> str | None:
  """A name for the architecture of a torchvision/timm state dict (``"resnet50"``, ``"vgg16_bn"``,
  ``"vit_b16 (timm)"``...), or ``None`` if it matches none of the families known here."""
  keys = set(state)
  if "features.1.conv.0.0.weight" in keys or "features.18.0.weight" in keys:
    return "mobilenet_v2"
  if any(k.startswith("features.") and ".block." in k for k in keys):
    return "mobilenet_v3"
  if "layer1.0.conv1.weight" in keys:
    blocks = tuple(_max_index(keys, rf"layer{i}\.(\d+)\.") for i in range(1, 5))
    bottleneck = "layer1.0.conv3.weight" in keys
    names = {((3, 4, 6, 3), True): "resnet50", ((3, 4, 23, 3), True): "resnet101",
             ((3, 8, 36, 3), True): "resnet152", ((2, 2, 2, 2), False): "resnet18",
             ((3, 4, 6, 3), False): "resnet34"}
    name = names.get((blocks, bottleneck), f"a ResNet with {blocks} blocks")
    w = state["layer1.0.conv1.weight"]
    if name == "resnet50" and w.ndim == 4 and w.shape[0] != 64:
      name = "a wide ResNet-50 / ResNeXt-50"
    return name
  if "features.0.weight" in keys and any(k.startswith("classifier.") for k in keys):
    convs = sum(1 for k in keys if re.fullmatch(r"features\.\d+\.weight", k) and state[k].ndim == 4)
    bn = any(k.startswith("features.") and k.endswith("running_mean") for k in keys)
    name = {8: "vgg11", 10: "vgg13", 13: "vgg16", 16: "vgg19"}.get(convs, f"a VGG with {convs} convs")
    return name + ("_bn" if bn else "")
  source = vit.detect_source(keys)
  if source is not None:
    if source == "timm":
      depth = _max_index(keys, r"blocks\.(\d+)\.")
      patch = state.get("patch_embed.proj.weight")
    else:
      depth = _max_index(keys, r"encoder\.layers\.encoder_layer_(\d+)\.")
      patch = state.get("conv_proj.weight")
    if patch is not None and patch.ndim == 4 and (depth, patch.shape[0], patch.shape[-1]) == (12, 768, 16):
      return f"vit_b16 ({source})"
    shape = "?" if patch is None else f"width {patch.shape[0]}, patch {patch.shape[-1]}"
    return f"a ViT ({source}; depth {depth}, {shape})"
  return None


def _family(guess: str | None) -> str | None:
  """The registered name a guess belongs to (``"vit_b16 (timm)"`` → ``"vit_b16"``)."""
  if guess is None:
    return None
  for name in TABLES:
    if guess == name or guess.startswith(name + " "):
      return name
  return guess


# ---------------------------------------------------------------------------------------------
# Loading.


def _variable(module: nnx.Module, path: tuple) -> nnx.Variable:
  node = module
  for part in path:
    node = node[part] if isinstance(part, int) else getattr(node, part)
  if not isinstance(node, nnx.Variable):
    raise TypeError(f"{'.'.join(map(str, path))} is not an NNX variable")
  return node


def _listing(title: str, items: list[str]) -> str:
  more = f" (and {len(items) - _SHOW} more)" if len(items) > _SHOW else ""
  return f"{len(items)} {title}: {', '.join(items[:_SHOW])}{more}"


def load_weights_into(module: nnx.Module, name: str, path: str | os.PathLike) -> nnx.Module:
  """Fills ``module`` (a built ``name`` backbone) with the weights in ``path``, in place.

  Args:
    module: a module built by ``make_backbone(name, ...)`` (or :func:`nnx.eval_shape` of it).
    name: its registered name, a key of :data:`TABLES`.
    path: a torchvision/timm state dict (``.pth``/``.bin``, ``.safetensors``).

  Returns:
    ``module``.

  Raises:
    PretrainedWeightsError: unreadable file; missing or unexpected keys or shape mismatches
      (nothing is written then); a file of another architecture (named in the message).
    ValueError: ``name`` has no weight table.
  """
  if name not in TABLES:
    raise ValueError(f"no pretrained-weight table for backbone {name!r}; valid choices: "
                     f"{', '.join(sorted(TABLES))}.")
  path = os.fspath(path)
  state = read_state_dict(path)
  table = TABLES[name](module, state.keys())
  wanted = {e.torch_key for e in table.entries}
  missing = [e.torch_key for e in table.entries if e.torch_key not in state]
  unexpected = [k for k in state if k not in wanted and not table.ignores(k)]
  if missing or unexpected:
    guess = guess_architecture(state)
    if guess is not None and _family(guess) != name:
      raise PretrainedWeightsError(
          f"{path}: this file looks like {guess} weights, not {name} "
          f"({_listing('missing keys', missing)}; {_listing('unexpected keys', unexpected)}).")
    problems = [_listing("missing keys", missing)] if missing else []
    problems += [_listing("unexpected keys", unexpected)] if unexpected else []
    raise PretrainedWeightsError(f"{path}: the file does not match {name} "
                                 f"({table.source} names): {'; '.join(problems)}.")

  values, mismatched = {}, []
  for entry in table.entries:
    var = _variable(module, entry.path)
    array = entry.transform.apply(np.asarray(state[entry.torch_key]))
    if tuple(array.shape) != tuple(var.shape):
      mismatched.append(f"{entry.torch_key} {list(state[entry.torch_key].shape)} (module expects "
                        f"{list(entry.transform.torch_shape(tuple(var.shape)))})")
      continue
    values[entry.path] = array.astype(var.dtype)
  if mismatched:
    guess = guess_architecture(state)
    hint = (f" This file looks like {guess} weights, not {name}."
            if guess is not None and _family(guess) != name else "")
    raise PretrainedWeightsError(f"{path}: shapes do not match the {name} module: "
                                 f"{_listing('mismatched tensors', mismatched)}.{hint}")
  covered = set(values)
  uncovered = [".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(module))
               if tuple(p) not in covered]
  if uncovered:   # a table bug: the module would keep random (or abstract) values there
    raise PretrainedWeightsError(f"{path}: the {name} table leaves module variables unset: "
                                 f"{_listing('variables', uncovered)}.")
  for p, array in values.items():
    _variable(module, p).set_value(jnp.asarray(array))
  return module


def load_pretrained(name: str, path: str | os.PathLike, *, image_size: int = 224,
                    include_classifier: bool = False, **kwargs) -> nnx.Module:
  """Builds backbone ``name`` for ``image_size``² RGB images and loads ``path`` into it.

  The module is built abstractly (no random initialisation) and every variable comes from the file.

  Args:
    name: ``"vgg16"``, ``"resnet50"``, ``"mobilenet_v2"`` or ``"vit_b16"``.
    path: a torchvision/timm state dict (``.pth``/``.bin``, ``.safetensors``).
    image_size: input height = width (ViT: fixed by its position embeddings).
    include_classifier: also load the ImageNet classifier (for ``module.logits``).
    **kwargs: architecture options (e.g. ``fold_bn``, ``depthwise_impl``, ``dropout_rate``, a
      small ViT's ``depth``/``hidden_dim``...).

  Returns:
    The module: ``module(images [B, H, W, 3], train=False) -> Features``.

  Raises:
    PretrainedWeightsError: see :func:`load_weights_into`.
  """
  if name not in TABLES:
    raise ValueError(f"no pretrained-weight table for backbone {name!r}; valid choices: "
                     f"{', '.join(sorted(TABLES))}.")
  module = nnx.eval_shape(lambda: make_backbone(
      name, (image_size, image_size, 3), rngs=nnx.Rngs(0), include_classifier=include_classifier,
      **kwargs))
  return load_weights_into(module, name, path)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
  del size, mtime_ns   # cache key only
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def weights_digest(path: str | os.PathLike) -> str:
  """The sha256 (hex) of the file at ``path``; cached per (path, size, modification time)."""
  path = os.path.realpath(os.fspath(path))
  st = os.stat(path)
  return _digest(path, st.st_size, st.st_mtime_ns)
