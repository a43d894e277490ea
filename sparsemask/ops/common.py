"""What every op shares: argument normalisation and checks, output sizes, autocast dtypes.

No decisions live here (those are :mod:`sparsemask.dispatch`'s); these are facts about
arguments and about the kernels' dtype support that the ops and the dispatcher both read.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

IntPair = Union[int, Sequence[int]]
LOW_PRECISION = (torch.float16, torch.bfloat16)


def as_int(v) -> Optional[int]:
    """``v`` as an int if it is integer-valued by type (int, numpy int, integer 0-d tensor), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, Tensor):
        return int(v) if v.dim() == 0 and not v.is_floating_point() and not v.is_complex() else None
    if isinstance(v, numbers.Integral):
        return int(v)
    return None


def int_pair(value: IntPair, name: str, op: str = "masked_conv2d") -> list[int]:
    """``value`` (an int or a 1-/2-sequence of ints, numpy ints or integer 0-d tensors) as
    ``[a, b]``; ValueError naming ``name`` otherwise."""
    single = as_int(value)
    if single is not None:
        return [single, single]
    items = list(value) if isinstance(value, (list, tuple)) or (isinstance(value, Tensor) and value.dim() == 1) \
        else None
    ints = [as_int(v) for v in items] if items is not None else []
    if items is None or len(items) not in (1, 2) or any(v is None for v in ints):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    return ints * 2 if len(ints) == 1 else ints


def conv_output_size(size: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int],
                     padding: Sequence[int], dilation: Sequence[int]) -> tuple[int, int]:
    """(H_out, W_out) of a convolution over an input of spatial ``size`` (as F.conv2d)."""
    return tuple(
        (size[i] + 2 * padding[i] - dilation[i] * (kernel_size[i] - 1) - 1) // stride[i] + 1 for i in range(2)
    )


# --------------------------------------------------------------------------------------
# Autocast: which dtype each op computes in.

def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype ``torch.autocast`` runs convolutions in on ``device_type``, or None when
    autocast is off there."""
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def conv_dtype(input: Tensor) -> torch.dtype:
    """The dtype the masked convolution of ``input`` runs in: the autocast dtype for
    float16/bfloat16/float32 inputs inside ``torch.autocast`` (the ops' Autocast kernels,
    csrc/autocast/, cast there), else the input's own."""
    amp = autocast_dtype(input.device.type)
    return amp if amp is not None and input.dtype in (torch.float32, *LOW_PRECISION) else input.dtype


def fused_math_dtype(input: Tensor) -> Optional[torch.dtype]:
    """The dtype the fused CPU kernels (masked BN, defective unit/block) would run in for
    ``input``, or None where they do not apply. They hold BN statistics, so they compute in
    float32/float64; under CPU autocast a float16/bfloat16 activation is fine too (the
    ops' Autocast kernels run them in float32 and return the autocast dtype)."""
    if input.device.type != "cpu" or input.dim() != 4:
        return None
    if input.dtype in (torch.float32, torch.float64):
        return input.dtype
    if input.dtype in LOW_PRECISION and autocast_dtype("cpu") is not None:
        return torch.float32
    return None


# --------------------------------------------------------------------------------------
# Argument checks (the same rules as csrc/checks.h, raised before the dispatcher so the
# message names the Python argument).

def check_same_dtype_or_autocast(name: str, t: Tensor, input: Tensor, op: str = "masked_conv2d") -> None:
    """``t`` must have the input's dtype — unless autocast is on, whose kernels cast both."""
    if t.dtype == input.dtype:
        return
    if t.is_floating_point() and input.is_floating_point() and autocast_dtype(input.device.type) is not None:
        return
    raise TypeError(f"{op}: {name} dtype {t.dtype} must equal input dtype {input.dtype}")


def check_conv_args(input: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Tensor, stride: list[int],
                    padding: list[int], dilation: list[int], groups: int) -> None:
    """Raise a ValueError/TypeError naming the offending argument of a masked convolution."""
    for name, t in (("input", input), ("weight", weight), ("mask", mask)):
        if not isinstance(t, Tensor):
            raise TypeError(f"masked_conv2d: {name} must be a Tensor, got {type(t).__name__}")
    if groups != 1:
        raise ValueError(f"masked_conv2d: only groups=1 is supported, got groups={groups}")
    if input.dim() != 4:
        raise ValueError(f"masked_conv2d: input must be 4-D [N, C_in, H, W], got shape {tuple(input.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"masked_conv2d: weight must be 4-D [C_out, C_in, kh, kw], got shape {tuple(weight.shape)}")
    if weight.shape[1] != input.shape[1]:
        raise ValueError(
            f"masked_conv2d: weight.shape[1] (C_in = {weight.shape[1]}) must equal input.shape[1] = {input.shape[1]}"
        )
    if input.shape[1] == 0:
        # F.conv2d returns [N, 0, H_out, W_out] here (not C_out channels) and the sparse backwards
        # skip an empty input (grad_bias 0): refused by every backend rather than wrong in some.
        raise ValueError("masked_conv2d: input has no channels (C_in = input.shape[1] = 0); need C_in >= 1")
    if not input.is_floating_point():
        raise TypeError(f"masked_conv2d: input must be floating point, got {input.dtype}")
    check_same_dtype_or_autocast("weight", weight, input)
    if mask.dtype != torch.bool:
        raise TypeError(f"masked_conv2d: mask must be torch.bool, got {mask.dtype}")
    for name, t in (("weight", weight), ("mask", mask), ("bias", bias)):
        if t is not None and t.device != input.device:
            raise ValueError(f"masked_conv2d: {name} is on {t.device} but input is on {input.device}")
    if bias is not None:
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"masked_conv2d: bias must have shape [C_out] = [{weight.shape[0]}], got {tuple(bias.shape)}")
        check_same_dtype_or_autocast("bias", bias, input)
    if min(stride) < 1 or min(padding) < 0 or min(dilation) < 1:
        raise ValueError(
            f"masked_conv2d: need stride >= 1, padding >= 0, dilation >= 1; got stride={stride}, "
            f"padding={padding}, dilation={dilation}"
        )
    ho, wo = conv_output_size(input.shape[2:], weight.shape[2:], stride, padding, dilation)
    if ho <= 0 or wo <= 0:
        raise ValueError(
            f"masked_conv2d: the output would be empty: input {tuple(input.shape)} is smaller than the "
            f"(dilated) kernel {tuple(weight.shape)} with padding {padding}"
        )
    expected = (weight.shape[0], ho, wo)
    if tuple(mask.shape) != expected:
        raise ValueError(f"masked_conv2d: mask must have shape [C_out, H_out, W_out] = {list(expected)}, "
                         f"got {list(mask.shape)}")


def conv_geometry(stride: IntPair, padding: IntPair, dilation: IntPair, op: str = "masked_conv2d"
                  ) -> tuple[list[int], list[int], list[int]]:
    """(stride, padding, dilation) as 2-lists of ints, each checked by :func:`int_pair`."""
    return int_pair(stride, "stride", op), int_pair(padding, "padding", op), int_pair(dilation, "dilation", op)
