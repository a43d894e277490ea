"""The CUDA C++ kernels of masked_conv2d (backend "cuda"): float64 reference, gradcheck,
opcheck, torch.compile, the low-precision rule, the dense fallback and the errors.
Every test needs a GPU (skipped by conftest otherwise)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import sparsemask

pytestmark = pytest.mark.cuda

# (N, C_in, C_out, H, W, kernel, stride, padding, dilation)
SHAPES = [
    (3, 5, 7, 11, 9, 3, 1, 1, 1),      # odd sizes
    (1, 3, 16, 13, 13, 7, 2, 3, 1),    # batch 1, RGB stem 7x7 stride 2
    (2, 17, 6, 10, 12, 3, 2, 0, 1),    # stride 2, padding 0
    (2, 9, 11, 15, 14, 3, 1, 2, 2),    # dilation 2
    (4, 20, 13, 7, 9, 1, 1, 0, 1),     # 1x1
    (37, 64, 70, 17, 15, 3, 1, 1, 1),  # more than one tile of images, channels and patch
]
KEEPS = [0.0, 0.05, 0.5, 1.0]


def _case(shape, keep, dtype=torch.float64, seed=0):
    n, c, k, h, w, ks, s, p, d = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to("cuda", dtype)
    weight = torch.randn(k, c, ks, ks, generator=g, dtype=torch.float64).to("cuda", dtype)
    bias = torch.randn(k, generator=g, dtype=torch.float64).to("cuda", dtype)
    ho, wo = sparsemask.conv_output_size((h, w), (ks, ks), [s, s], [p, p], [d, d])
    mask = (torch.rand(k, ho, wo, generator=g) < keep).cuda()
    return x, weight, bias, mask, [s, s], [p, p], [d, d]


def _run(fn, x, weight, bias, mask, s, p, d, grad):
    xs, ws, bs = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    out = fn(xs, ws, bs, mask, s, p, d)
    out.backward(grad)
    return out.detach(), xs.grad, ws.grad, bs.grad


def _cuda(x, w, b, mask, s, p, d):
    with sparsemask.backend("cuda"):
        return sparsemask.masked_conv2d(x, w, b, mask, s, p, d)


def _dense(x, w, b, mask, s, p, d):
    return F.conv2d(x, w, b, s, p, d) * mask


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("keep", KEEPS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_float64_matches_reference(shape, keep, layout):
    x, weight, bias, mask, s, p, d = _case(shape, keep)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(x.shape[0], *mask.shape, dtype=x.dtype, device="cuda")
    got = _run(_cuda, x, weight, bias, mask, s, p, d, grad)
    ref = _run(_dense, x, weight, bias, mask, s, p, d, grad)
    for name, a, b in zip(("out", "grad_input", "grad_weight", "grad_bias"), got, ref):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9, msg=lambda m: f"{name}: {m}")
    assert (got[0][:, ~mask] == 0).all()
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert got[0].is_contiguous(memory_format=fmt) and got[1].is_contiguous(memory_format=fmt)


def test_fully_masked_channel_and_position():
    x, weight, bias, mask, s, p, d = _case(SHAPES[0], 0.7, seed=1)
    mask[2] = False
    mask[:, 4, 5] = False
    grad = torch.randn(x.shape[0], *mask.shape, dtype=x.dtype, device="cuda")
    got = _run(_cuda, x, weight, bias, mask, s, p, d, grad)
    ref = _run(_dense, x, weight, bias, mask, s, p, d, grad)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)
    assert (got[0][:, 2] == 0).all() and (got[2][2] == 0).all() and got[3][2] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES[4:], ids=lambda s: "x".join(map(str, s)))
def test_low_precision_rule(shape, dtype):
    """The kernel's error vs float64 is at most 2x that of dense PyTorch in the same dtype."""
    x, weight, bias, mask, s, p, d = _case(shape, 0.5, dtype, seed=2)
    x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(x.shape[0], *mask.shape, dtype=dtype, device="cuda")
    got = _run(_cuda, x, weight, bias, mask, s, p, d, grad)
    low = _run(_dense, x, weight, bias, mask, s, p, d, grad)
    ref = _run(_dense, *(t.double() for t in (x, weight, bias)), mask, s, p, d, grad.double())
    for name, a, b, r in zip(("out", "grad_input", "grad_weight", "grad_bias"), got, low, ref):
        assert a.dtype == dtype, name
        err = (a.double() - r).abs().max().item()
        err_dense = (b.double() - r).abs().max().item()
        floor = (1e-5 if dtype == torch.float32 else 1e-3) * r.abs().max().item()
        assert err <= 2 * err_dense + floor, f"{name}: kernel error {err:.3g} > 2 x dense error {err_dense:.3g}"


