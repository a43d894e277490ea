"""Second-order gradients (create_graph=True) through the sparse ops, the fused units and
whole defective models: equal to those of the dense composite ``conv2d * mask`` (issue 15,
item 1). Before the fix they were silently zero on CPU and an error on Triton."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sparsemask
from sparsemask.ops import defective_block, defective_unit


def _case(seed=0, n=2, c_in=3, c_out=5, h=7, w=6, k=3, stride=1, padding=1, dilation=1, keep=0.5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, h, w, dtype=torch.float64, generator=g, requires_grad=True)
    wt = torch.randn(c_out, c_in, k, k, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, generator=g, requires_grad=True)
    ho = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    mask = torch.rand(c_out, ho, wo, generator=g) < keep
    return x, wt, b, mask


@pytest.mark.parametrize("backend", ["cpu"])  # triton: interpreted, too slow for gradgradcheck; see below
@pytest.mark.parametrize("conv", [dict(stride=1, padding=1, dilation=1), dict(stride=2, padding=0, dilation=1),
                                  dict(stride=1, padding=2, dilation=2)])
def test_masked_conv2d_gradgradcheck(backend, conv):
    x, wt, b, mask = _case(**conv)
    with sparsemask.backend(backend):
        assert torch.autograd.gradgradcheck(
            lambda x, w, b: sparsemask.masked_conv2d(x, w, b, mask, conv["stride"], conv["padding"], conv["dilation"]),
            (x, wt, b))


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_input_gradient_penalty_matches_dense(backend):
    x, wt, b, mask = _case(seed=1, n=1, c_in=4, c_out=3, h=9, w=5, keep=0.3)

    def penalty(bk):
        with sparsemask.backend(bk):
            y = sparsemask.masked_conv2d(x, wt, b, mask, 1, 1, 1)
            (gx,) = torch.autograd.grad((y.tanh() ** 2).sum(), x, create_graph=True)
            return torch.autograd.grad(gx.pow(2).sum(), (x, wt, b))

    got, want = penalty(backend), penalty("dense")
    assert all(t.abs().sum() > 0 for t in want)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("residual", [False, True])
def test_defective_unit_double_backward(training, residual):
    x, wt, _b, mask = _case(seed=2, c_out=4, keep=0.4)
    g = torch.Generator().manual_seed(3)
    bw = torch.rand(4, dtype=torch.float64, generator=g).add(0.5).requires_grad_()
    bb = torch.randn(4, dtype=torch.float64, generator=g).requires_grad_()
    res = torch.randn(2, 4, 7, 6, dtype=torch.float64, generator=g).requires_grad_() if residual else None

    def second(bk):
        g4 = torch.Generator().manual_seed(4)
        rm, rv = torch.randn(4, dtype=torch.float64, generator=g4), torch.rand(4, dtype=torch.float64, generator=g4) + 0.5
        with sparsemask.backend(bk):
            y = defective_unit(x, wt, mask, bw, bb, rm, rv, stride=1, padding=1, training=training, relu=True,
                               residual=res)
            inputs = (x, wt, bw, bb) + ((res,) if residual else ())
            gs = torch.autograd.grad((y.sin()).sum(), inputs, create_graph=True)
            return torch.autograd.grad(sum(t.pow(2).sum() for t in gs), inputs)

    got, want = second("cpu"), second("dense")
    for a, r in zip(got, want):
        torch.testing.assert_close(a, r, atol=1e-9, rtol=1e-9)
    assert want[0].abs().sum() > 0


def test_defective_block_double_backward():
    torch.manual_seed(5)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)

    def unit(c_in, c_out, seed):
        g = torch.Generator().manual_seed(seed)
        return dict(weight=torch.randn(c_out, c_in, 3, 3, dtype=torch.float64, generator=g).requires_grad_(),
                    mask=torch.rand(c_out, 6, 5, generator=g) < 0.6,
                    bn_weight=(torch.rand(c_out, dtype=torch.float64, generator=g) + 0.5).requires_grad_(),
                    bn_bias=torch.randn(c_out, dtype=torch.float64, generator=g).requires_grad_(),
                    running_mean=torch.zeros(c_out, dtype=torch.float64),
                    running_var=torch.ones(c_out, dtype=torch.float64), stride=1, padding=1)

    u1, u2 = unit(3, 4, 6), unit(4, 3, 7)
    res = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    params = [x, u1["weight"], u1["bn_weight"], u1["bn_bias"], u2["weight"], u2["bn_weight"], u2["bn_bias"], res]

    def second(bk):
        with sparsemask.backend(bk):
            y = defective_block(x, u1, u2, residual=res, training=True)
            gs = torch.autograd.grad(y.sin().sum(), params, create_graph=True)
            return torch.autograd.grad(sum(t.pow(2).sum() for t in gs), params)

    got, want = second("cpu"), second("dense")
    for a, r in zip(got, want):
        torch.testing.assert_close(a, r, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("bk", ["cpu"])
@pytest.mark.parametrize("arch", ["resnet18", "lenet5"])
def test_defective_model_input_gradient_penalty_matches_dense(arch, bk):
    torch.manual_seed(8)
    size = 16 if arch == "resnet18" else 32
    model = getattr(sparsemask.models, arch)(num_classes=3, in_channels=2, input_size=size,
                                             defective=dict(keep=0.3, seed=1)).double()
    x = torch.rand(2, 2, size, size, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([2, 0])

    def grads(b):
        model.zero_grad()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        with sparsemask.backend(b):
            loss = F.cross_entropy(model(x), y)
            (gx,) = torch.autograd.grad(loss, x, create_graph=True)
            (loss + gx.pow(2).sum() * 10).backward()
        model.load_state_dict(state)   # the same running statistics for both backends
        return [p.grad.clone() for p in model.parameters()]

    got, want = grads(bk), grads("dense")
    # The penalty's second-order part must be there (not silently zero) and equal dense's.
    for a, r in zip(got, want):
        torch.testing.assert_close(a, r, atol=1e-8, rtol=1e-6)
