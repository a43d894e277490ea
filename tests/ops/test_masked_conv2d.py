"""The core op on the CPU: float64 reference, gradients, opcheck, torch.compile, plan cache,
backend switch, and the errors for bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import sparsemask
from sparsemask.plan import cache_info, clear_cache, mask_plan

# (N, C_in, C_out, H, W, kernel, stride, padding, dilation)
SHAPES = [
    (3, 5, 7, 11, 9, 3, 1, 1, 1),      # odd sizes
    (1, 3, 16, 13, 13, 7, 2, 3, 1),    # batch 1, C_in=3 stem-like 7x7 stride 2 padding 3
    (2, 17, 6, 10, 12, 3, 2, 0, 1),    # stride 2, padding 0
    (2, 9, 11, 15, 14, 3, 1, 2, 2),    # dilation 2
    (4, 20, 13, 7, 9, 1, 1, 0, 1),     # 1x1
    (2, 33, 19, 8, 8, 3, (2, 1), (1, 0), (1, 2)),  # asymmetric stride/padding/dilation
]
KEEPS = [0.0, 0.05, 0.5, 1.0]


def _case(shape, keep, dtype=torch.float64, seed=0):
    n, c, k, h, w, ks, s, p, d = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    weight = torch.randn(k, c, ks, ks, generator=g, dtype=dtype)
    bias = torch.randn(k, generator=g, dtype=dtype)
    s2, p2, d2 = (_pair(v) for v in (s, p, d))
    ho, wo = sparsemask.conv_output_size((h, w), (ks, ks), s2, p2, d2)
    mask = torch.rand(k, ho, wo, generator=g) < keep
    return x, weight, bias, mask, s2, p2, d2


def _pair(v):
    return list(v) if isinstance(v, tuple) else [v, v]


def _reference(x, weight, bias, mask, s, p, d):
    return F.conv2d(x, weight, bias, s, p, d) * mask


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:6])))
@pytest.mark.parametrize("keep", KEEPS)
def test_forward_and_gradients_match_float64_reference(shape, keep):
    x, weight, bias, mask, s, p, d = _case(shape, keep)
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, weight, bias))
    xr, wr, br = (t.clone().requires_grad_() for t in (x, weight, bias))
    with sparsemask.backend("cpu"):
        out = sparsemask.masked_conv2d(xs, ws, bs, mask, s, p, d)
    ref = _reference(xr, wr, br, mask, s, p, d)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    assert (out[:, ~mask] == 0).all(), "masked outputs must be exactly zero"
    grad = torch.randn_like(ref)
    out.backward(grad)
    ref.backward(grad)
    for name, a, b in (("input", xs, xr), ("weight", ws, wr), ("bias", bs, br)):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-10, msg=lambda m: f"grad {name}: {m}")


def test_fully_masked_channel_and_position():
    x, weight, bias, mask, s, p, d = _case(SHAPES[0], 0.7)
    mask[2] = False          # a whole channel dropped
    mask[:, 4, 5] = False    # a whole position dropped
    xs, ws, bs = (t.clone().requires_grad_() for t in (x, weight, bias))
    with sparsemask.backend("cpu"):
        out = sparsemask.masked_conv2d(xs, ws, bs, mask, s, p, d)
    out.sum().backward()
    torch.testing.assert_close(out, _reference(x, weight, bias, mask, s, p, d))
    assert (out[:, 2] == 0).all()
    assert (ws.grad[2] == 0).all() and bs.grad[2] == 0


@pytest.mark.parametrize("layout", ["channels_last", "non_contiguous"])
def test_layouts(layout):
    x, weight, bias, mask, s, p, d = _case(SHAPES[2], 0.5)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        weight = weight.contiguous(memory_format=torch.channels_last)
    else:
        x = torch.randn(x.shape[0], x.shape[1], x.shape[2] * 2, x.shape[3], dtype=x.dtype)[:, :, ::2]
        weight = weight.transpose(2, 3).contiguous().transpose(2, 3)
        assert not x.is_contiguous() and not weight.is_contiguous()
    xs, ws = x.clone().requires_grad_(), weight.clone().requires_grad_()
    with sparsemask.backend("cpu"):
        out = sparsemask.masked_conv2d(xs, ws, bias, mask, s, p, d)
    ref = _reference(x, weight, bias, mask, s, p, d)
    torch.testing.assert_close(out, ref)
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(ref).contiguous(memory_format=torch.channels_last)[:, :, :, :]
    out.backward(grad)
    xr, wr = x.clone().requires_grad_(), weight.clone().requires_grad_()
    _reference(xr, wr, bias, mask, s, p, d).backward(grad)
    torch.testing.assert_close(xs.grad, xr.grad)
    torch.testing.assert_close(ws.grad, wr.grad)


@pytest.mark.parametrize("shape", [(1, 3, 4, 6, 5, 3, 1, 1, 1), (2, 3, 4, 7, 6, 3, 2, 0, 1), (1, 2, 3, 7, 7, 3, 1, 2, 2)])
def test_gradcheck(shape):
    x, weight, bias, mask, s, p, d = _case(shape, 0.5)
    inputs = tuple(t.clone().requires_grad_() for t in (x, weight, bias))
    with sparsemask.backend("cpu"):
        assert torch.autograd.gradcheck(
            lambda a, b, c: sparsemask.masked_conv2d(a, b, c, mask, s, p, d), inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("max_density", [1.0, 0.25])
def test_opcheck(max_density):
    x, weight, bias, mask, s, p, d = _case((2, 5, 4, 7, 6, 3, 1, 1, 1), 0.5)
    x.requires_grad_()
    weight.requires_grad_()
    torch.library.opcheck(torch.ops.sparsemask.masked_conv2d.default, (x, weight, bias, mask, s, p, d, max_density))
    torch.library.opcheck(torch.ops.sparsemask.masked_conv2d.default, (x, weight, None, mask, s, p, d, max_density))
    grad = torch.randn(2, 4, 7, 6, dtype=x.dtype)
    torch.library.opcheck(torch.ops.sparsemask.masked_conv2d_backward.default,
                          (grad, x.detach(), weight.detach(), mask, s, p, d, max_density, [True, True, False]))
    torch.library.opcheck(torch.ops.sparsemask.mask_plan.default, (mask,))


def test_torch_compile_fullgraph():
    x, weight, bias, mask, s, p, d = _case((2, 6, 5, 9, 9, 3, 1, 1, 1), 0.3, dtype=torch.float32)

    def f(a, b, c):
        return sparsemask.masked_conv2d(a, b, c, mask, s, p, d).relu().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
    with sparsemask.backend("cpu"):
        loss = compiled(*inputs)
        loss.backward()
    ref_inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
    ref = _reference(*ref_inputs[:3], mask, s, p, d).relu().sum()
    ref.backward()
    torch.testing.assert_close(loss, ref)
    for a, b in zip(inputs, ref_inputs):
        torch.testing.assert_close(a.grad, b.grad)


def test_torch_compile_inductor_forward():
    x, weight, bias, mask, s, p, d = _case((2, 6, 5, 9, 9, 3, 1, 1, 1), 0.3, dtype=torch.float32)
    compiled = torch.compile(lambda a: sparsemask.masked_conv2d(a, weight, bias, mask, s, p, d) * 2, fullgraph=True)
    with sparsemask.backend("cpu"):
        torch.testing.assert_close(compiled(x), _reference(x, weight, bias, mask, s, p, d) * 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_error_at_most_twice_dense(dtype):
    """flash-attention's rule: the kernel's error vs float64 <= 2x the error of dense PyTorch
    in the same precision."""
    x, weight, bias, mask, s, p, d = _case((4, 32, 24, 12, 12, 3, 1, 1, 1), 0.5)
    exact = _reference(x, weight, bias, mask, s, p, d)
    low = [t.to(dtype) for t in (x, weight, bias)]
    with sparsemask.backend("cpu"):
        ours = sparsemask.masked_conv2d(*low, mask, s, p, d)
    dense = _reference(*low, mask, s, p, d)
    assert ours.dtype == dtype
    err_ours = (ours.double() - exact).abs().max().item()
    err_dense = (dense.double() - exact).abs().max().item()
    assert err_ours <= 2 * err_dense + 1e-12, (err_ours, err_dense)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:6])))
@pytest.mark.parametrize("channels_last", [False, True])
def test_bfloat16_forward_within_rounding_of_exact_products(shape, channels_last):
    """The bfloat16 forward (native AVX512-BF16 dot products at level avx512_bf16, float32
    elsewhere) sums exact products of the bfloat16 operands in float32 and rounds once: so
    it is within one bfloat16 rounding (plus float32 summation error) of the float64 result
    of the same bfloat16 inputs, at every channel count (padding to 32-wide pairs), stride,
    dilation and layout; masked outputs are exactly 0 and NaN stays in its own neuron."""
    x, weight, bias, mask, s, p, d = _case(shape, 0.5)
    xb, wb, bb = (t.to(torch.bfloat16) for t in (x, weight, bias))
    if channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    exact = _reference(xb.double(), wb.double(), bb.double(), mask, s, p, d)
    with sparsemask.backend("cpu"):
        ours = sparsemask.masked_conv2d(xb, wb, bb, mask, s, p, d)
    assert ours.dtype == torch.bfloat16
    scale = (xb.double().abs().amax() * wb.double().abs().sum(dim=(1, 2, 3)).amax()).item()
    tol = exact.abs() * 2.0 ** -8 + scale * 2.0 ** -20
    assert ((ours.double() - exact).abs() <= tol).all()
    assert (ours.masked_select(~mask.expand_as(ours)) == 0).all()
    xn = xb.clone()
    xn[0, 0, 0, 0] = float("nan")
    with sparsemask.backend("cpu"):
        out_nan = sparsemask.masked_conv2d(xn, wb, bb, mask, s, p, d)
    touched = F.conv2d(xn.double(), wb.double(), bb.double(), s, p, d).isnan() & mask  # masked: exactly 0
    assert torch.equal(out_nan.isnan(), touched)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("c_in", [16, 32, 7])
def test_bfloat16_gradients_match_float64_of_the_same_inputs(channels_last, c_in):
    """bfloat16 backward: grad_input/grad_weight computed in float32 from bfloat16 read
    directly (the channels_last input widened while it is packed, whole vectors of channels
    or not), each rounded once to bfloat16."""
    x, weight, bias, mask, s, p, d = _case((4, c_in, 24, 12, 12, 3, 1, 1, 1), 0.3)
    xb, wb = x.to(torch.bfloat16), weight.to(torch.bfloat16)
    if channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    go = torch.randn(4, 24, 12, 12, dtype=torch.float64).to(torch.bfloat16)
    xe, we = xb.double().requires_grad_(), wb.double().requires_grad_()
    (_reference(xe, we, None, mask, s, p, d) * go.double()).sum().backward()
    xs, ws = xb.clone().requires_grad_(), wb.clone().requires_grad_()
    with sparsemask.backend("cpu"):
        (sparsemask.masked_conv2d(xs, ws, None, mask, s, p, d) * go).float().sum().backward()
    for got, exact in ((xs.grad, xe.grad), (ws.grad, we.grad)):
        assert got.dtype == torch.bfloat16
        scale = exact.abs().amax().item()
        assert ((got.double() - exact).abs() <= exact.abs() * 2.0 ** -7 + scale * 2.0 ** -12).all()


def test_float32_tolerance():
    x, weight, bias, mask, s, p, d = _case(SHAPES[1], 0.5)
    with sparsemask.backend("cpu"):
        out = sparsemask.masked_conv2d(x.float(), weight.float(), bias.float(), mask, s, p, d)
    torch.testing.assert_close(out.double(), _reference(x, weight, bias, mask, s, p, d), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------
# The mask plan and its cache


def test_plan_contents_match_python_reference():
    mask = torch.rand(6, 4, 5) < 0.4
    mask[3] = False
    plan = mask_plan(mask)
    flat = mask.reshape(6, 20)
    for q in range(20):
        kept = flat[:, q].nonzero().flatten().int()
        assert plan.pos_count[q] == len(kept)
        assert torch.equal(plan.pos_ch[q, : len(kept)], kept)
    assert torch.equal(plan.pos_start[1:], plan.pos_count.cumsum(0))
    assert plan.pos_start[-1] == mask.sum()


def test_plan_built_once_per_mask_and_rebuilt_after_in_place_change():
    x, weight, bias, mask, s, p, d = _case(SHAPES[0], 0.5, dtype=torch.float32)
    clear_cache()
    with sparsemask.backend("cpu"):
        for _ in range(5):
            out = sparsemask.masked_conv2d(x, weight, bias, mask, s, p, d)
        assert cache_info().builds == 1 and cache_info().hits >= 4
        mask.copy_(torch.rand(mask.shape) < 0.2)   # what load_state_dict does to a buffer
        out = sparsemask.masked_conv2d(x, weight, bias, mask, s, p, d)
    assert cache_info().builds == 2
    torch.testing.assert_close(out, _reference(x, weight, bias, mask, s, p, d))


def test_plan_cache_does_not_confuse_masks_at_the_same_address():
    x, weight, bias, _, s, p, d = _case(SHAPES[0], 0.5, dtype=torch.float32)
    with sparsemask.backend("cpu"):
        for keep in (0.1, 0.9, 0.3):
            mask = torch.rand(7, 11, 9) < keep   # freed and reallocated each round
            out = sparsemask.masked_conv2d(x, weight, bias, mask, s, p, d)
            torch.testing.assert_close(out, _reference(x, weight, bias, mask, s, p, d))


# ---------------------------------------------------------------------------------------
# Backend switch


def test_backend_switch_context_and_global():
    assert sparsemask.get_backend() == "auto"
    with sparsemask.backend("dense"):
        assert sparsemask.get_backend() == "dense"
        with sparsemask.backend("cpu"):
            assert sparsemask.get_backend() == "cpu"
        assert sparsemask.get_backend() == "dense"
    assert sparsemask.get_backend() == "auto"
    sparsemask.set_backend("cpu")
    assert sparsemask.get_backend() == "cpu"
    with pytest.raises(ValueError, match="unknown sparsemask backend 'fast'"):
        sparsemask.set_backend("fast")


@pytest.mark.parametrize("name", ["auto", "cpu", "dense"])
def test_every_cpu_backend_gives_the_reference(name):
    x, weight, bias, mask, s, p, d = _case(SHAPES[0], 0.3, dtype=torch.float32)
    with sparsemask.backend(name):
        out = sparsemask.masked_conv2d(x, weight, bias, mask, s, p, d)
    torch.testing.assert_close(out, _reference(x, weight, bias, mask, s, p, d))


def test_cuda_backend_refuses_cpu_tensors():
    x, weight, bias, mask, s, p, d = _case(SHAPES[0], 0.3)
    with sparsemask.backend("cuda"), pytest.raises(RuntimeError, match="backend 'cuda' cannot run cpu tensors"):
        sparsemask.masked_conv2d(x, weight, bias, mask, s, p, d)


@pytest.mark.parametrize("keep", [0.8, 1.0])  # 1.0: every neuron kept, no masking pass
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_dense_fallback_inside_the_op_is_exact(keep, layout):
    """max_density below the mask's kept fraction makes the kernel run the dense path."""
    x, weight, bias, mask, s, p, d = _case(SHAPES[0], keep)
    x = x.contiguous(memory_format=layout)
    assert mask.all() == (keep == 1.0)
    out = torch.ops.sparsemask.masked_conv2d(x, weight, bias, mask, s, p, d, 0.5)
    torch.testing.assert_close(out, _reference(x, weight, bias, mask, s, p, d))
    grad = torch.randn_like(out)
    gi, gw, gb = torch.ops.sparsemask.masked_conv2d_backward(grad, x, weight, mask, s, p, d, 0.5, [True, True, True])
    gi2, gw2, gb2 = torch.ops.sparsemask.masked_conv2d_backward(grad, x, weight, mask, s, p, d, 1.0,
                                                                [True, True, True])
    for a, b in ((gi, gi2), (gw, gw2), (gb, gb2)):
        torch.testing.assert_close(a, b)


