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
#
# CUDA rows are 0.0 (auto = always dense, cuDNN conv + mask) until the GPU kernels are
# measured. How they get filled: `make gpu-check` (benchmarks/gpu_check.sh) runs
# benchmarks/bench_gpu.py, whose $OUT/bench_gpu.md ends with "Suggested max-density rows":
# per backend and dtype, the largest keep at which that sparse kernel beats the dense
# baseline (forward + backward, bf16/fp32, channels_last) on *every* benchmarked shape.
# Copy the "cuda/<dtype>" values here (auto calls the C++ op; Triton is only reached by
# backend "triton"), add the run to benchmarks/RESULTS.md, and rerun gpu-check: its
# "auto never slower than dense" line must stay True. float64 stays 0.0 (never a training
# dtype; the kernels exist for gradcheck).
# CPU float32 (benchmarks/RESULTS.md, 2026-11-22): at keep 0.5 the sparse kernel still wins
# forward+backward on every ResNet-18 bottom shape (1.20-1.22x) and forward alone (1.05-1.56x);
# at keep 1.0 it loses (0.59-0.73x). float64 follows the same code; bfloat16/float16 are
# converted to float32 around the kernel, which costs extra passes, hence the lower values
# (bf16: the fused ops' measured bf16-autocast crossover, see _FUSED_MAX_DENSITY; the lone
# conv is not yet measured — issue 16's sweep).
_MAX_DENSITY = {
    ("cpu", torch.float32): 0.5,
    ("cpu", torch.float64): 0.5,
    ("cpu", torch.bfloat16): 0.2,   # follows the fused ops' bf16-autocast crossover (below)
    ("cpu", torch.float16): 0.3,
    ("cuda", torch.float32): 0.0,   # unmeasured (needs a GPU run)
    ("cuda", torch.float64): 0.0,
    ("cuda", torch.bfloat16): 0.0,  # unmeasured (needs a GPU run)
    ("cuda", torch.float16): 0.0,   # unmeasured (needs a GPU run)
}
# The sparse kernel pads C_in to whole vectors; with very few input channels (the RGB
# stem) it does several times the useful work, so auto is stricter there: for 3->64@32 the
# sparse kernel wins forward+backward at keep 0.3 (1.43x) but loses forward at 0.5 (0.88x).
_MAX_DENSITY_FEW_CHANNELS = 0.3
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


# The fused ops (sparsemask::defective_unit / defective_block, CPU float32/float64) save
# whole passes over memory besides the skipped neurons, so they pay up to denser masks than
# the lone convolution — but inside them a dense-conv fallback costs extra gathers and
# scatters, so `auto` runs them sparse (max_density 1.0) and only where the kept fraction
# is at most this; above it the unfused modules run (dense convolution + mask).
# Measured (benchmarks/RESULTS.md, 2026-11-22, whole ResNet-18 training step, one thread,
# CPU time, fused ops forced): 1.23x the dense reference at keep 0.5, 1.01x at 0.7, 0.80x
# at 0.9.
#
# Under CPU autocast the fused ops still compute in float32 (csrc/autocast/), while the
# dense alternative runs oneDNN's bf16 convolution (AVX512-BF16 here): the crossover drops.
# Measured (benchmarks/RESULTS.md, 2026-12-02, same step, N=32, one thread, CPU time, bf16
# autocast, fused ops forced): 1.23x at keep 0.1, 1.09x at 0.2 (one
# round 0.96x: borderline), 0.96x at 0.3, 0.78x at 0.5.
# float16: PyTorch's float16 convolution on CPU is a slow reference path (its backward alone
# is 5-50x the float32 step; tests/models/test_autocast.py), so the fused float32 ops beat it
# wherever they beat float32 dense.
_FUSED_MAX_DENSITY = {("cpu", torch.float32): 0.6, ("cpu", torch.float64): 0.6,
                      ("cpu", torch.bfloat16): 0.2, ("cpu", torch.float16): 0.6}


def fused_max_density(device_type: str, dtype: torch.dtype) -> float:
    """The ``auto`` threshold of the fused defective-unit/block ops (0: never fused).
    ``dtype``: what the dense alternative runs in (the autocast dtype under autocast)."""
    return _FUSED_MAX_DENSITY.get((device_type, dtype), 0.0)
