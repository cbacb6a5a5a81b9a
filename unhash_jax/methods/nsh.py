"""NSH wired into the trainer (docs/methods.md §2.2): two-head model + loss + recipes + defaults.

Model: backbone (registry) → pooled feature ``x`` → two linear heads,
``b = tanh(x·W_b + c_b)`` ``[N, K]`` (no BN; training uses the continuous ``b``) and
``z = normalize(x·W_z + c_z)`` ``[N, latent_dim]`` (1024). Test code: ``sign₀(x·W_b + c_b)``, so
:func:`encode` returns the pre-tanh hash logits.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from unhash_jax.config import Config
from unhash_jax.losses._common import bit_balance, l2_normalize
from unhash_jax.losses.nsh import nsh_loss_with_aux
from unhash_jax.methods.registry import MethodSpec, build_backbone, register
from unhash_jax.models import Features, backbone_features


class NSHModel(nnx.Module):
  """Backbone → {hash head ``tanh(Linear(d → K))``, latent head ``normalize(Linear(d → latent_dim))``}.

  Args:
    backbone: a module returning :class:`~unhash_jax.models.Features`.
    bits: code length K.
    latent_dim: width of the latent head (1024 in both third-party ports).
    frozen_backbone: stop gradients at the backbone output and run its BatchNorm in inference mode
      (the ``paper`` preset's frozen ResNet-50; the trainer also keeps its parameters out of the
      optimizer).
    hash_init_scale: multiplies the standard deviation of the hash head's initial kernel ``W_b``
      (Flax's LeCun-normal, ``std = 1/sqrt(d)``; the bias starts at 0). Larger values start the
      tanh codes nearer ±1, so code similarities differ by more than ``τ_sort`` from the first
      step. Initialisation only: the model and loss are unchanged.
  """

  def __init__(self, backbone: nnx.Module, bits: int, *, latent_dim: int = 1024,
               frozen_backbone: bool = False, hash_init_scale: float = 1.0, rngs: nnx.Rngs):
    if latent_dim < 1:
      raise ValueError(f"NSHModel: latent_dim must be >= 1, got {latent_dim}.")
    if not hash_init_scale > 0:
      raise ValueError(f"NSHModel: hash_init_scale must be > 0, got {hash_init_scale}.")
    self.backbone = backbone
    self.hash_head = nnx.Linear(
        backbone.feature_dim, bits, rngs=rngs,
        kernel_init=nnx.initializers.variance_scaling(float(hash_init_scale) ** 2, "fan_in",
                                                      "truncated_normal"))
    self.latent_head = nnx.Linear(backbone.feature_dim, latent_dim, rngs=rngs)
    self.frozen_backbone = frozen_backbone

  def features(self, x: jax.Array, *, train: bool = False) -> Features:
    return backbone_features(self.backbone, x, train=train, frozen=self.frozen_backbone)

  def hash_logits(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """``x·W_b + c_b`` ``[B, K]``: ``sign₀`` of it is the test code."""
    return self.hash_head(self.features(x, train=train).pooled)

  def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Returns ``(b, z)``: tanh codes ``[B, K]`` and L2-normalised latents ``[B, latent_dim]``."""
    h = self.features(x, train=train).pooled
    b = jnp.tanh(self.hash_head(h))
    return b, l2_normalize(self.latent_head(h))


def make_model(config: Config, input_shape: Sequence[int], rngs: nnx.Rngs) -> NSHModel:
  opts = config.model
  return NSHModel(build_backbone(config, input_shape, rngs), config.bits, latent_dim=opts.get("latent_dim", 1024),
                  frozen_backbone=opts.get("frozen_backbone", False),
                  hash_init_scale=opts.get("hash_init_scale", 1.0), rngs=rngs)


def loss_kwargs(hparams: dict) -> dict:
  """The method's hparams as :func:`~unhash_jax.losses.nsh_loss` keywords.

  ``sort_temperature <= 0`` (the default, ``--sort_temperature=0``) means ``1/bits``: a flag cannot
  default to ``None``.
  """
  tau_sort = float(hparams["sort_temperature"])
  return {"sort_temperature": tau_sort if tau_sort > 0 else None,
          "nce_temperature": float(hparams["nce_temperature"]),
          "num_positives": int(hparams["num_positives"]),
          "quantization_weight": float(hparams["quantization_weight"]),
          "renormalize_gathered": bool(hparams["renormalize_gathered"]),
          "strict_double_softmax": bool(hparams["strict_double_softmax"]),
          "sort_hard": bool(hparams["sort_hard"])}


def compute_loss(model: NSHModel, view1: jax.Array, view2: jax.Array, *, key: jax.Array,
                 hparams: dict) -> tuple[jax.Array, dict]:
  del key  # NSH's loss and model are deterministic given the views.
  b1, z1 = model(view1, train=True)
  b2, z2 = model(view2, train=True)
  loss, aux = nsh_loss_with_aux(b1, b2, z1, z2, **loss_kwargs(hparams))
  aux["bit_balance"] = bit_balance(jnp.where(b1 >= 0, 1.0, -1.0))
  return loss, aux


def encode(model: NSHModel, images: jax.Array) -> jax.Array:
  """Test codes are ``sign₀(x·W_b + c_b)``: return the pre-tanh hash logits."""
  return model.hash_logits(images, train=False)


NSH = register(MethodSpec(
    name="nsh",
    description="NSH (IJCAI 2022): SoftSort of code similarities + SortedNCE on sorted latents",
    make_model=make_model,
    compute_loss=compute_loss,
    encode=encode,
    # The loss keywords of docs/methods.md §2.2; sort_temperature 0 = 1/bits (see loss_kwargs).
    hparams={"sort_temperature": 0.0, "nce_temperature": 0.3, "num_positives": 2,
             "quantization_weight": 1.0, "renormalize_gathered": True,
             "strict_double_softmax": False, "sort_hard": False},
    # The 3rd-party ports' optimisation (Adam 1e-5, coupled L2 1e-5, batch 50, 200 epochs); their
    # frozen ResNet-50 is not registered yet, so the from-scratch CNN stands in.
    defaults={"backbone": "small_cnn", "batch_size": 50, "learning_rate": 1e-5,
              "weight_decay": 1e-5, "epochs": 200, "model": {"latent_dim": 1024}},
    presets={
        # Project choices for the embedded data set: the same MLP backbone as CIBHash's digits
        # preset. Tuned on the validation split only (experiments/configs/nsh_digits.py): λ_q = 0.1
        # delays the drift of the codes towards a few shared patterns, the lighter digits_light
        # views and lr 3e-4 help, a sort temperature of 0.125 (4/K at 32 bits, instead of 1/K)
        # keeps validation mAP rising, and above all a small batch: at n = 32 the SoftSort's n³
        # work is 64× less than at 128, so 6000 steps fit the time budget, and the code ranking
        # puts the anchor's own view first about twice as often, which makes SortedNCE's top-m
        # positives reliable (validation 0.846–0.859 at 32 bits vs 0.749 at batch 128 / 600
        # steps). The pretrained setting adds --backbone=mlp2 --init_backbone_from=<a CIBHash
        # mlp2 run> --frozen_backbone --sort_temperature=0.25 --batch_size=128 --steps=600.
        "digits": {"backbone": "mlp", "batch_size": 32, "steps": 6000, "eval_every": 1000,
                   "checkpoint_every": 2000, "image_size": 8, "learning_rate": 3e-4,
                   "weight_decay": 0.0,
                   "hparams": {"quantization_weight": 0.1, "sort_temperature": 0.125}},
        "cifar10": {"backbone": "small_cnn", "image_size": 32},
    },
    recipes={"digits": ("digits_light", "digits_light"), "*": ("mocov2_view1", "mocov2_view2")},
    min_bits=1,
))
