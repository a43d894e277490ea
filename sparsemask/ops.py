"""The public functional op, its fake (meta) kernels and its autograd formula.

The kernels are C++/CUDA ops in the ``sparsemask`` namespace (csrc/); this module adds
what the dispatcher needs from Python — ``register_fake`` for torch.compile/FakeTensor and
``register_autograd`` — and the user-facing :func:`masked_conv2d`, which validates its
arguments and picks a backend (see :mod:`sparsemask.backend`).
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch._prims_common import suggest_memory_format

from .backend import fused_max_density, get_backend, max_density

IntPair = Union[int, Sequence[int]]

__all__ = ["masked_conv2d", "dense_masked_conv2d", "conv_output_size", "masked_batch_norm_act", "defective_unit", "defective_block"]


def _as_int(v) -> Optional[int]:
    """``v`` as an int if it is integer-valued by type (int, numpy int, integer 0-d tensor), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, Tensor):
        return int(v) if v.dim() == 0 and not v.is_floating_point() and not v.is_complex() else None
    if isinstance(v, numbers.Integral):
        return int(v)
    return None


def _pair(value: IntPair, name: str) -> list[int]:
    single = _as_int(value)
    if single is not None:
        return [single, single]
    items = list(value) if isinstance(value, (list, tuple)) or (isinstance(value, Tensor) and value.dim() == 1) \
        else None
    ints = [_as_int(v) for v in items] if items is not None else []
    if items is None or len(items) not in (1, 2) or any(v is None for v in ints):
        raise ValueError(f"masked_conv2d: {name} must be an int or a pair of ints, got {value!r}")
    return ints * 2 if len(ints) == 1 else ints


def conv_output_size(size: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int],
                     padding: Sequence[int], dilation: Sequence[int]) -> tuple[int, int]:
    """(H_out, W_out) of a convolution over an input of spatial ``size`` (as F.conv2d)."""
    return tuple(
        (size[i] + 2 * padding[i] - dilation[i] * (kernel_size[i] - 1) - 1) // stride[i] + 1 for i in range(2)
    )


_LOW_PRECISION = (torch.float16, torch.bfloat16)


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
    return amp if amp is not None and input.dtype in (torch.float32, *_LOW_PRECISION) else input.dtype


def _same_dtype_or_autocast(name: str, t: Tensor, input: Tensor, op: str = "masked_conv2d") -> None:
    """``t`` must have the input's dtype — unless autocast is on, whose kernels cast both."""
    if t.dtype == input.dtype:
        return
    if t.is_floating_point() and input.is_floating_point() and autocast_dtype(input.device.type) is not None:
        return
    raise TypeError(f"{op}: {name} dtype {t.dtype} must equal input dtype {input.dtype}")


def _validate(input: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Tensor, stride: list[int],
              padding: list[int], dilation: list[int], groups: int) -> None:
    """Raise a ValueError/TypeError naming the offending argument (same rules as csrc/checks.h)."""
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
    _same_dtype_or_autocast("weight", weight, input)
    if mask.dtype != torch.bool:
        raise TypeError(f"masked_conv2d: mask must be torch.bool, got {mask.dtype}")
    for name, t in (("weight", weight), ("mask", mask), ("bias", bias)):
        if t is not None and t.device != input.device:
            raise ValueError(f"masked_conv2d: {name} is on {t.device} but input is on {input.device}")
    if bias is not None:
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"masked_conv2d: bias must have shape [C_out] = [{weight.shape[0]}], got {tuple(bias.shape)}")
        _same_dtype_or_autocast("bias", bias, input)
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
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    _validate(input, weight, bias, mask, stride, padding, dilation, groups)
    name = get_backend()
    if name == "dense":
        return dense_masked_conv2d(input, weight, bias, mask, stride, padding, dilation)
    if name == "triton":
        from .triton import masked_conv2d_triton

        return masked_conv2d_triton(input, weight, bias, mask, stride, padding, dilation)
    device = input.device.type
    if name == "auto":
        limit = max_density(device, conv_dtype(input), input.shape[1])
        if limit <= 0.0:
            return dense_masked_conv2d(input, weight, bias, mask, stride, padding, dilation)
    elif name != device:
        raise RuntimeError(f"masked_conv2d: backend {name!r} cannot run {device} tensors; "
                           f"use backend 'auto', 'dense' or {device!r}")
    else:
        limit = 1.0  # forced: always the sparse kernel
    return torch.ops.sparsemask.masked_conv2d(input, weight, bias, mask, stride, padding, dilation, limit)


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


