"""The Triton kernels of masked_conv2d (backend "triton").

On CPU tensors they run under TRITON_INTERPRET=1 (tests/conftest.py sets it before triton is
imported), so shapes here are tiny; the ``cuda`` cases repeat the checks on a GPU at larger
shapes and add gradcheck, opcheck, torch.compile and the low-precision tolerance rule.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import sparsemask

pytest.importorskip("triton")
import sparsemask.triton  # noqa: E402,F401  (imported before torch.compile traces the backend)

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# (N, C_in, C_out, H, W, kernel, stride, padding, dilation) — odd, not powers of two.
SHAPES = [
    (3, 5, 7, 7, 6, 3, 1, 1, 1),   # odd sizes, padding 1
    (1, 3, 6, 7, 7, 3, 2, 0, 1),   # batch 1, C_in=3, stride 2, padding 0
    (2, 4, 5, 8, 7, 3, 1, 2, 2),   # dilation 2
    (2, 6, 5, 5, 4, 1, 1, 0, 1),   # 1x1
    (2, 40, 6, 5, 6, 3, 2, 1, 1),  # C_in >= 16: the tap-by-tap kernels, two channel blocks
]
KEEPS = [0.0, 0.05, 0.5, 1.0]


def _case(shape, keep, dtype=torch.float64, device="cpu", seed=0):
    n, c, k, h, w, ks, s, p, d = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    weight = torch.randn(k, c, ks, ks, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    bias = torch.randn(k, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    ho, wo = sparsemask.conv_output_size((h, w), (ks, ks), [s, s], [p, p], [d, d])
    mask = (torch.rand(k, ho, wo, generator=g) < keep).to(device)
    return x, weight, bias, mask, [s, s], [p, p], [d, d]


def _run(fn, x, weight, bias, mask, s, p, d, grad):
    """(out, grad_input, grad_weight, grad_bias) of fn on fresh leaves."""
    xs, ws, bs = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    out = fn(xs, ws, bs, mask, s, p, d)
    out.backward(grad)
    return out.detach(), xs.grad, ws.grad, bs.grad


def _triton(x, w, b, mask, s, p, d):
    with sparsemask.backend("triton"):
        return sparsemask.masked_conv2d(x, w, b, mask, s, p, d)


def _dense(x, w, b, mask, s, p, d):
    return F.conv2d(x, w, b, s, p, d) * mask


def _check_exact(shape, keep, dtype, device, tol, channels_last=False, seed=0):
    x, weight, bias, mask, s, p, d = _case(shape, keep, dtype, device, seed)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(x.shape[0], *mask.shape, dtype=dtype, device=device)
    got = _run(_triton, x, weight, bias, mask, s, p, d, grad)
    ref = _run(_dense, *(t.double() for t in (x, weight, bias)), mask, s, p, d, grad.double())
    for name, a, b in zip(("out", "grad_input", "grad_weight", "grad_bias"), got, ref):
        torch.testing.assert_close(a.double(), b, atol=tol, rtol=tol, msg=lambda m: f"{name}: {m}")
    out = got[0]
    assert (out[:, ~mask] == 0).all(), "masked outputs must be exactly zero"
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert got[1].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


# ------------------------------------------------------------------------------------------
# CPU tensors under the interpreter

cpu_only = pytest.mark.skipif(not INTERPRET, reason="CPU tensors need TRITON_INTERPRET=1")


# The interpreter runs each program in Python: every shape at keep 0.5, every keep on one
# shape, keeps this file well under a minute on two cores.
INTERPRETER_CASES = [(shape, 0.5) for shape in SHAPES] + [(SHAPES[0], keep) for keep in KEEPS if keep != 0.5]


@cpu_only
@pytest.mark.parametrize("shape,keep", INTERPRETER_CASES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple)
                         else str(v))
def test_interpreter_float64_matches_reference(shape, keep):
    _check_exact(shape, keep, torch.float64, "cpu", 1e-10)


# C_out 37: above one BLOCK_J (16 under the interpreter), so at keep 0.5 and 1 a run's kept
# channels span several blocks (each block writes its own neurons, the first the zeros).
WIDE_CPU = (2, 5, 37, 6, 5, 3, 1, 1, 1)


@cpu_only
@pytest.mark.parametrize("keep", [0.05, 0.5, 1.0])
def test_interpreter_several_channel_blocks(keep):
    _check_exact(WIDE_CPU, keep, torch.float64, "cpu", 1e-10, seed=10)


@cpu_only
@pytest.mark.parametrize("keep", [0.3, 1.0])
def test_interpreter_several_channel_ranges(monkeypatch, keep):
    """Layers wider than _C_RANGE_MAX split C_out over the grid (each range finds its first
    pos_ch entry by counting the kept channels below it); force 3 ranges of 16."""
    from sparsemask.triton import masked_conv2d as module

    monkeypatch.setattr(module, "_C_RANGE_MAX", 16)
    assert module._c_range(37) == 16
    _check_exact(WIDE_CPU, keep, torch.float64, "cpu", 1e-10, seed=11)


@cpu_only
@pytest.mark.parametrize("keep", [0.0, 0.05, 0.5])
def test_interpreter_forward_writes_every_output_once(keep):
    """No zero-fill pass: with PyTorch's deterministic fill, torch.empty returns NaN, so an
    output element the kernel did not write would show up as NaN (masked ones must be 0)."""
    x, weight, bias, mask, s, p, d = _case(WIDE_CPU, keep, seed=12)
    previous = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        assert torch.empty(3, dtype=x.dtype).isnan().all()  # the fill is on
        with torch.no_grad():
            out = _triton(x, weight, bias, mask, s, p, d)
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.utils.deterministic.fill_uninitialized_memory = previous[1]
    assert not out.isnan().any()
    assert (out[:, ~mask] == 0).all()
    torch.testing.assert_close(out, _dense(x, weight, bias, mask, s, p, d), atol=1e-10, rtol=1e-10)


@cpu_only
@pytest.mark.parametrize("keep", [0.0, 0.05])
def test_interpreter_grad_input_writes_every_element_once(keep):
    """grad_input is allocated uninitialised and each element written by exactly one program,
    also where no tap lands on a kept neuron (zeros): checked under the NaN fill."""
    x, weight, bias, mask, s, p, d = _case(WIDE_CPU, keep, seed=14)
    grad = torch.randn(x.shape[0], *mask.shape, dtype=x.dtype)
    previous = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        gx, _, _ = torch.ops.sparsemask.masked_conv2d_triton_backward(grad, x, weight, mask, s, p, d,
                                                                      [True, False, False])
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.utils.deterministic.fill_uninitialized_memory = previous[1]
    xr = x.clone().requires_grad_()
    (gx_ref,) = torch.autograd.grad(_dense(xr, weight, bias, mask, s, p, d), (xr,), grad)
    assert not gx.isnan().any()
    torch.testing.assert_close(gx, gx_ref, atol=1e-10, rtol=1e-10)


@cpu_only
def test_interpreter_nan_and_inf_stay_in_their_neuron():
    """The epilogue moves values by an exact gather: a NaN/Inf input reaches only the kept
    outputs whose patch contains it, never the rest of the row (a one-hot product would)."""
    x, weight, bias, mask, s, p, d = _case(SHAPES[0], 0.5, seed=13)
    x[0, 1, 3, 2] = float("nan")
    x[1, 0, 0, 0] = float("inf")
    with torch.no_grad():
        out = _triton(x, weight, None, mask, s, p, d)
    ref = _dense(x, weight, None, torch.ones_like(mask), s, p, d)
    kept = mask.expand_as(out)
    assert (out[~kept] == 0).all()
    torch.testing.assert_close(out[kept], ref[kept], atol=1e-10, rtol=1e-10, equal_nan=True)


@cpu_only
@pytest.mark.parametrize("shape,row_tile", [
    ((2, 17, 5, 6, 7, 3, 1, 1, 1), True),   # a K tile spans (kx, c_in) runs of a kernel row
    ((2, 17, 5, 7, 6, 3, 1, 2, 2), False),  # dilation 2: one tap's channels per K tile
    ((2, 16, 5, 6, 1, 3, 1, 1, 1), True),   # W = 1: the column stride of a size-1 dim
], ids=["row tile", "tap loop, dilation 2", "row tile, W=1"])
def test_interpreter_grad_weight_k_tiles(shape, row_tile):
    """grad_weight's K tiles: a kernel row's contiguous run (channels_last, no dilation) or one
    tap's channel block; BLOCK_K (32 under the interpreter) splits a row of 3 x 17 mid-tap."""
    from sparsemask.triton import masked_conv2d as module

    x, *_ , d = _case(shape, 0.5)
    assert module._grad_weight_row_tile(x.contiguous(memory_format=torch.channels_last), d[1]) is row_tile
    _check_exact(shape, 0.5, torch.float64, "cpu", 1e-10, seed=15)


