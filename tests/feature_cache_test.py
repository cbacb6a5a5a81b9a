"""The frozen-feature cache: values, determinism, resumable extraction, damaged files rebuilt."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unhash_jax.data import augment, feature_cache


class _Source:
  """A tiny in-memory image source (the loader's interface)."""

  def __init__(self, n=40, seed=0):
    self.images = np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)

  def get_images(self, idx):
    return self.images[np.asarray(idx)]


def _extract(x):
  """A stand-in backbone: per-channel means (pooled) and the 4 quadrant means (tokens)."""
  x = np.asarray(x, np.float64)
  b, h, w, c = x.shape
  quads = x.reshape(b, 2, h // 2, 2, w // 2, c).mean(axis=(2, 4)).reshape(b, 4, c)
  return x.mean(axis=(1, 2)), quads


def _jobs(train, test, *, views=3, seed=0, tokens=True):
  recipe = augment.get_recipe("cibhash")
  base = jax.random.fold_in(jax.random.key(seed), 11)

  def view(images, idx, e):
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(base, i), e))(jnp.asarray(idx))
    return augment.augment_each(images, keys, recipe, out_size=8)

  def test_transform(images, idx, e):
    return augment.eval_preprocess(images, recipe, out_size=8)

  return [feature_cache.Job("test", test, 1, test_transform),
          feature_cache.Job("views:cibhash", train, views, view, tokens=tokens)]


def _open(root, source, **kw):
  train, test = np.arange(0, 40, 2), np.arange(40)
  kwargs = dict(jobs=_jobs(train, test), source=source, extract=_extract, batch_size=4,
                chunk_images=12, dtype="float32")
  kwargs.update(kw)
  return feature_cache.open_or_build(str(root), "t", {"name": "t"}, **kwargs)


def test_features_equal_the_direct_computation_and_views_differ(tmp_path):
  source = _Source()
  cache = _open(tmp_path, source)
  recipe = augment.get_recipe("cibhash")
  want = _extract(augment.eval_preprocess(source.images[[3, 17]], recipe, out_size=8))[0]
  np.testing.assert_allclose(cache.test_features([3, 17]), want, rtol=1e-6, atol=1e-6)
  v = cache.view_features("cibhash", np.array([0, 0, 5]), np.array([0, 1, 2]))
  assert v.shape == (3, 3) and not np.allclose(v[0], v[1])
  assert cache.view_features("cibhash", [5], [2], tokens=True).shape == (1, 4, 3)
  with pytest.raises(feature_cache.FeatureCacheError, match="no features of source indices"):
    cache.test_features([99])


def test_views_do_not_depend_on_chunking_or_batching(tmp_path):
  source = _Source()
  a = _open(tmp_path / "a", source)
  b = _open(tmp_path / "b", source, chunk_images=30, batch_size=8)
  pos, views = np.repeat(np.arange(20), 3), np.tile(np.arange(3), 20)
  np.testing.assert_allclose(a.view_features("cibhash", pos, views),
                             b.view_features("cibhash", pos, views), rtol=1e-6, atol=1e-6)


def test_interrupted_extraction_resumes_where_it_stopped(tmp_path):
  source = _Source()
  calls = {"n": 0}

  def dying(x):
    calls["n"] += 1
    if calls["n"] == 5:
      raise KeyboardInterrupt("killed")
    return _extract(x)

  with pytest.raises(KeyboardInterrupt):
    _open(tmp_path, source, extract=dying)
  progress = json.load(open(next(
      os.path.join(r, f) for r, _, fs in os.walk(tmp_path) for f in fs if f == "progress.json")))
  done_before = len(progress["test"]["done"])
  assert 0 < done_before < progress["test"]["num_chunks"]

  counted = {"n": 0}

  def counting(x):
    counted["n"] += 1
    return _extract(x)

  resumed = _open(tmp_path, source, extract=counting)
  fresh = _open(tmp_path / "fresh", source)
  # Only what was missing ran again: fewer calls than a whole build (10 test + 5·3 view batches).
  assert counted["n"] < 25
  np.testing.assert_array_equal(resumed.test_features(np.arange(40)), fresh.test_features(np.arange(40)))
  np.testing.assert_array_equal(resumed.view_features("cibhash", np.arange(20), np.zeros(20, int)),
                                fresh.view_features("cibhash", np.arange(20), np.zeros(20, int)))


