"""Triton forward: a NaN/Inf in one kept output stays in that output (the epilogue that puts
kept values into their channel slots must not spread it to the other channels of the
position, masked ones included); a strided bias is read with its stride (issue 15, item 3). Runs under TRITON_INTERPRET=1."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sparsemask


def _reference(x, w, b, mask, padding):
    out = F.conv2d(x, w, b, padding=padding)
    return torch.where(mask, out, torch.zeros((), dtype=out.dtype))  # masked: exactly 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_weight_stays_in_its_channel(bad, dtype):
    g = torch.Generator().manual_seed(21)
    x = torch.rand(3, 4, 7, 5, generator=g, dtype=torch.float64).to(dtype) + 0.1  # positive: inf stays inf
    w = torch.rand(6, 4, 3, 3, generator=g, dtype=torch.float64).to(dtype)
    b = torch.randn(6, generator=g, dtype=torch.float64).to(dtype)
    w[2, 1, 1, 1] = bad
    mask = torch.rand(6, 7, 5, generator=g) < 0.5
    mask[2, 3, 2] = True
    with sparsemask.backend("triton"):
        got = sparsemask.masked_conv2d(x, w, b, mask, padding=1)
    want = _reference(x.double(), w.double(), b.double(), mask, 1).to(dtype)
    assert (got[:, 2][:, mask[2]].isnan() | got[:, 2][:, mask[2]].isinf()).all()
    assert (got.permute(1, 2, 3, 0)[~mask] == 0).all()
    torch.testing.assert_close(got, want, equal_nan=True, **({} if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)))


def test_strided_bias():
    g = torch.Generator().manual_seed(22)
    x = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    w = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(5, 2, generator=g, dtype=torch.float64)[:, 1]  # stride 2
    assert b.stride() == (2,)
    mask = torch.rand(5, 4, 4, generator=g) < 0.6
    with sparsemask.backend("triton"):
        got = sparsemask.masked_conv2d(x, w, b, mask)
    torch.testing.assert_close(got, _reference(x, w, b, mask, 0), atol=1e-12, rtol=1e-12)