def test_grad_weight_row_tile_needs_the_contiguous_row():
    """A size-1 W may carry any stride in a tensor PyTorch calls channels_last: then the row
    is not contiguous and grad_weight falls back to one tap per K tile."""
    from sparsemask.triton import masked_conv2d as module

    odd = torch.empty_strided((2, 16, 6, 1), (96, 1, 16, 999))
    assert odd.is_contiguous(memory_format=torch.channels_last)
    assert odd.contiguous(memory_format=torch.channels_last).stride(3) == 999
    assert not module._grad_weight_row_tile(odd, 1)
    assert module._grad_weight_row_tile(torch.empty(2, 16, 6, 4).contiguous(memory_format=torch.channels_last), 1)
    assert not module._grad_weight_row_tile(torch.empty(2, 16, 6, 4).contiguous(memory_format=torch.channels_last), 2)
    assert not module._grad_weight_row_tile(torch.empty(2, 3, 6, 4).contiguous(memory_format=torch.channels_last), 1)


@cpu_only
def test_interpreter_float32_channels_last():
    _check_exact(SHAPES[0], 0.5, torch.float32, "cpu", 1e-4, channels_last=True, seed=1)


@cpu_only
def test_interpreter_fully_masked_channel_and_position():
    x, weight, bias, mask, s, p, d = _case(SHAPES[0], 0.7, seed=2)
    mask[2] = False          # a whole channel dropped
    mask[:, 3, 4] = False    # a whole output position dropped
    grad = torch.randn(x.shape[0], *mask.shape, dtype=x.dtype)
    out, gx, gw, gb = _run(_triton, x, weight, bias, mask, s, p, d, grad)
    ref = _run(_dense, x, weight, bias, mask, s, p, d, grad)
    for a, b in zip((out, gx, gw, gb), ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    assert (out[:, 2] == 0).all() and (gw[2] == 0).all() and gb[2] == 0


@cpu_only
def test_interpreter_partial_gradients_and_no_bias():
    """Only the gradients asked for are computed; bias=None works."""
    x, weight, _, mask, s, p, d = _case(SHAPES[2], 0.5, seed=3)
    w = weight.clone().requires_grad_()
    with sparsemask.backend("triton"):
        out = sparsemask.masked_conv2d(x, w, None, mask, s, p, d)
    grad = torch.randn_like(out)
    (gw,) = torch.autograd.grad(out, (w,), grad)
    wr = weight.clone().requires_grad_()
    (gw_ref,) = torch.autograd.grad(_dense(x, wr, None, mask, s, p, d), (wr,), grad)
    torch.testing.assert_close(gw, gw_ref, atol=1e-10, rtol=1e-10)
    gi, gw2, gb = torch.ops.sparsemask.masked_conv2d_triton_backward(grad, x, weight, mask, s, p, d,
                                                                     [False, False, True])
    assert gi.shape == (0,) and gw2.shape == (0,)
    torch.testing.assert_close(gb, (grad * mask).sum((0, 2, 3)), atol=1e-10, rtol=1e-10)


@cpu_only
def test_interpreter_low_precision_rule():
    """float16: the kernel's error vs float64 is at most 2x dense PyTorch's float16 error.
    (bfloat16 is checked on the GPU only: the interpreter's numpy has no bfloat16 dot.)"""
    _low_precision_rule(SHAPES[3], torch.float16, "cpu")


@cpu_only
def test_interpreter_gradcheck():
    x, weight, bias, mask, s, p, d = _case((2, 3, 4, 5, 4, 3, 1, 1, 1), 0.5, seed=4)
    inputs = tuple(t.clone().requires_grad_() for t in (x, weight, bias))
    assert torch.autograd.gradcheck(lambda a, b, c: _triton(a, b, c, mask, s, p, d), inputs, fast_mode=True)


@cpu_only
def test_interpreter_opcheck_schema_fake_autograd():
    """Schema, autograd registration and the fake kernel (the triton_op traced with
    FakeTensors); the AOT/compile checks need a GPU (test_cuda_opcheck)."""
    x, weight, bias, mask, s, p, d = _case((2, 3, 4, 5, 4, 3, 1, 1, 1), 0.5, seed=9)
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, weight, bias))
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.sparsemask.masked_conv2d_triton.default, (xs, ws, bs, mask, s, p, d),
                          test_utils=utils)
    grad = torch.randn(x.shape[0], *mask.shape, dtype=x.dtype)
    torch.library.opcheck(torch.ops.sparsemask.masked_conv2d_triton_backward.default,
                          (grad, x, weight, mask, s, p, d, [True, True, True]), test_utils=utils)


