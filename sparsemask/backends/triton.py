"""Backend ``triton``: the Triton kernels (sparsemask/triton/), on CUDA tensors, or on CPU
tensors under ``TRITON_INTERPRET=1``. ``triton`` is imported on the first call only, so the
rest of the package works without it."""
from __future__ import annotations

import os


from ..dispatch import register_backend


def _runs_on(device_type: str) -> bool:
    return device_type == "cuda" or (device_type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


def _conv(input, weight, bias, mask, stride, padding, dilation, max_density):
    # No auto rows yet (unmeasured on a GPU), so max_density < 1 only reaches here once
    # dispatch._MAX_DENSITY gets ("triton", ...) rows; honour it as the C++ op does.
    if max_density < 1.0 and float(mask.count_nonzero()) > max_density * mask.numel():
        from ..ops.masked_conv2d import dense_masked_conv2d

        return dense_masked_conv2d(input, weight, bias, mask, stride, padding, dilation)
    from ..triton import masked_conv2d_triton

    return masked_conv2d_triton(input, weight, bias, mask, stride, padding, dilation)


register_backend("triton", _conv, devices=("cuda",), runs_on=_runs_on,
                 description="the Triton sparse kernels, CUDA tensors (CPU under TRITON_INTERPRET=1)",
                 requirement="it needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)")
