"""Backbones (Flax NNX) and their registry.

Every backbone maps normalised images ``[B, H, W, C]`` (float) to :class:`Features`: a pooled feature
``[B, D]`` and spatial/patch tokens ``[B, P, D]`` (WCH needs the tokens), and has a ``feature_dim``
attribute (``D``). The call is ``backbone(x, *, train=False, key=None)``: ``train`` runs BatchNorm on
batch statistics; a backbone with dropout (VGG-16's fc6/fc7, ``dropout_rate > 0``) applies it iff
``key`` is given, whatever ``train`` is (CIBHash keeps the dropout of its frozen VGG active), and the
others ignore ``key``.

Registered: the from-scratch ``mlp``, ``mlp2``, ``small_cnn``, ``flatten``, ``tiny`` and the ImageNet
architectures ``vgg16``, ``resnet50``, ``mobilenet_v2``, ``vit_b16`` (randomly initialised here;
:func:`unhash_jax.models.pretrained.load_pretrained` builds them with torchvision/timm weights).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class Features(NamedTuple):
  pooled: jax.Array   # [B, D]
  tokens: jax.Array   # [B, P, D]


class MLPBackbone(nnx.Module):
  """Flattened pixels → ``[Linear → ReLU] × len(hidden)``; trained from scratch.

  For tiny images (8×8 digits) an MLP trains far faster than a CNN on CPU and reached the best
  retrieval quality in our digits runs. Its single token is the pooled feature.
  """

  def __init__(self, input_shape: Sequence[int], *, hidden: Sequence[int] = (512,), rngs: nnx.Rngs):
    in_features = 1
    for s in input_shape:
      in_features *= int(s)
    dims = (in_features, *hidden)
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
    self.feature_dim = dims[-1]

  def __call__(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None
               ) -> Features:
    del train, key
    h = x.reshape(x.shape[0], -1)
    for layer in self.layers:
      h = jax.nn.relu(layer(h))
    return Features(h, h[:, None, :])


def _max_pool_2x2(x: jax.Array) -> jax.Array:
  """2×2/stride-2 max-pooling as a reshape + max: same forward as ``reduce_window``, but XLA:CPU's
  backward is ~4.7× faster (measured in experiments/bench_train_step.py). Ties share the gradient."""
  b, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class SmallCNN(nnx.Module):
  """``[Conv3×3 → BatchNorm → ReLU] × 2`` per stage with 2×2 max-pooling between stages.

  A from-scratch backbone for CIFAR-sized images (32×32); the pooled feature is the global average of
  the last stage, the tokens its ``h·w`` positions.
  """

  def __init__(self, input_shape: Sequence[int], *, widths: Sequence[int] = (32, 64, 128),
               rngs: nnx.Rngs):
    channels = int(input_shape[-1])
    convs, norms = [], []
    for w in widths:
      for _ in range(2):
        convs.append(nnx.Conv(channels, w, (3, 3), use_bias=False, rngs=rngs))
        norms.append(nnx.BatchNorm(w, momentum=0.9, rngs=rngs))
        channels = w
    self.convs, self.norms = nnx.List(convs), nnx.List(norms)
    self.num_stages = len(widths)
    self.feature_dim = channels

  def __call__(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None
               ) -> Features:
    del key
    h = x
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      h = jax.nn.relu(norm(conv(h), use_running_average=not train))
      if i % 2 == 1 and i // 2 < self.num_stages - 1:
        h = _max_pool_2x2(h)
    tokens = h.reshape(h.shape[0], -1, h.shape[-1])
    return Features(tokens.mean(axis=1), tokens)


class _TinyNet(nnx.Module):
  """A one-layer backbone that exists only for fast tests (like flax's ``_ResNet1``)."""

  def __init__(self, input_shape: Sequence[int], *, rngs: nnx.Rngs):
    in_features = 1
    for s in input_shape:
      in_features *= int(s)
    self.proj = nnx.Linear(in_features, 16, rngs=rngs)
    self.norm = nnx.BatchNorm(16, momentum=0.9, rngs=rngs)
    self.feature_dim = 16

  def __call__(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None
               ) -> Features:
    del key
    h = jax.nn.relu(self.norm(self.proj(x.reshape(x.shape[0], -1)), use_running_average=not train))
    return Features(h, h[:, None, :])


class FlattenBackbone(nnx.Module):
  """No parameters: the flattened input is the feature (for pre-extracted features, e.g. VGG fc7)."""

  def __init__(self, input_shape: Sequence[int], *, rngs: nnx.Rngs | None = None):
    del rngs
    dim = 1
    for s in input_shape:
      dim *= int(s)
    self.feature_dim = dim

  def __call__(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None
               ) -> Features:
    del train, key
    h = x.reshape(x.shape[0], -1)
    return Features(h, h[:, None, :])


# The models keep their backbone in an attribute named ``backbone``: this filter selects its state
# (frozen-backbone training, per-backbone learning rates).
IN_BACKBONE = nnx.PathContains("backbone")


def uses_dropout(backbone: nnx.Module) -> bool:
  """Whether ``backbone`` has dropout, i.e. reads the ``key`` of its call (``dropout_rate > 0``)."""
  return float(getattr(backbone, "dropout_rate", 0.0)) > 0


def backbone_features(backbone: nnx.Module, x: jax.Array, *, train: bool, frozen: bool,
                      key: jax.Array | None = None) -> Features:
  """``backbone(x, train=train, key=key)``; when ``frozen``: BatchNorm in inference mode and
  gradients stopped at the output, the backbone's dropout still drawn from ``key`` if given (the
  official CIBHash trains its head on a frozen VGG-16 with fc6/fc7 dropout active).

  (The trainer also keeps a frozen backbone's parameters out of the optimizer.)
  """
  if frozen:
    return Features(*(jax.lax.stop_gradient(a) for a in backbone(x, train=False, key=key)))
  return backbone(x, train=train, key=key)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  name: str
  make: Callable[..., nnx.Module]   # make(input_shape, *, rngs, **kwargs)
  description: str


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
  """Adds ``spec`` to :data:`BACKBONES`; a second backbone of the same name raises ValueError."""
  if spec.name in BACKBONES:
    raise ValueError(f"backbone {spec.name!r} is already registered.")
  BACKBONES[spec.name] = spec
  return spec


def make_backbone(name: str, input_shape: Sequence[int], *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
  """Builds the registered backbone ``name`` for images of ``input_shape`` ``(H, W, C)``."""
  if name not in BACKBONES:
    raise ValueError(f"unknown backbone {name!r}; valid choices: {', '.join(sorted(BACKBONES))}.")
  return BACKBONES[name].make(input_shape, rngs=rngs, **kwargs)


register_backbone(BackboneSpec("mlp", MLPBackbone, "MLP on flattened pixels, from scratch (digits)"))
# Two hidden layers: the feature NSH's linear heads sit on when the backbone is pretrained (e.g. by
# CIBHash, ``--init_backbone_from``); its 1024-d output plays the role of a pretrained network's
# pooled feature (experiments/configs/nsh_digits.py).
register_backbone(BackboneSpec("mlp2", functools.partial(MLPBackbone, hidden=(512, 1024)),
                               "MLP 512 -> 1024 on flattened pixels (digits, pretrained NSH setting)"))
register_backbone(BackboneSpec("small_cnn", SmallCNN, "6-conv BN CNN, from scratch (32x32 images)"))
register_backbone(BackboneSpec("flatten", FlattenBackbone, "identity on pre-extracted features"))
register_backbone(BackboneSpec("tiny", _TinyNet, "one linear layer + BN, for tests only"))


# ImageNet architectures (torchvision's forwards). Their modules import this one (Features), so they
# are imported when a backbone is built, not here.
def _make_vgg16(input_shape: Sequence[int], *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
  from unhash_jax.models.vgg import VGG16  # noqa: PLC0415
  return VGG16(input_shape, rngs=rngs, **kwargs)


def _make_resnet50(input_shape: Sequence[int], *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
  from unhash_jax.models.resnet import ResNet50  # noqa: PLC0415
  return ResNet50(input_shape, rngs=rngs, **kwargs)


def _make_mobilenet_v2(input_shape: Sequence[int], *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
  from unhash_jax.models.mobilenet import MobileNetV2  # noqa: PLC0415
  return MobileNetV2(input_shape, rngs=rngs, **kwargs)


def _make_vit_b16(input_shape: Sequence[int], *, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
  from unhash_jax.models.vit import ViT  # noqa: PLC0415
  h, w = int(input_shape[0]), int(input_shape[1])
  if h != w:
    raise ValueError(f"vit_b16 needs square images, got {h}x{w}")
  return ViT(image_size=h, in_channels=int(input_shape[2]), rngs=rngs, **kwargs)


register_backbone(BackboneSpec("vgg16", _make_vgg16,
                               "torchvision VGG-16: fc7 (4096) pooled, last conv map tokens"))
register_backbone(BackboneSpec("resnet50", _make_resnet50,
                               "torchvision ResNet-50 v1.5: global average (2048), final map tokens"))
register_backbone(BackboneSpec("mobilenet_v2", _make_mobilenet_v2,
                               "torchvision MobileNetV2: mean of the 1280-channel map, its tokens"))
register_backbone(BackboneSpec("vit_b16", _make_vit_b16,
                               "ViT-B/16 (torchvision or timm weights): CLS (768), 196 patch tokens"))
