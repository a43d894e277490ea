"""``defective_block``: a ResNet basic block of two defective units as one op; conv2 reads
unit 1's output at its kept neurons only (input sparsity). The public function, its fake
kernels and autograd (kernels: csrc/cpu/defective_block.cpp)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch._prims_common import suggest_memory_format

from .. import dispatch
from .autograd import composite_grads, relu_grad, running_for_backward
from .common import check_conv_args, conv_geometry, conv_output_size
from .defective_unit import defective_unit
from .masked_batch_norm import update_running_stats

__all__ = ["defective_block"]

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
        return conv_geometry(u.get("stride", 1), u.get("padding", 0), u.get("dilation", 1))

    s1, p1, d1 = args(unit1)
    s2, p2, d2 = args(unit2)
    check_conv_args(input, unit1["weight"], None, unit1["mask"], s1, p1, d1, 1)
    if not dispatch.fused_unit(input, [unit1["mask"], unit2["mask"]], keep):
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
        update_running_stats(unit1.get("running_mean"), unit1.get("running_var"), mean1, invstd1,
                              unit1.get("eps", 1e-5), input.shape[0] * h1 * w1, unit1.get("momentum", 0.1))
        update_running_stats(unit2.get("running_mean"), unit2.get("running_var"), mean2, invstd2,
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
    ctx.running = (running_for_backward(training, _rm1, _rv1), running_for_backward(training, _rm2, _rv2))
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

        g = relu_grad(grad_out, out, True)
        gi, gw1, gb1w, gb1b, gw2, gb2w, gb2b = composite_grads(
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
