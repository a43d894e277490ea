"""The sparsemask ops inside torch.autocast (CPU): the Autocast kernels of csrc/autocast/ and
of the Triton op cast and redispatch; mixed dtypes from autocast are accepted, the same
mix outside autocast is still a clear error; the fused ops stay fused.

Accuracy rule (flash-attention's, DESIGN.md): our error against a float64 reference is at
most 2x the error of the same computation done by PyTorch's own ops under the same
autocast (``F.conv2d``/``F.batch_norm`` composite), plus one unit of rounding.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import sparsemask
from sparsemask import models
from sparsemask.ops import defective_block, defective_unit, masked_batch_norm_act

DTYPES = [torch.bfloat16, torch.float16]


class OpLog(TorchDispatchMode):
    """Records the names of the ops that reach the kernels (below autocast and autograd)."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def _err(a, ref):
    return float((a.double() - ref).abs().max())


def _assert_rule(ours, pytorch, ref64, dtype, what):
    eps = torch.finfo(dtype).eps * float(ref64.abs().max().clamp_min(1))
    assert _err(ours, ref64) <= 2 * _err(pytorch, ref64) + eps, \
        f"{what}: error {_err(ours, ref64):.3g} vs PyTorch's {_err(pytorch, ref64):.3g}"


def _conv_case(seed=0, n=3, c_in=5, c_out=7, size=9, keep=0.4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, size, size, generator=g)
    w = torch.randn(c_out, c_in, 3, 3, generator=g) * 0.3
    b = torch.randn(c_out, generator=g)
    mask = torch.rand(c_out, size, size, generator=g) < keep
    return x, w, b, mask


