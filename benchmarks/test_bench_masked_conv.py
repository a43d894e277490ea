"""pytest-benchmark entries for the CPU masked convolution (not part of `make test`).

    .venv/bin/python -m pytest benchmarks/test_bench_masked_conv.py --benchmark-enable \
        --benchmark-columns=median,iqr,rounds --benchmark-sort=name

Each case times forward+backward of one ResNet-18 bottom-layer shape (N=32 to keep a
round short) on the sparse kernel and on the dense baseline (F.conv2d + mask, channels_last).
The full sweep with speedups and the RESULTS.md table is bench_masked_conv.py.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sparsemask

SHAPES = {"64-64@32": (64, 64, 32, 1), "128-128@16": (128, 128, 16, 1), "64-128@32s2": (64, 128, 32, 2)}


def _tensors(shape, keep, n=32):
    c_in, c_out, h, stride = SHAPES[shape]
    g = torch.Generator().manual_seed(0)
    ho = (h - 1) // stride + 1
    x = torch.rand(n, c_in, h, h, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = (torch.randn(c_out, c_in, 3, 3, generator=g) * 0.1).requires_grad_()
    mask = torch.rand(c_out, ho, ho, generator=g) < keep
    grad = torch.randn(n, c_out, ho, ho, generator=g).contiguous(memory_format=torch.channels_last)
    return x, w, mask, stride, grad


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("keep", [0.1, 0.5])
@pytest.mark.parametrize("impl", ["sparse", "dense"])
def test_forward_backward(benchmark, shape, keep, impl):
    x, w, mask, stride, grad = _tensors(shape, keep)

    def step():
        if impl == "dense":
            out = F.conv2d(x, w, None, stride, 1) * mask
        else:
            with sparsemask.backend("cpu"):
                out = sparsemask.masked_conv2d(x, w, None, mask, stride, 1)
        torch.autograd.grad(out, (x, w), grad)

    benchmark(step)
