"""Backend ``dense``: ``F.conv2d(...) * mask`` — the reference, and what the papers' code runs."""
from __future__ import annotations

from ..dispatch import register_backend
from ..ops.masked_conv2d import dense_masked_conv2d


def _conv(input, weight, bias, mask, stride, padding, dilation, max_density):
    return dense_masked_conv2d(input, weight, bias, mask, stride, padding, dilation)


register_backend("dense", _conv, devices=("cpu", "cuda", "meta", "mps", "xpu"),
                 description="the dense reference: F.conv2d(...) * mask", runs_on=lambda device_type: True)