@pytest.mark.parametrize("backend", ["cpu", "auto", "triton", "dense"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_conv2d_runs_in_the_autocast_dtype(backend, dtype):
    if backend == "triton" and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter's numpy has no bfloat16 dot (checked on the GPU)")
    x, w, b, mask = _conv_case()
    ours = [t.clone().requires_grad_() for t in (x, w, b)]
    with sparsemask.backend(backend), torch.autocast("cpu", dtype=dtype):
        y = sparsemask.masked_conv2d(ours[0], ours[1], ours[2], mask, padding=1)
        pt = F.conv2d(x, w, b, padding=1) * mask
    assert y.dtype == dtype and pt.dtype == dtype
    ref = [t.double().requires_grad_() for t in (x, w, b)]
    y64 = F.conv2d(ref[0], ref[1], ref[2], padding=1) * mask
    _assert_rule(y, pt, y64.detach(), dtype, "forward")
    assert (y[:, ~mask] == 0).all()
    grad = torch.randn_like(y64)
    y.backward(grad.to(dtype))
    y64.backward(grad)
    for a, r in zip(ours, ref):
        assert a.grad.dtype == torch.float32  # gradients of float32 leaves come back float32
        assert float((a.grad.double() - r.grad).abs().max()) <= 0.05 * float(r.grad.abs().max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_low_precision_activation_meets_float32_weight(dtype):
    x, w, b, mask = _conv_case(seed=1)
    with torch.autocast("cpu", dtype=dtype):
        y = sparsemask.masked_conv2d(x.to(dtype), w, b, mask, padding=1)
    assert y.dtype == dtype
    # Outside autocast the same mix is a user mistake and says which argument is wrong.
    with pytest.raises(TypeError, match="weight dtype torch.float32 must equal input dtype"):
        sparsemask.masked_conv2d(x.to(dtype), w, b, mask, padding=1)
    with pytest.raises(TypeError, match="bias dtype torch.float32 must equal input dtype"):
        sparsemask.masked_conv2d(x.to(dtype), w.to(dtype), b, mask, padding=1)


def test_backward_op_follows_the_input_dtype_under_autocast():
    x, w, _, mask = _conv_case(seed=2)
    go = torch.randn(3, 7, 9, 9, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gi, gw, gb = torch.ops.sparsemask.masked_conv2d_backward(go, x, w, mask, [1, 1], [1, 1], [1, 1], 1.0,
                                                                 [True, True, True])
    ref = torch.ops.sparsemask.masked_conv2d_backward(go.float(), x, w, mask, [1, 1], [1, 1], [1, 1], 1.0,
                                                      [True, True, True])
    for a, r in zip((gi, gw, gb), ref):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, r)


def _unit_case(seed=0, n=4, c_in=6, c_out=8, size=8, keep=0.3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, size, size, generator=g)
    w = torch.randn(c_out, c_in, 3, 3, generator=g) * 0.3
    mask = torch.rand(c_out, size, size, generator=g) < keep
    bn = [torch.randn(c_out, generator=g), torch.randn(c_out, generator=g)]
    res = torch.randn(n, c_out, size, size, generator=g)
    return x, w, mask, bn, res


def _unit_composite(x, w, mask, bw, bb, res):
    out = F.batch_norm(F.conv2d(x, w, None, 1, 1) * mask, None, None, bw, bb, True, 0.1, 1e-5) * mask
    return (out + res).relu()


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_unit_stays_fused_with_mixed_residual(dtype):
    """bf16 activation from the layer before + a float32 identity: the fused op runs (in
    float32), returns the autocast dtype, and meets the rule."""
    x, w, mask, (bw, bb), res = _unit_case()
    leaves = [x.to(dtype), w, bw, bb, res]
    ours = [t.clone().requires_grad_() for t in leaves]
    rm, rv = torch.zeros(8), torch.ones(8)
    log = OpLog()
    with sparsemask.backend("cpu"), torch.autocast("cpu", dtype=dtype), log:
        y = defective_unit(ours[0], ours[1], mask, ours[2], ours[3], rm, rv, padding=1, residual=ours[4])
    assert "sparsemask.defective_unit" in log.names and "aten.convolution" not in log.names
    assert y.dtype == dtype
    with torch.autocast("cpu", dtype=dtype):
        pt = _unit_composite(*leaves[:2], mask, *leaves[2:])
    ref = [t.double().requires_grad_() for t in leaves]
    y64 = _unit_composite(ref[0], ref[1], mask, ref[2], ref[3], ref[4])
    _assert_rule(y, pt, y64.detach(), dtype, "fused unit forward")
    grad = torch.randn_like(y64)
    y.backward(grad.to(dtype))
    y64.backward(grad)
    for a, r, name in zip(ours, ref, ("input", "weight", "bn_weight", "bn_bias", "residual")):
        assert a.grad.dtype == a.dtype, name
        assert float((a.grad.double() - r.grad).abs().max()) <= 0.05 * float(r.grad.abs().max()), name
    # running statistics stay float32 and move
    assert rm.dtype == torch.float32 and rm.abs().sum() > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_block_with_float32_residual(dtype):
    g = torch.Generator().manual_seed(3)
    n, c, size = 3, 8, 7
    x = torch.randn(n, c, size, size, generator=g).to(dtype)
    units = []
    for _ in range(2):
        units.append(dict(weight=torch.randn(c, c, 3, 3, generator=g).mul_(0.2).requires_grad_(),
                          mask=torch.rand(c, size, size, generator=g) < 0.3,
                          bn_weight=torch.randn(c, generator=g), bn_bias=torch.randn(c, generator=g),
                          running_mean=torch.zeros(c), running_var=torch.ones(c), padding=1))
    res = torch.randn(n, c, size, size, generator=g)
    log = OpLog()
    with sparsemask.backend("cpu"), torch.autocast("cpu", dtype=dtype), log:
        y = defective_block(x, units[0], units[1], residual=res)
    assert "sparsemask.defective_block" in log.names
    assert y.dtype == dtype
    with sparsemask.backend("dense"):
        y32 = defective_block(x.float(), units[0], units[1], residual=res)
    torch.testing.assert_close(y.float(), y32, atol=8 * torch.finfo(dtype).eps * float(y32.abs().max()), rtol=0)
    y.float().sum().backward()
    assert units[0]["weight"].grad.dtype == torch.float32 and torch.isfinite(units[0]["weight"].grad).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_batch_norm_keeps_its_input_dtype(dtype):
    _, _, mask, (bw, bb), x = _unit_case(seed=4)  # x: [N, C_out, H, W], a conv's output
    x = x.to(dtype)
    log = OpLog()
    with torch.autocast("cpu", dtype=dtype), log:
        y = masked_batch_norm_act(x, mask, bw, bb, None, None, True, relu=True)
    assert "sparsemask.masked_batch_norm_act" in log.names and y.dtype == dtype
    ref = (F.batch_norm(x.double(), None, None, bw.double(), bb.double(), True) * mask).relu()
    with torch.autocast("cpu", dtype=dtype):
        pt = (F.batch_norm(x, None, None, bw, bb, True) * mask).relu()
    _assert_rule(y, pt, ref, dtype, "masked BN")


def test_defective_resnet18_runs_fused_ops_under_bf16_autocast():
    """A whole model: the fused blocks and units run (float32 inside), no dense convolution
    replaces a defective layer."""
    torch.manual_seed(0)
    model = models.resnet18(defective=dict(keep=0.1, where="bottom", seed=0)).train()
    x = torch.rand(2, 3, 32, 32)
    log = OpLog()
    with torch.autocast("cpu", dtype=torch.bfloat16), log:
        out = model(x)
    assert out.dtype == torch.bfloat16
    assert log.names.count("sparsemask.defective_block") == 4  # layer1-2: 4 basic blocks
    # the stem and the masked shortcut of layer2.0 (the published placement) are lone units
    lone = [n for n in sparsemask.nn.defective_layers(model) if n == "conv1" or "downsample" in n]
    assert len(lone) == 2 and log.names.count("sparsemask.defective_unit") == len(lone)
    # every remaining dense convolution is a layer without a mask: layer3-4 and the shortcuts
    n_plain = sum(1 for n, m in model.named_modules() if type(m) is torch.nn.Conv2d)
    assert log.names.count("aten.convolution") == n_plain
    out.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_compile_under_autocast():
    x, w, b, mask = _conv_case(seed=5)

    def f(x, w, b):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return sparsemask.masked_conv2d(x, w, b, mask, padding=1)

    with sparsemask.backend("cpu"):
        eager = f(x, w, b)
        compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(x, w, b)
    assert compiled.dtype == torch.bfloat16
    torch.testing.assert_close(compiled, eager)


@pytest.mark.parametrize("keep, amp, fused", [(0.1, True, True), (0.5, True, False), (0.5, False, True)])
def test_auto_decides_fusion_from_the_dense_alternatives_dtype(keep, amp, fused):
    """Under bf16 autocast the dense alternative is oneDNN's bf16 convolution, so ``auto``
    fuses only up to the measured bf16 crossover (sparsemask/backend.py), below float32's."""
    from sparsemask.dispatch import fused_max_density

    assert fused_max_density("cpu", torch.bfloat16) < fused_max_density("cpu", torch.float32)
    torch.manual_seed(0)
    model = models.resnet18(defective=dict(keep=keep, where="bottom", seed=0)).train()
    log = OpLog()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp), log:
        model(torch.rand(2, 3, 32, 32))
    assert ("sparsemask.defective_block" in log.names) == fused


# --------------------------------------------------------------------------------------
# The same on a GPU (skipped without one): AutocastCUDA kernels of the C++ and Triton ops.

@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton", "auto", "dense"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_masked_conv2d_under_autocast(backend, dtype):
    x, w, b, mask = (t.cuda() for t in _conv_case(seed=6))
    x = x.contiguous(memory_format=torch.channels_last)
    ours = [t.clone().requires_grad_() for t in (x, w, b)]
    with sparsemask.backend(backend), torch.autocast("cuda", dtype=dtype):
        y = sparsemask.masked_conv2d(ours[0], ours[1], ours[2], mask, padding=1)
        pt = F.conv2d(x, w, b, padding=1) * mask
    assert y.dtype == dtype
    ref = [t.double().requires_grad_() for t in (x, w, b)]
    y64 = F.conv2d(ref[0], ref[1], ref[2], padding=1) * mask
    _assert_rule(y, pt, y64.detach(), dtype, f"cuda {backend} forward")
    grad = torch.randn_like(y64)
    y.backward(grad.to(dtype))
    y64.backward(grad)
    for a, r in zip(ours, ref):
        assert a.grad.dtype == torch.float32
        assert float((a.grad.double() - r.grad).abs().max()) <= 0.05 * float(r.grad.abs().max())


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton", "auto"])
@pytest.mark.parametrize("arch", ["resnet18", "densenet121", "senet18"])
def test_cuda_defective_model_trains_under_bf16_autocast(arch, backend):
    """What train.py does by default on CUDA (TrainConfig.amp="auto"): bf16 autocast."""
    torch.manual_seed(0)
    model = models.build(arch, defective=dict(keep=0.1, where="bottom", seed=0)).cuda().train()
    model = model.to(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (4,), device="cuda")
    with sparsemask.backend(backend), torch.autocast("cuda", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
