"""A restricted reader of PyTorch and safetensors checkpoints that needs no torch.

:func:`read_state_dict` returns a checkpoint's tensors as numpy arrays, keyed by their PyTorch names
(``"features.0.weight"`` ...). It reads:

* **torch's zip format** (``torch.save`` since PyTorch 1.6, ``.pth``/``.pt``/``.bin``): a zip with
  ``<prefix>/data.pkl`` (the pickled object), ``<prefix>/data/<key>`` (one raw storage per entry)
  and ``<prefix>/byteorder``.
* **torch's legacy pickle stream** (``torch.save(..., _use_new_zipfile_serialization=False)`` and
  every file saved before PyTorch 1.6, e.g. torchvision's ``mobilenet_v2-b0353104.pth`` and
  ``vgg16-397923af.pth``): five pickles (magic number, protocol version, system info, the object,
  the storage keys) followed by each storage's element count (int64) and raw bytes.
* **safetensors** (timm/Hugging Face ``.safetensors``) through the ``safetensors.numpy`` package;
  bfloat16 tensors, which numpy has no dtype for, are decoded with ``ml_dtypes``.

Safety: the pickles are read by an ``Unpickler`` whose ``find_class`` resolves only the globals a
state dict needs (``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``,
``collections.OrderedDict``, the ``torch.*Storage`` types, dtypes, ``torch.Size``...) to
stand-ins defined here. Any other global is refused by name before anything runs, so a malicious
checkpoint cannot execute code. Tensors are rebuilt from their ``(storage, offset, shape,
strides)`` with numpy after bounds checks.

Every failure is a :class:`PretrainedWeightsError` (a ``ValueError``) whose message names the file
and the problem.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import json
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from typing import Any

import ml_dtypes
import numpy as np


class PretrainedWeightsError(ValueError):
  """A weights file that cannot be read, or that does not fit the module it is loaded into."""


# torch's storage type names → numpy dtypes (torch/storage.py).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64), "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16), "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64), "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16), "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8), "BoolStorage": np.dtype(np.bool_),
    "UntypedStorage": np.dtype(np.uint8),
}
# torch dtype objects (pickled as globals ``torch.<name>``) → numpy dtypes.
_TORCH_DTYPES: dict[str, np.dtype] = {
    "float64": np.dtype(np.float64), "double": np.dtype(np.float64),
    "float32": np.dtype(np.float32), "float": np.dtype(np.float32),
    "float16": np.dtype(np.float16), "half": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16), "int64": np.dtype(np.int64),
    "long": np.dtype(np.int64), "int32": np.dtype(np.int32), "int": np.dtype(np.int32),
    "int16": np.dtype(np.int16), "short": np.dtype(np.int16), "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8), "bool": np.dtype(np.bool_),
}
# safetensors dtype codes that safetensors.numpy cannot give numpy arrays for.
_SAFETENSORS_EXTRA_DTYPES = {"BF16": np.dtype(ml_dtypes.bfloat16)}

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C   # torch/serialization.py MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001                  # torch/serialization.py PROTOCOL_VERSION
_RESAVE_HINT = ("re-save it with a recent PyTorch from a trusted environment: python -c \"import "
                "torch; torch.save(torch.load('OLD', map_location='cpu', weights_only=False), "
                "'NEW.pth')\"")


# ---------------------------------------------------------------------------------------------
# Stand-ins for the torch objects a state-dict pickle refers to.


class _StorageType:
  """Stand-in for a ``torch.<Name>Storage`` class: only its element dtype matters."""

  def __init__(self, name: str):
    self.name, self.dtype = name, _STORAGE_DTYPES[name]


class _Storage:
  """A storage's raw bytes (filled in later for the legacy format) and its element dtype."""

  def __init__(self, key: str, dtype: np.dtype, numel: int):
    self.key, self.dtype, self.numel = key, dtype, int(numel)
    self.data: np.ndarray | None = None   # 1-D array of ``dtype`` once read


