"""Data sets as tfds builders written to array_record and read back without TensorFlow.

Every data set is a ``tfds.core.GeneratorBasedBuilder`` whose features are plain
``tfds.features.Tensor(dtype=uint8)`` images (``tfds.features.Image`` cannot encode without
TensorFlow), a ``ClassLabel`` and the example's position in *source order*. Files are written once
with ``file_format='array_record'`` under ``data_dir`` and read back with tfds's random-access data
sources (``builder.as_data_source``), which need no TensorFlow.

:func:`load_source` returns a :class:`Source`: the whole data set (all official splits together) in a
fixed source order, so that index ``i`` names the same image on every run and every host. The named
protocols (:mod:`unhash_jax.data.protocols`) are index lists into that order.

Data sets (``DATASETS``):
  * ``digits``: scikit-learn's bundled 8×8 digits (1,797 images, 10 classes, no file, no network);
    pixel values ``0..16`` are scaled to ``0..255`` (``round(v * 255 / 16)``). All images have
    official split ``"train"``.
  * ``image_folder``: any tree ``<split>/<class>/<image>`` of JPEG/PNG files of one size, given as a
    folder or as a (gzip/bz2/xz) tar archive of such a folder. Archives are streamed into the
    array_record build (never unpacked to disk: no stray files, no path-escape risk, and no 60,000
    small-file writes for CIFAR-10). Class ids follow the sorted class names; source order is split
    (``train``, ``val``/``validation``, ``test``, then others sorted), then class, then file name
    (natural order, so ``2.png`` < ``10.png``).
  * ``cifar10``: with ``archive=`` the CIFAR-10 JPEG tree (``../shared/data/cifar10-jpeg.tar.gz``) via
    the image-folder builder (50,000 ``train`` then 10,000 ``test`` images); without it, tfds's own
    ``cifar10`` prepared in ``data_dir`` (or downloaded, when there is internet).

Bad input raises :class:`DataError` (a ``ValueError``) naming the path and the problem.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import os
import re
import tarfile
import tempfile
import time
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

DATASETS = ("digits", "cifar10", "image_folder")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
DATA_DIR_ENV = "UNHASH_JAX_DATA_DIR"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")

_BUILD_VERSION = "1.0.0"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class DataError(ValueError):
  """A data file or folder is missing, corrupt or laid out wrongly (the message names the path)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
  """One whole data set in a fixed source order (index ``i`` is stable across runs and hosts).

  Attributes:
    name: data set name (``"digits"``, ``"cifar10"``, or ``"image_folder:<folder name>"``).
    images: random-access images, ``uint8[n, H, W, C]`` (a NumPy array; read them through
      :meth:`get_images`).
    labels: ``int32[n]`` class ids in ``[0, num_classes)`` (multi-label sets: ``int8[n, C]``).
    official_split: ``str[n]``, the official split of each image (``"train"``/``"test"``).
    class_names: class names; ``labels`` index into them.
    image_shape: ``(H, W, C)`` of one image.
  """

  name: str
  images: Any
  labels: np.ndarray
  official_split: np.ndarray
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]

  def __post_init__(self):
    n = len(self.labels)
    if len(self.official_split) != n or len(self.images) != n:
      raise ValueError(f"Source {self.name!r}: images ({len(self.images)}), labels ({n}) and "
                       f"official_split ({len(self.official_split)}) differ in length.")

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def multilabel(self) -> bool:
    return self.labels.ndim == 2

  def get_images(self, indices) -> np.ndarray:
    """Returns ``uint8[len(indices), H, W, C]`` images at source indices ``indices``."""
    indices = np.asarray(indices, dtype=np.int64)
    return np.asarray(self.images[indices])

  def split_indices(self, split: str) -> np.ndarray:
    """``int64`` source indices whose official split is ``split`` (ascending)."""
    return np.flatnonzero(self.official_split == split).astype(np.int64)


