"""Every registered method, through the one trainer: a short run, its codes, and a bit-exact resume.

A method is covered here the day it registers: nothing below names a method.
"""

import dataclasses
import json
import os
import re

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from unhash_jax import train
from unhash_jax.config import Config
from unhash_jax.methods import REGISTRY, resolve_config

METHODS = sorted(REGISTRY)


def _config(tmp_path, method, **kw) -> Config:
  base = dict(method=method, dataset="digits", bits=16, backbone="tiny", batch_size=16, steps=4,
              eval_every=2, checkpoint_every=2, log_every=1, eval_batch_size=256,
              data_dir=str(tmp_path.parent / "data"))
  base.update(kw)
  return Config(**base)


def _saved_state(workdir, step):
  return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))


def test_registry_is_not_empty_and_every_method_resolves():
  assert {"cibhash", "nsh"} <= set(METHODS)
  assert {"lsh", "pcah", "itq", "sh"} <= set(METHODS)
  for name in METHODS:
    config = resolve_config(Config(method=name, batch_size=16))
    spec = REGISTRY[name]
    assert len(config.view_recipes) == spec.num_views
    assert set(config.hparams) == set(spec.hparam_defaults)


def test_the_trainer_names_no_method():
  """train.py is method-agnostic: a new method is a loss, a method file and a registry entry."""
  with open(train.__file__, encoding="utf-8") as f:
    source = f.read()
  named = [name for name in METHODS if re.search(rf"\b{name}\b", source, flags=re.IGNORECASE)]
  assert not named, f"unhash_jax/train.py names methods {named}"


@pytest.mark.parametrize("method", METHODS)
def test_short_run_gives_finite_losses_and_codes_of_the_right_shape(method, tmp_path):
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(_config(tmp_path, method), workdir)
  assert results["method"] == method and 0.0 <= results["map"] <= 1.0
  if REGISTRY[method].fit is None:
    lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    losses = [l["train/loss"] for l in lines if "train/loss" in l]
    assert losses and np.all(np.isfinite(losses))
  codes = np.load(os.path.join(workdir, "codes.npz"))
  assert codes["query_codes"].shape == (300, 16) and codes["database_codes"].shape == (1497, 16)
  assert set(np.unique(codes["database_codes"])) <= {-1, 1}
  assert results["tie_policy"] == "index"


@pytest.mark.parametrize("method", METHODS)
def test_every_common_preset_trains_on_a_feature_cache(method):
  """The ``common`` preset (one frozen backbone, one feature cache) is accepted by the cache's checks,
  with the views it names (e.g. an augmented view beside the clean image's feature)."""
  from unhash_jax import cached_training
  if "common" not in REGISTRY[method].presets:
    pytest.skip(f"{method} has no common preset")
  # batch 64: the preset's own (DDH: 50) need not divide the 8 test devices.
  config = resolve_config(Config(method=method, dataset="cifar10", preset="common", batch_size=64))
  assert config.cached_views > 0 and config.model["frozen_backbone"]
  cached_training.check(config, tokens=REGISTRY[method].feature_tokens)


def test_every_common_preset_shares_one_feature_cache():
  """The methods' ``common`` presets read one cache (one extraction, tens of minutes on CPU, serves
  every row of the CIFAR-10 table): the same key, and one view part between them (CIBHash's recipe
  with 80-100 % crops, which every augmenting preset chose on validation; DDH and the classical
  baselines read only the test-transform features, a fit building no view part)."""
  from unhash_jax import cached_training
  from unhash_jax.data import builders
  n = 10
  source = builders.Source(name="cifar10", images=np.zeros((n, 32, 32, 3), np.uint8),
                           labels=np.zeros(n, np.int32), official_split=np.full(n, "train"),
                           class_names=("a",), image_shape=(32, 32, 3))
  indices = {"test": np.arange(10), "train": np.arange(5)}
  keys, recipes = {}, set()
  for method in METHODS:
    if "common" not in REGISTRY[method].presets:
      continue
    config = resolve_config(Config(method=method, dataset="cifar10", preset="common", batch_size=64))
    keys[method] = json.dumps(cached_training.cache_key(config, source, indices), sort_keys=True)
    recipes.update(cached_training.augmenting_recipes(config))
  assert len(keys) >= 6, keys
  assert len(set(keys.values())) == 1, {m: json.loads(k) for m, k in keys.items()}
  assert recipes == {"cibhash_crop08"}, recipes