def test_scalar_half_kernels_match_tensor_core_kernels(tmp_path):
    """SPARSEMASK_CUDA_MMA=0 selects the scalar kernels for half/bfloat16 (read once per
    process, so in a child): both paths must agree within bfloat16 rounding."""
    code = (
        "import torch, sparsemask\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = torch.randn(37, 64, 17, 15, generator=g).cuda().bfloat16().contiguous(memory_format=torch.channels_last)\n"
        "w = (torch.randn(70, 64, 3, 3, generator=g) / 24).cuda().bfloat16()\n"
        "m = (torch.rand(70, 17, 15, generator=g) < 0.3).cuda()\n"
        "go = torch.randn(37, 70, 17, 15, generator=g).cuda().bfloat16()\n"
        "y = torch.ops.sparsemask.masked_conv2d(x, w, None, m, [1, 1], [1, 1], [1, 1], 1.0)\n"
        "gi, gw, gb = torch.ops.sparsemask.masked_conv2d_backward(go, x, w, m, [1, 1], [1, 1], [1, 1], 1.0,"
        " [True, True, True])\n"
        "import sys; torch.save([t.float().cpu() for t in (y, gi, gw, gb)], sys.argv[1])\n"
    )
    results = []
    for flag in ("1", "0"):
        path = str(tmp_path / f"mma_{flag}.pt")
        env = dict(os.environ, SPARSEMASK_CUDA_MMA=flag)
        subprocess.run([sys.executable, "-c", code, path], check=True, env=env)
        results.append(torch.load(path))
    for name, a, b in zip(("out", "grad_input", "grad_weight", "grad_bias"), *results):
        scale = b.abs().max().item()
        assert (a - b).abs().max().item() <= 2e-2 * scale, name


def test_gradcheck():
    x, weight, bias, mask, s, p, d = _case((3, 5, 6, 7, 6, 3, 2, 1, 1), 0.5, seed=3)
    inputs = tuple(t.clone().requires_grad_() for t in (x, weight, bias))
    # grad_weight/grad_bias are summed with atomics: the order, so the last bits, can vary.
    assert torch.autograd.gradcheck(lambda a, b, c: _cuda(a, b, c, mask, s, p, d), inputs, nondet_tol=1e-12)


@pytest.mark.parametrize("max_density", [1.0, 0.0])
def test_opcheck(max_density):
    """Sparse path (max_density 1) and dense fallback (max_density 0) both satisfy opcheck."""
    x, weight, bias, mask, s, p, d = _case(SHAPES[0], 0.5, torch.float32, seed=4)
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, weight, bias))
    torch.library.opcheck(torch.ops.sparsemask.masked_conv2d.default, (xs, ws, bs, mask, s, p, d, max_density))
    grad = torch.randn(x.shape[0], *mask.shape, device="cuda")
    torch.library.opcheck(torch.ops.sparsemask.masked_conv2d_backward.default,
                          (grad, x, weight, mask, s, p, d, max_density, [True, True, True]))


def test_dense_fallback_matches_sparse():
    x, weight, bias, mask, s, p, d = _case(SHAPES[5], 0.5, seed=5)
    sparse = torch.ops.sparsemask.masked_conv2d(x, weight, bias, mask, s, p, d, 1.0)
    dense = torch.ops.sparsemask.masked_conv2d(x, weight, bias, mask, s, p, d, 0.1)  # 0.5 > 0.1: dense
    torch.testing.assert_close(sparse, dense, atol=1e-9, rtol=1e-9)


def test_partial_output_mask():
    x, weight, _, mask, s, p, d = _case(SHAPES[2], 0.5, seed=6)
    grad = torch.randn(x.shape[0], *mask.shape, dtype=x.dtype, device="cuda")
    gi, gw, gb = torch.ops.sparsemask.masked_conv2d_backward(grad, x, weight, mask, s, p, d, 1.0,
                                                             [False, False, True])
    assert gi.shape == (0,) and gw.shape == (0,)
    torch.testing.assert_close(gb, (grad * mask).sum((0, 2, 3)), atol=1e-9, rtol=1e-9)


def test_torch_compile_fullgraph():
    x, weight, bias, mask, s, p, d = _case(SHAPES[5], 0.3, torch.float32, seed=7)
    x = x.contiguous(memory_format=torch.channels_last)

    def step(a, w, b):
        return torch.relu(sparsemask.masked_conv2d(a, w, b, mask, s, p, d)).sum()

    compiled = torch.compile(step, fullgraph=True)
    leaves = [tuple(t.clone().requires_grad_() for t in (x, weight, bias)) for _ in range(2)]
    with sparsemask.backend("cuda"):  # read at trace time (a guarded global)
        loss_c, loss_e = compiled(*leaves[0]), step(*leaves[1])
        loss_c.backward()
        loss_e.backward()
    torch.testing.assert_close(loss_c, loss_e)
    for a, b in zip(leaves[0], leaves[1]):
        torch.testing.assert_close(a.grad, b.grad)


def test_cuda_backend_rejects_cpu_tensors():
    x, weight, bias, mask, s, p, d = _case(SHAPES[0], 0.5)
    with pytest.raises(RuntimeError, match="cuda"):
        _cuda(x.cpu(), weight.cpu(), bias.cpu(), mask.cpu(), s, p, d)


def test_mixed_devices_rejected():
    x, weight, bias, mask, s, p, d = _case(SHAPES[0], 0.5)
    with pytest.raises(ValueError, match="mask is on"):
        _cuda(x, weight, bias, mask.cpu(), s, p, d)


def test_plan_cached_on_device():
    from sparsemask.plan import cache_info, clear_cache

    x, weight, bias, mask, s, p, d = _case(SHAPES[0], 0.5, seed=8)
    clear_cache()
    for _ in range(3):
        _cuda(x, weight, bias, mask, s, p, d)
    info = cache_info()
    assert info.builds == 1 and info.hits >= 2