def default_data_dir() -> str:
  """``$UNHASH_JAX_DATA_DIR`` if set, else ``~/tensorflow_datasets`` (tfds's default)."""
  return os.path.expanduser(os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets")


def load_source(dataset: str, *, data_dir: str | None = None, archive: str | None = None,
                cache: bool = True, download: bool = False) -> Source:
  """Builds (once) and reads a data set; later calls with the same inputs only read.

  Args:
    dataset: one of :data:`DATASETS`.
    data_dir: tfds data directory and cache (default :func:`default_data_dir`). The built
      array_record files go to ``<data_dir>/unhash_digits/`` or
      ``<data_dir>/unhash_image_folder/<name>_<fingerprint>/``.
    archive: for ``cifar10`` / ``image_folder``: a tar archive (``.tar``, ``.tar.gz``, ...) or a
      folder holding a ``<split>/<class>/<image>`` tree (directly or inside one top-level folder). A
      different archive (other content) or folder (other file list, sizes or times) builds anew.
    cache: keep the decoded images in a NumPy ``.npy`` next to the array_record files so warm loads
      are a single file read (the array_record files stay the source of truth).
    download: only for ``cifar10`` without ``archive``: let tfds download and prepare its
      ``cifar10`` when it is not prepared in ``data_dir`` (needs internet; off by default because
      an offline attempt retries for minutes before failing).

  Returns:
    The :class:`Source` with all images in memory.

  Raises:
    ValueError: unknown ``dataset`` (lists the valid names); :class:`DataError` for a missing,
      corrupt or malformed archive/folder.
  """
  if dataset not in DATASETS:
    raise ValueError(f"Unknown dataset {dataset!r}; valid choices: {', '.join(DATASETS)}.")
  data_dir = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
  if os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise DataError(f"the data directory {data_dir} (--data_dir, or ${DATA_DIR_ENV}) is a file, "
                    f"not a directory; pass a directory for the built data sets and caches.")
  t0 = time.perf_counter()
  if dataset == "digits":
    if archive is not None:
      raise ValueError("The digits data set ships with scikit-learn and takes no archive.")
    source = _load_digits(data_dir)
  elif dataset == "image_folder" and archive is None:
    raise DataError("The image_folder data set needs archive= (a tar archive or a folder of "
                    "<split>/<class>/<image> files).")
  elif dataset == "cifar10" and archive is None:
    source = _load_tfds_cifar10(data_dir, download=download)
  else:
    source = _load_image_folder(dataset, archive, data_dir, cache=cache)
  splits = {s: int((source.official_split == s).sum()) for s in dict.fromkeys(source.official_split)}
  logging.info("Loaded %s: %d images %s, %d classes, official splits %s (%.1f s, data_dir %s).",
               source.name, len(source), source.image_shape, source.num_classes, splits,
               time.perf_counter() - t0, data_dir)
  return source


# ----------------------------------------------------------------------------------------------
# tfds builders


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def _features(tfds, image_shape, class_names):
  return tfds.features.FeaturesDict({
      # BYTES: one bytes field per image. The default (no encoding) writes an int64 list, one
      # Python-level proto value per pixel: ~4x slower to build (84 s vs 22 s for CIFAR-10 here).
      "image": tfds.features.Tensor(shape=tuple(image_shape), dtype=np.uint8,
                                    encoding=tfds.features.Encoding.BYTES),
      "label": tfds.features.ClassLabel(names=list(class_names)),
      "index": tfds.features.Tensor(shape=(), dtype=np.int64),
  })


_BUILDER_CLASSES: dict[str, type] = {}


def _builder_classes():
  """Defines the builder classes on first use (so importing this module does not import tfds)."""
  if _BUILDER_CLASSES:
    return _BUILDER_CLASSES
  tfds = _tfds()

  class UnhashDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """scikit-learn's 8×8 digits, uint8 ``[8, 8, 1]`` scaled ``0..16 -> 0..255``."""

    VERSION = tfds.core.Version(_BUILD_VERSION)
    RELEASE_NOTES = {_BUILD_VERSION: "sklearn.datasets.load_digits, images scaled to 0..255."}

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, description="scikit-learn's bundled 8x8 digits (1,797 images).",
          features=_features(tfds, (8, 8, 1), [str(c) for c in range(10)]),
          supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      images, labels = _digits_arrays()
      for i in range(len(labels)):
        yield i, {"image": images[i], "label": int(labels[i]), "index": i}

  class UnhashImageFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A ``<split>/<class>/<image>`` tree of same-size JPEG/PNG files, stored as raw uint8."""

    VERSION = tfds.core.Version(_BUILD_VERSION)
    RELEASE_NOTES = {_BUILD_VERSION: "Raw uint8 Tensor images, ClassLabel, source index."}

    def __init__(self, *, scan: _FolderScan, **kwargs):
      self._scan = scan
      super().__init__(**kwargs)

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, description=f"Image folder {self._scan.root}",
          features=_features(tfds, self._scan.image_shape, self._scan.class_names),
          supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split) for split in self._scan.splits}

    def _generate_examples(self, split):
      scan = self._scan
      rows = np.flatnonzero(scan.split_ids == scan.splits.index(split))

      def decode(item):
        return _decode_image(item[1], scan.image_shape, where=item[2])

      # Pillow releases the GIL while decoding, so a few threads overlap decoding with writing.
      with concurrent.futures.ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        items = _iter_encoded(scan, rows)
        while chunk := list(itertools.islice(items, 1024)):
          for item, image in zip(chunk, pool.map(decode, chunk)):
            i = item[0]
            yield i, {"image": image, "label": int(scan.labels[i]), "index": i}

  _BUILDER_CLASSES.update(digits=UnhashDigits, image_folder=UnhashImageFolder)
  return _BUILDER_CLASSES


def _prepare(builder) -> None:
  """``download_and_prepare`` offline (everything is local)."""
  tfds = _tfds()
  t0 = time.perf_counter()
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      try_download_gcs=False, verify_ssl=False))
  logging.info("Built %s in %s (%.1f s).", builder.name, builder.data_dir,
               time.perf_counter() - t0)


def _read_all(builder, splits: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Reads every record of ``splits`` and returns images/labels/split ids in source order."""
  num = sum(builder.info.splits[s].num_examples for s in splits)
  shape = tuple(builder.info.features["image"].shape)
  images = np.empty((num,) + shape, np.uint8)
  labels = np.empty((num,), np.int32)
  split_ids = np.full((num,), -1, np.int32)
  for sid, split in enumerate(splits):
    ds = builder.as_data_source(split)
    chunk = 4096
    for start in range(0, len(ds), chunk):
      for rec in _records(ds, start, min(start + chunk, len(ds))):
        j = int(rec["index"])
        images[j] = rec["image"]
        labels[j] = rec["label"]
        split_ids[j] = sid
  if (split_ids < 0).any():
    raise DataError(f"{builder.data_dir}: the stored source indices are not 0..{num - 1}; delete "
                    "this folder to rebuild it.")
  return images, labels, split_ids


# ----------------------------------------------------------------------------------------------
# digits


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  d = load_digits()
  images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  return images, d.target.astype(np.int32)


def _load_digits(data_dir: str) -> Source:
  builder = _builder_classes()["digits"](data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    _prepare(builder)
  images, labels, _ = _read_all(builder, ["train"])
  return Source(name="digits", images=images, labels=labels,
                official_split=np.full(len(labels), "train"),
                class_names=tuple(builder.info.features["label"].names), image_shape=(8, 8, 1))


# ----------------------------------------------------------------------------------------------
# image folders and archives


@dataclasses.dataclass(frozen=True, eq=False)
class _FolderScan:
  """The file list of a ``<split>/<class>/<image>`` tree, in source order.

  ``files[i]`` is the path of source index ``i`` relative to ``root`` (a folder) or, for an archive,
  the member name inside ``archive`` (members are then streamed, never written to disk).
  """

  root: str
  archive: str | None
  splits: tuple[str, ...]
  class_names: tuple[str, ...]
  files: tuple[str, ...]
  split_ids: np.ndarray  # int32 [n]
  labels: np.ndarray  # int32 [n]
  image_shape: tuple[int, int, int]
  fingerprint: str  # folder: sha256 over (path, size, mtime) of every file; archive: its sha256


def _natural_key(name: str):
  return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def _split_order(name: str):
  return ({"train": 0, "val": 1, "validation": 1, "test": 2}.get(name, 3), name)


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS)


def _hidden(rel: str) -> bool:
  return any(p.startswith(".") or p == "__MACOSX" for p in rel.split("/"))


def _tree_from_paths(where: str, paths: Sequence[str]):
  """Groups relative image paths into ``<root>/<split>/<class>/<file>`` (root: '' or one folder).

  Returns ``(root, splits, class_names, files, split_ids, labels)`` in source order.
  """
  paths = [p for p in paths if _is_image(p) and not _hidden(p)]
  parts = [p.split("/") for p in paths]
  root = None
  if parts and all(len(q) == 3 for q in parts):
    root = ""
  elif parts and all(len(q) == 4 for q in parts) and len({q[0] for q in parts}) == 1:
    root = parts[0][0]
    parts = [q[1:] for q in parts]
  if root is None:
    raise DataError(f"{where}: expected a tree <split>/<class>/<image> of JPEG/PNG files (e.g. "
                    "train/cat/0001.jpg), directly or inside one top-level folder; found "
                    f"{len(paths)} image files" + (f", e.g. {paths[0]!r}." if paths else "."))
  splits = tuple(sorted({q[0] for q in parts}, key=_split_order))
  for s in splits:
    if not _SPLIT_NAME.match(s):
      raise DataError(f"{where}: split folder {s!r} may only hold letters, digits and '_'.")
  class_names = tuple(sorted({q[1] for q in parts}))
  split_pos = {s: i for i, s in enumerate(splits)}
  class_pos = {c: i for i, c in enumerate(class_names)}
  parts.sort(key=lambda q: (split_pos[q[0]], class_pos[q[1]], _natural_key(q[2])))
  prefix = root + "/" if root else ""
  files = tuple(prefix + "/".join(q) for q in parts)
  return (root, splits, class_names, files,
          np.asarray([split_pos[q[0]] for q in parts], np.int32),
          np.asarray([class_pos[q[1]] for q in parts], np.int32))


def _scan_folder(path: str) -> _FolderScan:
  rels, h = [], hashlib.sha256()
  for dirpath, dirnames, filenames in os.walk(path):
    dirnames.sort()
    rel_dir = os.path.relpath(dirpath, path).replace(os.sep, "/")
    for name in sorted(filenames):
      rel = name if rel_dir == "." else f"{rel_dir}/{name}"
      if _is_image(name) and not _hidden(rel):
        st = os.stat(os.path.join(dirpath, name))
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        rels.append(rel)
  _, splits, class_names, files, split_ids, labels = _tree_from_paths(path, rels)
  first = _decode_image(os.path.join(path, files[0]), None)
  return _FolderScan(root=path, archive=None, splits=splits, class_names=class_names, files=files,
                     split_ids=split_ids, labels=labels, image_shape=tuple(first.shape),
                     fingerprint=h.hexdigest())


def _open_tar(archive: str, mode: str = "r:*"):
  try:
    return tarfile.open(archive, mode)
  except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
    raise DataError(f"{archive}: not a readable tar archive ({type(e).__name__}: {e}).") from e


def _corrupt(archive: str, e: Exception) -> DataError:
  return DataError(f"{archive}: corrupt or truncated archive ({type(e).__name__}: {e}).")


def _scan_archive(archive: str, digest: str) -> _FolderScan:
  """Lists a tar archive (one full pass: a truncated or corrupt archive fails here)."""
  names, first = [], None
  with _open_tar(archive) as tar:
    try:
      for m in tar:
        if m.isfile() and _is_image(m.name):
          names.append(m.name)
          if first is None:  # any image fixes the shape; the others must match it
            first = _decode_image(tar.extractfile(m).read(), None, where=f"{archive}:{m.name}")
    except DataError:
      raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
      raise _corrupt(archive, e) from e
  names = [n[2:] if n.startswith("./") else n for n in names]
  bad = [n for n in names if n.startswith("/") or ".." in n.split("/")]
  if bad:
    raise DataError(f"{archive}: member {bad[0]!r} has an absolute or '..' path; refusing it.")
  _, splits, class_names, files, split_ids, labels = _tree_from_paths(archive, names)
  return _FolderScan(root="", archive=archive, splits=splits, class_names=class_names, files=files,
                     split_ids=split_ids, labels=labels, image_shape=tuple(first.shape),
                     fingerprint=digest)


def _iter_encoded(scan: _FolderScan, rows: np.ndarray):
  """Yields ``(source index, path or bytes, name)`` for ``rows``; archives are streamed once."""
  if scan.archive is None:
    for i in rows:
      path = os.path.join(scan.root, scan.files[i])
      yield int(i), path, path
    return
  wanted = {scan.files[i]: int(i) for i in rows}
  found = 0
  with _open_tar(scan.archive, "r|*") as tar:  # stream: no seeks back in the compressed file
    try:
      for m in tar:
        name = m.name[2:] if m.name.startswith("./") else m.name
        if m.isfile() and name in wanted:
          found += 1
          yield wanted[name], tar.extractfile(m).read(), f"{scan.archive}:{name}"
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
      raise _corrupt(scan.archive, e) from e
  if found != len(wanted):
    raise DataError(f"{scan.archive}: changed while reading ({found} of {len(wanted)} images).")


def _decode_image(data, shape: tuple[int, int, int] | None, *, where: str | None = None
                  ) -> np.ndarray:
  """Decodes one image (a path or encoded bytes) to ``uint8[H, W, C]`` (C = 1 grey, else RGB)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  where = where or data
  try:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
      channels = shape[2] if shape is not None else (1 if im.mode in ("1", "L", "I;16", "I") else 3)
      arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(f"{where}: cannot decode image ({e}).") from e
  arr = arr.reshape(arr.shape[:2] + (-1,))
  if shape is not None and arr.shape != tuple(shape):
    raise DataError(f"{where}: image has shape {arr.shape}, expected {tuple(shape)} like the first "
                    "image (all images of an image folder must have one size).")
  return arr


def _file_sha256(path: str, index_dir: str) -> str:
  """sha256 of a file, remembered per (path, size, mtime) in ``index_dir`` so warm calls skip it."""
  st = os.stat(path)
  key = hashlib.sha256(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
  memo = os.path.join(index_dir, "sha256", key.hexdigest()[:32])
  try:
    with open(memo) as f:
      return f.read().strip()
  except OSError:
    pass
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  digest = h.hexdigest()
  os.makedirs(os.path.dirname(memo), exist_ok=True)
  _atomic_write(memo, digest)
  return digest


def _atomic_write(path: str, text: str) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
  with os.fdopen(fd, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def _archive_stem(path: str) -> str:
  name = os.path.basename(path.rstrip(os.sep))
  for ext in (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar"):
    if name.lower().endswith(ext):
      return name[: -len(ext)]
  return name


def _slug(name: str) -> str:
  s = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
  return s[:40] or "data"


def _check_cifar10(where, class_names, image_shape) -> None:
  if tuple(class_names) != CIFAR10_CLASSES or tuple(image_shape) != (32, 32, 3):
    raise DataError(f"{where}: not a CIFAR-10 tree (classes {tuple(class_names)}, image shape "
                    f"{tuple(image_shape)}); use dataset 'image_folder' for other data.")


def _load_image_folder(dataset: str, archive: str, data_dir: str, *, cache: bool) -> Source:
  """Folder or tar archive -> array_record (once) -> Source.

  Identity of the input (a new one builds anew, the old build stays): an archive by its sha256
  (remembered per path/size/mtime, so warm calls do not re-hash), a folder by its file list with
  sizes and modification times. Archives are streamed, never unpacked to disk.
  """
  archive = os.path.abspath(os.path.expanduser(archive))
  if not os.path.exists(archive):
    raise DataError(f"{archive}: data archive or folder not found.")
  scan = None
  if os.path.isdir(archive):
    scan = _scan_folder(archive)
    config_name = f"{_slug(os.path.basename(archive.rstrip(os.sep)))}_{scan.fingerprint[:16]}"
  elif os.path.isfile(archive):
    digest = _file_sha256(archive, os.path.join(data_dir, "unhash_jax_cache"))
    config_name = f"{_slug(_archive_stem(archive))}_{digest[:16]}"
  else:
    raise DataError(f"{archive}: not a regular file or folder.")
  cls = _builder_classes()["image_folder"]
  tfds = _tfds()
  builder_dir = os.path.join(data_dir, cls.name, config_name, _BUILD_VERSION)
  if not os.path.exists(os.path.join(builder_dir, "unhash_jax_splits.json")):  # written last
    if scan is None:
      scan = _scan_archive(archive, digest)
    if dataset == "cifar10":
      _check_cifar10(archive, scan.class_names, scan.image_shape)
    config = tfds.core.BuilderConfig(name=config_name, description=f"built from {archive}")
    builder = cls(scan=scan, data_dir=data_dir, config=config, file_format="array_record")
    if not builder.is_prepared():
      _prepare(builder)
    _atomic_write(os.path.join(builder_dir, "unhash_jax_splits.json"),
                  json.dumps({"splits": list(scan.splits), "source": archive}))
  builder = tfds.builder_from_directory(builder_dir)
  with open(os.path.join(builder_dir, "unhash_jax_splits.json")) as f:
    splits = json.load(f)["splits"]
  arrays = _cached_arrays(builder, builder_dir, splits) if cache else _read_all(builder, splits)
  images, labels, split_ids = arrays
  class_names = tuple(builder.info.features["label"].names)
  if dataset == "cifar10":
    _check_cifar10(archive, class_names, images.shape[1:])
    name = "cifar10"
  else:
    name = f"image_folder:{os.path.basename(archive.rstrip(os.sep))}"
  return Source(name=name, images=images, labels=labels,
                official_split=np.asarray(splits)[split_ids], class_names=class_names,
                image_shape=tuple(images.shape[1:]))


def _cached_arrays(builder, builder_dir: str, splits):
  """Reads the array_record files once and keeps a ``.npz``-free ``.npy`` triple for warm loads."""
  paths = [os.path.join(builder_dir, f"unhash_jax_{k}.npy") for k in ("images", "labels", "splits")]
  if all(os.path.exists(p) for p in paths):
    try:
      return tuple(np.load(p, mmap_mode=None, allow_pickle=False) for p in paths)
    except (OSError, ValueError):
      pass  # a damaged cache file: fall back to the array_record files and rewrite it
  arrays = _read_all(builder, splits)
  for p, a in zip(paths, arrays):
    fd, tmp = tempfile.mkstemp(dir=builder_dir, prefix=".tmp-", suffix=".npy")
    with os.fdopen(fd, "wb") as f:
      np.save(f, a, allow_pickle=False)
    os.replace(tmp, p)
  return arrays


# ----------------------------------------------------------------------------------------------
# tfds's own cifar10


def _records(ds, start: int, stop: int) -> list:
  """Records ``start..stop-1`` of a tfds data source (batched read where supported)."""
  try:
    return list(ds.__getitems__(range(start, stop)))
  except TypeError:  # tfds.testing.mock_data's source has no working __getitems__
    return [ds[i] for i in range(start, stop)]


def _load_tfds_cifar10(data_dir: str, *, download: bool) -> Source:
  """tfds's ``cifar10`` read with ``tfds.data_source`` (array_record, no TensorFlow to read).

  It must be prepared in ``data_dir`` as array_record, or be downloadable (internet, and
  TensorFlow for tfds's PNG encoding during preparation). Source order: ``train`` records then
  ``test`` records, each in stored order (fixed for a given prepared copy).
  """
  tfds = _tfds()
  try:
    train, test = tfds.data_source("cifar10", split=["train", "test"], data_dir=data_dir,
                                   download=download)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(
        f"{data_dir}: tfds's cifar10 is not prepared there as array_record"
        + (" and could not be downloaded" if download else " (download=False)")
        + f" ({type(e).__name__}: {e}). Pass the CIFAR-10 JPEG archive instead "
        "(archive=/path/cifar10-jpeg.tar.gz)" + ("." if download else ", or allow download=True.")
    ) from e
  num = len(train) + len(test)
  images = np.empty((num, 32, 32, 3), np.uint8)
  labels = np.empty((num,), np.int32)
  j = 0
  for ds in (train, test):
    for start in range(0, len(ds), 4096):
      for rec in _records(ds, start, min(start + 4096, len(ds))):
        images[j] = rec["image"]
        labels[j] = rec["label"]
        j += 1
  split = np.asarray(["train"] * len(train) + ["test"] * len(test))
  return Source(name="cifar10", images=images, labels=labels, official_split=split,
                class_names=CIFAR10_CLASSES, image_shape=(32, 32, 3))