@pytest.mark.parametrize("method", METHODS)
def test_short_run_on_a_frozen_feature_cache(method, tmp_path):
  """The same method on cached views of a frozen backbone (the head-only route of the papers)."""
  workdir = str(tmp_path / "run")
  cfg = _config(tmp_path, method, cached_views=3, feature_cache_dir=str(tmp_path / "cache"),
                eval_every=0)
  results = train.train_and_evaluate(cfg, workdir)
  assert 0.0 <= results["map"] <= 1.0
  if REGISTRY[method].fit is None:
    lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    assert all(np.isfinite(l["train/loss"]) for l in lines if "train/loss" in l)
  assert len(os.listdir(tmp_path / "cache")) == 1   # one cache, under the run's key


@pytest.mark.parametrize("method", [m for m in METHODS if REGISTRY[m].feature_tokens])
def test_a_token_method_trains_beside_the_clean_image_on_a_feature_cache(method, tmp_path):
  """An augmented view and the un-augmented image (CIBHash's and FDBH's presets' pair) for a method
  on patch tokens: the clean image's tokens are extracted once, for the training images only."""
  cache_root = tmp_path / "cache"
  cfg = _config(tmp_path, method, cached_views=2, feature_cache_dir=str(cache_root),
                view_recipes=("digits", "digits_none"), eval_every=0)
  results = train.train_and_evaluate(cfg, str(tmp_path / "run"))
  assert 0.0 <= results["map"] <= 1.0
  (directory,) = os.listdir(cache_root)
  clean = np.load(cache_root / directory / "clean_train_tokens.npy", mmap_mode="r")
  views = np.load(cache_root / directory / "views_digits_tokens.npy", mmap_mode="r")
  assert clean.shape == (views.shape[0], 1, *views.shape[2:]), (clean.shape, views.shape)


def test_a_fitted_method_builds_no_view_part_of_the_cache(tmp_path):
  """A fit reads only the test-transform features: even with an augmenting recipe it extracts no
  cached views (8 per training image would cost minutes on CPU for nothing)."""
  cache_root = tmp_path / "cache"
  cfg = _config(tmp_path, "itq", cached_views=3, feature_cache_dir=str(cache_root),
                view_recipes=("digits",), eval_every=0)
  assert 0.0 <= train.train_and_evaluate(cfg, str(tmp_path / "run"))["map"] <= 1.0
  (directory,) = os.listdir(cache_root)
  files = os.listdir(cache_root / directory)
  assert any(f.startswith("test_") for f in files), files
  assert not any(f.startswith("views_") for f in files), files


