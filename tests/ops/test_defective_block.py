"""The fused basic block (two defective units, conv2 reading unit 1 at its kept neurons)
against the published composite, in float64."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sparsemask
from sparsemask.ops import defective_block

TAIL = [1, 1]


def _unit(c_in, c_out, size_out, keep, stride, g, dtype=torch.float64):
    return dict(weight=torch.randn(c_out, c_in, 3, 3, generator=g, dtype=dtype),
                mask=torch.rand(c_out, size_out, size_out, generator=g) < keep,
                bn_weight=torch.randn(c_out, generator=g, dtype=dtype),
                bn_bias=torch.randn(c_out, generator=g, dtype=dtype),
                running_mean=torch.randn(c_out, generator=g, dtype=dtype),
                running_var=torch.rand(c_out, generator=g, dtype=dtype) + 0.5, stride=stride, padding=1)


def _case(n=37, c=3, k=6, size=6, stride=1, layout=torch.channels_last, seed=0, keep1=0.4, keep2=0.5,
          dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    out = (size + 2 - 3) // stride + 1
    u1, u2 = _unit(c, k, out, keep1, stride, g, dtype), _unit(k, k, out, keep2, 1, g, dtype)
    x = torch.randn(n, c, size, size, generator=g, dtype=dtype).contiguous(memory_format=layout)
    res = torch.randn(n, k, out, out, generator=g, dtype=dtype)
    return x, u1, u2, res


def _composite(x, u1, u2, res, training):
    def unit(a, u, r):
        y = F.batch_norm(F.conv2d(a, u["weight"], None, u["stride"], 1) * u["mask"], u["running_mean"],
                         u["running_var"], u["bn_weight"], u["bn_bias"], training, 0.1, 1e-5) * u["mask"]
        return (y if r is None else y + r).relu()
    return unit(unit(x, u1, None), u2, res)


def _clone(u):
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in u.items()}


PARAMS = ("weight", "bn_weight", "bn_bias")


def _leaves(x, u1, u2, res):
    for t in [x, res] + [u[k] for u in (u1, u2) for k in PARAMS]:
        t.requires_grad_()
    return [x, res] + [u[k] for u in (u1, u2) for k in PARAMS]


# n=37 float64: 4-vector blocks, a 1-vector block and a scalar tail of the batch loops.
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("backend", ["cpu", "auto"])
def test_matches_composite(layout, stride, training, backend):
    x, u1, u2, res = _case(stride=stride, layout=layout)
    r1, r2 = _clone(u1), _clone(u2)
    xr, rr = x.clone(), res.clone()
    ours, ref = _leaves(x, u1, u2, res), _leaves(xr, r1, r2, rr)
    with sparsemask.backend(backend):
        y = defective_block(x, u1, u2, residual=res, training=training)
    y_ref = _composite(xr, r1, r2, rr, training)
    torch.testing.assert_close(y, y_ref)
    assert y.is_contiguous(memory_format=layout)
    grad = torch.randn_like(y_ref)
    for a, b in zip(torch.autograd.grad(y, ours, grad), torch.autograd.grad(y_ref, ref, grad)):
        torch.testing.assert_close(a, b)
    for u, r in ((u1, r1), (u2, r2)):
        torch.testing.assert_close(u["running_mean"], r["running_mean"])
        torch.testing.assert_close(u["running_var"], r["running_var"])


def test_dense_fallback_inside_the_op_agrees():
    x, u1, u2, res = _case(n=9)

    def run(limit):
        args = (x, u1["weight"], u1["mask"], u1["bn_weight"], u1["bn_bias"], None, None, TAIL, TAIL, TAIL, 1e-5,
                u2["weight"], u2["mask"], u2["bn_weight"], u2["bn_bias"], None, None, TAIL, TAIL, TAIL, 1e-5, res,
                True, limit)
        out = torch.ops.sparsemask.defective_block(*args)
        grads = torch.ops.sparsemask.defective_block_backward(
            torch.ones_like(out[0]), x, u1["weight"], u1["mask"], u1["bn_weight"], out[4], out[5], TAIL, TAIL, TAIL,
            u2["weight"], u2["mask"], u2["bn_weight"], out[6], out[7], TAIL, TAIL, TAIL, out[1], out[2], out[3],
            out[0], True, limit, [True] * 8)
        return out, grads

    (o1, g1), (o2, g2) = run(1.0), run(0.01)   # 0.01 < the masks' kept fraction: dense conv2
    for a, b in zip(o1 + g1, o2 + g2):
        torch.testing.assert_close(a, b)


def test_gradcheck():
    x, u1, u2, res = _case(n=3, c=2, k=3, size=4)

    def block(a, w1, b1, w2, b2, r):
        v1, v2 = dict(u1, weight=w1, bn_bias=b1), dict(u2, weight=w2, bn_bias=b2)
        v1["running_mean"], v1["running_var"] = u1["running_mean"].clone(), u1["running_var"].clone()
        v2["running_mean"], v2["running_var"] = u2["running_mean"].clone(), u2["running_var"].clone()
        with sparsemask.backend("cpu"):
            return defective_block(a, v1, v2, residual=r)

    leaves = tuple(t.clone().requires_grad_() for t in (x, u1["weight"], u1["bn_bias"], u2["weight"], u2["bn_bias"],
                                                         res))
    assert torch.autograd.gradcheck(block, leaves)


def test_opcheck():
    x, u1, u2, res = _case(n=4)
    args = (x.requires_grad_(), u1["weight"].requires_grad_(), u1["mask"], u1["bn_weight"], u1["bn_bias"],
            u1["running_mean"], u1["running_var"], TAIL, TAIL, TAIL, 1e-5, u2["weight"].requires_grad_(), u2["mask"],
            u2["bn_weight"], u2["bn_bias"], u2["running_mean"], u2["running_var"], TAIL, TAIL, TAIL, 1e-5,
            res.requires_grad_(), True, 1.0)
    torch.library.opcheck(torch.ops.sparsemask.defective_block.default, args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_float32_and_empty_masks():
    x, u1, u2, res = _case(n=20, dtype=torch.float32)
    u1["mask"] = torch.zeros_like(u1["mask"])         # unit 1 all defective: conv2 sees zeros
    ref = _composite(x.double(), {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
                                  for k, v in u1.items()},
                     {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in u2.items()},
                     res.double(), True)
    with sparsemask.backend("cpu"):
        y = defective_block(x, _clone(u1), _clone(u2), residual=res)
    torch.testing.assert_close(y.double(), ref, atol=1e-4, rtol=1e-4)


def test_errors():
    x, u1, u2, res = _case(n=4)
    op = torch.ops.sparsemask.defective_block
    base = dict(w2=u2["weight"], mask2=u2["mask"])

    def call(**over):
        a = dict(base, **over)
        return op(x, u1["weight"], u1["mask"], None, None, None, None, TAIL, TAIL, TAIL, 1e-5, a["w2"], a["mask2"],
                  None, None, None, None, TAIL, TAIL, TAIL, 1e-5, a.get("res"), True, 1.0)

    with pytest.raises(RuntimeError, match=r"w2 must be \[C_out2, C_out1 = 6"):
        call(w2=u2["weight"][:, :3])
    with pytest.raises(RuntimeError, match=r"mask2 must be bool \[C_out2, H_out2, W_out2\] = \[6, 6, 6\]"):
        call(mask2=u2["mask"][:, :2])
    with pytest.raises(RuntimeError, match="residual must have the output's shape"):
        call(res=res[:, :2])
    with pytest.raises(RuntimeError, match="float32 or float64"):
        op(x.half(), u1["weight"].half(), u1["mask"], None, None, None, None, TAIL, TAIL, TAIL, 1e-5,
           u2["weight"].half(), u2["mask"], None, None, None, None, TAIL, TAIL, TAIL, 1e-5, None, True, 1.0)
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        v = dict(u1, running_mean=None)
        with sparsemask.backend("cpu"):
            defective_block(x, v, u2, residual=res, training=False)
