"""Triton kernels of the masked convolution (backend ``"triton"``).

Importing this package imports ``triton``; :mod:`sparsemask.ops` does so lazily, only when
the backend is ``"triton"``, so the rest of the package works without it.
"""
from .masked_conv2d import masked_conv2d_triton

__all__ = ["masked_conv2d_triton"]
