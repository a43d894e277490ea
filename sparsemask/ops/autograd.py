"""Autograd glue shared by the ops: the masked convolution's formula for the Triton op (the
C++/CUDA op's is the same formula in C++: csrc/autograd/masked_conv2d.cpp) and the
second-order rule of the fused ops.

Second order. The kernels' backward ops are not differentiable themselves; when autograd
records the backward (``create_graph=True``, i.e. grad mode is on inside backward), the
formulas here recompute the op's composite (dense conv, ``F.batch_norm``, mask) from the
saved inputs and differentiate it with ``create_graph=True``, so second-order gradients are
exactly the composite's. First-order backward (the usual case) keeps the sparse kernels.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor


def differentiable_conv_backward(grad_output: Tensor, input: Tensor, weight: Tensor, mask: Tensor,
                                 stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                                 output_mask: Sequence[bool]) -> tuple:
    """(grad_input, grad_weight, grad_bias) of ``conv2d(input, weight, bias) * mask`` for
    ``grad_output``, in differentiable ATen ops (dense cost): the backward that runs when
    autograd records the backward itself (``create_graph=True``), so that second-order
    gradients (input-gradient penalties, double backprop) are those of the composite."""
    need = [bool(v) for v in output_mask]
    return torch.ops.aten.convolution_backward(
        grad_output.masked_fill(~mask, 0), input, weight, [weight.shape[0]] if need[2] else None, list(stride), list(padding),
        list(dilation), False, [0, 0], 1, need)


def _save_conv_context(ctx, inputs: Sequence) -> None:
    """What the masked convolution's backward needs from its inputs ``(input, weight, bias,
    mask, stride, padding, dilation, *extra)``."""
    input, weight, bias, mask, stride, padding, dilation, *extra = inputs
    ctx.save_for_backward(input, weight, mask)
    ctx.conv_args = (stride, padding, dilation)
    ctx.extra = tuple(extra)
    ctx.has_bias = bias is not None


def _conv_backward(ctx, grad_output: Tensor, backward_op: Callable) -> tuple:
    """The gradients for the inputs saved by :func:`_save_conv_context`: ``backward_op``'s
    sparse kernels, or the differentiable dense formula under ``create_graph=True``."""
    input, weight, mask = ctx.saved_tensors
    need = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]),
            bool(ctx.needs_input_grad[2] and ctx.has_bias)]
    if torch.is_grad_enabled():  # create_graph=True: the backward must itself be differentiable
        grads = differentiable_conv_backward(grad_output, input, weight, mask, *ctx.conv_args, need)
    else:
        grads = backward_op(grad_output, input, weight, mask, *ctx.conv_args, *ctx.extra, need)
    return tuple(g if n else None for g, n in zip(grads, need)) + (None,) * (4 + len(ctx.extra))


def register_masked_conv_autograd(op, backward_op: Callable) -> None:
    """Register the gradient of a masked-convolution op ``op`` (a name or an op object)
    whose arguments are ``(input, weight, bias, mask, stride, padding, dilation, *extra)``.

    ``backward_op(grad_output, input, weight, mask, stride, padding, dilation, *extra,
    output_mask)`` returns (grad_input, grad_weight, grad_bias), each an empty tensor where
    ``output_mask`` says not needed. Under ``create_graph=True`` the dense differentiable
    formula runs instead (:func:`differentiable_conv_backward`).
    """
    def setup_context(ctx, inputs, output):
        _save_conv_context(ctx, inputs)

    def backward(ctx, grad_output):
        return _conv_backward(ctx, grad_output, backward_op)

    torch.library.register_autograd(op, backward, setup_context=setup_context)


def running_for_backward(training: bool, running_mean: Optional[Tensor], running_var: Optional[Tensor]) -> tuple:
    """The running statistics a BN composite needs in backward: none in training (batch
    statistics; the update already happened in forward), a copy in eval ([C], cheap), as
    the buffers may be written in place before backward."""
    if training or running_mean is None or running_var is None:
        return (None, None)
    return (running_mean.detach().clone(), running_var.detach().clone())


def relu_grad(grad_out: Tensor, out: Tensor, relu: bool) -> Tensor:
    """The gradient before a final ReLU (from its saved output, as ReLU's own backward)."""
    return grad_out * (out > 0) if relu else grad_out


def composite_grads(composite: Callable[[], Tensor], grad: Tensor, inputs: list, need: list) -> list:
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
