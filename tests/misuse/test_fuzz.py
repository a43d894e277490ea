"""Fuzz suite (hypothesis): the op against its reference over random small problems, attack
invariants for every attack, bad-input tables for the public entry points (issue 15).

The op's contract under test: ``masked_conv2d(...) == torch.where(mask, F.conv2d(...), 0)``
— kept outputs are the dense convolution's (NaN/Inf included, where the reference has them),
masked outputs are exactly 0 whatever the input holds (they are never computed), in every
backend. Examples are derandomized so that CI sees the same cases every run; the mask
write paths are covered case by case in test_stale_plan.py.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import sparsemask
from sparsemask import attacks as A
from sparsemask.nn import DefectiveConv2d


def fuzz(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------------------------- the op

@dataclass
class Case:
    x: torch.Tensor
    w: torch.Tensor
    b: object
    mask: torch.Tensor
    stride: tuple
    padding: tuple
    dilation: tuple

    def run(self, backend, x=None, w=None, b=None):
        with sparsemask.backend(backend):
            return sparsemask.masked_conv2d(self.x if x is None else x, self.w if w is None else w,
                                            self.b if b is None else b, self.mask, self.stride, self.padding,
                                            self.dilation)


def reference(case: Case, x=None, w=None, b=None):
    """The contract in float64: the dense convolution where kept, exactly 0 where masked."""
    x = (case.x if x is None else x).double()
    w = (case.w if w is None else w).double()
    b = case.b if b is None else b
    out = F.conv2d(x, w, None if b is None else b.double(), case.stride, case.padding, case.dilation)
    return torch.where(case.mask, out, torch.zeros((), dtype=out.dtype))


@st.composite
def cases(draw, dtypes=(torch.float32, torch.float64)):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    # The smallest input with a non-empty output, and up to 6 more: no rejected examples.
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), 8))
    w = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), 8))
    n, c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from(dtypes))
    keep = draw(st.sampled_from([0.0, 0.05, 0.5, 1.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(n, c_in, h, w, generator=g, dtype=torch.float64).to(dtype)
    if draw(st.booleans()):
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c_out, c_in, kh, kw, generator=g, dtype=torch.float64).to(dtype)
    bias = torch.randn(c_out, generator=g, dtype=torch.float64).to(dtype) if draw(st.booleans()) else None
    ho, wo = sparsemask.conv_output_size((h, w), (kh, kw), stride, padding, dilation)
    mask = torch.rand(c_out, ho, wo, generator=g) < keep
    return Case(x, weight, bias, mask, stride, padding, dilation)


TOL = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-10)}
BACKENDS = ["cpu", "dense", "auto", "triton"]
# Triton runs under TRITON_INTERPRET=1 on CPU, ~1 s per example: fewer of them.
EXAMPLES = {"cpu": 25, "dense": 25, "auto": 25, "triton": 6}


def _masked_values(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return out.permute(1, 2, 3, 0)[~mask]


def check_forward(case: Case, backend: str, got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape and got.dtype == case.x.dtype
    formats = [f for f in (torch.contiguous_format, torch.channels_last) if case.x.is_contiguous(memory_format=f)]
    # The input's memory format (either one when the input's strides fit both, e.g. C_in = 1).
    assert any(got.is_contiguous(memory_format=f) for f in formats), f"{backend}: output layout {got.stride()}"
    assert (_masked_values(got, case.mask) == 0).all(), f"{backend}: a masked output is not exactly 0"
    torch.testing.assert_close(got.double(), want, equal_nan=True, **TOL[case.x.dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_op_matches_reference_forward_and_backward(backend):
    if backend == "triton":
        pytest.importorskip("triton")
    fuzz(EXAMPLES[backend])(given(case=cases())(lambda case: _forward_and_backward(backend, case)))()


def _forward_and_backward(backend, case):
    leaves = [t.detach().clone().requires_grad_() for t in (case.x, case.w)]
    bias = None if case.b is None else case.b.detach().clone().requires_grad_()
    got = case.run(backend, *leaves, bias)
    check_forward(case, backend, got.detach(), reference(case))
    # Gradients of the contract, with a random upstream gradient (NaN-free here).
    grad = torch.randn(got.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(got.dtype)
    ref_leaves = [t.detach().double().requires_grad_() for t in (case.x, case.w)]
    ref_bias = None if case.b is None else case.b.detach().double().requires_grad_()
    want = reference(case, *ref_leaves, ref_bias)
    inputs = leaves + ([bias] if bias is not None else [])
    ref_inputs = ref_leaves + ([ref_bias] if ref_bias is not None else [])
    grads = torch.autograd.grad(got, inputs, grad)
    ref_grads = torch.autograd.grad(want, ref_inputs, grad.double())
    for name, a, b in zip(("input", "weight", "bias"), grads, ref_grads):
        torch.testing.assert_close(a.double(), b, **TOL[case.x.dtype], msg=lambda m: f"{backend} grad {name}: {m}")


@st.composite
def non_finite_cases(draw):
    case = draw(cases())
    values = st.sampled_from([float("nan"), float("inf"), -float("inf")])
    # A non-finite weight times a padded zero is NaN in PyTorch's float64 convolution and 0 in
    # its float32 (oneDNN) one, which skips padded taps: implementation-defined, so weights get
    # NaN/Inf only without padding. Non-finite inputs are tested with any padding.
    where = [("x",), ("w",), ("x", "w")] if case.padding == (0, 0) else [("x",)]
    for name in draw(st.sampled_from(where)):
        t = getattr(case, name).clone()  # keeps channels_last
        for _ in range(draw(st.integers(1, 3))):
            t[tuple(draw(st.integers(0, size - 1)) for size in t.shape)] = draw(values)
        setattr(case, name, t)
    return case


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_values_stay_in_kept_outputs(backend):
    if backend == "triton":
        pytest.importorskip("triton")
    fuzz(EXAMPLES[backend])(given(case=non_finite_cases())(lambda case: _non_finite(backend, case)))()


def _non_finite(backend, case):
    with torch.no_grad():
        got = case.run(backend)
    check_forward(case, backend, got, reference(case))


@fuzz(15)
@given(case=cases(dtypes=(torch.float64,)))
def test_nchw_and_channels_last_agree(case):
    # NCHW and channels_last copies of one problem give the same numbers (float64, tight).
    other = case.x.contiguous() if case.x.is_contiguous(memory_format=torch.channels_last) \
        else case.x.contiguous(memory_format=torch.channels_last)
    for backend in ("cpu", "auto", "dense"):
        a, b = case.run(backend), case.run(backend, x=other)
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def _mask_writes():
    """The mask write paths of test_stale_plan.py (loaded by path: import-mode=importlib)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_stale_plan", Path(__file__).with_name("test_stale_plan.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.WRITES