@torch.library.register_fake("sparsemask::mask_plan")
def _mask_plan_fake(mask):
    c, h, w = mask.shape
    q = h * w
    i32 = dict(dtype=torch.int32, device=mask.device)
    return (mask.new_empty((q,), **i32), mask.new_empty((q, c), **i32),
            mask.new_empty((q + 1,), dtype=torch.int64, device=mask.device))


# --------------------------------------------------------------------------------------
# Autograd: gradients of conv2d(...) * mask; only kept outputs contribute.

def _setup_context(ctx, inputs, output):
    input, weight, bias, mask, stride, padding, dilation, max_density = inputs
    ctx.save_for_backward(input, weight, mask)
    ctx.conv_args = (stride, padding, dilation, max_density)
    ctx.has_bias = bias is not None


def differentiable_conv_backward(grad_output: Tensor, input: Tensor, weight: Tensor, mask: Tensor,
                                 stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                                 output_mask: Sequence[bool]) -> tuple:
    """(grad_input, grad_weight, grad_bias) of ``conv2d(input, weight, bias) * mask`` for
    ``grad_output``, in differentiable ATen ops (dense cost): the backward that runs when
    autograd records the backward itself (``create_graph=True``), so that second-order
    gradients (input-gradient penalties, double backprop) are those of the composite. The
    sparse kernels' backward is not itself differentiable."""
    need = [bool(v) for v in output_mask]
    return torch.ops.aten.convolution_backward(
        grad_output.masked_fill(~mask, 0), input, weight, [weight.shape[0]] if need[2] else None, list(stride), list(padding),
        list(dilation), False, [0, 0], 1, need)


def _backward(ctx, grad_output):
    input, weight, mask = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    need_bias = bool(need_bias and ctx.has_bias)
    if torch.is_grad_enabled():  # create_graph=True: the backward must itself be differentiable
        grad_input, grad_weight, grad_bias = differentiable_conv_backward(
            grad_output, input, weight, mask, *ctx.conv_args[:3], [need_input, need_weight, need_bias])
        return (grad_input, grad_weight, grad_bias, None, None, None, None, None)
    grad_input, grad_weight, grad_bias = torch.ops.sparsemask.masked_conv2d_backward(
        grad_output, input, weight, mask, *ctx.conv_args, [bool(need_input), bool(need_weight), need_bias])
    return (grad_input if need_input else None, grad_weight if need_weight else None,
            grad_bias if need_bias else None, None, None, None, None, None)


torch.library.register_autograd("sparsemask::masked_conv2d", _backward, setup_context=_setup_context)


# --------------------------------------------------------------------------------------
# The defective unit's epilogue, fused: act(mask * BN(x)).

def _fused_math_dtype(input: Tensor) -> Optional[torch.dtype]:
    """The dtype the fused CPU kernels (masked BN, defective unit/block) would run in for
    ``input``, or None where they do not apply. They hold BN statistics, so they compute in
    float32/float64; under CPU autocast a float16/bfloat16 activation is fine too (the
    ops' Autocast kernels run them in float32 and return the autocast dtype)."""
    if input.device.type != "cpu" or input.dim() != 4:
        return None
    if input.dtype in (torch.float32, torch.float64):
        return input.dtype
    if input.dtype in _LOW_PRECISION and autocast_dtype("cpu") is not None:
        return torch.float32
    return None


def _fused_bn_supported(input: Tensor) -> bool:
    return _fused_math_dtype(input) is not None


