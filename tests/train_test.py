"""End-to-end training: a short run, its artefacts, resume, and 8-device equality."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from unhash_jax import parallel, train
from unhash_jax.config import Config
from unhash_jax.data import builders, protocols
from unhash_jax.methods import resolve_config


def _tiny_config(tmp_path, **kw) -> Config:
  base = dict(method="cibhash", dataset="digits", bits=16, backbone="tiny", batch_size=32,
              steps=4, eval_every=2, checkpoint_every=2, log_every=1, eval_batch_size=256,
              data_dir=str(tmp_path / "data"), model={"hidden": 32})
  base.update(kw)
  return Config(**base)


def _final_params(workdir, step):
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  restored = ocp.StandardCheckpointer().restore(path)
  return restored["params"]


def test_two_step_run_writes_every_artefact(tmp_path):
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(_tiny_config(tmp_path, steps=2), workdir)
  on_disk = json.load(open(os.path.join(workdir, "results.json")))
  assert on_disk == json.loads(json.dumps(results))
  for key in ("method", "dataset", "protocol", "bits", "topk", "map"):
    assert key in on_disk
  assert on_disk["method"] == "cibhash" and on_disk["bits"] == 16 and on_disk["protocol"] == "digits"
  assert 0.0 <= on_disk["map"] <= 1.0
  codes = np.load(os.path.join(workdir, "codes.npz"))
  assert codes["query_codes"].dtype == np.int8 and codes["query_codes"].shape == (300, 16)
  assert codes["database_codes"].shape == (1497, 16)
  assert set(np.unique(codes["database_codes"])) <= {-1, 1}
  assert not set(codes["query_index"]) & set(codes["database_index"])
  source = builders.load_source("digits", data_dir=str(tmp_path / "data"))
  np.testing.assert_array_equal(codes["query_labels"], source.labels[codes["query_index"]])
  assert os.path.getsize(os.path.join(workdir, "pr_curve.png")) > 1000
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert any("train/loss" in l for l in lines) and any("val/map" in l for l in lines)
  assert json.load(open(os.path.join(workdir, "config.json")))["bits"] == 16
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))


def test_image_size_other_than_the_datas_builds_the_model_for_the_resized_images(tmp_path):
  """Views and test images are resized to ``image_size`` (8×8 digits → 12×12 here), so the model
  must be built for that size: a size-dependent backbone (the flattening ``tiny``, a ViT's position
  embeddings) built for the data's native size failed with a shape error at the first step."""
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(_tiny_config(tmp_path, steps=2, image_size=12), workdir)
  assert 0.0 <= results["map"] <= 1.0
  kernel = _final_params(workdir, 2)["backbone"]["proj"]["kernel"]["value"]
  assert np.shape(kernel) == (12 * 12 * 1, 16)


def test_select_on_val_evaluates_the_best_validation_state(tmp_path):
  """With a rate high enough that validation mAP peaks early, ``select_on_val`` must give the
  codes of the peak's state: those of a run stopped at the peak step (constant rate, same data
  order), not those of the last state."""
  def run(name, **kw):
    cfg = _tiny_config(tmp_path, **{"steps": 6, "eval_every": 1, "checkpoint_every": 0,
                                    "learning_rate": 0.3, **kw})
    results = train.train_and_evaluate(cfg, str(tmp_path / name))
    return results, np.load(str(tmp_path / name / "codes.npz"))["database_codes"]

  selected, selected_codes = run("selected", select_on_val=True)
  rows = [json.loads(l) for l in open(tmp_path / "selected" / "metrics.jsonl")]
  curve = {r["step"]: r["val/map"] for r in rows if "val/map" in r}
  peak = max(curve, key=lambda step: (curve[step], -step))
  assert peak < 6, curve                    # the case this test is about: the peak is not the end
  assert selected["best_val_map"] == pytest.approx(curve[peak])
  _, stopped_codes = run("stopped", steps=peak)
  _, last_codes = run("last")
  np.testing.assert_array_equal(selected_codes, stopped_codes)
  assert not np.array_equal(selected_codes, last_codes)


def test_select_on_val_and_training_time_survive_a_resume(tmp_path, crash_at_step):
  """The best validation state and the training clock belong to the run, not to one process: a run
  killed after its validation peak, or a finished run run again (which resumes at its last step
  and trains nothing), must report the codes and best mAP of the uninterrupted run. Before, the
  resumed process forgot the peak and evaluated the last state, and reported train_seconds ≈ 0."""
  cfg = _tiny_config(tmp_path, steps=6, eval_every=1, checkpoint_every=5, learning_rate=0.3,
                     select_on_val=True)

  def codes(name):
    return np.load(str(tmp_path / name / "codes.npz"))["database_codes"]

  full = train.train_and_evaluate(cfg, str(tmp_path / "full"))
  full_codes = codes("full")
  rows = [json.loads(l) for l in open(tmp_path / "full" / "metrics.jsonl")]
  curve = {r["step"]: r["val/map"] for r in rows if "val/map" in r}
  assert max(curve, key=lambda step: (curve[step], -step)) < 5, curve   # peak before the kill
  assert full["best_val_map"] == pytest.approx(max(curve.values())) and full["train_seconds"] > 0
  again = train.train_and_evaluate(cfg, str(tmp_path / "full"))
  np.testing.assert_array_equal(codes("full"), full_codes)
  assert again["best_val_map"] == full["best_val_map"]
  assert again["map"] == full["map"]
  assert again["train_seconds"] == full["train_seconds"]

  crash_at_step(5)                       # killed after the step-5 checkpoint
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(cfg, str(tmp_path / "interrupted"))
  crash_at_step(None)
  resumed = train.train_and_evaluate(cfg, str(tmp_path / "interrupted"))
  np.testing.assert_array_equal(codes("interrupted"), full_codes)
  assert resumed["best_val_map"] == full["best_val_map"]
  assert resumed["map"] == full["map"]
  assert resumed["train_seconds"] > 0