def test_backward_output_mask_returns_empty_for_unrequested():
    x, weight, _, mask, s, p, d = _case(SHAPES[0], 0.5)
    grad = torch.randn(3, 7, 11, 9, dtype=x.dtype)
    gi, gw, gb = torch.ops.sparsemask.masked_conv2d_backward(grad, x, weight, mask, s, p, d, 1.0, [False, True, False])
    assert gi.numel() == 0 and gb.numel() == 0 and gw.shape == weight.shape


# ---------------------------------------------------------------------------------------
# Bad input: every error names the argument


def _good():
    return _case((2, 4, 5, 6, 6, 3, 1, 1, 1), 0.5, dtype=torch.float32)


@pytest.mark.parametrize("mutate, error, match", [
    (lambda a: a.update(mask=a["mask"][:, :5]), ValueError, r"mask must have shape \[C_out, H_out, W_out\]"),
    (lambda a: a.update(mask=a["mask"].float()), TypeError, "mask must be torch.bool"),
    (lambda a: a.update(mask=a["mask"].to("meta")), ValueError, "mask is on meta but input is on cpu"),
    (lambda a: a.update(weight=a["weight"].to("meta")), ValueError, "weight is on meta"),
    (lambda a: a.update(input=a["input"][0]), ValueError, r"input must be 4-D"),
    (lambda a: a.update(weight=a["weight"][:, :2]), ValueError, r"weight.shape\[1\] \(C_in = 2\)"),
    (lambda a: a.update(weight=a["weight"].double()), TypeError, "weight dtype torch.float64 must equal input dtype"),
    (lambda a: a.update(bias=a["bias"][:3]), ValueError, r"bias must have shape \[C_out\]"),
    (lambda a: a.update(input=a["input"].int(), weight=a["weight"].int()), TypeError, "input must be floating"),
    (lambda a: a.update(groups=2), ValueError, "only groups=1 is supported"),
    (lambda a: a.update(stride=0), ValueError, "stride >= 1"),
    (lambda a: a.update(stride=(1, 2, 3)), ValueError, "stride must be an int or a pair"),
    (lambda a: a.update(input=a["input"][:, :, :2, :2], padding=[0, 0]), ValueError, "the output would be empty"),
])
def test_bad_input_raises_clear_error(mutate, error, match):
    x, weight, bias, mask, s, p, d = _good()
    args = dict(input=x, weight=weight, bias=bias, mask=mask, stride=s, padding=p, dilation=d)
    mutate(args)
    for name in ("cpu", "dense"):
        with sparsemask.backend(name), pytest.raises(error, match=match):
            sparsemask.masked_conv2d(**args)