@pytest.mark.parametrize("backend", ["cpu", "auto"])
def test_op_follows_every_mask_write(backend):
    writes = _mask_writes()

    @fuzz(10)
    @given(case=cases(dtypes=(torch.float64,)), write=st.sampled_from(writes), seed=st.integers(0, 2**31 - 1))
    def check(case, write, seed):
        case.run(backend)  # plans and caches the current mask
        new = torch.rand(case.mask.shape, generator=torch.Generator().manual_seed(seed)) < 0.5
        write(case.mask, new)
        check_forward(case, backend, case.run(backend), reference(case))

    check()


# ----------------------------------------------------------------------------- attacks

def tiny_model() -> nn.Module:
    """[N, 1, 6, 6] in [0, 1] -> 4 logits, through a defective layer (the sparse op) and BN."""
    torch.manual_seed(0)
    return nn.Sequential(DefectiveConv2d(1, 4, 3, padding=1, keep=0.5, feature_size=6, seed=0), nn.BatchNorm2d(4),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 4)).double()


# (name, factory(model, eps, norm), eps-ball attack?). Small step counts: the invariants hold at any.
ATTACKS = [
    ("FGSM", lambda m, eps, norm: A.FGSM(m, eps, norm, progress=False), True),
    ("PGD", lambda m, eps, norm: A.PGD(m, eps, norm, steps=3, seed=0, progress=False), True),
    ("BIM", lambda m, eps, norm: A.BIM(m, eps, norm, steps=3, progress=False), True),
    ("MIFGSM", lambda m, eps, norm: A.MIFGSM(m, eps, norm, steps=3, progress=False), True),
    ("EOT(PGD)", lambda m, eps, norm: A.EOT(A.PGD(m, eps, norm, steps=2, seed=0, progress=False), 2), True),
    ("PGD on EOTModel", lambda m, eps, norm: A.PGD(A.EOT(m, 2), eps, norm, steps=2, seed=0, progress=False), True),
    ("CW", lambda m, eps, norm: A.CW(m, binary_steps=2, steps=5, progress=False), False),
    ("DeepFool", lambda m, eps, norm: A.DeepFool(m, norm, steps=3, progress=False), False),
    ("Boundary", lambda m, eps, norm: A.Boundary(m, steps=5, init_attempts=10, seed=0, progress=False), False),
]


