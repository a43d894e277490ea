"""stride/padding/dilation given as numpy ints or 0-d tensors work; floats are refused with
a message naming the argument (issue 15, confusing errors)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sparsemask


@pytest.mark.parametrize("value", [np.int64(2), torch.tensor(2), (np.int32(2), 2)])
def test_integer_like_stride(value):
    g = torch.Generator().manual_seed(31)
    x = torch.randn(1, 2, 7, 7, dtype=torch.float64, generator=g)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=g)
    mask = torch.rand(3, 3, 3, generator=g) < 0.5
    with sparsemask.backend("cpu"):
        got = sparsemask.masked_conv2d(x, w, None, mask, stride=value)
    torch.testing.assert_close(got, F.conv2d(x, w, stride=2) * mask, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ["stride", "padding", "dilation"])
@pytest.mark.parametrize("value", [1.0, 1.5, (1, 1.0), "1"])
def test_non_integer_conv_args(name, value):
    x, w = torch.randn(1, 2, 7, 7), torch.randn(3, 2, 3, 3)
    mask = torch.ones(3, 5, 5, dtype=torch.bool)
    with pytest.raises((TypeError, ValueError), match=rf"{name} must be an int or a pair of ints"):
        sparsemask.masked_conv2d(x, w, None, mask, **{name: value})


@pytest.mark.parametrize("backend", ["auto", "cpu", "dense", "triton"])
def test_no_input_channels_is_refused_by_every_backend(backend):
    # F.conv2d returns [N, 0, H_out, W_out] for C_in = 0 and the sparse backwards gave grad_bias 0:
    # every backend refuses it with the same message (issue 15, C_in = 0).
    x, w, b = torch.randn(2, 0, 5, 5), torch.randn(3, 0, 3, 3), torch.randn(3)
    mask = torch.rand(3, 3, 3) < 0.5
    with sparsemask.backend(backend), pytest.raises(ValueError, match=r"input has no channels \(C_in"):
        sparsemask.masked_conv2d(x, w, b, mask)


def test_no_input_channels_is_refused_by_the_raw_op():
    x, w, b = torch.randn(2, 0, 5, 5), torch.randn(3, 0, 3, 3), torch.randn(3)
    mask = torch.rand(3, 3, 3) < 0.5
    with pytest.raises(ValueError, match=r"input has no channels \(C_in"):
        torch.ops.sparsemask.masked_conv2d(x, w, b, mask, [1, 1], [0, 0], [1, 1], 1.0)