def test_a_cache_of_random_weights_is_announced(tmp_path, caplog):
  """Without --pretrained the cached features come from a random, frozen backbone: legitimate
  (tests, ablations), but a user who forgot the weights must be told."""
  cfg = _config(tmp_path, "itq", cached_views=2, feature_cache_dir=str(tmp_path / "cache"),
                eval_every=0)
  with caplog.at_level("INFO"):
    train.train_and_evaluate(cfg, str(tmp_path / "run"))
  warned = [r for r in caplog.records if r.levelname == "WARNING" and "--pretrained" in r.getMessage()]
  assert len(warned) == 1 and "randomly initialised tiny" in warned[0].getMessage()
  assert any("Feature cache" in r.getMessage() and "test:pooled" in r.getMessage()
             for r in caplog.records)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_interrupted_run_resumes_bit_exactly(method, tmp_path, crash_at_step):
  cfg = _config(tmp_path, method, steps=6)
  full = str(tmp_path / "full")
  train.train_and_evaluate(cfg, full)
  if REGISTRY[method].fit is not None:   # no training loop: a refit must give the same codes
    again = str(tmp_path / "again")
    train.train_and_evaluate(cfg, again)
    ca, cb = (np.load(os.path.join(d, "codes.npz")) for d in (full, again))
    np.testing.assert_array_equal(ca["database_codes"], cb["database_codes"])
    return

  interrupted = str(tmp_path / "interrupted")
  crash_at_step(4)
  with pytest.raises(train.TrainingInterrupted, match="last checkpoint is step 4"):
    train.train_and_evaluate(cfg, interrupted)
  crash_at_step(None)
  train.train_and_evaluate(cfg, interrupted)

  # Everything a step changes (parameters, batch statistics, method state, optimizer) is equal.
  a, b = _saved_state(full, 6), _saved_state(interrupted, 6)
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  ca, cb = (np.load(os.path.join(d, "codes.npz")) for d in (full, interrupted))
  np.testing.assert_array_equal(ca["database_codes"], cb["database_codes"])
  events = [json.loads(l) for l in open(os.path.join(interrupted, "metrics.jsonl"))]
  assert [e["step"] for e in events if e.get("event") == "resume"] == [4]


def _with_by_bits(monkeypatch, by_bits):
  """A copy of CIBHash registered as ``tmp_by_bits`` whose ``common`` preset holds ``by_bits``."""
  base = REGISTRY["cibhash"]
  presets = {**base.presets, "common": {**base.presets["common"], "by_bits": by_bits}}
  spec = dataclasses.replace(base, name="tmp_by_bits", presets=presets)
  monkeypatch.setitem(REGISTRY, spec.name, spec)
  return spec


def test_a_presets_by_bits_entry_applies_at_its_code_length_only(monkeypatch):
  _with_by_bits(monkeypatch, {16: {"epochs": 7, "hparams": {"temperature": 0.9},
                                   "model": {"feature_dropout": 0.25}}})

  def resolve(bits, **kw):
    return resolve_config(Config(method="tmp_by_bits", dataset="cifar10", preset="common",
                                 bits=bits, batch_size=64, **kw))

  at16, at32 = resolve(16), resolve(32)
  # CIBHash's common preset: 100 epochs, τ 0.5, dropout 0.5 on the L2-scaled feature.
  assert (at32.epochs, at32.hparams["temperature"], at32.model["feature_dropout"]) == (100, 0.5, 0.5)
  assert (at16.epochs, at16.hparams["temperature"], at16.model["feature_dropout"]) == (7, 0.9, 0.25)
  # hparams and model merge key by key: what the entry does not name stays the preset's.
  assert at16.model["feature_norm"] == "l2" and at16.model["frozen_backbone"] is True
  assert at16.hparams["kl_weight"] == at32.hparams["kl_weight"]
  assert at16.view_recipes == at32.view_recipes == ("cibhash_crop08", "none")
  # The user's flags still win over the entry.
  user = resolve(16, epochs=3, hparams={"temperature": 0.7}, model={"feature_dropout": 0.0})
  assert (user.epochs, user.hparams["temperature"], user.model["feature_dropout"]) == (3, 0.7, 0.0)
  assert resolve_config(user) == user   # idempotent


@pytest.mark.parametrize("by_bits, message", [
    ({"16": {"epochs": 7}}, "code lengths"),
    ({0: {"epochs": 7}}, "code lengths"),
    ({16: 7}, "code lengths"),
    ([(16, {"epochs": 7})], "must map code lengths"),
    ({16: {"epoch": 7}}, r"unknown keys \['epoch'\]"),
    ({16: {"hparams": {"temprature": 0.9}}}, "temprature"),
    ({16: {"by_bits": {16: {}}}}, "by_bits"),
])
def test_a_malformed_by_bits_entry_is_refused_when_the_method_registers(monkeypatch, by_bits,
                                                                         message):
  with pytest.raises(ValueError, match=message):
    _with_by_bits(monkeypatch, by_bits)