class _LazyTensor:
  """``torch._utils._rebuild_tensor_v2``'s arguments; turned into a numpy array once the storages
  are read (:func:`_materialize`)."""

  def __init__(self, storage: Any, offset: Any, shape: Any, strides: Any):
    self.storage, self.offset, self.shape, self.strides = storage, offset, shape, strides


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  """``torch._utils._rebuild_tensor`` and ``_rebuild_tensor_v2`` (requires_grad, hooks and
  metadata are training state, dropped)."""
  del unused
  return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
  """``torch._utils._rebuild_parameter`` / ``_rebuild_parameter_with_state``: the tensor itself."""
  del unused
  return data


def _rebuild_from_type_v2(func, new_type, args, state):
  """``torch._tensor._rebuild_from_type_v2``: a tensor (sub)class rebuilt by ``func``; only
  ``torch.Tensor`` and ``torch.nn.Parameter`` are allowed as ``new_type`` (see find_class)."""
  del new_type, state
  return func(*args)


def _codecs_encode(text, encoding="utf-8"):
  """``_codecs.encode``: protocol-2 pickles store ``bytes`` as ``encode(str, 'latin1')``."""
  if encoding not in ("latin1", "latin-1"):
    raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
  return text.encode(encoding)


class _TypeMarker:
  """A class that may appear as an argument (``torch.Tensor`` in ``_rebuild_from_type_v2``)."""

  def __init__(self, name: str):
    self.name = name


def _ordered_dict(*args):
  return collections.OrderedDict(*args)


