"""PyTorch, torchvision and timm for the parity tests; the importing test module is skipped cleanly
when torch is not installed (``pytest.importorskip``).

torchvision's PyPI wheel ships C++ ops (``torchvision/_C.so``) built against a CUDA torch; beside
the CPU torch of the test extra they do not load, and ``import torchvision`` then fails with
"operator torchvision::nms does not exist": ``torchvision/_meta_registrations.py`` registers fake
kernels for ``torchvision::nms`` and ``torchvision::qnms`` without checking that the ops exist
(its other registrations are guarded by ``extension._has_ops()``). :func:`_import_torchvision`
therefore defines the two op schemas itself when ``_C`` cannot be loaded, so the import succeeds;
the classification models need no torchvision op (NMS serves detection), and calling one raises.
"""

from __future__ import annotations

import glob
import importlib.util
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

_LIBRARIES = []   # keeps the torch.library.Library alive (dropping it unregisters the schemas)


def _import_torchvision():
  spec = importlib.util.find_spec("torchvision")
  if spec is None or spec.origin is None:
    pytest.skip("torchvision is not installed")
  compiled = glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so"))
  try:
    if not compiled:
      raise OSError("no torchvision/_C extension")
    torch.ops.load_library(compiled[0])
  except (OSError, RuntimeError):
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARIES.append(lib)
  import torchvision  # noqa: PLC0415
  return torchvision


torchvision = _import_torchvision()


def timm():
  """timm, imported on first use (it imports torchvision, so only after the fix above)."""
  return pytest.importorskip("timm")


def seeded(model: "torch.nn.Module", seed: int = 0) -> "torch.nn.Module":
  """``model`` in eval mode with seeded random weights and BatchNorm running statistics that are
  not the identity (mean ~ N(0, 0.1²)·, var ~ U(0.5, 2), affine ~ N(1, 0.1²) / N(0, 0.1²))."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
        m.weight.copy_(1 + torch.randn(m.weight.shape, generator=g) * 0.1)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
  return model.eval()


def save_state_dict(model: "torch.nn.Module", path) -> str:
  torch.save(model.state_dict(), str(path))
  return str(path)


def nchw(images_nhwc: np.ndarray) -> "torch.Tensor":
  return torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))


def nhwc(t: "torch.Tensor") -> np.ndarray:
  return t.detach().numpy().transpose(0, 2, 3, 1)


def tokens_of_map(t: "torch.Tensor") -> np.ndarray:
  """``[B, C, h, w]`` torch map → ``[B, h·w, C]`` row-major tokens (our ``Features.tokens``)."""
  b, c = t.shape[:2]
  return t.detach().reshape(b, c, -1).permute(0, 2, 1).numpy()