def test_select_on_val_turned_on_at_a_resume_falls_back_to_the_last_state(tmp_path, crash_at_step,
                                                                          caplog):
  """Without --select_on_val a peak between checkpoints is not saved; turning the flag on at a
  resume (allowed) must then say so and evaluate the last state, not fail on the missing step."""
  cfg = _tiny_config(tmp_path, steps=6, eval_every=1, checkpoint_every=5, learning_rate=0.3)
  train.train_and_evaluate(cfg, str(tmp_path / "last"))
  crash_at_step(5)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(cfg, str(tmp_path / "run"))
  crash_at_step(None)
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(cfg.replace(select_on_val=True), str(tmp_path / "run"))
  assert "was not checkpointed" in caplog.text
  last, run = (np.load(str(tmp_path / d / "codes.npz"))["database_codes"] for d in ("last", "run"))
  np.testing.assert_array_equal(run, last)


def test_val_topk_sets_the_validation_k(tmp_path):
  """digits validates mAP@all; ``val_topk`` = the validation database's size must give the same
  value, and ``val_topk=1`` is precision@1, a multiple of 1 / (validation queries)."""
  def val_map(name, **kw):
    workdir = str(tmp_path / name)
    train.train_and_evaluate(_tiny_config(tmp_path, steps=2, eval_every=2, **kw), workdir)
    rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    return [r["val/map"] for r in rows if "val/map" in r][-1]

  cfg = resolve_config(_tiny_config(tmp_path))
  source = builders.load_source("digits", data_dir=cfg.data_dir)
  splits = protocols.make_splits(cfg.protocol, source, seed=cfg.split_seed,
                                 val_fraction=cfg.val_fraction)
  assert splits.topk is None
  n_query, n_database = len(splits.val_query), len(splits.val_database)
  at_all = val_map("all")
  assert val_map("whole_database", val_topk=n_database) == pytest.approx(at_all, abs=1e-6)
  at_one = val_map("one", val_topk=1)
  assert at_one * n_query == pytest.approx(round(at_one * n_query), abs=1e-3)
  assert at_one != pytest.approx(at_all, abs=1e-3)


@pytest.mark.slow
def test_interrupted_run_resumes_bit_exactly(tmp_path, crash_at_step):
  # A warm-up + cosine schedule: the resumed optimizer must continue the schedule, not restart it.
  cfg = _tiny_config(tmp_path, steps=6, lr_schedule="cosine", warmup_steps=2)
  full = str(tmp_path / "full")
  train.train_and_evaluate(cfg, full)

  # Crash the second run while it fetches the batch of step 5 (after the step-4 checkpoint).
  interrupted = str(tmp_path / "interrupted")
  crash_at_step(4)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(cfg, interrupted)
  assert os.path.isdir(os.path.join(interrupted, "checkpoints", "4"))
  assert not os.path.exists(os.path.join(interrupted, "results.json"))
  crash_at_step(None)
  train.train_and_evaluate(cfg, interrupted)

  a, b = _final_params(full, 6), _final_params(interrupted, 6)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  ca, cb = (np.load(os.path.join(d, "codes.npz")) for d in (full, interrupted))
  np.testing.assert_array_equal(ca["database_codes"], cb["database_codes"])


def test_refuses_checkpoint_of_another_bit_length(tmp_path):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_tiny_config(tmp_path, steps=2), workdir)
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  with pytest.raises(train.checkpointing.CheckpointError, match="bits"):
    train.train_and_evaluate(_tiny_config(tmp_path, steps=2, bits=32), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before


@pytest.mark.multidevice
def test_one_step_on_8_devices_equals_1_device(tmp_path):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (fake CPU) devices")
  cfg = resolve_config(_tiny_config(tmp_path, batch_size=64))
  cfg = cfg.replace(image_size=8, protocol="digits")
  source = builders.load_source("digits", data_dir=str(tmp_path / "data"))
  images = source.get_images(np.arange(64))
  key = jax.random.key(3)
  outputs = []
  for devices in (jax.devices()[:1], jax.devices()[:8]):
    mesh = parallel.make_data_mesh(devices)
    setup, state = train.create_train_state(cfg, source.image_shape, mesh)
    # Plain SGD: Adam's first step divides by |g| and turns float rounding noise in near-zero
    # gradients into O(lr) parameter differences, which would hide real sharding bugs.
    setup = dataclasses.replace(setup, tx=optax.sgd(0.5))
    state = state.replace(opt_state=setup.tx.init(state.params))
    step = train.make_train_step(setup)
    batch = parallel.global_batch(mesh, {"image": images}, 64)
    assert len(batch["image"].sharding.device_set) == len(devices)
    new_state, metrics = step(state, batch, key)
    outputs.append((jax.device_get((new_state.params, new_state.rest)), float(metrics["loss"])))
  (p1, l1), (p8, l8) = outputs
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  leaves1, leaves8 = jax.tree.leaves(p1), jax.tree.leaves(p8)
  assert len(leaves1) == len(leaves8) > 0
  for x, y in zip(leaves1, leaves8):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=1e-5)
