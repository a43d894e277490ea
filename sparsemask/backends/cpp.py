"""Backends ``cpu`` and ``cuda``: the C++ kernels (csrc/cpu/) and the CUDA C++ kernels
(csrc/cuda/), one op ``sparsemask::masked_conv2d`` whose dispatcher picks by device.

Forcing ``cpu`` also forces the fused defective-unit/block ops (``fused=True``); their
``auto`` thresholds, like this op's, are in :mod:`sparsemask.dispatch`.
"""
from __future__ import annotations

from ..dispatch import register_backend
from ..ops.masked_conv2d import cpp_masked_conv2d

register_backend("cpu", cpp_masked_conv2d, devices=("cpu",), fused=True,
                 description="the C++ sparse kernels (AVX-512/AVX2), CPU tensors")
register_backend("cuda", cpp_masked_conv2d, devices=("cuda",),
                 description="the CUDA C++ sparse kernels, CUDA tensors")
