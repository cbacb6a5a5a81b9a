"""tfds builders (array_record, no TensorFlow): digits, image folders, archives, CIFAR-10, errors."""

import glob
import io
import os
import shutil
import sys
import tarfile

import numpy as np
import pytest

from unhash_jax.data import builders
from unhash_jax.data import protocols


def _array_record_files(root):
  return sorted(glob.glob(os.path.join(root, "**", "*.array_record-*"), recursive=True))


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_matches_sklearn_and_builds_once(tmp_path):
  from sklearn.datasets import load_digits
  d = load_digits()
  src = builders.load_source("digits", data_dir=str(tmp_path))
  assert len(src) == 1797 and src.name == "digits"
  assert src.images.shape == (1797, 8, 8, 1) and src.images.dtype == np.uint8
  assert src.image_shape == (8, 8, 1) and src.num_classes == 10
  assert src.labels.dtype == np.int32 and np.array_equal(src.labels, d.target)
  # 0..16 -> 0..255 rounded to nearest (only v = 8 hits .5: 127.5 -> 128 either way)
  ref = np.floor(d.images * 255.0 / 16.0 + 0.5)
  assert np.array_equal(src.images[..., 0], ref.astype(np.uint8))
  assert src.images.max() == 255 and src.images.min() == 0
  assert set(src.official_split.tolist()) == {"train"}
  assert np.array_equal(src.get_images([5, 0]), src.images[[5, 0]])
  files = _array_record_files(str(tmp_path))
  assert files, "no array_record file written"
  mtimes = [os.stat(f).st_mtime_ns for f in files]
  again = builders.load_source("digits", data_dir=str(tmp_path))
  assert [os.stat(f).st_mtime_ns for f in files] == mtimes  # read, not rebuilt
  assert np.array_equal(again.images, src.images) and np.array_equal(again.labels, src.labels)


def test_no_tensorflow_imported(tmp_path):
  builders.load_source("digits", data_dir=str(tmp_path))
  assert "tensorflow" not in sys.modules


def test_digits_protocol_on_real_digits(tmp_path):
  src = builders.load_source("digits", data_dir=str(tmp_path))
  s = protocols.make_splits("digits", src, seed=0)
  assert np.bincount(src.labels[s.query], minlength=10).tolist() == [30] * 10
  assert len(s.database) == 1497 and s.topk is None


def test_unknown_dataset_lists_choices(tmp_path):
  with pytest.raises(ValueError) as e:
    builders.load_source("mnist", data_dir=str(tmp_path))
  for name in builders.DATASETS:
    assert name in str(e.value)


def test_a_data_dir_that_is_a_file_is_named(tmp_path):
  """Before, tfds failed deep inside with "[Errno 20] Not a directory: '<file>/downloads'"."""
  a_file = tmp_path / "data"
  a_file.write_text("not a directory")
  with pytest.raises(builders.DataError, match="is a file, not a directory") as e:
    builders.load_source("digits", data_dir=str(a_file))
  assert str(a_file) in str(e.value) and a_file.read_text() == "not a directory"


def test_data_dir_from_environment(tmp_path, monkeypatch):
  monkeypatch.setenv(builders.DATA_DIR_ENV, str(tmp_path / "env"))
  assert builders.default_data_dir() == str(tmp_path / "env")


# ---------------------------------------------------------------------------------------------
# image folders and archives (tiny trees written by the tests; PIL comes with matplotlib/pillow)

_CLASSES = ("cat", "dog", "emu")


def _pixels(split_id, class_id, k, shape=(5, 4, 3)):
  """A distinct deterministic image per (split, class, k)."""
  rng = np.random.default_rng([split_id, class_id, k])
  return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _write_tree(root, *, counts=None, fmt="png", shape=(5, 4, 3), top=None):
  """Writes <root>/[top/]<split>/<class>/<k>.<fmt>; returns the expected source order."""
  from PIL import Image
  counts = counts or {"train": (3, 2, 11), "test": (1, 2, 0)}
  base = os.path.join(root, top) if top else root
  expected = []  # (split, class_id, k) in source order: train first, classes sorted, k natural
  for sid, split in enumerate(["train", "test"]):
    for cid, cls in enumerate(_CLASSES):
      n = counts[split][cid]
      if not n:
        continue
      d = os.path.join(base, split, cls)
      os.makedirs(d, exist_ok=True)
      for k in range(n):
        arr = _pixels(sid, cid, k, shape)
        img = Image.fromarray(arr[..., 0] if shape[2] == 1 else arr)
        img.save(os.path.join(d, f"{k}.{fmt}"))
        expected.append((split, cid, k))
  # natural file order within a class: 0,1,2,...,10 (not 0,1,10,2)
  return expected


def _make_tar(folder, path, arcname=None, mode="w:gz"):
  with tarfile.open(path, mode) as tar:
    tar.add(folder, arcname=arcname or os.path.basename(folder))
  return path


