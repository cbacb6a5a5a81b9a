"""Training on a frozen-feature cache (``Config.cached_views = E > 0``).

The run's backbone (``config.backbone`` with ``config.pretrained`` weights) is frozen, so its features
are computed once into a :mod:`~unhash_jax.data.feature_cache` and the method trains its heads on
them at head-only speed:

* evaluation and the method's ``prepare`` hook read the test transform's pooled features
  (:class:`CachedFeatureSource`, which stands in for the image source);
* each training view is a cached augmented view: view ``v`` of an example uses recipe
  ``view_recipes[v]``; a recipe without randomness (``none``) reads the test features (for a
  method that trains on patch tokens, the test transform's tokens of the training images, the
  cache's ``clean_train`` part, extracted the first time such a run asks for it), an augmenting
  one reads one of the ``E`` cached views, drawn per (seed, step, example) so that a resumed run
  sees the same views; two views of the same recipe are always two different cached views;
* the model's backbone is :class:`~unhash_jax.models.cached.CachedFeatures` (no parameters).

Deviation from training on images: the augmentations are a fixed sample of ``E`` per image, and a
frozen backbone's internal dropout (VGG's fc6/fc7 in CIBHash's replica) is not sampled anew per step
(``model.feature_dropout`` on the cached feature stands in for the one after fc7).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from unhash_jax.config import Config, ConfigError
from unhash_jax.data import augment, builders, feature_cache

VIEW_PREFIX = "view:"
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def augments(recipe: augment.Recipe) -> bool:
  """Whether a recipe draws anything at random (else its view is the test transform's)."""
  off = augment.Recipe(mean=recipe.mean, std=recipe.std, center_square=recipe.center_square,
                       antialias=recipe.antialias)
  return recipe != off


def augmenting_recipes(config: Config) -> list[str]:
  """The config's view recipes that augment (each has a ``views:<recipe>`` part in the cache)."""
  return sorted({r for r in config.view_recipes if augments(augment.get_recipe(r))})


def check(config: Config, *, tokens: bool = False) -> None:
  """Raises ConfigError when a config cannot train on a feature cache (``tokens``: the method
  trains on patch tokens; its un-augmented views read the cache's ``clean_train`` part)."""
  if config.init_backbone_from:
    raise ConfigError("--cached_views trains on the features of the --backbone with --pretrained "
                      "weights; it cannot take its backbone from --init_backbone_from.")
  if config.model.get("frozen_backbone") is False:
    raise ConfigError("--cached_views needs a frozen backbone (its features are computed once); "
                      "drop --nofrozen_backbone or set --cached_views=0.")
  # The cache's test part is computed with the first recipe's test transform (cache_key).
  test = test_transform_spec(augment.get_recipe(config.view_recipes[0]))
  for r in config.view_recipes:
    if not augments(augment.get_recipe(r)) and test_transform_spec(augment.get_recipe(r)) != test:
      raise ConfigError(f"view recipe {r!r} has no randomness but another test transform than "
                        f"{config.view_recipes[0]!r}; with --cached_views such a view reads the "
                        f"test features, so both must agree.")


def feature_seed(config: Config) -> int:
  """The seed the cache's views (and a random-init backbone) are drawn from: ``cache_seed``, else
  ``seed``."""
  return config.seed if config.cache_seed is None else config.cache_seed


def cache_key(config: Config, source, indices: dict[str, np.ndarray]) -> dict:
  """Everything the cached features depend on (the cache folder is named by its digest) except the
  augmenting recipes: each ``views:<recipe>`` part is added to the cache when a method first needs
  it, and is recorded with its recipe's definition (a changed definition re-extracts the part)."""
  from unhash_jax import cache
  from unhash_jax.models import weights_digest
  weights = (f"sha256:{weights_digest(config.pretrained)}" if config.pretrained else
             f"random-init:seed={feature_seed(config)}")
  return {"dataset": config.dataset, "source": source.name, "num_images": len(source),
          "image_shape": list(source.image_shape),
          "indices": {k: cache.digest({"i": np.asarray(v).tolist()}) for k, v in indices.items()},
          "backbone": config.backbone, "backbone_kwargs": config.model.get("backbone_kwargs", {}),
          "weights": weights, "image_size": config.image_size,
          "test_transform": test_transform_spec(augment.get_recipe(config.view_recipes[0])),
          "num_views": config.cached_views, "seed": feature_seed(config)}


def test_transform_spec(recipe: augment.Recipe) -> dict:
  """The fields of a recipe that :func:`~unhash_jax.data.augment.eval_preprocess` uses: methods whose
  first recipes differ only in their augmentations share the cache's test part (and the cache)."""
  return {"center_square": recipe.center_square, "antialias": recipe.antialias,
          "mean": list(recipe.mean), "std": list(recipe.std)}


def _extractor(config: Config, image_shape) -> Callable:
  """Jitted ``x [B, S, S, C] -> (pooled, tokens)`` of the frozen, pretrained backbone (host arrays)."""
  from unhash_jax import xla_cpu
  from unhash_jax.models import load_weights_into, make_backbone
  shape = (config.image_size, config.image_size, image_shape[-1])
  backbone = make_backbone(config.backbone, shape, rngs=nnx.Rngs(params=feature_seed(config)),
                           **config.model.get("backbone_kwargs", {}))
  if config.pretrained:
    load_weights_into(backbone, config.backbone, config.pretrained)
  graphdef, state = nnx.split(backbone)

  def forward(state, x):
    f = nnx.merge(graphdef, state)(x, train=False)
    return f.pooled.astype(jnp.float32), f.tokens.astype(jnp.float32)

  compiled = jax.jit(forward, compiler_options=xla_cpu.options_for(
      jax.devices(), ynn_fusions=config.cpu_ynn_fusions))

  def extract(x):
    pooled, tokens = compiled(state, x)
    return np.asarray(pooled), np.asarray(tokens)

  return extract


def _recipe_id(name: str) -> int:
  import zlib
  return zlib.crc32(name.encode()) & 0x7FFFFFFF


def open_cache(config: Config, source, splits, *, tokens: bool, views: bool = True
               ) -> feature_cache.FeatureCache:
  """Builds (what is missing of) and opens the feature cache of a resolved config.

  ``views=False`` builds no augmented view part (a fitted method reads only the test part, and
  extracting 8 views per training image costs minutes on CPU)."""
  check(config, tokens=tokens)
  if not config.pretrained:
    logging.warning("--cached_views without --pretrained: the cached features come from a frozen, "
                    "randomly initialised %s (seed %d). Pass --pretrained=PATH for pretrained "
                    "features.", config.backbone, feature_seed(config))
  test_index = np.unique(np.concatenate([splits.query, splits.database, splits.train,
                                         splits.val_query, splits.val_database]))
  train_index = np.asarray(splits.train, np.int64)
  test_recipe = augment.get_recipe(config.view_recipes[0])
  size = config.image_size
  base = jax.random.key(feature_seed(config))

  def test_transform(images, idx, e):
    return augment.eval_preprocess(images, test_recipe, out_size=size)

  test_spec = repr(test_transform_spec(test_recipe))
  jobs = [feature_cache.Job(feature_cache.TEST_PART, test_index, 1, test_transform, spec=test_spec)]
  for name in augmenting_recipes(config) if views else ():
    recipe = augment.get_recipe(name)
    recipe_key = jax.random.fold_in(base, _recipe_id(name))

    def view(images, idx, e, recipe=recipe, recipe_key=recipe_key):
      keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(recipe_key, i), e))(
          jnp.asarray(idx, jnp.int32))
      return augment.augment_each(images, keys, recipe, out_size=size)

    jobs.append(feature_cache.Job(f"views:{name}", train_index, config.cached_views, view,
                                  tokens=tokens, spec=repr(recipe)))
  if views and tokens and any(not augments(augment.get_recipe(r)) for r in config.view_recipes):
    # An un-augmented view of a token method. The test part holds pooled features only (its tokens,
    # for every query and database image too, would be P times larger), so the training images'
    # tokens get a part of their own.
    jobs.append(feature_cache.Job(feature_cache.CLEAN_TRAIN_PART, train_index, 1, test_transform,
                                  tokens=True, spec=test_spec))
  root = config.feature_cache_dir or os.path.join(config.data_dir or builders.default_data_dir(),
                                                  "unhash_jax_features")
  key = cache_key(config, source, {"test": test_index, "train": train_index})
  return feature_cache.open_or_build(
      root, f"{config.dataset}-{config.backbone}-{size}", key, jobs=jobs, source=source,
      extract=_extractor(config, source.image_shape), batch_size=min(64, config.eval_batch_size),
      train_index=train_index)


