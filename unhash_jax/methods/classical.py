"""Classical unsupervised hashing baselines as methods: LSH, PCAH, ITQ, SH (no training loop).

Each is fitted on the training split's features — the frozen backbone on the test transform, or the
feature cache (``--cached_views``) — and evaluated with the same evaluator as the deep methods
(:mod:`unhash_jax.baselines` holds the algorithms and their references). On digits the default
backbone is ``flatten``: the raw (normalised) pixels.
"""

from __future__ import annotations

import jax
from flax import nnx

from unhash_jax import baselines
from unhash_jax.config import Config
from unhash_jax.methods import hparams as hp
from unhash_jax.methods.contract import BuildContext
from unhash_jax.methods.registry import MethodSpec, build_backbone, common_preset, register


class FrozenBackbone(nnx.Module):
  """Just a backbone: the fitted methods read its pooled features."""

  def __init__(self, backbone: nnx.Module):
    self.backbone = backbone


def make_model(config: Config, ctx: BuildContext) -> FrozenBackbone:
  return FrozenBackbone(build_backbone(config, ctx))


def _fit_fn(name: str):
  def fit(config: Config, features):
    options = {"iterations": config.hparams["itq_iterations"]} if name == "itq" else {}
    key = jax.random.key(config.seed) if name in ("lsh", "itq") else None
    return baselines.fit(name, features, config.bits, key=key, **options)
  return fit


_DESCRIPTIONS = {
    "lsh": "LSH (Charikar, STOC 2002): signs of random hyperplanes through the training mean",
    "pcah": "PCAH: signs of the top principal components of the training features",
    "itq": "ITQ (Gong & Lazebnik, CVPR 2011): PCA + an iteratively learned rotation",
    "sh": "Spectral hashing (Weiss, Torralba & Fergus, NIPS 2008), as the authors' MATLAB code",
}

for _name, _description in _DESCRIPTIONS.items():
  register(MethodSpec(
      name=_name, description=_description, make_model=make_model, compute_loss=None, encode=None,
      fit=_fit_fn(_name),
      hparams=((hp.HParam("itq_iterations", 50, "ITQ's rotation/code alternations", low=1),)
               if _name == "itq" else ()),
      defaults={"backbone": "flatten", "batch_size": 64, "view_recipes": ("none",)},
      presets={"digits": {"view_recipes": ("digits",)},
               # Fitted on the same cached test-transform features as the deep methods' common
               # preset: one view, the clean image (a fit builds no view part of the cache
               # whatever its recipe: train._model_inputs).
               "common": common_preset(view_recipes=("none",))}))
