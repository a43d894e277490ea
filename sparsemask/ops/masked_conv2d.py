"""``masked_conv2d``: the public op and its fake (meta) kernels.

The kernels are C++/CUDA ops in the ``sparsemask`` namespace (csrc/); this module adds what the dispatcher needs from Python —
``register_fake`` for torch.compile/FakeTensor — and the
user-facing :func:`masked_conv2d`, which validates its arguments and asks
:mod:`sparsemask.dispatch` which backend runs it. Its autograd kernel is C++
(csrc/autograd/masked_conv2d.cpp), so that no Python runs per call below this module.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch._prims_common import suggest_memory_format

from .. import dispatch
from .common import IntPair, check_conv_args, conv_geometry, conv_output_size

__all__ = ["masked_conv2d", "dense_masked_conv2d", "cpp_masked_conv2d"]


def dense_masked_conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Tensor, stride: IntPair = 1,
                        padding: IntPair = 0, dilation: IntPair = 1) -> Tensor:
    """The reference: ``F.conv2d(input, weight, bias, ...) * mask`` (what the papers' code runs),
    with masked outputs set to exactly 0 rather than multiplied by it: 0 * NaN would be NaN,
    where the sparse kernels, which never compute a masked output, give 0."""
    return F.conv2d(input, weight, bias, stride, padding, dilation).masked_fill_(~mask, 0)


def masked_conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Tensor, stride: IntPair = 1,
                  padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1) -> Tensor:
    """2-D convolution whose output neurons outside ``mask`` are fixed at zero and never computed.

    ``masked_conv2d(x, w, b, mask, s, p, d) == F.conv2d(x, w, b, s, p, d) * mask``, forward and
    gradients, but the work scales with the kept fraction of ``mask``. Masked outputs are
    exactly 0 even where the convolution would be NaN/Inf (``torch.where(mask, conv, 0)``).

    Args:
        input: [N, C_in, H, W], float16/bfloat16/float32/float64, NCHW or channels_last.
        weight: [C_out, C_in, kh, kw], same dtype and device (inside ``torch.autocast``
            any floating dtypes: input, weight and bias run in the autocast dtype).
        bias: [C_out] or None.
        mask: bool [C_out, H_out, W_out], shared by every image of the batch. Its index
            lists (the mask plan) are built once per mask and cached.
        stride, padding, dilation: int or pair, as in ``F.conv2d``. ``groups`` must be 1.

    Returns:
        [N, C_out, H_out, W_out] in the input's dtype and memory format; exactly 0 where
        ``mask`` is False.

    The backend (``auto``/``cpu``/``cuda``/``triton``/``dense``) comes from
    :func:`sparsemask.backend`; ``auto`` falls back to the dense convolution where the
    sparse kernel would be slower.
    """
    stride, padding, dilation = conv_geometry(stride, padding, dilation)
    check_conv_args(input, weight, bias, mask, stride, padding, dilation, groups)
    impl, limit = dispatch.conv_backend(input, weight, mask, stride)
    return impl.conv(input, weight, bias, mask, stride, padding, dilation, limit)


def cpp_masked_conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Tensor, stride: list[int],
                      padding: list[int], dilation: list[int], max_density: float = 1.0) -> Tensor:
    """The C++/CUDA kernel (``sparsemask::masked_conv2d``) for validated arguments; above
    ``max_density`` kept fraction it runs the dense convolution inside (csrc/dense_fallback.h).
    Its autograd formula is a C++ kernel too (csrc/autograd/masked_conv2d.cpp): no Python
    runs per call between here and the kernels, forward or backward."""
    return _masked_conv2d_op(input, weight, bias, mask, stride, padding, dilation, max_density)


_masked_conv2d_op = torch.ops.sparsemask.masked_conv2d.default


# --------------------------------------------------------------------------------------
# Fake kernels: shapes, dtypes and memory formats exactly as the real kernels produce them.

@torch.library.register_fake("sparsemask::masked_conv2d")
def _masked_conv2d_fake(input, weight, bias, mask, stride, padding, dilation, max_density):
    torch._check(input.dim() == 4 and weight.dim() == 4, lambda: "masked_conv2d: input and weight must be 4-D")
    ho, wo = conv_output_size(input.shape[2:], weight.shape[2:], stride, padding, dilation)
    return torch.empty((input.shape[0], weight.shape[0], ho, wo), dtype=input.dtype, device=input.device,
                       memory_format=suggest_memory_format(input))


@torch.library.register_fake("sparsemask::masked_conv2d_backward")
def _masked_conv2d_backward_fake(grad_output, input, weight, mask, stride, padding, dilation, max_density,
                                 output_mask):
    need_input, need_weight, need_bias = output_mask
    return (torch.empty_like(input, memory_format=suggest_memory_format(input)) if need_input else input.new_empty(0),
            torch.empty_like(weight, memory_format=torch.contiguous_format) if need_weight else weight.new_empty(0),
            weight.new_empty((weight.shape[0],)) if need_bias else weight.new_empty(0))