def test_bad_input_to_the_raw_op_raises_in_cpp():
    x, weight, bias, mask, s, p, d = _good()
    with pytest.raises(RuntimeError, match=r"mask must have shape \[C_out, H_out, W_out\] = \[5, 6, 6\]"):
        torch.ops.sparsemask.masked_conv2d(x, weight, bias, mask[:, :3], s, p, d, 1.0)
    with pytest.raises(RuntimeError, match="mask must be torch.bool"):
        torch.ops.sparsemask.masked_conv2d(x, weight, bias, mask.float(), s, p, d, 1.0)
    with pytest.raises(RuntimeError, match="stride must be >= 1"):
        torch.ops.sparsemask.masked_conv2d(x, weight, bias, mask, [0, 1], p, d, 1.0)


@pytest.mark.parametrize("keep", [-0.1, 1.5, float("nan")])
def test_keep_outside_unit_interval_raises(keep):
    with pytest.raises(ValueError, match="keep must be in"):
        sparsemask.random_mask(4, 5, 5, keep)


def test_random_mask_kinds_and_seed():
    a = sparsemask.random_mask(8, 6, 6, 0.3, seed=1)
    assert torch.equal(a, sparsemask.random_mask(8, 6, 6, 0.3, seed=1))
    shared = sparsemask.random_mask(8, 6, 6, 0.5, kind="shared", seed=2)
    assert (shared == shared[0]).all()
    channel = sparsemask.random_mask(8, 6, 6, 0.5, kind="channel", seed=3)
    assert (channel.flatten(1).all(1) | ~channel.flatten(1).any(1)).all()
    with pytest.raises(ValueError, match="unknown mask kind 'pixel'"):
        sparsemask.random_mask(8, 6, 6, 0.5, kind="pixel")


