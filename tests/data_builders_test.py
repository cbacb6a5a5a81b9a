"""tfds builders (array_record, no TensorFlow): digits, image folders, archives, CIFAR-10, bad input."""

import glob
import io
import os
import shutil
import sys
import tarfile
import time

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


def test_data_dir_from_environment(tmp_path, monkeypatch):
  monkeypatch.setenv(builders.DATA_DIR_ENV, str(tmp_path / "env"))
  assert builders.default_data_dir() == str(tmp_path / "env")
