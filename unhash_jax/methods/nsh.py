"""NSH wired into the trainer (docs/methods.md §2.2): two-head model + loss + recipes + defaults.

Yu*, Shen*, Wang, Zhang, Torr. "Learning to Hash Naturally Sorts". IJCAI 2022 (arXiv 2201.13322);
no official code is public, the structure follows two third-party ports.

Model: backbone (registry) → pooled feature ``x`` → two linear heads,
``b = tanh(x·W_b + c_b)`` ``[N, K]`` (no BN; training uses the continuous ``b``) and
``z = normalize(x·W_z + c_z)`` ``[N, latent_dim]`` (1024). Test code: ``sign₀(x·W_b + c_b)``, so
:func:`encode` returns the pre-tanh hash logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from unhash_jax.config import Config
from unhash_jax.losses._common import bit_balance, l2_normalize
from unhash_jax.losses.nsh import nsh_loss_with_aux
from unhash_jax.methods import hparams as hp
from unhash_jax.methods.contract import BuildContext, StepBatch, StepContext
from unhash_jax.methods.registry import MethodSpec, build_backbone, common_preset, register
from unhash_jax.models import Features, backbone_features
from unhash_jax.models.feature_input import FeatureInput


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
    feature_norm, feature_dropout: :class:`~unhash_jax.models.feature_input.FeatureInput` on the
      pooled feature before both heads (off by default; a key is needed in training with dropout).
  """

  def __init__(self, backbone: nnx.Module, bits: int, *, latent_dim: int = 1024,
               frozen_backbone: bool = False, hash_init_scale: float = 1.0,
               feature_norm: str = "none", feature_dropout: float = 0.0, rngs: nnx.Rngs):
    if latent_dim < 1:
      raise ValueError(f"NSHModel: latent_dim must be >= 1, got {latent_dim}.")
    if not hash_init_scale > 0:
      raise ValueError(f"NSHModel: hash_init_scale must be > 0, got {hash_init_scale}.")
    self.backbone = backbone
    self.feature_input = FeatureInput(backbone.feature_dim, norm=feature_norm,
                                      dropout_rate=feature_dropout)
    self.hash_head = nnx.Linear(
        backbone.feature_dim, bits, rngs=rngs,
        kernel_init=nnx.initializers.variance_scaling(float(hash_init_scale) ** 2, "fan_in",
                                                      "truncated_normal"))
    self.latent_head = nnx.Linear(backbone.feature_dim, latent_dim, rngs=rngs)
    self.frozen_backbone = frozen_backbone

  def features(self, x: jax.Array, *, train: bool = False) -> Features:
    return backbone_features(self.backbone, x, train=train, frozen=self.frozen_backbone)

  def pooled(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None
             ) -> jax.Array:
    """The pooled feature after :class:`FeatureInput` ``[B, d]``: what both heads read."""
    return self.feature_input(self.features(x, train=train).pooled, train=train, key=key)

  def hash_logits(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """``x·W_b + c_b`` ``[B, K]``: ``sign₀`` of it is the test code."""
    return self.hash_head(self.pooled(x, train=train))

  def __call__(self, x: jax.Array, *, train: bool = False, key: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
    """Returns ``(b, z)``: tanh codes ``[B, K]`` and L2-normalised latents ``[B, latent_dim]``."""
    h = self.pooled(x, train=train, key=key)
    b = jnp.tanh(self.hash_head(h))
    return b, l2_normalize(self.latent_head(h))


def make_model(config: Config, ctx: BuildContext) -> NSHModel:
  opts = config.model
  return NSHModel(build_backbone(config, ctx), config.bits, latent_dim=opts.get("latent_dim", 1024),
                  frozen_backbone=opts.get("frozen_backbone", False),
                  hash_init_scale=opts.get("hash_init_scale", 1.0),
                  feature_norm=opts.get("feature_norm", "none"),
                  feature_dropout=opts.get("feature_dropout", 0.0), rngs=ctx.rngs)


# The keywords of losses.nsh_loss (docs/methods.md §2.2): the one place their names are written.
HPARAMS = (
    hp.non_negative("sort_temperature", 0.0, "τ_sort of the SoftSort (0 = 1/bits)"),
    hp.positive("nce_temperature", 0.3, "τ_nce of SortedNCE"),
    hp.HParam("num_positives", 2, "m, the top-m sorted ranks used as positives", low=1),
    hp.non_negative("quantization_weight", 1.0, "λ_q, weight of the MSE quantization term"),
    hp.flag("renormalize_gathered", True, "re-normalise the sorted-gathered latents"),
    hp.flag("strict_double_softmax", False, "replicate the ports' CE(softmax(C/τ)) double softmax"),
    hp.flag("sort_hard", False, "straight-through one-hot permutations in the forward pass"),
)


def loss_kwargs(hparams: dict) -> dict:
  """The method's hparams as :func:`~unhash_jax.losses.nsh_loss` keywords.

  ``sort_temperature == 0`` (the default, ``--sort_temperature=0``) means ``1/bits``: a flag cannot
  default to ``None``.
  """
  kwargs = {h.name: hparams[h.name] for h in HPARAMS}
  kwargs["sort_temperature"] = kwargs["sort_temperature"] or None
  return kwargs


def compute_loss(model: NSHModel, batch: StepBatch, ctx: StepContext) -> tuple[jax.Array, dict]:
  view1, view2 = batch.views  # NSH's loss is deterministic; the key only drives feature dropout.
  k1, k2 = jax.random.split(ctx.key)
  b1, z1 = model(view1, train=True, key=k1)
  b2, z2 = model(view2, train=True, key=k2)
  loss, aux = nsh_loss_with_aux(b1, b2, z1, z2, **loss_kwargs(ctx.hparams))
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
    hparams=HPARAMS,
    # The 3rd-party ports' optimisation (Adam 1e-5, coupled L2 1e-5, batch 50, 200 epochs); their
    # frozen ResNet-50 is not registered yet, so the from-scratch CNN stands in.
    defaults={"backbone": "small_cnn", "batch_size": 50, "learning_rate": 1e-5,
              "weight_decay": 1e-5, "epochs": 200, "model": {"latent_dim": 1024},
              "view_recipes": ("mocov2_view1", "mocov2_view2")},
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
                   "weight_decay": 0.0, "view_recipes": ("digits_light", "digits_light"),
                   "hparams": {"quantization_weight": 0.1, "sort_temperature": 0.125}},
        "cifar10": {"backbone": "small_cnn", "image_size": 32},
        # kamwoh/sdc's setting: a frozen ImageNet ResNet-50 (BN in inference mode, 2048-d pooled
        # feature), 224-px MoCo-v2 views (needs --pretrained=<resnet50 .pth>).
        "paper": {"backbone": "resnet50", "image_size": 224, "model": {"frozen_backbone": True}},
        # Tuned on cifar10-i's validation split on the frozen MobileNetV2 cache (32 bits): lr 1e-3
        # without weight decay, batch 64 for 100 epochs, λ_q 0.1, τ_sort 0.125 (validation
        # mAP@1000 0.274 with the defaults -> 0.398). Views cropping 80-100 % of the image
        # (common_preset's default; validation mAP@83 +1.3 / +0.7 / 0.0 at 16 / 32 / 64 bits).
        # λ_q 0.01 instead of 0.1: validation mAP@83 over seeds 0 / 1, mean +2.15 / -0.1 / +1.3
        # points at 16 / 32 / 64 bits.
        "common": common_preset(batch_size=64, learning_rate=1e-3, weight_decay=0.0, epochs=100,
                                hparams={"quantization_weight": 0.01, "sort_temperature": 0.125}),
    },
))
