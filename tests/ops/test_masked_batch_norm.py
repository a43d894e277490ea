"""The fused defective-unit epilogue act(mask * BN(x)) against the composite it replaces."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sparsemask.ops import masked_batch_norm_act


def _case(layout, seed=0, shape=(4, 6, 5, 7)):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape[1:], generator=g) < 0.4
    x = torch.randn(shape, generator=g, dtype=torch.float64) * mask   # a sparse conv's output
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(shape[1], generator=g, dtype=torch.float64)
    b = torch.randn(shape[1], generator=g, dtype=torch.float64)
    rm = torch.randn(shape[1], generator=g, dtype=torch.float64)
    rv = torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5
    return x, mask, w, b, rm, rv


def _composite(x, mask, w, b, rm, rv, training, relu):
    out = F.batch_norm(x, rm, rv, w, b, training, 0.1, 1e-5) * mask
    return out.relu() if relu else out


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_matches_composite_forward_backward_and_running_stats(layout, relu, training):
    x, mask, w, b, rm, rv = _case(layout)
    ours = [t.clone().requires_grad_() for t in (x, w, b)]
    ref = [t.clone().requires_grad_() for t in (x, w, b)]
    rm1, rv1, rm2, rv2 = rm.clone(), rv.clone(), rm.clone(), rv.clone()
    y = masked_batch_norm_act(ours[0], mask, ours[1], ours[2], rm1, rv1, training, 0.1, 1e-5, relu)
    y_ref = _composite(ref[0], mask, ref[1], ref[2], rm2, rv2, training, relu)
    torch.testing.assert_close(y, y_ref)
    assert y.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    assert (y[:, ~mask] == 0).all()
    grad = torch.randn_like(y_ref)
    y.backward(grad)
    y_ref.backward(grad)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a.grad, r.grad)
    torch.testing.assert_close(rm1, rm2)
    torch.testing.assert_close(rv1, rv2)


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(training):
    x, mask, w, b, rm, rv = _case("contiguous", shape=(2, 3, 4, 3))
    inputs = tuple(t.clone().requires_grad_() for t in (x, w, b))
    assert torch.autograd.gradcheck(
        lambda a, c, d: masked_batch_norm_act(a, mask, c, d, rm.clone(), rv.clone(), training, 0.1, 1e-5, True),
        inputs)


def test_opcheck_and_compile():
    x, mask, w, b, rm, rv = _case("channels_last")
    torch.library.opcheck(torch.ops.sparsemask.masked_batch_norm_act.default,
                          (x.requires_grad_(), mask, w.requires_grad_(), b, rm, rv, True, 1e-5, True))
    torch.library.opcheck(torch.ops.sparsemask.masked_batch_norm_act.default,
                          (x, mask, w, b, rm, rv, False, 1e-5, False))
    f = torch.compile(lambda a: masked_batch_norm_act(a, mask, w, b, None, None, True, relu=True).sum(),
                      fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(f(x.detach()), _composite(x.detach(), mask, w, b, None, None, True, True).sum())


def test_without_affine_and_other_devices_fall_back():
    x, mask, *_ = _case("contiguous")
    y = masked_batch_norm_act(x.float(), mask, None, None, None, None, True)
    torch.testing.assert_close(y, _composite(x.float(), mask, None, None, None, None, True, False))
    y16 = masked_batch_norm_act(x.bfloat16(), mask, None, None, None, None, True, relu=True)   # composite path
    assert y16.dtype == torch.bfloat16 and (y16[:, ~mask] == 0).all()


def test_errors():
    x, mask, w, b, rm, rv = _case("contiguous")
    with pytest.raises(ValueError, match=r"mask must be bool with shape \[6, 5, 7\]"):
        masked_batch_norm_act(x, mask[:, :2], w, b, rm, rv, True)
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        masked_batch_norm_act(x, mask, w, b, None, None, False)
    with pytest.raises(RuntimeError, match=r"weight must have shape \[C\] = \[6\]"):
        torch.ops.sparsemask.masked_batch_norm_act(x, mask, w[:2], b, rm, rv, True, 1e-5, False)
