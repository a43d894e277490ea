"""sparsemask: defective (Random Mask) convolutional layers that skip their dropped neurons.

Core op::

    sparsemask.masked_conv2d(input, weight, bias, mask, stride=1, padding=0, dilation=1)
        == F.conv2d(input, weight, bias, stride, padding, dilation) * mask

computed for the kept neurons only (CPU C++, CUDA, Triton), with a backend switch
(:func:`backend`, :func:`set_backend`, :func:`get_backend`; the policy and the registry
of backends: :mod:`sparsemask.dispatch`). Subpackages: ``nn`` (layers,
``defect``), ``models`` (builders), ``attacks``, ``data``, ``experiments``.
"""
from __future__ import annotations

import importlib
import sys
import types
import warnings

from ._extension import cpu_capability, load_extension as _load_extension

_load_extension()

from .dispatch import BACKENDS, backend, backend_names, get_backend, register_backend, set_backend  # noqa: E402
from .masks import MASK_KINDS, SAMPLINGS, random_mask  # noqa: E402
from .ops import conv_output_size, dense_masked_conv2d, masked_conv2d  # noqa: E402
from . import backends as _backends  # noqa: E402,F401  (registers cpu, cuda, triton, dense)
from .plan import mask_plan  # noqa: E402



def _deprecated_module_alias(old: str, new_module) -> types.ModuleType:
    """A module object for the old path ``old`` whose attributes are ``new_module``'s, with a
    DeprecationWarning on use. Placed in sys.modules, so ``import`` never binds it as an
    attribute of the package (``sparsemask.backend`` stays the context manager)."""
    alias = types.ModuleType(old, f"Deprecated alias of {new_module.__name__}.")

    def __getattr__(name: str):
        if name.startswith("__"):  # the import system's probes (__path__, ...), not a user's access
            raise AttributeError(name)
        warnings.warn(f"{old} is deprecated; import from {new_module.__name__}", DeprecationWarning, stacklevel=2)
        return getattr(new_module, name)

    alias.__getattr__ = __getattr__
    return alias


# The backend policy moved from the module sparsemask/backend.py to sparsemask.dispatch.
sys.modules[f"{__name__}.backend"] = _deprecated_module_alias(f"{__name__}.backend", sys.modules[f"{__name__}.dispatch"])

__version__ = "0.1.0"

_SUBMODULES = ("nn", "models", "attacks", "data", "experiments", "train", "triton", "cli", "plan", "masks")

__all__ = ["masked_conv2d", "dense_masked_conv2d", "conv_output_size", "backend", "set_backend", "get_backend",
           "cpu_capability",
           "BACKENDS", "backend_names", "register_backend", "random_mask", "MASK_KINDS", "SAMPLINGS", "mask_plan", "defect", *_SUBMODULES]


def __getattr__(name: str):
    # Subpackages load on first use, so `import sparsemask` stays light.
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "defect":
        return importlib.import_module(".nn", __name__).defect
    raise AttributeError(f"module 'sparsemask' has no attribute {name!r}")
