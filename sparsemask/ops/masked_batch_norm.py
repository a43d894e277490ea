"""``masked_batch_norm_act``: the defective unit's epilogue ``act(mask * BN(x))`` fused —
the public function, its fake kernels and autograd (kernels: csrc/cpu/masked_batch_norm.cpp)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch._prims_common import suggest_memory_format

from .. import dispatch
from .autograd import composite_grads, relu_grad, running_for_backward

__all__ = ["masked_batch_norm_act", "update_running_stats"]

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
    if not dispatch.fused_bn(input):
        out = F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps) * mask
        return out.relu() if relu else out
    out, mean, invstd = torch.ops.sparsemask.masked_batch_norm_act(input, mask, weight, bias, running_mean,
                                                                   running_var, training, eps, relu)
    if training:
        update_running_stats(running_mean, running_var, mean, invstd, eps, input.numel() // input.shape[1], momentum)
    return out


def update_running_stats(running_mean: Optional[Tensor], running_var: Optional[Tensor], mean: Tensor,
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
    # The output is needed only for the ReLU's gate. Saving it otherwise would make the usual
    # in-place ops that follow a BN in user models (torchvision's ReLU(inplace=True),
    # `out += identity`) fail the backward's version check, so it is saved only with relu.
    ctx.save_for_backward(input, out if relu else None, mask, weight, mean, invstd, bias)
    ctx.flags = (training, relu, weight is not None, bias is not None)
    ctx.eps = eps
    ctx.running = running_for_backward(training, running_mean, running_var)


def _bn_backward(ctx, grad_out, _grad_mean, _grad_invstd):
    input, output, mask, weight, mean, invstd, bias = ctx.saved_tensors
    training, relu, has_weight, has_bias = ctx.flags
    if output is None:  # not saved (relu=False); the kernel reads it only under relu but checks its shape
        output = input
    need = [bool(ctx.needs_input_grad[0]), bool(has_weight and ctx.needs_input_grad[2]),
            bool(has_bias and ctx.needs_input_grad[3])]
    if torch.is_grad_enabled():  # create_graph=True
        gi, gw, gb = composite_grads(
            lambda: F.batch_norm(input, *ctx.running, weight, bias, training, 0.0, ctx.eps) * mask,
            relu_grad(grad_out, output, relu), [input, weight, bias], need)
        return (gi, None, gw, gb, None, None, None, None, None)
    gi, gw, gb = torch.ops.sparsemask.masked_batch_norm_act_backward(
        grad_out, input, output, mask, weight, mean, invstd, training, relu, need)
    return (gi if need[0] else None, None, gw if need[1] else None, gb if need[2] else None,
            None, None, None, None, None)


torch.library.register_autograd("sparsemask::masked_batch_norm_act", _bn_backward, setup_context=_bn_setup_context)
