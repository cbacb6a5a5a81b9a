"""``init_backbone_from``: another run's checkpointed backbone under a (different) method's heads."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from unhash_jax.methods.contract import BuildContext

from unhash_jax import checkpointing, parallel, train
from unhash_jax.config import Config
from unhash_jax.methods import resolve_config
from unhash_jax.methods import nsh as nsh_method
from unhash_jax.models import IN_BACKBONE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def build_ctx(shape=(8, 8, 1), num_train=16):
  return BuildContext(input_shape=shape, num_train=num_train, rngs=nnx.Rngs(params=0))

def _config(method, *, backbone="mlp", seed=0, model=None, **kw) -> Config:
  opts = {"backbone_kwargs": {"hidden": (24,)} if backbone == "mlp" else {}}
  opts.update({"latent_dim": 16} if method == "nsh" else {"hidden": 32})
  opts.update(model or {})
  config = Config(method=method, dataset="digits", bits=8, backbone=backbone, batch_size=16,
                  image_size=8, seed=seed, model=opts, **kw)
  return resolve_config(config)


def _save_source(workdir, config, *, mutate=None):
  """Checkpoints a freshly initialised train state of ``config`` at step 3; returns the state."""
  _, state = train.create_train_state(config, (8, 8, 1), parallel.make_data_mesh())
  if mutate is not None:
    state = mutate(state)
  manager = checkpointing.make_manager(str(workdir))
  identity = {k: getattr(config, k) for k in checkpointing.IDENTITY_FIELDS}
  checkpointing.save(manager, 3, state, identity=identity)
  checkpointing.wait(manager)
  manager.close()
  return state


def _on_disk(workdir, step=3):
  """The whole saved state, read back with a plain orbax checkpointer (independent of the code)."""
  return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))


def _flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in
          jax.tree_util.tree_flatten_with_path(tree)[0]}


def _snapshot(root):
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
      path = os.path.join(dirpath, name)
      st = os.stat(path)
      out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
  return out


def test_cibhash_backbone_restored_into_nsh_model_heads_untouched(tmp_path):
  src_dir = tmp_path / "cib"
  _save_source(src_dir, _config("cibhash", seed=7))
  saved = _on_disk(str(src_dir))["params"]["backbone"]["layers"]["0"]
  before = _snapshot(src_dir)

  model = nsh_method.make_model(_config("nsh"), build_ctx())
  fresh = nsh_method.make_model(_config("nsh"), build_ctx())
  info = train.init_backbone_from(model, str(src_dir), backbone="mlp")

  np.testing.assert_array_equal(np.asarray(model.backbone.layers[0].kernel[...]),
                                np.asarray(saved["kernel"]["value"]))
  np.testing.assert_array_equal(np.asarray(model.backbone.layers[0].bias[...]),
                                np.asarray(saved["bias"]["value"]))
  # The seed-0 NSH backbone differs from the seed-7 CIBHash one, so the copy is not a no-op.
  assert not np.array_equal(np.asarray(fresh.backbone.layers[0].kernel[...]),
                            np.asarray(saved["kernel"]["value"]))
  for head in ("hash_head", "latent_head"):
    for name in ("kernel", "bias"):
      np.testing.assert_array_equal(np.asarray(getattr(getattr(model, head), name)[...]),
                                    np.asarray(getattr(getattr(fresh, head), name)[...]))
  assert info["step"] == 3 and info["method"] == "cibhash" and info["num_arrays"] == 2
  assert _snapshot(src_dir) == before  # the source workdir was only read


def test_frozen_source_backbone_and_batchnorm_statistics_are_restored(tmp_path):
  """A frozen backbone lives in the state's ``rest``; BatchNorm statistics must come along."""
  src_dir = tmp_path / "frozen"

  def shift_stats(state):
    rest = nnx.map_state(
        lambda path, v: v.replace(value=v[...] + 0.25) if "mean" in map(str, path) else v,
        state.rest)
    return state.replace(rest=rest)

  src = _config("cibhash", backbone="tiny", seed=3, model={"frozen_backbone": True})
  _save_source(src_dir, src, mutate=shift_stats)
  saved = _flat(_on_disk(str(src_dir))["rest"]["backbone"])
  assert any("mean" in k for k in saved) and any("kernel" in k for k in saved)

  model = nsh_method.make_model(_config("nsh", backbone="tiny"), build_ctx())
  train.init_backbone_from(model, str(src_dir), backbone="tiny")
  got = _flat(nnx.to_pure_dict(nnx.state(model, IN_BACKBONE))["backbone"])
  assert len(got) == len(saved) == 6   # proj kernel/bias; norm scale/bias/mean/var
  for key, value in got.items():
    np.testing.assert_array_equal(value, saved[key + "['value']"], err_msg=key)
  np.testing.assert_allclose(np.asarray(model.backbone.norm.mean[...]), 0.25)


def test_train_state_of_a_fresh_run_starts_from_the_source_backbone(tmp_path):
  src_dir = tmp_path / "cib"
  _save_source(src_dir, _config("cibhash", seed=5))
  saved = _on_disk(str(src_dir))["params"]["backbone"]
  config = _config("nsh", init_backbone_from=str(src_dir))
  _, state = train.create_train_state(config, (8, 8, 1), parallel.make_data_mesh())
  np.testing.assert_array_equal(np.asarray(state.params["backbone"]["layers"][0]["kernel"][...]),
                                np.asarray(saved["layers"]["0"]["kernel"]["value"]))
  _, plain = train.create_train_state(config, (8, 8, 1), parallel.make_data_mesh(),
                                      init_backbone=False)
  assert not np.array_equal(np.asarray(plain.params["backbone"]["layers"][0]["kernel"][...]),
                            np.asarray(saved["layers"]["0"]["kernel"]["value"]))