def _check_tree_source(src, expected, shape=(5, 4, 3), exact=True):
  assert len(src) == len(expected)
  assert src.class_names == _CLASSES and src.image_shape == shape
  assert src.labels.tolist() == [e[1] for e in expected]
  assert src.official_split.tolist() == [e[0] for e in expected]
  for i, (split, cid, k) in enumerate(expected):
    ref = _pixels(["train", "test"].index(split), cid, k, shape)
    if exact:
      assert np.array_equal(src.images[i], ref), (i, split, cid, k)
    else:  # JPEG is lossy: close on average
      assert np.abs(src.images[i].astype(int) - ref).mean() < 60


def test_image_folder_png_tree_source_order(tmp_path):
  expected = _write_tree(str(tmp_path / "tree"))
  src = builders.load_source("image_folder", data_dir=str(tmp_path / "dd"),
                             archive=str(tmp_path / "tree"))
  _check_tree_source(src, expected)
  assert src.name == "image_folder:tree"
  assert _array_record_files(str(tmp_path / "dd"))
  assert "tensorflow" not in sys.modules
  # class emu has 11 train images: natural order puts 10.png after 9.png
  emu = [i for i, e in enumerate(expected) if e[0] == "train" and e[1] == 2]
  assert [expected[i][2] for i in emu] == list(range(11))


def test_image_folder_grey_jpeg_inside_top_folder(tmp_path):
  expected = _write_tree(str(tmp_path / "t"), fmt="jpg", shape=(6, 6, 1), top="inner")
  src = builders.load_source("image_folder", data_dir=str(tmp_path / "dd"),
                             archive=str(tmp_path / "t"))
  _check_tree_source(src, expected, shape=(6, 6, 1), exact=False)


def test_archive_equals_folder_and_builds_once(tmp_path):
  expected = _write_tree(str(tmp_path / "tree"))
  tgz = _make_tar(str(tmp_path / "tree"), str(tmp_path / "tree.tar.gz"))
  dd = str(tmp_path / "dd")
  src = builders.load_source("image_folder", data_dir=dd, archive=tgz)
  _check_tree_source(src, expected)
  files = _array_record_files(dd)
  mtimes = [os.stat(f).st_mtime_ns for f in files]
  again = builders.load_source("image_folder", data_dir=dd, archive=tgz)
  assert [os.stat(f).st_mtime_ns for f in _array_record_files(dd)] == mtimes
  assert np.array_equal(again.images, src.images)
  no_cache = builders.load_source("image_folder", data_dir=dd, archive=tgz, cache=False)
  assert np.array_equal(no_cache.images, src.images)
  assert np.array_equal(no_cache.labels, src.labels)
  # nothing unpacked into the cache: only array_record/metadata files and the sha256 memo
  assert not glob.glob(os.path.join(dd, "**", "*.png"), recursive=True)
  assert os.path.exists(tgz)


def test_different_archive_builds_anew(tmp_path):
  _write_tree(str(tmp_path / "a"))
  tgz = _make_tar(str(tmp_path / "a"), str(tmp_path / "data.tar.gz"))
  dd = str(tmp_path / "dd")
  first = builders.load_source("image_folder", data_dir=dd, archive=tgz)
  shutil.rmtree(tmp_path / "a")
  expected = _write_tree(str(tmp_path / "a"), counts={"train": (2, 2, 2), "test": (1, 1, 1)})
  os.remove(tgz)
  _make_tar(str(tmp_path / "a"), tgz)
  second = builders.load_source("image_folder", data_dir=dd, archive=tgz)
  assert len(first) == 19 and len(second) == 9
  _check_tree_source(second, expected)


def test_plain_tar_and_bz2(tmp_path):
  expected = _write_tree(str(tmp_path / "tree"))
  for mode, name in (("w", "x.tar"), ("w:bz2", "x.tar.bz2")):
    path = _make_tar(str(tmp_path / "tree"), str(tmp_path / name), mode=mode)
    src = builders.load_source("image_folder", data_dir=str(tmp_path / "dd"), archive=path)
    _check_tree_source(src, expected)


# bad input ------------------------------------------------------------------------------------


def test_missing_archive(tmp_path):
  missing = str(tmp_path / "nope.tar.gz")
  with pytest.raises(builders.DataError, match="not found") as e:
    builders.load_source("cifar10", data_dir=str(tmp_path / "dd"), archive=missing)
  assert missing in str(e.value)
  with pytest.raises(builders.DataError, match="archive="):
    builders.load_source("image_folder", data_dir=str(tmp_path / "dd"))


def test_truncated_archive_is_reported_and_kept(tmp_path):
  _write_tree(str(tmp_path / "tree"), counts={"train": (30, 30, 30), "test": (5, 5, 5)})
  good = _make_tar(str(tmp_path / "tree"), str(tmp_path / "good.tar.gz"))
  data = open(good, "rb").read()
  bad = str(tmp_path / "bad.tar.gz")
  with open(bad, "wb") as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(builders.DataError, match="corrupt or truncated") as e:
    builders.load_source("image_folder", data_dir=str(tmp_path / "dd"), archive=bad)
  assert bad in str(e.value)
  assert os.path.getsize(bad) == len(data) // 2  # the user's file is untouched
  garbage = str(tmp_path / "garbage.tar.gz")
  with open(garbage, "wb") as f:
    f.write(b"this is not a tar archive at all" * 10)
  with pytest.raises(builders.DataError, match="garbage.tar.gz"):
    builders.load_source("image_folder", data_dir=str(tmp_path / "dd"), archive=garbage)