def test_torch_func_grad_matches_dense():
    """torch.func.grad through the op's C++ autograd kernel equals the dense reference's (a
    torch::autograd::Function would be refused under torch.func transforms)."""
    x, weight, bias, mask, s, p, d = _case(SHAPES[0], 0.5)

    def sparse(w):
        with sparsemask.backend("cpu"):
            return (sparsemask.masked_conv2d(x, w, bias, mask, s, p, d) ** 2).sum()

    def dense(w):
        return (_reference(x, w, bias, mask, s, p, d) ** 2).sum()

    torch.testing.assert_close(torch.func.grad(sparse)(weight), torch.func.grad(dense)(weight))


def test_cpp_autograd_node_saves_version_checked_tensors():
    """The C++ autograd kernel records MaskedConv2dBackward, whose saved input, weight and
    mask are version-checked like PyTorch's own (an in-place change before backward raises
    instead of giving gradients of other values) and freed after a backward."""
    x, weight, bias, mask, s, p, d = _case(SHAPES[0], 0.5)
    x.requires_grad_()
    with sparsemask.backend("cpu"):
        out = sparsemask.masked_conv2d(x, weight, bias, mask, s, p, d)
    assert out.grad_fn.name() == "MaskedConv2dBackward"
    assert out.grad_fn.next_functions[1] == (None, 0) and out.grad_fn.next_functions[2] == (None, 0)
    out.sum().backward()
    with pytest.raises(RuntimeError, match="freed|second time"):
        out.sum().backward()
    for name in ("x", "mask"):
        x2, mask2 = x.detach().clone().requires_grad_(), mask.clone()
        with sparsemask.backend("cpu"):
            out = sparsemask.masked_conv2d(x2, weight, bias, mask2, s, p, d)
        with torch.no_grad():
            if name == "x":
                x2.mul_(2)
            else:
                mask2.logical_not_()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.sum().backward()