def test_damaged_chunks_are_recomputed_and_truncated_files_rebuilt(tmp_path):
  source = _Source()
  good = _open(tmp_path / "good", source).test_features(np.arange(40))
  _open(tmp_path / "bad", source)
  directory = next(os.path.join(tmp_path / "bad", d) for d in os.listdir(tmp_path / "bad"))
  path = os.path.join(directory, "test_pooled.npy")
  data = np.load(path, mmap_mode="r+")
  data[13, 0, 1] = 1e9     # silent corruption inside chunk 1
  data.flush()
  del data
  counted = {"n": 0}

  def counting(x):
    counted["n"] += 1
    return _extract(x)

  fixed = _open(tmp_path / "bad", source, extract=counting)
  np.testing.assert_array_equal(fixed.test_features(np.arange(40)), good)
  assert counted["n"] == 3   # one chunk of 12 images in batches of 4
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  rebuilt = _open(tmp_path / "bad", source)
  np.testing.assert_array_equal(rebuilt.test_features(np.arange(40)), good)


def test_another_key_is_another_cache_and_non_finite_features_refused(tmp_path):
  source = _Source()
  _open(tmp_path, source)
  feature_cache.open_or_build(str(tmp_path), "t", {"name": "t", "seed": 1},
                              jobs=_jobs(np.arange(0, 40, 2), np.arange(40)), source=source,
                              extract=_extract, batch_size=4, chunk_images=12, dtype="float32")
  assert len(os.listdir(tmp_path)) == 2
  with pytest.raises(feature_cache.FeatureCacheError, match="non-finite"):
    _open(tmp_path / "nan", source, extract=lambda x: (np.full((x.shape[0], 3), np.nan), None),
          jobs=_jobs(np.arange(0, 40, 2), np.arange(40), tokens=False))


def test_view_sampler_is_a_function_of_seed_step_and_example(tmp_path):
  from unhash_jax import cached_training
  from unhash_jax.config import Config
  source = _Source()
  cache = _open(tmp_path, source)
  config = Config(view_recipes=("cibhash", "cibhash"), cached_views=3, seed=5)
  sample = cached_training.view_sampler(cache, config, tokens=False)
  positions = np.arange(20)
  a, b = sample(positions, 7), sample(positions, 7)
  np.testing.assert_array_equal(a["view:0"], b["view:0"])
  # A host that holds only some rows draws the same views for them (multi-host, resume).
  part = sample(positions[5:9], 7)
  np.testing.assert_array_equal(part["view:1"], a["view:1"][5:9])
  # The two views of one recipe are always two different cached views; steps differ.
  assert not np.any(np.all(a["view:0"] == a["view:1"], axis=1))
  assert not np.array_equal(sample(positions, 8)["view:0"], a["view:0"])


