"""sparsemask: defective (Random Mask) convolutional layers that skip their dropped neurons.

Core op::

    sparsemask.masked_conv2d(input, weight, bias, mask, stride=1, padding=0, dilation=1)
        == F.conv2d(input, weight, bias, stride, padding, dilation) * mask

computed for the kept neurons only (CPU C++, CUDA, Triton), with a backend switch
(:func:`backend`, :func:`set_backend`, :func:`get_backend`). Subpackages: ``nn`` (layers,
``defect``), ``models`` (builders), ``attacks``, ``data``, ``experiments``.
"""
from __future__ import annotations

import importlib

from ._extension import load_extension as _load_extension

_load_extension()

from .backend import BACKENDS, backend, get_backend, set_backend  # noqa: E402
from .masks import MASK_KINDS, SAMPLINGS, random_mask  # noqa: E402
from .ops import conv_output_size, dense_masked_conv2d, masked_conv2d  # noqa: E402
from .plan import mask_plan  # noqa: E402

__version__ = "0.1.0"

_SUBMODULES = ("nn", "models", "attacks", "data", "experiments", "train", "triton", "cli", "plan", "masks")

__all__ = ["masked_conv2d", "dense_masked_conv2d", "conv_output_size", "backend", "set_backend", "get_backend",
           "BACKENDS", "random_mask", "MASK_KINDS", "SAMPLINGS", "mask_plan", "defect", *_SUBMODULES]


def __getattr__(name: str):
    # Subpackages load on first use, so `import sparsemask` stays light.
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "defect":
        return importlib.import_module(".nn", __name__).defect
    raise AttributeError(f"module 'sparsemask' has no attribute {name!r}")
