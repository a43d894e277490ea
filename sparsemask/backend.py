"""The backend switch and the ``auto`` dispatch table.

Backends:
  ``auto``    the sparse kernel of the tensor's device where it pays, else the dense
              reference; decided per call from the mask's kept fraction and the table below.
  ``cpu``     the C++ sparse kernel (CPU tensors only), always.
  ``cuda``    the CUDA C++ sparse kernel (CUDA tensors only), always.
  ``triton``  the Triton sparse kernels (CUDA tensors; CPU tensors under TRITON_INTERPRET=1).
  ``dense``   ``F.conv2d(...) * mask``: the reference, and what the papers' code runs.

The setting is process-global (a plain module global, so ``torch.compile`` reads it at
trace time and guards on it); ``with sparsemask.backend("dense"): ...`` changes it for a block.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

BACKENDS = ("auto", "cpu", "cuda", "triton", "dense")

_current = "auto"

# Largest kept fraction at which the sparse kernel beats the dense baseline (forward +
# backward), by (device type, dtype). Above it `auto` runs dense. Measured with
# benchmarks/bench_masked_conv.py; see benchmarks/RESULTS.md for the numbers behind each.
# CUDA rows start at 0 (always dense) until GPU kernels are measured.
_MAX_DENSITY = {
    ("cpu", torch.float32): 0.5,
    ("cpu", torch.float64): 0.5,
    ("cpu", torch.bfloat16): 0.3,
    ("cpu", torch.float16): 0.3,
}
# The sparse kernel pads C_in to whole vectors; with very few input channels (the RGB
# stem) it does several times the useful work, so auto is stricter there.
_MAX_DENSITY_FEW_CHANNELS = 0.15
_FEW_CHANNELS = 8


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown sparsemask backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name


def set_backend(name: str) -> None:
    """Set the process-wide backend (one of ``BACKENDS``)."""
    global _current
    _current = _check_name(name)


def get_backend() -> str:
    """The current backend name."""
    return _current


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Context manager: run the enclosed masked convolutions on backend ``name``.

    >>> with sparsemask.backend("dense"):
    ...     y = sparsemask.masked_conv2d(x, w, None, mask, padding=1)
    """
    global _current
    previous = _current
    _current = _check_name(name)
    try:
        yield
    finally:
        _current = previous


def max_density(device_type: str, dtype: torch.dtype, in_channels: int) -> float:
    """The ``auto`` threshold: the sparse kernel runs when the mask's kept fraction is at
    most this; 0 means always dense."""
    limit = _MAX_DENSITY.get((device_type, dtype), 0.0)
    if in_channels < _FEW_CHANNELS:
        limit = min(limit, _MAX_DENSITY_FEW_CHANNELS)
    return limit
