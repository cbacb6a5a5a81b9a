"""The torch-free checkpoint reader: torch's zip and legacy formats, safetensors, and its errors.

Files are written by torch where a test needs torch's own writer (skipped without torch), and by
hand (zip/pickle/tar/safetensors layouts) for the error paths, which need no torch.
"""

import collections
import io
import json
import os
import pickle
import struct
import tarfile
import zipfile

import ml_dtypes
import numpy as np
import pytest

from unhash_jax.models.torch_format import PretrainedWeightsError, read_state_dict


@pytest.fixture
def torch():
  return pytest.importorskip("torch")


def _tensors(torch):
  g = torch.Generator().manual_seed(0)
  base = torch.randn(6, 5, generator=g)
  return collections.OrderedDict([
      ("w32", torch.randn(3, 4, 2, 2, generator=g)),
      ("w16", torch.randn(7, generator=g).half()),
      ("wbf16", torch.randn(2, 3, generator=g).to(torch.bfloat16)),
      ("f64", torch.randn(3, generator=g).double()),
      ("count", torch.tensor(17, dtype=torch.int64)),
      ("mask", torch.tensor([True, False, True])),
      ("bytes", torch.arange(5, dtype=torch.uint8)),
      ("i32", torch.arange(4, dtype=torch.int32)),
      ("empty", torch.zeros(0, 3)),
      # views sharing one storage: an offset slice, a transpose (non-contiguous), a column
      ("view_rows", base[2:5]),
      ("view_t", base.t()),
      ("view_col", base[:, 1]),
  ])


def _as_numpy(t):
  import torch  # noqa: PLC0415
  if t.dtype == torch.bfloat16:
    return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.numpy()


def _check_equal(got, expected):
  assert list(got) == list(expected)
  for k, t in expected.items():
    e = _as_numpy(t)
    assert got[k].dtype == e.dtype, k
    assert got[k].shape == e.shape, k
    np.testing.assert_array_equal(got[k], e, err_msg=k)
    assert got[k].flags.c_contiguous


@pytest.mark.parametrize("zip_format", [True, False])
def test_reads_what_torch_saves(tmp_path, torch, zip_format):
  tensors = _tensors(torch)
  path = tmp_path / "w.pth"
  torch.save(tensors, path, _use_new_zipfile_serialization=zip_format)
  _check_equal(read_state_dict(path), tensors)


