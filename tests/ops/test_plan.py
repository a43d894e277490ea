"""The mask plan as the kernels get it: built once per mask, handed to the kernels without
copies (sparsemask::_plan_view), and never held by a compiled graph.

The plan's contents and the cache's invalidation are tested in test_masked_conv2d.py."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile

import sparsemask
from sparsemask.nn import DefectiveConv2d
from sparsemask.plan import cache_info, clear_cache, kernel_plan, mask_plan


def _mask(shape=(6, 5, 7), keep=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) < keep


def test_kernel_plan_is_the_cached_plan_not_a_copy():
    mask = _mask()
    clear_cache()
    first = kernel_plan(mask)
    again = kernel_plan(mask)
    assert cache_info().builds == 1
    # Same storage on every call: nothing was copied.
    for a, b in zip(first, again):
        assert a.data_ptr() == b.data_ptr()
        assert a._base is None   # not an autograd view that would expose the cache's tensor
    copies = mask_plan(mask)
    assert copies.pos_count.data_ptr() != first[0].data_ptr()
    assert copies.pos_ch.data_ptr() != first[1].data_ptr()
    torch.testing.assert_close(first[0], copies.pos_count)
    torch.testing.assert_close(first[1], copies.pos_ch)


def test_changed_mask_gets_a_new_plan_and_the_old_one_is_left_as_it_was():
    """Plans are never updated in place, which is what makes handing them out safe."""
    mask = _mask()
    old_count, old_ch = kernel_plan(mask)
    old_values = old_count.clone(), old_ch.clone()
    mask.copy_(_mask(keep=0.2, seed=1))   # what load_state_dict does to a mask buffer
    new_count, new_ch = kernel_plan(mask)
    assert new_count.data_ptr() != old_count.data_ptr()
    torch.testing.assert_close(new_count, mask.reshape(mask.shape[0], -1).sum(0, dtype=torch.int32))
    torch.testing.assert_close((old_count, old_ch), old_values)


def test_plan_view_opcheck():
    mask = _mask()
    torch.library.opcheck(torch.ops.sparsemask._plan_view.default, (mask,))
    torch.library.opcheck(torch.ops.sparsemask.mask_plan.default, (mask,))


def test_plan_view_is_traced_as_the_copying_op():
    """Compiled graphs must not hold the cached tensors (they would own them)."""
    mask = _mask()
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm

    from torch._functorch.aot_autograd import aot_function

    pos_count, pos_ch = aot_function(lambda m: torch.ops.sparsemask._plan_view(m), capture)(mask)
    targets = [n.target for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert torch.ops.sparsemask.mask_plan.default in targets
    assert torch.ops.sparsemask._plan_view.default not in targets
    torch.testing.assert_close((pos_count, pos_ch), tuple(mask_plan(mask)[:2]))


def test_inductor_cannot_overwrite_the_cached_plan():
    """Inductor reuses a dead op output in place for a same-sized result (here `pos_count * 3
    + 1`); were the cached tensors that output, the second call would read a corrupted plan."""
    mask = _mask()
    ref = tuple(t.clone() for t in kernel_plan(mask))

    def f(m):
        pos_count, pos_ch = torch.ops.sparsemask._plan_view(m)
        return pos_count * 3 + 1, pos_ch * 2

    torch.compiler.reset()
    # Compile now: a cached artifact compiled under other dispatch rules would hide a regression.
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        compiled = torch.compile(f, fullgraph=True)
        for _ in range(2):
            out = compiled(mask)
    torch.testing.assert_close(out, (ref[0] * 3 + 1, ref[1] * 2))
    torch.testing.assert_close(kernel_plan(mask), ref)


# ---------------------------------------------------------------------------------------
# A training step: no plan build, no plan copy


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        DefectiveConv2d(3, 5, 3, padding=1, keep=0.5, feature_size=7, seed=0), nn.ReLU(),
        DefectiveConv2d(5, 6, 3, stride=2, padding=1, keep=0.3, feature_size=4, seed=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 3))


def _fused_model():
    from sparsemask.models import resnet18

    torch.manual_seed(0)
    return resnet18(num_classes=3, input_size=8, defective=dict(keep=0.5, where="bottom", seed=0))


def _step(model, opt, x, y):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _plan_ops(prof, name):
    return [e for e in prof.events() if e.name == f"sparsemask::{name}"]


@pytest.mark.parametrize("backend,build", [("cpu", _model), ("cpu", _fused_model), ("triton", _model)],
                         ids=["cpu", "cpu-fused-resnet18", "triton"])
def test_training_step_builds_and_copies_no_plan(backend, build):
    if backend == "triton":
        pytest.importorskip("triton")
        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("CPU tensors need the Triton interpreter (the cuda tests cover the GPU)")
    model = build()
    n_defective = sum(isinstance(m, DefectiveConv2d) for m in model.modules())
    assert n_defective >= 2
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    size = 7 if build is _model else 8
    x = torch.randn(2, 3, size, size)
    y = torch.tensor([0, 2])
    clear_cache()
    with sparsemask.backend(backend):
        _step(model, opt, x, y)                 # the first step plans every mask once
        assert cache_info().builds == n_defective
        hits = cache_info().hits
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                _step(model, opt, x, y)
    assert cache_info().builds == n_defective   # no plan built after the first step
    assert cache_info().hits > hits              # ... and the kernels did ask for the plans
    # No plan copied: the copying op is never called, and the kernels' accessor copies nothing.
    assert _plan_ops(prof, "mask_plan") == []
    views = _plan_ops(prof, "_plan_view")
    if backend == "triton":
        assert len(views) == 2 * 2 * n_defective   # forward + backward, two steps
    for event in views:
        children = {c.name for c in event.cpu_children}
        assert not children & {"aten::clone", "aten::copy_", "aten::empty", "aten::empty_like",
                               "aten::empty_strided"}, children