@dataclasses.dataclass(frozen=True, eq=False)
class CachedFeatureSource:
  """Stands in for a :class:`~unhash_jax.data.builders.Source`: ``get_images`` returns the cached
  test-transform features (float32 ``[n, D]``) of the source indices."""

  images_source: builders.Source
  cache: feature_cache.FeatureCache

  @property
  def name(self) -> str:
    return self.images_source.name

  @property
  def labels(self) -> np.ndarray:
    return self.images_source.labels

  @property
  def official_split(self) -> np.ndarray:
    return self.images_source.official_split

  @property
  def class_names(self):
    return self.images_source.class_names

  @property
  def image_shape(self) -> tuple[int]:
    return (self.cache.feature_dim,)

  def __len__(self) -> int:
    return len(self.images_source)

  def get_images(self, indices) -> np.ndarray:
    return self.cache.test_features(indices)


def _hash_uniform_ints(seed: int, step: int, positions: np.ndarray, salt: int, n: int) -> np.ndarray:
  """Integers in [0, n) from a SplitMix64 hash of (seed, step, position, salt): per example, so a
  host draws the same views for its rows as any other host would."""
  with np.errstate(over="ignore"):
    x = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(step) * np.uint64(0xBF58476D1CE4E5B9)
         ^ np.uint64(salt) * np.uint64(0x94D049BB133111EB)) + positions.astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9) & _MASK64
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB) & _MASK64
    x = x ^ (x >> np.uint64(31))
  return (x % np.uint64(n)).astype(np.int64)