def masked_batch_norm_act(input: Tensor, mask: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                          running_mean: Optional[Tensor], running_var: Optional[Tensor], training: bool,
                          momentum: float = 0.1, eps: float = 1e-5, relu: bool = False) -> Tensor:
    """``act(mask * F.batch_norm(input, ...))`` in one pass after the statistics.

    Args:
        input: [N, C, H, W] (a defective conv's output: zero at the defective positions,
            which BN's batch statistics include, as documented in sparsemask.nn.defective).
        mask: bool [C, H, W]; weight, bias, running_mean, running_var: [C] or None.
        training: batch statistics (and running-statistics update with ``momentum``) if
            True, running statistics if False. relu: apply ReLU after the mask.

    Returns [N, C, H, W] in the input's dtype and memory format. On CPU float32/float64 —
    and bfloat16/float16 inside CPU autocast, computed in float32 — this runs the fused C++
    kernels (csrc/cpu/masked_batch_norm.cpp); elsewhere the same composite of
    ``F.batch_norm``, the mask and ReLU.
    """
    if mask.dtype != torch.bool or tuple(mask.shape) != tuple(input.shape[1:]):
        raise ValueError(f"masked_batch_norm_act: mask must be bool with shape {list(input.shape[1:])}, "
                         f"got {mask.dtype} {list(mask.shape)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("masked_batch_norm_act: running_mean and running_var are required when training=False")
    if not _fused_bn_supported(input):
        out = F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps) * mask
        return out.relu() if relu else out
    out, mean, invstd = torch.ops.sparsemask.masked_batch_norm_act(input, mask, weight, bias, running_mean,
                                                                   running_var, training, eps, relu)
    if training:
        _update_running_stats(running_mean, running_var, mean, invstd, eps, input.numel() // input.shape[1], momentum)
    return out


def _update_running_stats(running_mean: Optional[Tensor], running_var: Optional[Tensor], mean: Tensor,
                          invstd: Tensor, eps: float, count: int, momentum: float) -> None:
    """BatchNorm's running-statistics update from a kernel's batch mean and invstd [C]
    (``count`` values per channel; the running variance is the unbiased one)."""
    if running_mean is None or running_var is None:
        return
    with torch.no_grad():
        var = invstd.double().pow(-2) - eps
        running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
        running_var.mul_(1 - momentum).add_((var * (count / max(count - 1, 1))).to(running_var.dtype),
                                            alpha=momentum)


# Second order. The fused kernels' backward ops are not differentiable themselves; when
# autograd records the backward (create_graph=True, i.e. grad mode is on inside backward),
# the backward formulas below recompute the unit's composite (dense conv, F.batch_norm,
# mask) from the saved inputs and differentiate it with create_graph=True, so second-order
# gradients are exactly the composite's. First-order backward (the usual case) keeps the
# sparse kernels.

def _running_for_backward(training: bool, running_mean: Optional[Tensor], running_var: Optional[Tensor]) -> tuple:
    """The running statistics the composite needs in backward: none in training (batch
    statistics; the update already happened in forward), a copy in eval ([C], cheap), as
    the buffers may be written in place before backward."""
    if training or running_mean is None or running_var is None:
        return (None, None)
    return (running_mean.detach().clone(), running_var.detach().clone())


def _relu_grad(grad_out: Tensor, out: Tensor, relu: bool) -> Tensor:
    """The gradient before a final ReLU (from its saved output, as ReLU's own backward)."""
    return grad_out * (out > 0) if relu else grad_out


def _composite_grads(composite, grad: Tensor, inputs: list, need: list) -> list:
    """Gradients of ``composite()`` for ``grad`` w.r.t. ``inputs[i]`` where ``need[i]``,
    recorded for a further backward (None elsewhere)."""
    wanted = [t for t, n in zip(inputs, need) if n]
    with torch.enable_grad():
        got = iter(torch.autograd.grad(composite(), wanted, grad, create_graph=True, allow_unused=True)
                   if wanted else ())
    out = []
    for t, n in zip(inputs, need):
        g = next(got) if n else None
        out.append(torch.zeros_like(t) if n and g is None else g)
    return out


@torch.library.register_fake("sparsemask::masked_batch_norm_act")
def _masked_batch_norm_act_fake(input, mask, weight, bias, running_mean, running_var, training, eps, relu):
    c = input.shape[1]
    return (torch.empty_like(input, memory_format=suggest_memory_format(input)), input.new_empty((c,)),
            input.new_empty((c,)))


@torch.library.register_fake("sparsemask::masked_batch_norm_act_backward")
def _masked_batch_norm_act_backward_fake(grad_out, input, output, mask, weight, mean, invstd, training, relu,
                                         output_mask):
    c = input.shape[1]
    return (torch.empty_like(input, memory_format=suggest_memory_format(input)) if output_mask[0]
            else input.new_empty(0),
            input.new_empty((c,)) if output_mask[1] else input.new_empty(0),
            input.new_empty((c,)) if output_mask[2] else input.new_empty(0))


def _bn_setup_context(ctx, inputs, output):
    input, mask, weight, bias, running_mean, running_var, training, eps, relu = inputs
    out, mean, invstd = output
    ctx.mark_non_differentiable(mean, invstd)
    ctx.save_for_backward(input, out, mask, weight, mean, invstd, bias)
    ctx.flags = (training, relu, weight is not None, bias is not None)
    ctx.eps = eps
    ctx.running = _running_for_backward(training, running_mean, running_var)


def _bn_backward(ctx, grad_out, _grad_mean, _grad_invstd):
    input, output, mask, weight, mean, invstd, bias = ctx.saved_tensors
    training, relu, has_weight, has_bias = ctx.flags
    need = [bool(ctx.needs_input_grad[0]), bool(has_weight and ctx.needs_input_grad[2]),
            bool(has_bias and ctx.needs_input_grad[3])]
    if torch.is_grad_enabled():  # create_graph=True
        gi, gw, gb = _composite_grads(
            lambda: F.batch_norm(input, *ctx.running, weight, bias, training, 0.0, ctx.eps) * mask,
            _relu_grad(grad_out, output, relu), [input, weight, bias], need)
        return (gi, None, gw, gb, None, None, None, None, None)
    gi, gw, gb = torch.ops.sparsemask.masked_batch_norm_act_backward(
        grad_out, input, output, mask, weight, mean, invstd, training, relu, need)
    return (gi if need[0] else None, None, gw if need[1] else None, gb if need[2] else None,
            None, None, None, None, None)


torch.library.register_autograd("sparsemask::masked_batch_norm_act", _bn_backward, setup_context=_bn_setup_context)


# --------------------------------------------------------------------------------------
# The whole defective unit, fused: act(mask * BN(conv(x)) [+ residual]).

def _run_fused(input: Tensor, masks: list, name: str, keep: Optional[float] = None) -> bool:
    """Whether a fused defective-unit/block op runs (sparse), or its composite.

    ``cpu`` forces the fused ops on CPU float32/float64; ``auto`` runs them where the masks'
    kept fraction is at most :func:`sparsemask.backend.fused_max_density` — from ``keep``
    when the caller knows it (modules: no data-dependent branch under torch.compile), else
    counted from the masks (a cheap CPU reduction; a graph break under torch.compile, so
    compiled code should come through the modules).
    """
    if not _fused_bn_supported(input) or name not in ("auto", "cpu"):
        return False
    if name == "cpu":
        return True
    # The alternative to the fused op is the dense composite, which runs in conv_dtype(input):
    # under autocast that is bf16/fp16, not the float32 the fused kernels compute in.
    limit = fused_max_density("cpu", conv_dtype(input))
    if keep is not None:
        return keep <= limit
    return all(float(m.count_nonzero()) <= limit * m.numel() for m in masks)


def _dense_defective_unit(input, weight, mask, bn_weight, bn_bias, running_mean, running_var, stride, padding,
                          dilation, training, momentum, eps, relu, residual):
    """The published composite (the ``dense`` backend's reference)."""
    out = F.batch_norm(dense_masked_conv2d(input, weight, None, mask, stride, padding, dilation), running_mean,
                       running_var, bn_weight, bn_bias, training, momentum, eps) * mask
    if residual is not None:
        out = out + residual
    return out.relu() if relu else out


def defective_unit(input: Tensor, weight: Tensor, mask: Tensor, bn_weight: Optional[Tensor],
                   bn_bias: Optional[Tensor], running_mean: Optional[Tensor], running_var: Optional[Tensor], *,
                   stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1, training: bool = True,
                   momentum: float = 0.1, eps: float = 1e-5, relu: bool = True,
                   residual: Optional[Tensor] = None, keep: Optional[float] = None) -> Tensor:
    """The defective unit ``act(mask * BN(conv2d(input, weight)) [+ residual])`` as one op.

    Equals ``F.batch_norm(masked_conv2d(input, weight, None, mask, ...), running_mean,
    running_var, bn_weight, bn_bias, training, momentum, eps) * mask``, plus ``residual``,
    then ReLU if ``relu`` — values, gradients and the running-statistics update — but on CPU
    (float32/float64, or any activation dtype inside CPU autocast, where the unit computes
    in float32 and returns the autocast dtype; backends ``auto``/``cpu``) nothing between the convolution and the
    activation touches the defective neurons: the convolution writes the kept neurons into a
    buffer of nnz x N values, BN's statistics and backward run on that buffer, and one pass
    writes the output (csrc/cpu/defective_unit.cpp).

    Args:
        input: [N, C_in, H, W]; weight: [C_out, C_in, kh, kw] (no conv bias: BN cancels it).
        mask: bool [C_out, H_out, W_out].
        bn_weight, bn_bias, running_mean, running_var: [C_out] or None, as in F.batch_norm.
        training: batch statistics (and the running update with ``momentum``) if True.
        residual: [N, C_out, H_out, W_out] added before the activation, or None.
        keep: the mask's nominal kept fraction, if known: ``auto`` then decides from it
            (see ``_run_fused``) instead of counting the mask.

    Returns [N, C_out, H_out, W_out] in the input's memory format. Elsewhere (other devices,
    dtypes or backends) the same composite runs, with the backend's masked_conv2d.
    """
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    _validate(input, weight, None, mask, stride, padding, dilation, 1)
    if not training and (running_mean is None or running_var is None):
        raise ValueError("defective_unit: running_mean and running_var are required when training=False")
    name = get_backend()
    if name == "dense":
        return _dense_defective_unit(input, weight, mask, bn_weight, bn_bias, running_mean, running_var, stride,
                                     padding, dilation, training, momentum, eps, relu, residual)
    if not _run_fused(input, [mask], name, keep):  # the composite, on this backend's masked_conv2d
        out = masked_conv2d(input, weight, None, mask, stride, padding, dilation)
        out = masked_batch_norm_act(out, mask, bn_weight, bn_bias, running_mean, running_var, training, momentum, eps,
                                    relu=relu and residual is None)
        if residual is None:
            return out
        out = out + residual
        return out.relu() if relu else out
    out, _kept, mean, invstd = torch.ops.sparsemask.defective_unit(
        input, weight, mask, bn_weight, bn_bias, running_mean, running_var, residual, stride, padding, dilation,
        training, eps, relu, 1.0)
    if training:
        _update_running_stats(running_mean, running_var, mean, invstd, eps, out.numel() // out.shape[1], momentum)
    return out


@torch.library.register_fake("sparsemask::defective_unit")
def _defective_unit_fake(input, weight, mask, bn_weight, bn_bias, running_mean, running_var, residual, stride,
                         padding, dilation, training, eps, relu, max_density):
    ho, wo = conv_output_size(input.shape[2:], weight.shape[2:], stride, padding, dilation)
    out = torch.empty((input.shape[0], weight.shape[0], ho, wo), dtype=input.dtype, device=input.device,
                      memory_format=suggest_memory_format(input))
    # kept's row count is the mask's number of kept neurons: known only from its values.
    nnz = torch.library.get_ctx().new_dynamic_size()
    c = weight.shape[0]
    return out, input.new_empty((nnz, input.shape[0])), input.new_empty((c,)), input.new_empty((c,))


@torch.library.register_fake("sparsemask::defective_unit_backward")
def _defective_unit_backward_fake(grad_out, input, weight, mask, kept, out, bn_weight, mean, invstd, stride, padding,
                                  dilation, training, relu, max_density, output_mask):
    c = weight.shape[0]
    return (torch.empty_like(input, memory_format=suggest_memory_format(input)) if output_mask[0]
            else input.new_empty(0),
            torch.empty_like(weight, memory_format=torch.contiguous_format) if output_mask[1] else weight.new_empty(0),
            input.new_empty((c,)) if output_mask[2] else input.new_empty(0),
            input.new_empty((c,)) if output_mask[3] else input.new_empty(0),
            torch.empty_like(grad_out) if output_mask[4] else input.new_empty(0))


def _unit_setup_context(ctx, inputs, output):
    (input, weight, mask, bn_weight, _bn_bias, _rm, _rv, residual, stride, padding, dilation, training, _eps, relu,
     limit) = inputs
    out, kept, mean, invstd = output
    ctx.mark_non_differentiable(kept, mean, invstd)
    ctx.save_for_backward(input, weight, mask, kept, out, bn_weight, mean, invstd, _bn_bias)
    ctx.args = (stride, padding, dilation, training, relu, limit)
    ctx.eps = _eps
    ctx.running = _running_for_backward(training, _rm, _rv)
    ctx.has_bn = (bn_weight is not None, _bn_bias is not None, residual is not None)


def _unit_backward(ctx, grad_out, _g_kept, _g_mean, _g_invstd):
    input, weight, mask, kept, out, bn_weight, mean, invstd, bn_bias = ctx.saved_tensors
    stride, padding, dilation, training, relu, limit = ctx.args
    has_w, has_b, has_res = ctx.has_bn
    need = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]), bool(has_w and ctx.needs_input_grad[3]),
            bool(has_b and ctx.needs_input_grad[4]), bool(has_res and ctx.needs_input_grad[7])]
    if torch.is_grad_enabled():  # create_graph=True
        g = _relu_grad(grad_out, out, relu)
        gi, gw, gbw, gbb = _composite_grads(
            lambda: F.batch_norm(F.conv2d(input, weight, None, stride, padding, dilation) * mask, *ctx.running,
                                 bn_weight, bn_bias, training, 0.0, ctx.eps) * mask,
            g, [input, weight, bn_weight, bn_bias], need[:4])
        return (gi, gw, None, gbw, gbb, None, None, g if need[4] else None) + (None,) * 7
    gi, gw, gbw, gbb, gres = torch.ops.sparsemask.defective_unit_backward(
        grad_out, input, weight, mask, kept, out, bn_weight, mean, invstd, stride, padding, dilation, training, relu,
        limit, need)
    return (gi if need[0] else None, gw if need[1] else None, None, gbw if need[2] else None,
            gbb if need[3] else None, None, None, gres if need[4] else None) + (None,) * 7


