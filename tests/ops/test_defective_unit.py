"""The fused defective unit act(mask * BN(conv(x)) [+ residual]) against the published composite."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sparsemask
from sparsemask.ops import defective_unit


def _case(layout="contiguous", seed=0, n=3, c_in=4, c_out=5, size=7, keep=0.4, stride=1, residual=False,
          dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, size, size, generator=g, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(c_out, c_in, 3, 3, generator=g, dtype=dtype)
    out_size = (size + 2 - 3) // stride + 1
    mask = torch.rand(c_out, out_size, out_size, generator=g) < keep
    bw = torch.randn(c_out, generator=g, dtype=dtype)
    bb = torch.randn(c_out, generator=g, dtype=dtype)
    rm = torch.randn(c_out, generator=g, dtype=dtype)
    rv = torch.rand(c_out, generator=g, dtype=dtype) + 0.5
    res = torch.randn(n, c_out, out_size, out_size, generator=g, dtype=dtype) if residual else None
    return x, w, mask, bw, bb, rm, rv, res


def _composite(x, w, mask, bw, bb, rm, rv, res, stride, training, relu):
    """What the seeds' code runs: dense conv, mask, BN, mask, (+ residual), ReLU."""
    out = F.batch_norm(F.conv2d(x, w, None, stride, 1) * mask, rm, rv, bw, bb, training, 0.1, 1e-5) * mask
    if res is not None:
        out = out + res
    return out.relu() if relu else out


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("relu,residual", [(True, False), (False, False), (True, True), (False, True)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("backend,stride", [("cpu", 1), ("cpu", 2), ("auto", 1)])
def test_matches_composite_float64(layout, relu, residual, training, backend, stride):
    x, w, mask, bw, bb, rm, rv, res = _case(layout, stride=stride, residual=residual)
    leaves = [x, w, bw, bb] + ([res] if residual else [])
    ours = [t.clone().requires_grad_() for t in leaves]
    ref = [t.clone().requires_grad_() for t in leaves]
    rm1, rv1, rm2, rv2 = rm.clone(), rv.clone(), rm.clone(), rv.clone()
    with sparsemask.backend(backend):
        y = defective_unit(ours[0], ours[1], mask, ours[2], ours[3], rm1, rv1, stride=stride, padding=1,
                           training=training, relu=relu, residual=ours[4] if residual else None)
    y_ref = _composite(ref[0], ref[1], mask, ref[2], ref[3], rm2, rv2, ref[4] if residual else None, stride,
                       training, relu)
    torch.testing.assert_close(y, y_ref)
    assert y.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    if not residual:
        assert (y[:, ~mask] == 0).all()
    grad = torch.randn_like(y_ref)
    y.backward(grad)
    y_ref.backward(grad)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a.grad, r.grad)
    torch.testing.assert_close(rm1, rm2)
    torch.testing.assert_close(rv1, rv2)


@pytest.mark.parametrize("max_density", [1.0, 0.05])
def test_raw_op_sparse_and_dense_conv_paths_agree(max_density):
    # max_density below the mask's kept fraction: the dense conv + gather path.
    x, w, mask, bw, bb, rm, rv, res = _case("channels_last", residual=True)
    args = (x, w, mask, bw, bb, rm, rv, res, [1, 1], [1, 1], [1, 1], True, 1e-5, True)
    out, kept, mean, invstd = torch.ops.sparsemask.defective_unit(*args, max_density)
    ref = _composite(x, w, mask, bw, bb, None, None, res, 1, True, True)
    torch.testing.assert_close(out, ref)
    conv = F.conv2d(x, w, None, 1, 1)
    assert kept.shape == (int(mask.sum()), x.shape[0])
    # kept rows are the kept neurons in (position, channel) order, columns the batch.
    pos_count, pos_ch, pos_start = torch.ops.sparsemask.mask_plan(mask)
    q, j = 3, 0
    while pos_count[q] == 0:
        q += 1
    ch = int(pos_ch[q, j])
    torch.testing.assert_close(kept[int(pos_start[q]) + j], conv[:, ch, q // mask.shape[2], q % mask.shape[2]])
    torch.testing.assert_close(mean, (conv * mask).mean((0, 2, 3)))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("residual", [False, True])
def test_gradcheck(training, residual):
    x, w, mask, bw, bb, rm, rv, res = _case(n=2, c_in=2, c_out=3, size=4, residual=residual)
    leaves = tuple(t.clone().requires_grad_() for t in (x, w, bw, bb) + ((res,) if residual else ()))

    def unit(a, b, c, d, *r):
        with sparsemask.backend("cpu"):
            return defective_unit(a, b, mask, c, d, rm.clone(), rv.clone(), padding=1, training=training,
                                  residual=r[0] if r else None)

    assert torch.autograd.gradcheck(unit, leaves)


def test_empty_mask_and_no_affine():
    x, w, mask, *_ = _case()
    none = torch.zeros_like(mask)
    with sparsemask.backend("cpu"):
        y = defective_unit(x.requires_grad_(), w.requires_grad_(), none, None, None, None, None, padding=1)
    assert (y == 0).all()
    y.sum().backward()
    assert (x.grad == 0).all() and (w.grad == 0).all()
    with sparsemask.backend("cpu"):
        y = defective_unit(x.detach(), w.detach(), mask, None, None, None, None, padding=1, relu=False)
    torch.testing.assert_close(y, _composite(x.detach(), w.detach(), mask, None, None, None, None, None, 1, True,
                                             False))


def test_opcheck_and_compile():
    x, w, mask, bw, bb, rm, rv, res = _case("channels_last", residual=True)
    for training in (True, False):
        torch.library.opcheck(torch.ops.sparsemask.defective_unit.default,
                              (x.clone().requires_grad_(), w.clone().requires_grad_(), mask, bw.clone().requires_grad_(),
                               bb, rm, rv, res.clone().requires_grad_(), [1, 1], [1, 1], [1, 1], training, 1e-5, True,
                               1.0),
                              test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))

    def loss(a, weight):
        with sparsemask.backend("cpu"):
            return defective_unit(a, weight, mask, bw, bb, None, None, padding=1, residual=res).sum()

    f = torch.compile(loss, fullgraph=True, backend="aot_eager")
    a, weight = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = f(a, weight)
    out.backward()
    ra, rw = x.clone().requires_grad_(), w.clone().requires_grad_()
    ref = _composite(ra, rw, mask, bw, bb, None, None, res, 1, True, True).sum()
    ref.backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(a.grad, ra.grad)
    torch.testing.assert_close(weight.grad, rw.grad)


def test_other_dtypes_and_backends_fall_back_to_the_composite():
    x, w, mask, bw, bb, rm, rv, res = _case(dtype=torch.float32)
    ref = _composite(x.double(), w.double(), mask, bw.double(), bb.double(), None, None, None, 1, True, True)
    with sparsemask.backend("dense"):
        y = defective_unit(x, w, mask, bw, bb, None, None, padding=1)
    torch.testing.assert_close(y.double(), ref, atol=1e-4, rtol=1e-4)
    y16 = defective_unit(x.bfloat16(), w.bfloat16(), mask, bw.bfloat16(), bb.bfloat16(), None, None, padding=1)
    assert y16.dtype == torch.bfloat16 and (y16[:, ~mask] == 0).all()


def test_errors():
    x, w, mask, bw, bb, rm, rv, res = _case()
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        defective_unit(x, w, mask, bw, bb, None, None, padding=1, training=False)
    with pytest.raises(ValueError, match="mask"):
        defective_unit(x, w, mask[:, :3], bw, bb, rm, rv, padding=1)
    op = torch.ops.sparsemask.defective_unit
    tail = ([1, 1], [1, 1], [1, 1], True, 1e-5, True, 1.0)
    with pytest.raises(RuntimeError, match=r"bn_weight must have shape \[C_out\] = \[5\]"):
        op(x, w, mask, bw[:2], bb, rm, rv, None, *tail)
    with pytest.raises(RuntimeError, match=r"residual must have the output's shape \[3, 5, 7, 7\]"):
        op(x, w, mask, bw, bb, rm, rv, res if res is not None else x[:, :2], *tail)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        op(x.half(), w.half(), mask, bw, bb, rm, rv, None, *tail)
    with pytest.raises(RuntimeError, match="more than 1 value per channel"):
        op(x[:1, :, :1, :1], w, mask[:, :1, :1], bw, bb, rm, rv, None, [1, 1], [1, 1], [1, 1], True, 1e-5, True,
           1.0)
    out, kept, mean, invstd = op(x, w, mask, bw, bb, rm, rv, None, *tail)
    with pytest.raises(RuntimeError, match="kept must be the forward's contiguous"):
        torch.ops.sparsemask.defective_unit_backward(out, x, w, mask, kept[:-1], out, bw, mean, invstd, [1, 1],
                                                     [1, 1], [1, 1], True, True, 1.0, [True] * 5)