def view_sampler(cache: feature_cache.FeatureCache, config: Config, *, tokens: bool
                 ) -> Callable[[np.ndarray, int], dict[str, np.ndarray]]:
  """``sample(positions, step) -> {"view:0": [B, ...], ...}`` of cached views (see the module doc)."""
  recipes = config.view_recipes
  e_total, seed = config.cached_views, config.seed
  augmenting = set(augmenting_recipes(config))
  train_index = cache.train_index

  def sample(positions: np.ndarray, step: int) -> dict[str, np.ndarray]:
    positions = np.asarray(positions, np.int64)
    out, used = {}, {}
    for v, r in enumerate(recipes):
      if r not in augmenting:
        out[f"{VIEW_PREFIX}{v}"] = (cache.clean_train_tokens(positions) if tokens else
                                    cache.test_features(train_index[positions]))
        continue
      e = _hash_uniform_ints(seed, step, positions, 2 * v + 1, e_total)
      if r in used and e_total > 1:  # a second view of the same recipe: another cached view
        e = (used[r] + 1 + _hash_uniform_ints(seed, step, positions, 2 * v + 2, e_total - 1)) % e_total
      used[r] = e
      out[f"{VIEW_PREFIX}{v}"] = cache.view_features(r, positions, e, tokens=tokens)
    return out

  return sample