def test_unwraps_nesting_and_dataparallel_prefix(tmp_path, torch):
  sd = collections.OrderedDict([("module.a.weight", torch.ones(2)), ("module.b", torch.zeros(1))])
  for wrapper in ("state_dict", "model"):
    path = tmp_path / f"{wrapper}.pth"
    torch.save({wrapper: sd, "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    got = read_state_dict(path)
    assert list(got) == ["a.weight", "b"]
    np.testing.assert_array_equal(got["a.weight"], np.ones(2, np.float32))


def test_parameters_and_a_module_state_dict(tmp_path, torch):
  model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
  path = tmp_path / "m.pth"
  torch.save(model.state_dict(), path)
  got = read_state_dict(path)
  _check_equal(got, model.state_dict())
  path = tmp_path / "p.pth"
  torch.save({"w": torch.nn.Parameter(torch.ones(3))}, path)   # _rebuild_parameter
  np.testing.assert_array_equal(read_state_dict(path)["w"], np.ones(3, np.float32))


def test_reads_the_real_torchvision_file(shared_data_dir, torch):
  path = os.path.join(shared_data_dir, "mobilenet_v2-b0353104.pth")
  if not os.path.exists(path):
    pytest.skip(f"{path} not present")
  expected = torch.load(path, map_location="cpu", weights_only=True)
  got = read_state_dict(path)
  assert len(got) == 314
  _check_equal(got, expected)


def _write_safetensors(path, tensors: dict[str, np.ndarray], codes: dict[str, str]):
  header, blobs, offset = {}, [], 0
  for name, a in tensors.items():
    raw = np.ascontiguousarray(a).tobytes()
    header[name] = {"dtype": codes[name], "shape": list(a.shape),
                    "data_offsets": [offset, offset + len(raw)]}
    blobs.append(raw)
    offset += len(raw)
  head = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_safetensors_including_bfloat16(tmp_path):
  import safetensors.numpy  # noqa: PLC0415
  a = np.arange(6, dtype=np.float32).reshape(2, 3)
  safetensors.numpy.save_file({"a": a, "b": np.ones(2, np.int64)}, str(tmp_path / "x.safetensors"))
  got = read_state_dict(tmp_path / "x.safetensors")
  np.testing.assert_array_equal(got["a"], a)
  assert got["b"].dtype == np.int64
  bf = np.array([1.5, -2.0, 3.25], ml_dtypes.bfloat16)
  _write_safetensors(tmp_path / "bf.safetensors", {"bf": bf, "f": a}, {"bf": "BF16", "f": "F32"})
  got = read_state_dict(tmp_path / "bf.safetensors")
  assert got["bf"].dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(got["bf"], bf)
  np.testing.assert_array_equal(got["f"], a)


# ---------------------------------------------------------------------------------------------
# Errors (no torch needed).


def _zip_with_pickle(path, obj_bytes: bytes, extra: dict[str, bytes] | None = None):
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", obj_bytes)
    for name, data in (extra or {}).items():
      z.writestr(name, data)


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_disallowed_global_is_named_and_never_run(tmp_path):
  marker = str(tmp_path / "pwned")
  payload = pickle.dumps(collections.OrderedDict(w=_Evil(marker)), protocol=2)
  _zip_with_pickle(tmp_path / "evil.pth", payload)
  with pytest.raises(PretrainedWeightsError, match=r"evil\.pth.*builtins\.exec.*nothing was executed"):
    read_state_dict(tmp_path / "evil.pth")
  # the legacy stream is read by the same unpickler
  legacy = b"".join(pickle.dumps(o, protocol=2) for o in (0x1950A86A20F9469CFC6C, 1001, {}))
  (tmp_path / "evil_legacy.pth").write_bytes(legacy + payload)
  with pytest.raises(PretrainedWeightsError, match=r"builtins\.exec"):
    read_state_dict(tmp_path / "evil_legacy.pth")
  assert not os.path.exists(marker)


def test_torchscript_hint(tmp_path):
  with zipfile.ZipFile(tmp_path / "scripted.pt", "w") as z:
    z.writestr("archive/constants.pkl", pickle.dumps(()))
    z.writestr("archive/code/__torch__/m.py", "")
  with pytest.raises(PretrainedWeightsError, match="TorchScript"):
    read_state_dict(tmp_path / "scripted.pt")


def test_not_a_checkpoint_missing_and_not_a_state_dict(tmp_path):
  (tmp_path / "notes.txt").write_text("hello, these are not weights\n")
  with pytest.raises(PretrainedWeightsError, match=r"notes\.txt: not a PyTorch checkpoint"):
    read_state_dict(tmp_path / "notes.txt")
  with pytest.raises(PretrainedWeightsError, match="no such weights file"):
    read_state_dict(tmp_path / "absent.pth")
  with pytest.raises(PretrainedWeightsError, match="is a directory; pass the weights file itself"):
    read_state_dict(tmp_path)
  _zip_with_pickle(tmp_path / "dict.pth", pickle.dumps({"epoch": 3, "lr": 0.1}, protocol=2))
  with pytest.raises(PretrainedWeightsError, match=r"holds a dict with keys \['epoch', 'lr'\], not a state dict"):
    read_state_dict(tmp_path / "dict.pth")
  assert issubclass(PretrainedWeightsError, ValueError)


def test_truncated_files(tmp_path, torch):
  sd = {"w": torch.randn(64, 64)}
  for zip_format, match in [(True, "truncated or corrupt"), (False, "truncated")]:
    path = tmp_path / f"full_{zip_format}.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
    data = path.read_bytes()
    cut = tmp_path / f"cut_{zip_format}.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(PretrainedWeightsError, match=match):
      read_state_dict(cut)


def test_corrupt_zip_entry_is_caught_by_its_crc(tmp_path, torch):
  path = tmp_path / "w.pth"
  torch.save({"w": torch.ones(256)}, path)
  data = bytearray(path.read_bytes())
  i = data.index(np.ones(4, np.float32).tobytes())   # inside the stored tensor bytes
  data[i] ^= 0xFF
  path.write_bytes(bytes(data))
  with pytest.raises(PretrainedWeightsError, match="truncated or corrupt"):
    read_state_dict(path)


def test_truncated_safetensors(tmp_path):
  import safetensors.numpy  # noqa: PLC0415
  path = tmp_path / "x.safetensors"
  safetensors.numpy.save_file({"a": np.ones((64, 64), np.float32)}, str(path))
  data = path.read_bytes()
  path.write_bytes(data[: len(data) - 100])
  with pytest.raises(PretrainedWeightsError, match="truncated or corrupt"):
    read_state_dict(path)


def test_pre_0_4_tar_format_says_how_to_resave(tmp_path):
  path = tmp_path / "old.pth"
  with tarfile.open(path, "w") as t:
    for name in ("sys_info", "pickle", "storages", "tensors"):
      info = tarfile.TarInfo(name)
      info.size = 4
      t.addfile(info, io.BytesIO(b"\0\0\0\0"))
  with pytest.raises(PretrainedWeightsError, match=r"PyTorch < 0\.4.*torch\.save\(torch\.load"):
    read_state_dict(path)