torch.library.register_autograd("sparsemask::defective_unit", _unit_backward, setup_context=_unit_setup_context)


# --------------------------------------------------------------------------------------
# A basic block of two defective units, fused: conv2 reads unit 1's output at its kept
# neurons only (input sparsity).

def defective_block(input: Tensor, unit1: dict, unit2: dict, *, residual: Optional[Tensor] = None,
                    training: bool = True, keep: Optional[float] = None) -> Tensor:
    """``relu(unit2(relu(unit1(input))) + residual)`` of a ResNet basic block, as one op.

    Each ``unit`` is a dict with ``weight`` [C_out, C_in, kh, kw], ``mask`` bool [C_out,
    H_out, W_out], ``bn_weight``, ``bn_bias``, ``running_mean``, ``running_var`` ([C_out] or
    None), ``stride``, ``padding``, ``dilation``, ``momentum``, ``eps``; a unit is
    ``mask * BN(conv2d(x, weight))`` as in :func:`defective_unit`. Equal to
    ``defective_unit(defective_unit(input, *unit1, relu=True), *unit2, relu=True,
    residual=residual)`` — values, gradients, running statistics — but unit 1's output is
    only ever held at its kept neurons and conv2 reads it there, so conv2 costs (kept
    fraction 1) x (kept fraction 2) of a dense conv (csrc/cpu/defective_block.cpp).

    CPU float32/float64 (or inside CPU autocast, computed in float32, returning the autocast
    dtype) under the ``cpu`` backend, and under ``auto`` where the masks are
    sparse enough (``keep``: the larger nominal kept fraction, if known); elsewhere the two
    units run one after the other (:func:`defective_unit`, which has its own fallbacks).
    """
    def args(u):
        return (_pair(u.get("stride", 1), "stride"), _pair(u.get("padding", 0), "padding"),
                _pair(u.get("dilation", 1), "dilation"))

    s1, p1, d1 = args(unit1)
    s2, p2, d2 = args(unit2)
    _validate(input, unit1["weight"], None, unit1["mask"], s1, p1, d1, 1)
    if not _run_fused(input, [unit1["mask"], unit2["mask"]], get_backend(), keep):
        def unit(x, u, res):
            return defective_unit(x, u["weight"], u["mask"], u.get("bn_weight"), u.get("bn_bias"),
                                  u.get("running_mean"), u.get("running_var"), stride=u.get("stride", 1),
                                  padding=u.get("padding", 0), dilation=u.get("dilation", 1), training=training,
                                  momentum=u.get("momentum", 0.1), eps=u.get("eps", 1e-5), relu=True, residual=res)
        return unit(unit(input, unit1, None), unit2, residual)
    if not training:
        for u in (unit1, unit2):
            if u.get("running_mean") is None or u.get("running_var") is None:
                raise ValueError("defective_block: running_mean and running_var are required when training=False")
    out, kept1, _act1, kept2, mean1, invstd1, mean2, invstd2 = torch.ops.sparsemask.defective_block(
        input, unit1["weight"], unit1["mask"], unit1.get("bn_weight"), unit1.get("bn_bias"),
        unit1.get("running_mean"), unit1.get("running_var"), s1, p1, d1, unit1.get("eps", 1e-5),
        unit2["weight"], unit2["mask"], unit2.get("bn_weight"), unit2.get("bn_bias"),
        unit2.get("running_mean"), unit2.get("running_var"), s2, p2, d2, unit2.get("eps", 1e-5),
        residual, training, 1.0)
    if training:
        h1, w1 = unit1["mask"].shape[1:]
        _update_running_stats(unit1.get("running_mean"), unit1.get("running_var"), mean1, invstd1,
                              unit1.get("eps", 1e-5), input.shape[0] * h1 * w1, unit1.get("momentum", 0.1))
        _update_running_stats(unit2.get("running_mean"), unit2.get("running_var"), mean2, invstd2,
                              unit2.get("eps", 1e-5), out.numel() // out.shape[1], unit2.get("momentum", 0.1))
    return out


@torch.library.register_fake("sparsemask::defective_block")
def _defective_block_fake(input, w1, mask1, bn1_weight, bn1_bias, rm1, rv1, stride1, padding1, dilation1, eps1, w2,
                          mask2, bn2_weight, bn2_bias, rm2, rv2, stride2, padding2, dilation2, eps2, residual,
                          training, max_density):
    h1, wd1 = conv_output_size(input.shape[2:], w1.shape[2:], stride1, padding1, dilation1)
    h2, wd2 = conv_output_size((h1, wd1), w2.shape[2:], stride2, padding2, dilation2)
    out = torch.empty((input.shape[0], w2.shape[0], h2, wd2), dtype=input.dtype, device=input.device,
                      memory_format=suggest_memory_format(input))
    ctx = torch.library.get_ctx()
    nnz1, nnz2 = ctx.new_dynamic_size(), ctx.new_dynamic_size()   # the masks' kept counts
    n = input.shape[0]
    k1, k2 = w1.shape[0], w2.shape[0]
    return (out, input.new_empty((nnz1, n)), input.new_empty((nnz1, n)), input.new_empty((nnz2, n)),
            input.new_empty((k1,)), input.new_empty((k1,)), input.new_empty((k2,)), input.new_empty((k2,)))


@torch.library.register_fake("sparsemask::defective_block_backward")
def _defective_block_backward_fake(grad_out, input, w1, mask1, bn1_weight, mean1, invstd1, stride1, padding1,
                                   dilation1, w2, mask2, bn2_weight, mean2, invstd2, stride2, padding2, dilation2,
                                   kept1, act1, kept2, out, training, max_density, output_mask):
    k1, k2 = w1.shape[0], w2.shape[0]

    def vec(k, need):
        return input.new_empty((k,)) if need else input.new_empty(0)

    return (torch.empty_like(input, memory_format=suggest_memory_format(input)) if output_mask[0]
            else input.new_empty(0),
            torch.empty_like(w1, memory_format=torch.contiguous_format) if output_mask[1] else w1.new_empty(0),
            vec(k1, output_mask[2]), vec(k1, output_mask[3]),
            torch.empty_like(w2, memory_format=torch.contiguous_format) if output_mask[4] else w2.new_empty(0),
            vec(k2, output_mask[5]), vec(k2, output_mask[6]),
            torch.empty_like(grad_out) if output_mask[7] else input.new_empty(0))


def _block_setup_context(ctx, inputs, output):
    (input, w1, mask1, bn1_weight, bn1_bias, _rm1, _rv1, stride1, padding1, dilation1, _eps1, w2, mask2, bn2_weight,
     bn2_bias, _rm2, _rv2, stride2, padding2, dilation2, _eps2, residual, training, limit) = inputs
    out, kept1, act1, kept2, mean1, invstd1, mean2, invstd2 = output
    ctx.mark_non_differentiable(kept1, act1, kept2, mean1, invstd1, mean2, invstd2)
    ctx.save_for_backward(input, w1, mask1, bn1_weight, mean1, invstd1, w2, mask2, bn2_weight, mean2, invstd2,
                          kept1, act1, kept2, out, bn1_bias, bn2_bias)
    ctx.eps = (_eps1, _eps2)
    ctx.running = (_running_for_backward(training, _rm1, _rv1), _running_for_backward(training, _rm2, _rv2))
    ctx.args = (stride1, padding1, dilation1, stride2, padding2, dilation2, training, limit)
    ctx.present = (bn1_weight is not None, bn1_bias is not None, bn2_weight is not None, bn2_bias is not None,
                   residual is not None)


def _block_backward(ctx, grad_out, *_unused):
    (input, w1, mask1, bn1_weight, mean1, invstd1, w2, mask2, bn2_weight, mean2, invstd2, kept1, act1, kept2,
     out, bn1_bias, bn2_bias) = ctx.saved_tensors
    stride1, padding1, dilation1, stride2, padding2, dilation2, training, limit = ctx.args
    has_b1w, has_b1b, has_b2w, has_b2b, has_res = ctx.present
    ng = ctx.needs_input_grad
    need = [bool(ng[0]), bool(ng[1]), bool(has_b1w and ng[3]), bool(has_b1b and ng[4]), bool(ng[11]),
            bool(has_b2w and ng[13]), bool(has_b2b and ng[14]), bool(has_res and ng[21])]
    if torch.is_grad_enabled():  # create_graph=True
        (eps1, eps2), (run1, run2) = ctx.eps, ctx.running

        def composite():
            a1 = F.batch_norm(F.conv2d(input, w1, None, stride1, padding1, dilation1) * mask1, *run1, bn1_weight,
                              bn1_bias, training, 0.0, eps1) * mask1
            return F.batch_norm(F.conv2d(a1.relu(), w2, None, stride2, padding2, dilation2) * mask2, *run2,
                                bn2_weight, bn2_bias, training, 0.0, eps2) * mask2

        g = _relu_grad(grad_out, out, True)
        gi, gw1, gb1w, gb1b, gw2, gb2w, gb2b = _composite_grads(
            composite, g, [input, w1, bn1_weight, bn1_bias, w2, bn2_weight, bn2_bias], need[:7])
        return (gi, gw1, None, gb1w, gb1b, None, None, None, None, None, None, gw2, None, gb2w, gb2b, None, None,
                None, None, None, None, g if need[7] else None, None, None)
    g = torch.ops.sparsemask.defective_block_backward(
        grad_out, input, w1, mask1, bn1_weight, mean1, invstd1, stride1, padding1, dilation1, w2, mask2, bn2_weight,
        mean2, invstd2, stride2, padding2, dilation2, kept1, act1, kept2, out, training, limit, need)
    gi, gw1, gb1w, gb1b, gw2, gb2w, gb2b, gres = (t if n else None for t, n in zip(g, need))
    return (gi, gw1, None, gb1w, gb1b, None, None, None, None, None, None, gw2, None, gb2w, gb2b, None, None, None,
            None, None, None, gres, None, None)


torch.library.register_autograd("sparsemask::defective_block", _block_backward, setup_context=_block_setup_context)