def test_triton_backend_rejects_cpu_tensors_without_interpreter():
    if INTERPRET:
        pytest.skip("the interpreter runs CPU tensors")
    x, weight, bias, mask, s, p, d = _case(SHAPES[0], 0.5)
    with pytest.raises(RuntimeError, match="triton"):
        _triton(x, weight, bias, mask, s, p, d)


# ------------------------------------------------------------------------------------------
# The low-precision rule (DESIGN.md, after flash-attention)

def _low_precision_rule(shape, dtype, device, seed=5):
    x, weight, bias, mask, s, p, d = _case(shape, 0.5, dtype, device, seed)
    x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(x.shape[0], *mask.shape, dtype=dtype, device=device)
    got = _run(_triton, x, weight, bias, mask, s, p, d, grad)
    low = _run(_dense, x, weight, bias, mask, s, p, d, grad)
    ref = _run(_dense, *(t.double() for t in (x, weight, bias)), mask, s, p, d, grad.double())
    for name, a, b, r in zip(("out", "grad_input", "grad_weight", "grad_bias"), got, low, ref):
        assert a.dtype == dtype, name
        err = (a.double() - r).abs().max().item()
        err_dense = (b.double() - r).abs().max().item()
        # The floor covers outputs that dense PyTorch happens to get (nearly) exact.
        floor = 1e-3 * r.abs().max().item() if dtype != torch.float32 else 1e-5 * r.abs().max().item()
        assert err <= 2 * err_dense + floor, f"{name}: kernel error {err:.3g} > 2 x dense error {err_dense:.3g}"