def test_a_part_without_tokens_is_extracted_again_when_tokens_are_asked_for(tmp_path):
  source = _Source()
  train, test = np.arange(0, 40, 2), np.arange(40)
  pooled_only = _open(tmp_path, source, jobs=_jobs(train, test, tokens=False))
  with pytest.raises(feature_cache.FeatureCacheError, match="holds no"):
    pooled_only.view_features("cibhash", [0], [0], tokens=True)
  with_tokens = _open(tmp_path, source, jobs=_jobs(train, test, tokens=True))
  assert with_tokens.view_features("cibhash", [0], [0], tokens=True).shape == (1, 4, 3)
  np.testing.assert_allclose(with_tokens.view_features("cibhash", train // 2, np.zeros(20, int)),
                             pooled_only.view_features("cibhash", train // 2, np.zeros(20, int)))
  # The tokens stay for later runs that do not need them.
  again = _open(tmp_path, source, jobs=_jobs(train, test, tokens=False))
  assert again.token_shape("cibhash") == (4, 3)
  assert len(os.listdir(tmp_path)) == 1


class _CountingExtract:
  def __init__(self):
    self.images = 0

  def __call__(self, x):
    self.images += x.shape[0]
    return _extract(x)


def test_parts_are_added_when_needed_and_a_changed_transform_is_extracted_again(tmp_path):
  source = _Source()
  train, test = np.arange(0, 40, 2), np.arange(40)
  jobs = _jobs(train, test)
  first = _CountingExtract()
  test_only = _open(tmp_path, source, jobs=jobs[:1], extract=first)
  assert first.images >= 40 and test_only.train_index.size == 0
  # A method that needs a view part adds it to the same cache; the test part is not redone.
  second = _CountingExtract()
  both = _open(tmp_path, source, jobs=jobs, extract=second)
  assert 20 * 3 <= second.images < 40 + 20 * 3 and len(os.listdir(tmp_path)) == 1
  np.testing.assert_array_equal(both.test_features(test), test_only.test_features(test))
  # A part recorded under another transform is extracted again (and is correct afterwards).
  third = _CountingExtract()
  flipped = dataclasses.replace(jobs[0], spec="another transform",
                                preprocess=lambda im, i, e: jobs[0].preprocess(im[:, ::-1], i, e))
  again = _open(tmp_path, source, jobs=[flipped, jobs[1]], extract=third)
  assert 40 <= third.images < 40 + 20 * 3
  recipe = augment.get_recipe("cibhash")
  want = _extract(augment.eval_preprocess(source.images[[5]][:, ::-1], recipe, out_size=8))[0]
  np.testing.assert_allclose(again.test_features([5]), want, rtol=1e-6, atol=1e-6)


def test_methods_whose_first_recipes_share_a_test_transform_share_a_cache():
  """DDH's un-augmented view ("none") reads the test part of CIBHash's cache ("cibhash")."""
  from unhash_jax import cached_training
  from unhash_jax.config import Config

  class Src:
    name, image_shape = "s", (8, 8, 3)

    def __len__(self):
      return 40

  idx = {"test": np.arange(40), "train": np.arange(0, 40, 2)}
  key = lambda recipes: cached_training.cache_key(
      Config(view_recipes=recipes, cached_views=3, backbone="tiny", image_size=8), Src(), idx)
  assert key(("none",)) == key(("cibhash", "cibhash"))
  assert key(("digits_none",)) != key(("none",))   # another normalisation


def test_runs_of_several_seeds_share_a_cache_through_cache_seed(tmp_path):
  """--seed alone draws another cache; --cache_seed fixes the cached views across run seeds."""
  from unhash_jax import cached_training, train
  from unhash_jax.config import Config
  from unhash_jax.methods import resolve_config

  class Src:
    name, image_shape = "s", (8, 8, 3)

    def __len__(self):
      return 40

  idx = {"test": np.arange(40), "train": np.arange(0, 40, 2)}
  key = lambda **kw: cached_training.cache_key(
      Config(view_recipes=("cibhash", "cibhash"), cached_views=3, backbone="tiny", image_size=8,
             **kw), Src(), idx)
  assert key(seed=1) != key(seed=0)
  assert key(seed=1, cache_seed=0) == key(seed=0) == key(seed=3, cache_seed=0)
  assert key(seed=0, cache_seed=2) == key(seed=2)

  caches, codes = str(tmp_path / "caches"), []
  for seed in (0, 1):
    config = Config(method="cibhash", dataset="digits", bits=16, backbone="tiny", batch_size=16,
                    steps=3, eval_every=0, log_every=1, cached_views=2, seed=seed, cache_seed=7,
                    feature_cache_dir=caches, data_dir=str(tmp_path / "data"))
    workdir = str(tmp_path / f"run{seed}")
    train.train_and_evaluate(config, workdir)
    codes.append(np.load(os.path.join(workdir, "codes.npz"))["database_codes"])
    with open(os.path.join(workdir, "config.json")) as f:
      assert json.load(f)["cache_seed"] == 7
  assert len(os.listdir(caches)) == 1          # one cache, extracted once
  assert not np.array_equal(codes[0], codes[1])   # the heads still follow --seed
  with pytest.raises(ValueError, match="--cache_seed must be an integer >= 0"):
    resolve_config(Config(method="cibhash", cache_seed=-1))


def test_an_unaugmented_view_beside_an_augmented_one_reads_the_test_part(tmp_path):
  """("cibhash", "none"): the second view is the test transform of the first recipe's cache."""
  from unhash_jax import cached_training
  from unhash_jax.config import Config, ConfigError
  config = Config(view_recipes=("cibhash", "none"), cached_views=3, seed=1)
  cached_training.check(config)
  with pytest.raises(ConfigError, match="another test transform"):
    cached_training.check(dataclasses.replace(config, view_recipes=("cibhash", "digits_none")))
  source = _Source()
  cache = _open(tmp_path, source)
  positions = np.arange(20)
  views = cached_training.view_sampler(cache, config, tokens=False)(positions, 3)
  recipe = augment.get_recipe("cibhash")
  train_images = source.images[cache.train_index[positions]]
  want = _extract(augment.eval_preprocess(train_images, recipe, out_size=8))[0]
  np.testing.assert_allclose(views["view:1"], want, rtol=1e-6, atol=1e-6)
  assert not np.allclose(views["view:0"], want, atol=1e-3)


def test_an_unaugmented_view_of_a_token_method_reads_the_clean_train_tokens(tmp_path):
  """("cibhash", "none") for a method on patch tokens: the second view is the test transform's
  tokens of the training image (the ``clean_train`` part; the test part holds pooled features)."""
  from unhash_jax import cached_training
  from unhash_jax.config import Config
  config = Config(view_recipes=("cibhash", "none"), cached_views=3, seed=1)
  cached_training.check(config, tokens=True)
  source = _Source()
  train, test = np.arange(0, 40, 2), np.arange(40)
  recipe = augment.get_recipe("cibhash")
  test_transform = lambda images, idx, e: augment.eval_preprocess(images, recipe, out_size=8)
  without = _open(tmp_path / "a", source, jobs=_jobs(train, test))
  with pytest.raises(feature_cache.FeatureCacheError, match="clean_train:tokens"):
    cached_training.view_sampler(without, config, tokens=True)(np.arange(4), 0)
  cache = _open(tmp_path / "b", source, jobs=_jobs(train, test) + [
      feature_cache.Job(feature_cache.CLEAN_TRAIN_PART, train, 1, test_transform, tokens=True)])
  positions = np.array([7, 0, 19, 7])
  views = cached_training.view_sampler(cache, config, tokens=True)(positions, 3)
  pooled, quads = _extract(augment.eval_preprocess(source.images[train[positions]], recipe,
                                                   out_size=8))
  np.testing.assert_allclose(views["view:1"], quads, rtol=1e-6, atol=1e-6)
  assert views["view:0"].shape == (4, 4, 3) and not np.allclose(views["view:0"], quads, atol=1e-3)
  assert cache.token_shape() == (4, 3) and cache.token_shape("none") is None
  # Its pooled features are the test part's, for the same images.
  np.testing.assert_allclose(cache._arrays["clean_train:pooled"][positions, 0],
                             cache.test_features(train[positions]), rtol=1e-6)


def test_the_evaluator_reads_the_cached_features_as_stored(tmp_path):
  """Evaluation batches of a cache carry its float32 features unrounded. The batch buffer was once
  uint8, which truncated every cached feature to its integer part at evaluation (training read the
  views as floats), so each trained method was scored on codes of other inputs than it learnt on."""
  from unhash_jax import cached_training, train
  from unhash_jax.data import builders
  source = _Source()
  cache = _open(tmp_path, source)
  images = builders.Source(name="t", images=source.images, labels=np.arange(40) % 10,
                           official_split=np.full(40, "test"), class_names=tuple("abcdefghij"),
                           image_shape=(8, 8, 3))
  features = cached_training.CachedFeatureSource(images, cache)
  idx = np.array([5, 3, 17, 39, 0])   # two batches of 4, the second padded
  want = cache.test_features(idx)
  assert want.dtype == np.float32 and not np.array_equal(want, np.round(want))
  got = train.encode_indices(lambda state, x: x, None, features, idx, batch_size=4, mesh=None)
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, want)