def _within_ball(delta: torch.Tensor, eps: float, norm: str) -> bool:
    p = {"inf": float("inf"), "2": 2, "1": 1}[norm]
    return bool((delta.flatten(1).norm(p=p, dim=1) <= eps * (1 + 1e-6) + 1e-9).all())


@pytest.mark.parametrize("name, make, eps_ball", ATTACKS, ids=[a[0] for a in ATTACKS])
@fuzz(6)
@given(n=st.integers(1, 4), eps=st.sampled_from([0.0, 0.03, 0.3, 2.0]), norm=st.sampled_from(["inf", "2", "1"]),
       train_mode=st.booleans(), targeted=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_attack_invariants(name, make, eps_ball, n, eps, norm, train_mode, targeted, seed):
    g = torch.Generator().manual_seed(seed)
    model = tiny_model().train(train_mode)
    x = torch.rand(n, 1, 6, 6, generator=g, dtype=torch.float64)
    x[0, 0, 0, 0], x[-1, 0, -1, -1] = 0.0, 1.0  # pixels on the box's faces
    y = torch.randint(0, 4, (n,), generator=g)
    targets = (y + 1) % 4 if targeted else None
    x_before, params = x.clone(), copy.deepcopy(model.state_dict())
    try:
        attack = make(model, eps, norm)
    except ValueError as e:  # a norm this attack does not offer, or an L-inf budget above the
        # whole pixel range (the 0-255 slip), is refused up front, naming it
        assert "norm" in str(e) or (norm == "inf" and eps > 1 and "eps255" in str(e)), str(e)
        return
    x_adv = attack(x, y, targets)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.isfinite(x_adv).all() and x_adv.min() >= 0 and x_adv.max() <= 1
    if eps_ball:
        assert _within_ball(x_adv - x, eps, norm), f"{name} left the {norm}-ball of radius {eps}"
    assert torch.equal(x, x_before), "the caller's input was modified"
    assert model.training == train_mode and all(m.training == train_mode for m in model.modules())
    assert all(p.grad is None for p in model.parameters()), "gradients accumulated in the parameters"
    state = model.state_dict()
    for key, value in params.items():
        if train_mode and ("running" in key or key.endswith("num_batches_tracked")):
            continue  # BN in train mode updates its statistics on every forward, as the caller asked
        assert torch.equal(state[key], value), f"{name} changed {key}"


# ------------------------------------------------------------------------ bad-input table
# Rows the per-module tests (tests/ops, tests/nn, tests/attacks, tests/misuse/...) do not
# already hold: (entry point, call, error type, pattern that names the argument).

def _x():
    return torch.randn(1, 2, 5, 5)


def _w():
    return torch.randn(3, 2, 3, 3)


def _m():
    return torch.ones(3, 3, 3, dtype=torch.bool)


def _net():
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


def _empty_file(path):
    path.write_bytes(b"")
    return path


def _data_errors():
    from sparsemask.data import CorruptDatasetError, DatasetNotFoundError, load_dataset, read_idx

    return [
        ("read_idx missing file", lambda t: read_idx(t / "x-idx1-ubyte"), DatasetNotFoundError, r"x-idx1-ubyte.*no such"),
        ("read_idx directory", lambda t: read_idx(t), DatasetNotFoundError, r"directory"),
        ("read_idx empty file", lambda t: read_idx(_empty_file(t / "e-idx1-ubyte")), CorruptDatasetError,
         r"e-idx1-ubyte.*not an IDX file"),
        ("load_dataset split", lambda t: load_dataset("digits", split="val"), ValueError, r"split must be"),
        ("load_dataset name type", lambda t: load_dataset(3), TypeError, r"dataset name must be a str"),
    ]


BAD_INPUTS = [
    ("masked_conv2d input type", lambda t: sparsemask.masked_conv2d([1.0], _w(), None, _m()), TypeError,
     r"input must be a Tensor"),
    ("masked_conv2d padding", lambda t: sparsemask.masked_conv2d(_x(), _w(), None, _m(), padding=-1), ValueError,
     r"padding >= 0.*padding=\[-1, -1\]"),
    ("masked_conv2d dilation", lambda t: sparsemask.masked_conv2d(_x(), _w(), None, _m(), dilation=0), ValueError,
     r"dilation >= 1.*dilation=\[0, 0\]"),
    ("masked_conv2d C_in = 0", lambda t: sparsemask.masked_conv2d(torch.randn(1, 0, 5, 5), torch.randn(3, 0, 3, 3),
                                                                  None, _m()), ValueError, r"C_in"),
    ("DefectiveConv2d in_channels", lambda t: DefectiveConv2d(0, 3, 3, keep=0.5, feature_size=5), ValueError,
     r"in_channels"),
    ("DefectiveConv2d feature_size", lambda t: DefectiveConv2d(2, 3, 3, keep=0.5, feature_size=0), ValueError,
     r"feature_size"),
    ("DefectiveConv2d feature_size type", lambda t: DefectiveConv2d(2, 3, 3, keep=0.5, feature_size="5x5"),
     TypeError, r"feature_size"),
    ("random_mask keep NaN", lambda t: sparsemask.random_mask(2, 3, 3, float("nan")), ValueError, r"keep"),
    ("backend name", lambda t: sparsemask.backend("gpu").__enter__(), ValueError, r"backend 'gpu'"),
    ("MIFGSM norm", lambda t: A.MIFGSM(_net(), norm="1"), ValueError, r"norm"),
    ("DeepFool norm", lambda t: A.DeepFool(_net(), norm="1"), ValueError, r"norm"),
    ("PGD step_size NaN", lambda t: A.PGD(_net(), step_size=float("nan")), ValueError, r"step_size"),
    ("MIFGSM decay", lambda t: A.MIFGSM(_net(), decay=-1), ValueError, r"decay"),
    ("EOT of Boundary", lambda t: A.EOT(A.Boundary(_net()), n=2), TypeError, r"Boundary.*EOT"),
    ("EOT n", lambda t: A.EOT(_net(), n=0), ValueError, r"\bn must be"),
    ("Ensemble empty", lambda t: A.Ensemble([]), ValueError, r"models"),
    ("attack y shape", lambda t: A.FGSM(_net())(torch.rand(2, 1, 2, 2), torch.tensor([0])), ValueError,
     r"\by must have shape"),
    ("attack targets dtype", lambda t: A.FGSM(_net())(torch.rand(2, 1, 2, 2), torch.tensor([0, 1]),
                                                     torch.tensor([1.0, 2.0])), TypeError, r"targets must be"),
]


@pytest.mark.parametrize("name, call, error, pattern", BAD_INPUTS + _data_errors(),
                         ids=[row[0] for row in BAD_INPUTS + _data_errors()])
def test_bad_input_table(name, call, error, pattern, tmp_path):
    with pytest.raises(error, match=pattern):
        call(tmp_path)