# ------------------------------------------------------------------------------------------
# GPU

STEM_7X7 = (8, 3, 16, 13, 13, 7, 2, 3, 1)
REALISTIC = (33, 64, 64, 17, 15, 3, 1, 1, 1)      # realistic channels, odd batch
STRIDED = (16, 19, 40, 12, 12, 3, 2, 1, 1)        # stride 2, C_in not a multiple of 16
WIDE = (4, 24, 150, 9, 9, 3, 1, 1, 1)              # C_out > 128: the forward splits C_out in 2 ranges
GPU_SHAPES = SHAPES + [STEM_7X7, REALISTIC, STRIDED, WIDE]


@pytest.mark.cuda
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("keep", KEEPS)
def test_cuda_float64_matches_reference(shape, keep):
    _check_exact(shape, keep, torch.float64, "cuda", 1e-9)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_float32_channels_last(shape):
    # TF32 follows torch.backends.cudnn.allow_tf32 (on by default), as the dense conv does.
    _check_exact(shape, 0.3, torch.float32, "cuda", 5e-2, channels_last=True)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [SHAPES[3], SHAPES[4], STEM_7X7, REALISTIC, STRIDED],
                         ids=lambda s: "x".join(map(str, s)))
def test_cuda_low_precision_rule(shape, dtype):
    _low_precision_rule(shape, dtype, "cuda")


@pytest.mark.cuda
def test_cuda_gradcheck():
    x, weight, bias, mask, s, p, d = _case((3, 5, 6, 7, 6, 3, 2, 1, 1), 0.5, device="cuda", seed=6)
    inputs = tuple(t.clone().requires_grad_() for t in (x, weight, bias))
    # grad_weight/grad_bias are summed with atomics: the order, so the last bits, can vary.
    assert torch.autograd.gradcheck(lambda a, b, c: _triton(a, b, c, mask, s, p, d), inputs, nondet_tol=1e-12)


@pytest.mark.cuda
def test_cuda_opcheck():
    x, weight, bias, mask, s, p, d = _case(SHAPES[0], 0.5, torch.float32, "cuda", seed=7)
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, weight, bias))
    torch.library.opcheck(torch.ops.sparsemask.masked_conv2d_triton.default, (xs, ws, bs, mask, s, p, d))
    grad = torch.randn(x.shape[0], *mask.shape, device="cuda")
    torch.library.opcheck(torch.ops.sparsemask.masked_conv2d_triton_backward.default,
                          (grad, x, weight, mask, s, p, d, [True, True, True]))


@pytest.mark.cuda
def test_cuda_torch_compile_fullgraph():
    x, weight, bias, mask, s, p, d = _case(REALISTIC, 0.3, torch.float32, "cuda", seed=8)
    x = x.contiguous(memory_format=torch.channels_last)

    def step(a, w, b):
        return torch.relu(sparsemask.masked_conv2d(a, w, b, mask, s, p, d)).sum()

    compiled = torch.compile(step, fullgraph=True)
    leaves = [tuple(t.clone().requires_grad_() for t in (x, weight, bias)) for _ in range(2)]
    with sparsemask.backend("triton"):  # read at trace time (a guarded global)
        loss_c, loss_e = compiled(*leaves[0]), step(*leaves[1])
        loss_c.backward()
        loss_e.backward()
    torch.testing.assert_close(loss_c, loss_e, atol=1e-3, rtol=1e-4)
    for a, b in zip(leaves[0], leaves[1]):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-3, rtol=1e-4)