def _allowed_globals() -> dict[tuple[str, str], Any]:
  allowed: dict[tuple[str, str], Any] = {
      ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
      ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
      ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
      ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
      ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
      ("torch", "Tensor"): _TypeMarker("torch.Tensor"),
      ("torch._tensor", "Tensor"): _TypeMarker("torch.Tensor"),
      ("torch.nn.parameter", "Parameter"): _TypeMarker("torch.nn.Parameter"),
      ("torch", "Size"): tuple,
      ("collections", "OrderedDict"): collections.OrderedDict,
      ("_codecs", "encode"): _codecs_encode,
      ("torch", "device"): str,
  }
  for name in _STORAGE_DTYPES:
    allowed[("torch", name)] = _StorageType(name)
  for name, dtype in _TORCH_DTYPES.items():
    allowed[("torch", name)] = dtype
  return allowed


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only :data:`_ALLOWED` globals; storages go through ``storage_for``."""

  def __init__(self, file, path: str, storage_for):
    super().__init__(file)
    self._path, self._storage_for = path, storage_for

  def find_class(self, module: str, name: str):
    # Protocol-2 pickles name Python 2 modules (``__builtin__``); map them as pickle's own
    # find_class does, so that names are checked (and reported) as Python 3 spells them.
    if (module, name) in _compat_pickle.NAME_MAPPING:
      module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
      module = _compat_pickle.IMPORT_MAPPING[module]
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      hint = ""
      if module.startswith("__torch__"):
        hint = (" It is a TorchScript archive (torch.jit.save); save the model's state_dict() with "
                "torch.save instead.")
      raise PretrainedWeightsError(
          f"{self._path}: the checkpoint's pickle asks for the Python global {module}.{name}, which a "
          f"state dict does not need; refusing to load it (nothing was executed).{hint} Save only "
          "the model's state_dict() (tensors in dicts) to load it here.") from None

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid:
      raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if kind != "storage":
      raise pickle.UnpicklingError(f"unexpected persistent id of kind {kind!r}")
    return self._storage_for(pid[1:])


# ---------------------------------------------------------------------------------------------
# Materialising tensors.


def _tensor_to_numpy(t: _LazyTensor, path: str) -> np.ndarray:
  storage = t.storage
  if not isinstance(storage, _Storage) or storage.data is None:
    raise PretrainedWeightsError(f"{path}: a tensor refers to a storage that the file does not hold.")
  try:
    shape = tuple(int(s) for s in t.shape)
    strides = tuple(int(s) for s in t.strides)
    offset = int(t.offset)
  except (TypeError, ValueError):
    raise PretrainedWeightsError(f"{path}: malformed tensor metadata (shape {t.shape!r}, strides "
                                 f"{t.strides!r}, offset {t.offset!r}).") from None
  if len(shape) != len(strides) or any(s < 0 for s in shape + strides) or offset < 0:
    raise PretrainedWeightsError(f"{path}: malformed tensor metadata (shape {shape}, strides "
                                 f"{strides}, offset {offset}).")
  flat = storage.data
  if 0 in shape:
    return np.zeros(shape, flat.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(shape, strides))
  if last >= flat.size:
    raise PretrainedWeightsError(
        f"{path}: a tensor of shape {shape} reaches element {last} of storage {storage.key!r}, which "
        f"holds {flat.size}; the file is truncated or corrupt.")
  item = flat.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(flat[offset:], shape, tuple(s * item for s in strides))
  return np.array(view, order="C")   # a C-contiguous copy, independent of the storage


def _materialize(obj: Any, path: str) -> Any:
  if isinstance(obj, _LazyTensor):
    return _tensor_to_numpy(obj, path)
  if isinstance(obj, dict):
    out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
    for k, v in obj.items():
      out[k] = _materialize(v, path)
    return out
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v, path) for v in obj)
  return obj


def _frombuffer(raw: bytes, dtype: np.dtype, big_endian: bool) -> np.ndarray:
  if len(raw) % dtype.itemsize:
    raise ValueError(f"{len(raw)} bytes is not a whole number of {dtype} elements")
  if big_endian and dtype.itemsize > 1:
    return np.frombuffer(raw, dtype.newbyteorder(">")).astype(dtype)
  return np.frombuffer(raw, dtype)


# ---------------------------------------------------------------------------------------------
# The three container formats.


def _read_zip(path: str) -> Any:
  try:
    zf = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise PretrainedWeightsError(f"{path}: the zip archive is truncated or corrupt ({e}).") from None
  with zf:
    names = zf.namelist()
    pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if not pickles:
      what = ("a TorchScript archive (torch.jit.save); save the model's state_dict() with torch.save "
              "instead" if any("/code/" in n or n.endswith("constants.pkl") for n in names)
              else "not a PyTorch checkpoint")
      raise PretrainedWeightsError(f"{path}: a zip archive without data.pkl: {what}.")
    prefix = pickles[0][: -len("data.pkl")]
    big_endian = False
    if prefix + "byteorder" in names:
      big_endian = zf.read(prefix + "byteorder").strip() == b"big"
    storages: dict[str, _Storage] = {}

    def storage_for(args):
      storage_type, key, _location, numel = args[:4]
      if not isinstance(storage_type, _StorageType):
        raise pickle.UnpicklingError(f"storage of unknown type {storage_type!r}")
      key = str(key)
      if key not in storages:
        s = _Storage(key, storage_type.dtype, numel)
        name = f"{prefix}data/{key}"
        try:
          raw = zf.read(name)
        except KeyError:
          raise PretrainedWeightsError(f"{path}: storage entry {name!r} is missing; the archive is "
                                       "truncated or corrupt.") from None
        s.data = _frombuffer(raw, s.dtype, big_endian)
        storages[key] = s
      return storages[key]

    try:
      obj = _RestrictedUnpickler(io.BytesIO(zf.read(pickles[0])), path, storage_for).load()
    except PretrainedWeightsError:
      raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
      raise PretrainedWeightsError(f"{path}: the zip archive is truncated or corrupt ({e}).") from None
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
      raise PretrainedWeightsError(f"{path}: data.pkl is not a readable state-dict pickle ({e}).") from None
  return _materialize(obj, path)


def _read_legacy(path: str, f) -> Any:
  storages: dict[str, _Storage] = {}

  def storage_for(args):
    storage_type, root_key, _location, numel, view = args[:5]
    if not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f"storage of unknown type {storage_type!r}")
    root_key = str(root_key)
    if root_key not in storages:
      storages[root_key] = _Storage(root_key, storage_type.dtype, numel)
    if view is None:
      return storages[root_key]
    view_key, offset, size = view
    return _StorageView(storages[root_key], str(view_key), int(offset), int(size))

  def load(unpickler_file):
    return _RestrictedUnpickler(unpickler_file, path, storage_for).load()

  try:
    magic = load(f)
  except PretrainedWeightsError:
    raise
  except Exception:  # noqa: BLE001  (whatever the first pickle is, it is not torch's magic number)
    magic = None
  if magic != _LEGACY_MAGIC:
    raise PretrainedWeightsError(
        f"{path}: not a PyTorch checkpoint (zip or legacy pickle) nor a safetensors file.")
  try:
    if load(f) != _LEGACY_PROTOCOL:
      raise PretrainedWeightsError(f"{path}: unknown legacy torch protocol version; {_RESAVE_HINT}.")
    sys_info = load(f)
    obj = load(f)
    keys = load(f)
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    for key in keys:
      s = storages[str(key)]
      head = f.read(8)
      if len(head) < 8:
        raise EOFError("storage data ends early")
      (numel,) = struct.unpack("<q" if little else ">q", head)
      raw = f.read(numel * s.dtype.itemsize)
      if len(raw) < numel * s.dtype.itemsize:
        raise EOFError("storage data ends early")
      s.data = _frombuffer(raw, s.dtype, big_endian=not little)
  except PretrainedWeightsError:
    raise
  except EOFError:
    raise PretrainedWeightsError(f"{path}: the legacy torch file is truncated.") from None
  except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
    raise PretrainedWeightsError(f"{path}: not a readable legacy torch checkpoint ({e}).") from None
  for view in _StorageView.pending(obj):
    view.resolve()
  return _materialize(obj, path)


class _StorageView(_Storage):
  """A legacy storage view: ``size`` elements of ``root`` from element ``offset``."""

  def __init__(self, root: _Storage, key: str, offset: int, size: int):
    super().__init__(key, root.dtype, size)
    self.root, self.offset = root, offset

  def resolve(self):
    if self.root.data is not None:
      self.data = self.root.data[self.offset:self.offset + self.numel]

  @staticmethod
  def pending(obj):
    if isinstance(obj, _LazyTensor) and isinstance(obj.storage, _StorageView):
      yield obj.storage
    elif isinstance(obj, dict):
      for v in obj.values():
        yield from _StorageView.pending(v)
    elif isinstance(obj, (list, tuple)):
      for v in obj:
        yield from _StorageView.pending(v)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  import safetensors.numpy  # noqa: PLC0415  (optional until a .safetensors file is read)
  try:
    with open(path, "rb") as f:
      (n,) = struct.unpack("<Q", f.read(8))
      header = json.loads(f.read(n))
  except (struct.error, ValueError, UnicodeDecodeError, MemoryError, OverflowError) as e:
    raise PretrainedWeightsError(f"{path}: not a readable safetensors file (bad header: {e}).") from None
  header.pop("__metadata__", None)
  extra = {k for k, v in header.items() if v.get("dtype") in _SAFETENSORS_EXTRA_DTYPES}
  try:
    if not extra:
      return dict(safetensors.numpy.load_file(path))
    return _read_safetensors_raw(path, n, header)
  except PretrainedWeightsError:
    raise
  except Exception as e:  # noqa: BLE001  (safetensors raises SafetensorError and others)
    raise PretrainedWeightsError(f"{path}: the safetensors file is truncated or corrupt ({e}).") from None


def _read_safetensors_raw(path: str, header_size: int, header: dict) -> dict[str, np.ndarray]:
  """The safetensors layout (8-byte header size, JSON header, data) read by hand, for dtypes that
  ``safetensors.numpy`` cannot return (bfloat16)."""
  import safetensors.numpy  # noqa: PLC0415
  codes = {**{k: np.dtype(v) for k, v in safetensors.numpy._TYPES.items()},  # noqa: SLF001
           **_SAFETENSORS_EXTRA_DTYPES}
  out = {}
  with open(path, "rb") as f:
    f.seek(8 + header_size)
    data = f.read()
  for name, info in header.items():
    dtype = codes.get(info["dtype"])
    if dtype is None:
      raise PretrainedWeightsError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}.")
    begin, end = info["data_offsets"]
    shape = tuple(info["shape"])
    if end > len(data) or end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
      raise PretrainedWeightsError(f"{path}: tensor {name!r} lies outside the file; the safetensors "
                                   "file is truncated or corrupt.")
    out[name] = np.frombuffer(data[begin:end], dtype).reshape(shape).copy()
  return out


# ---------------------------------------------------------------------------------------------
# Public API.

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "net")


def _unwrap(obj: Any, path: str) -> dict[str, np.ndarray]:
  """The tensor dict inside ``obj``: ``{"state_dict": ...}``/``{"model": ...}`` nesting removed and a
  DataParallel ``module.`` prefix dropped."""
  for _ in range(3):
    if isinstance(obj, dict) and not _is_tensor_dict(obj):
      inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
      if inner is None:
        break
      obj = inner
  if not isinstance(obj, dict) or not _is_tensor_dict(obj):
    what = (f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict)
            else f"a {type(obj).__name__}")
    raise PretrainedWeightsError(
        f"{path}: holds {what}, not a state dict of tensors (nor one under "
        f"{'/'.join(_WRAPPER_KEYS)}).")
  keys = list(obj)
  if keys and all(k.startswith("module.") for k in keys):
    obj = {k[len("module."):]: v for k, v in obj.items()}
  return dict(obj)


def _is_tensor_dict(d: dict) -> bool:
  return bool(d) and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in d.items())


def _kind(path: str) -> str:
  with open(path, "rb") as f:
    head = f.read(16)
  if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
    return "zip"
  # safetensors: an 8-byte little-endian header size, then the JSON header. (Checked before the
  # pickle's PROTO opcode 0x80, which the size's first byte can also be.)
  if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < os.path.getsize(path):
    return "safetensors"
  if head[:1] == b"\x80":   # pickle PROTO: torch's legacy stream starts with the magic number
    return "legacy"
  if path.endswith(".safetensors"):
    return "safetensors"
  try:
    if tarfile.is_tarfile(path):
      return "tar"
  except OSError:
    pass
  return "unknown"


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The tensors of a PyTorch (zip or legacy) or safetensors checkpoint, as numpy arrays.

  Args:
    path: the file (``.pth``/``.pt``/``.bin`` torch files, ``.safetensors``).

  Returns:
    ``{name: array}`` in the file's order; arrays are C-contiguous copies with the stored dtype
    (``float32``, ``float16``, ``ml_dtypes.bfloat16``, ``int64``...).

  Raises:
    PretrainedWeightsError: the file is missing, not a checkpoint, truncated or corrupt, a
      pre-1.6 tar-format or TorchScript file, holds no state dict, or its pickle asks for a global
      a state dict does not need (named in the message; never executed).
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    raise PretrainedWeightsError(f"{path} is a directory; pass the weights file itself (a "
                                 f"torchvision .pth, a timm checkpoint or a .safetensors file).")
  if not os.path.isfile(path):
    raise PretrainedWeightsError(f"{path}: no such weights file.")
  kind = _kind(path)
  if kind == "zip":
    obj = _read_zip(path)
  elif kind == "legacy":
    with open(path, "rb") as f:
      obj = _read_legacy(path, f)
  elif kind == "safetensors":
    obj = _read_safetensors(path)
  elif kind == "tar":
    raise PretrainedWeightsError(
        f"{path}: a tar-format torch file from PyTorch < 0.4, which this reader does not support; "
        f"{_RESAVE_HINT}.")
  else:
    raise PretrainedWeightsError(
        f"{path}: not a PyTorch checkpoint (zip or legacy pickle) nor a safetensors file.")
  return _unwrap(obj, path)
