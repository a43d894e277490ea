"""``defective_unit``: the whole defective unit ``act(mask * BN(conv(x)) [+ residual])`` as
one op — the public function, its fake kernels and autograd (kernels: csrc/cpu/defective_unit.cpp)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch._prims_common import suggest_memory_format

from .. import dispatch
from .autograd import composite_grads, relu_grad, running_for_backward
from .common import IntPair, check_conv_args, conv_geometry, conv_output_size
from .masked_batch_norm import masked_batch_norm_act, update_running_stats
from .masked_conv2d import dense_masked_conv2d, masked_conv2d

__all__ = ["defective_unit"]

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
            (see :func:`sparsemask.dispatch.fused_unit`) instead of counting the mask.

    Returns [N, C_out, H_out, W_out] in the input's memory format. Elsewhere (other devices,
    dtypes or backends) the same composite runs, with the backend's masked_conv2d.
    """
    stride, padding, dilation = conv_geometry(stride, padding, dilation)
    check_conv_args(input, weight, None, mask, stride, padding, dilation, 1)
    if not training and (running_mean is None or running_var is None):
        raise ValueError("defective_unit: running_mean and running_var are required when training=False")
    if dispatch.get_backend() == "dense":
        return _dense_defective_unit(input, weight, mask, bn_weight, bn_bias, running_mean, running_var, stride,
                                     padding, dilation, training, momentum, eps, relu, residual)
    if not dispatch.fused_unit(input, [mask], keep):  # the composite, on this backend's masked_conv2d
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
        update_running_stats(running_mean, running_var, mean, invstd, eps, out.numel() // out.shape[1], momentum)
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
    # `out` is read by the backward only for the ReLU's gate (csrc/cpu/unit_kernels.h
    # gated_kept_grad); without relu it is not saved, so in-place ops on the result are allowed.
    ctx.save_for_backward(input, weight, mask, kept, out if relu else None, bn_weight, mean, invstd, _bn_bias)
    ctx.args = (stride, padding, dilation, training, relu, limit)
    ctx.eps = _eps
    ctx.running = running_for_backward(training, _rm, _rv)
    ctx.has_bn = (bn_weight is not None, _bn_bias is not None, residual is not None)


def _unit_backward(ctx, grad_out, _g_kept, _g_mean, _g_invstd):
    input, weight, mask, kept, out, bn_weight, mean, invstd, bn_bias = ctx.saved_tensors
    stride, padding, dilation, training, relu, limit = ctx.args
    if out is None:  # not saved (relu=False): the kernel checks its shape only
        out = grad_out
    has_w, has_b, has_res = ctx.has_bn
    need = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]), bool(has_w and ctx.needs_input_grad[3]),
            bool(has_b and ctx.needs_input_grad[4]), bool(has_res and ctx.needs_input_grad[7])]
    if torch.is_grad_enabled():  # create_graph=True
        g = relu_grad(grad_out, out, relu)
        gi, gw, gbw, gbb = composite_grads(
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