def test_archive_member_escaping_is_refused(tmp_path):
  from PIL import Image
  buf = io.BytesIO()
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, format="PNG")
  path = str(tmp_path / "evil.tar")
  with tarfile.open(path, "w") as tar:
    for name in ("train/a/0.png", "../train/b/0.png"):
      info = tarfile.TarInfo(name)
      info.size = len(buf.getvalue())
      tar.addfile(info, io.BytesIO(buf.getvalue()))
  with pytest.raises(builders.DataError, match="'..'"):
    builders.load_source("image_folder", data_dir=str(tmp_path / "dd"), archive=path)
  assert not os.path.exists(tmp_path / "train")


def test_bad_layouts_and_images(tmp_path):
  from PIL import Image
  flat = tmp_path / "flat"
  flat.mkdir()
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(flat / "a.png")
  with pytest.raises(builders.DataError, match="<split>/<class>/<image>"):
    builders.load_source("image_folder", data_dir=str(tmp_path / "dd"), archive=str(flat))
  mixed = tmp_path / "mixed"
  _write_tree(str(mixed))
  Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(mixed / "train" / "cat" / "99.png")
  with pytest.raises(builders.DataError, match="99.png: image has shape"):
    builders.load_source("image_folder", data_dir=str(tmp_path / "dd"), archive=str(mixed))
  broken = tmp_path / "broken"
  _write_tree(str(broken))
  (broken / "train" / "dog" / "5.png").write_bytes(b"not a png")
  with pytest.raises(builders.DataError, match="5.png: cannot decode"):
    builders.load_source("image_folder", data_dir=str(tmp_path / "dd"), archive=str(broken))
  tree = tmp_path / "tree"
  _write_tree(str(tree))
  with pytest.raises(builders.DataError, match="not a CIFAR-10 tree"):
    builders.load_source("cifar10", data_dir=str(tmp_path / "dd"), archive=str(tree))


# ---------------------------------------------------------------------------------------------
# CIFAR-10 from the shared archive


@pytest.fixture
def cifar_archive(request):
  """The shared CIFAR-10 archive; $UNHASH_JAX_SHARED_DATA overrides the conftest location."""
  folder = os.environ.get("UNHASH_JAX_SHARED_DATA") or request.getfixturevalue("shared_data_dir")
  archive = os.path.join(folder, "cifar10-jpeg.tar.gz")
  if not os.path.exists(archive):
    pytest.skip(f"{archive} not present")
  return archive


@pytest.mark.slow
def test_cifar10_from_shared_archive(tmp_path, cifar_archive):
  from PIL import Image
  archive = cifar_archive
  dd = str(tmp_path / "dd")
  src = builders.load_source("cifar10", data_dir=dd, archive=archive)
  assert src.name == "cifar10" and len(src) == 60000 and src.image_shape == (32, 32, 3)
  assert src.class_names == builders.CIFAR10_CLASSES
  assert (src.official_split == "train").sum() == 50000
  assert np.array_equal(src.official_split[:50000], np.full(50000, "train"))
  for split, per in (("train", 5000), ("test", 1000)):
    assert np.bincount(src.labels[src.official_split == split]).tolist() == [per] * 10
  # independent reference: decode a few members straight from the archive
  picks = {0: "cifar10-jpeg/train/airplane/0000.jpg",
           5000 * 3 + 17: "cifar10-jpeg/train/cat/0017.jpg",
           50000 + 1000 * 9 + 999: "cifar10-jpeg/test/truck/0999.jpg"}
  with tarfile.open(archive) as tar:
    for i, name in picks.items():
      ref = np.asarray(Image.open(io.BytesIO(tar.extractfile(name).read())).convert("RGB"))
      assert np.array_equal(src.images[i], ref), name
  warm = builders.load_source("cifar10", data_dir=dd, archive=archive)   # from the prepared cache
  assert np.array_equal(warm.images, src.images) and np.array_equal(warm.labels, src.labels)
  s = protocols.make_splits("cifar10-i", src, seed=0)
  assert s.counts()["database"] == 54000


def test_tfds_cifar10_path_with_mock_data(tmp_path):
  import tensorflow_datasets as tfds
  with pytest.raises(builders.DataError, match="archive=") as e:
    builders.load_source("cifar10", data_dir=str(tmp_path))  # not prepared, no download
  assert str(tmp_path) in str(e.value)
  with tfds.testing.mock_data(num_examples=7):
    src = builders.load_source("cifar10", data_dir=str(tmp_path))
  assert len(src) == 14 and src.image_shape == (32, 32, 3) and src.images.dtype == np.uint8
  assert src.official_split.tolist() == ["train"] * 7 + ["test"] * 7
  assert src.class_names == builders.CIFAR10_CLASSES and src.labels.max() < 10