def test_cpp_autograd_no_grad_and_partial_requires_grad():
    """Under no_grad nothing is recorded; with only the bias requiring grad, only the bias
    gets a gradient, equal to the reference's."""
    x, weight, bias, mask, s, p, d = _case(SHAPES[2], 0.5)
    with sparsemask.backend("cpu"), torch.no_grad():
        assert sparsemask.masked_conv2d(x, weight.requires_grad_(), bias, mask, s, p, d).grad_fn is None
    weight.requires_grad_(False)
    b1, b2 = bias.clone().requires_grad_(), bias.clone().requires_grad_()
    g = torch.randn(_reference(x, weight, bias, mask, s, p, d).shape, dtype=x.dtype)
    with sparsemask.backend("cpu"):
        (got,) = torch.autograd.grad(sparsemask.masked_conv2d(x, weight, b1, mask, s, p, d), [b1], g)
    (want,) = torch.autograd.grad(_reference(x, weight, b2, mask, s, p, d), [b2], g)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("c_in, width", [(37, 35), (16, 16), (5, 40)])
def test_nchw_packing_matches_float64_of_the_same_inputs(dtype, c_in, width):
    """NCHW in and out of the kernels' channels-innermost layouts (csrc/cpu/transpose.h: 16x16
    register tiles for 16- and 32-bit elements on AVX-512, element loops for the leftover
    channels/positions and elsewhere): forward and weight gradient (which read the packed
    input) and input gradient (transposed back to NCHW), against float64 of the same inputs."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, c_in, 6, width, generator=g).to(dtype)
    weight = (torch.randn(9, c_in, 3, 3, generator=g) * 0.2).to(dtype)
    mask = torch.rand(9, 6, width, generator=g) < 0.5
    grad = torch.randn(3, 9, 6, width, generator=g).to(dtype)
    x1, w = x.clone().requires_grad_(), weight.clone().requires_grad_()
    with sparsemask.backend("cpu"):
        out = sparsemask.masked_conv2d(x1, w, None, mask, 1, 1)
    gx, gw = torch.autograd.grad(out, [x1, w], grad)
    assert out.is_contiguous() and gx.is_contiguous()
    x64, w64 = x.double().requires_grad_(), weight.double().requires_grad_()
    ref = _reference(x64, w64, None, mask, [1, 1], [1, 1], [1, 1])
    gx_ref, gw_ref = torch.autograd.grad(ref, [x64, w64], grad.double())
    tol = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 3e-3}[dtype]
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * 10)
    torch.testing.assert_close(gx.double(), gx_ref, rtol=tol, atol=tol * 10)
    torch.testing.assert_close(gw.double(), gw_ref, rtol=tol, atol=tol * 30)


# (N, C_in, C_out, H, W, kernel, stride, padding, dilation), C_in a whole number of vectors
DIRECT_SHAPES = [
    (5, 16, 7, 9, 7, 3, 1, 1, 1),            # odd sizes, N not a multiple of the image block
    (2, 16, 6, 13, 11, 7, 2, 3, 1),          # 7x7 stride 2: patches clipped by up to 3 rows/columns
    (3, 32, 5, 6, 8, 3, 1, 4, 1),            # padding wider than the kernel: patches wholly outside
    (2, 16, 9, 10, 9, 3, 1, 2, (2, 1)),      # row dilation (dilation_w 1)
    (2, 16, 4, 8, 9, 5, (1, 2), (2, 1), 1),  # asymmetric stride and padding
    (3, 16, 8, 6, 6, 1, 2, 0, 1),            # 1x1 stride 2
    (2, 16, 5, 7, 7, 3, 1, 1, (1, 2)),       # dilation_w 2: packed, the path the others skip
    (37, 32, 5, 5, 6, 3, 1, 1, 1),           # N over two image chunks of grad_weight, odd (bf16 pairs)
    (130, 16, 3, 3, 4, 3, 1, 1, 1),          # N over two image blocks of the NCHW grad_input
]


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format], ids=["channels_last", "nchw"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", DIRECT_SHAPES, ids=lambda s: "x".join(map(str, s[:6])))
def test_unpadded_input_and_clipped_patches_match_float64(shape, dtype, layout):
    """With dilation_w 1 the kernels read the input without a padding ring (csrc/cpu/packing.h,
    Geometry::unpadded): a channels_last input whose channels fill whole vectors as it is
    (reads_in_place), an NCHW one transposed row by row; patches at the border are clipped
    to the rows and columns inside the image. Forward, input and weight gradients against
    float64 of the same inputs, every border case in the shapes above."""
    x, weight, bias, mask, s, p, d = _case(shape, 0.6, seed=3)
    x, weight, bias = (t.to(dtype) for t in (x, weight * 0.3, bias))
    x = x.contiguous(memory_format=layout)
    xs, ws = x.clone().requires_grad_(), weight.clone().requires_grad_()
    with sparsemask.backend("cpu"):
        out = sparsemask.masked_conv2d(xs, ws, bias, mask, s, p, d)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
    gx, gw = torch.autograd.grad(out, [xs, ws], grad)
    x64, w64 = x.double().requires_grad_(), weight.double().requires_grad_()
    ref = _reference(x64, w64, bias.double(), mask, s, p, d)
    gx_ref, gw_ref = torch.autograd.grad(ref, [x64, w64], grad.double())
    tol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * 10)
    assert (out[:, ~mask] == 0).all()
    torch.testing.assert_close(gx.double(), gx_ref, rtol=tol, atol=tol * 10)
    torch.testing.assert_close(gw.double(), gw_ref, rtol=tol, atol=tol * 30)