def test_width_mismatch_names_the_shapes(tmp_path):
  src_dir = tmp_path / "cib"
  _save_source(src_dir, _config("cibhash"))                   # MLP 64 -> 24
  model = nsh_method.make_model(_config("nsh", model={"backbone_kwargs": {"hidden": (20,)}}),
                                build_ctx())
  with pytest.raises(ValueError, match=r"shape mismatch: backbone/layers/0/bias: checkpoint "
                                       r"\(24,\), this model \(20,\); backbone/layers/0/kernel: "
                                       r"checkpoint \(64, 24\), this model \(64, 20\)"):
    train.init_backbone_from(model, str(src_dir))


def test_depth_mismatch_and_other_backbone_are_refused(tmp_path):
  src_dir = tmp_path / "cib"
  _save_source(src_dir, _config("cibhash"))
  deeper = nsh_method.make_model(_config("nsh", model={"backbone_kwargs": {"hidden": (24, 24)}}),
                                 build_ctx())
  with pytest.raises(checkpointing.BackboneInitError,
                     match="missing in the checkpoint: backbone/layers/1/bias"):
    train.init_backbone_from(deeper, str(src_dir))
  tiny = nsh_method.make_model(_config("nsh", backbone="tiny"), build_ctx())
  with pytest.raises(ValueError, match="has backbone 'mlp', this run 'tiny'"):
    train.init_backbone_from(tiny, str(src_dir), backbone="tiny")


def test_missing_workdir_checkpoints_or_backbone(tmp_path):
  model = nsh_method.make_model(_config("nsh"), build_ctx())
  with pytest.raises(ValueError, match="is not a directory"):
    train.init_backbone_from(model, str(tmp_path / "nope"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="has no checkpoints/ folder"):
    train.init_backbone_from(model, str(tmp_path / "empty"))
  assert not (tmp_path / "empty" / "checkpoints").exists()   # nothing created in the source
  (tmp_path / "empty" / "checkpoints").mkdir()
  with pytest.raises(ValueError, match="holds no checkpoint"):
    train.init_backbone_from(model, str(tmp_path / "empty"))
  src_dir = tmp_path / "cib"
  _save_source(src_dir, _config("cibhash"))
  with pytest.raises(ValueError, match=r"no checkpoint at step 9; its steps are \[3\]"):
    checkpointing.read_backbone(str(src_dir), step=9)


def test_flatten_backbone_has_nothing_to_restore(tmp_path):
  src_dir = tmp_path / "flat"
  _save_source(src_dir, _config("cibhash", backbone="flatten"))
  with pytest.raises(ValueError, match="holds no backbone variables"):
    checkpointing.read_backbone(str(src_dir))


def test_hash_init_scale_multiplies_the_initial_kernel():
  base = nsh_method.make_model(_config("nsh"), build_ctx())
  big = nsh_method.make_model(_config("nsh", model={"hash_init_scale": 4.0}), build_ctx())
  np.testing.assert_allclose(np.asarray(big.hash_head.kernel[...]),
                             4.0 * np.asarray(base.hash_head.kernel[...]), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(big.latent_head.kernel[...]),
                                np.asarray(base.latent_head.kernel[...]))
  # Scale 1 is Flax's default LeCun-normal: std 1/sqrt(fan_in) (fan_in 24 here, 192 draws).
  std = float(np.std(np.asarray(base.hash_head.kernel[...])))
  assert 0.7 / np.sqrt(24) < std < 1.3 / np.sqrt(24)
  with pytest.raises(ValueError, match="hash_init_scale must be > 0"):
    nsh_method.make_model(_config("nsh", model={"hash_init_scale": 0.0}), build_ctx())


def _cli(*args):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
         "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "unhash_jax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_bad_paths_exit_2_and_1(tmp_path):
  proc = _cli("--method=nsh", f"--init_backbone_from={tmp_path / 'nope'}", "--steps=1",
              f"--workdir={tmp_path / 'w1'}", f"--data_dir={tmp_path / 'data'}")
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "--init_backbone_from=" in proc.stderr and "is not a directory" in proc.stderr
  assert "Traceback" not in proc.stderr
  (tmp_path / "no_ckpt").mkdir()
  proc = _cli("--method=nsh", f"--init_backbone_from={tmp_path / 'no_ckpt'}", "--steps=1",
              "--batch_size=16", f"--workdir={tmp_path / 'w2'}", f"--data_dir={tmp_path / 'data'}")
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "has no checkpoints/ folder" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_cibhash_then_nsh_on_its_frozen_backbone(tmp_path):
  """Two commands: CIBHash (2 steps) pretrains the MLP, NSH trains heads on it, frozen."""
  data = f"--data_dir={tmp_path / 'data'}"
  common = ["--bits=16", "--steps=2", "--batch_size=16", "--eval_every=0", "--log_every=1", data]
  src, dst = tmp_path / "cib", tmp_path / "nsh"
  proc = _cli("--method=cibhash", "--backbone=mlp", f"--workdir={src}", *common)
  assert proc.returncode == 0, proc.stderr[-3000:]
  before = _snapshot(src)
  proc = _cli("--method=nsh", f"--init_backbone_from={src}", "--frozen_backbone",
              f"--workdir={dst}", *common)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _snapshot(src) == before
  assert json.loads((dst / "config.json").read_text())["init_backbone_from"] == str(src)
  source = _flat(_on_disk(str(src), step=2)["params"]["backbone"])
  after = _flat(_on_disk(str(dst), step=2)["rest"]["backbone"])   # frozen: not trained
  assert source.keys() == after.keys() and source
  for key in source:
    np.testing.assert_array_equal(after[key], source[key], err_msg=key)
