"""Defective ResNets run their conv-BN(-add)-ReLU units as one fused op (conv_bn_act); the
results must equal running the modules one by one (the dense reference backend)."""
from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

import sparsemask
from sparsemask.models import resnet18, resnet32x4, resnet50
from sparsemask.nn.defective import conv_bn_act


def _pair(builder=resnet18, keep=0.3, dtype=torch.float64):
    torch.manual_seed(0)
    model = builder(num_classes=10, input_size=16, defective=dict(keep=keep, where="bottom", seed=0)).to(dtype)
    return model, copy.deepcopy(model)


def _step(model, x, backend):
    with sparsemask.backend(backend):
        out = model(x)
        out.square().sum().backward()
    return out


# resnet32x4 (ResNet-8x2 here, for time): fused blocks next to a dense projection shortcut (layer1.0)
@pytest.mark.parametrize("builder", [resnet18, pytest.param(resnet50, marks=pytest.mark.slow),  # ~10 s a layout
                                     functools.partial(resnet32x4, depth=8, width=2)],
                         ids=["resnet18", "resnet50", "resnet32x4"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_fused_model_matches_unfused_reference_in_train_and_eval(builder, layout):
    fused, ref = _pair(builder)
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64).contiguous(memory_format=layout)
    for training in (True, False):
        fused.train(training)
        ref.train(training)
        out, out_ref = _step(fused, x, "cpu"), _step(ref, x, "dense")
        torch.testing.assert_close(out, out_ref)
        for (name, p), p_ref in zip(fused.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, p_ref.grad, msg=name)
        for (name, b), b_ref in zip(fused.named_buffers(), ref.buffers()):
            torch.testing.assert_close(b, b_ref, msg=name)   # running stats, num_batches_tracked, masks


def test_fused_path_is_taken_and_hooks_or_other_activations_disable_it(monkeypatch):
    model, _ = _pair(dtype=torch.float32)
    calls = []

    def counting(name, real):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr("sparsemask.nn.defective.defective_unit",
                        counting("unit", sparsemask.ops.defective_unit))
    monkeypatch.setattr("sparsemask.nn.defective.defective_block",
                        counting("block", sparsemask.ops.defective_block))
    x = torch.rand(2, 3, 16, 16)
    model(x)
    # the stem, layer1's blocks, layer2.0's masked projection shortcut (published placement: a
    # defective unit without activation), then layer2's blocks
    assert calls == ["unit", "block", "block", "unit", "block", "block"]
    calls.clear()
    seen = []
    handle = model.layer1[0].conv1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model(x)
    handle.remove()
    assert seen == [torch.Size([2, 64, 16, 16])]          # the hook saw a real conv output
    assert calls == ["unit", "unit", "block", "unit", "block", "block"]   # that block ran unit by unit
    calls.clear()
    seen.clear()
    handle = model.layer2[0].downsample.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model(x)
    handle.remove()
    assert seen == [torch.Size([2, 128, 8, 8])]           # a hooked shortcut runs as modules
    assert calls == ["unit", "block", "block", "block", "block"]
    calls.clear()
    with sparsemask.backend("dense"):
        model(x)
    assert calls == []


def test_conv_bn_act_with_standard_layers_is_the_plain_composite():
    torch.manual_seed(0)
    conv, bn, act = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU()
    x, r = torch.randn(2, 3, 5, 5), torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(conv_bn_act(conv, bn, x, act, residual=r), act(bn(conv(x)) + r))
    gelu = nn.GELU()
    torch.testing.assert_close(conv_bn_act(conv, bn, x, gelu), gelu(bn(conv(x))))


def test_torch_compile_of_a_defective_model_fullgraph():
    fused, ref = _pair(dtype=torch.float32)
    x = torch.rand(2, 3, 16, 16)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    with sparsemask.backend("cpu"):
        out = compiled(x)
    out.square().sum().backward()
    out_ref = _step(ref, x, "dense")
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fused.conv1.weight.grad, ref.conv1.weight.grad, atol=1e-4, rtol=1e-3)


def test_auto_fuses_only_sparse_enough_masks(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.ops.sparsemask, "defective_block", _Counting(torch.ops.sparsemask.defective_block, calls))
    torch.manual_seed(0)
    dense_ish = resnet18(num_classes=10, input_size=16, defective=dict(keep=0.9, where="bottom", seed=0))
    x = torch.rand(2, 3, 16, 16)
    dense_ish(x)                                  # auto: keep 0.9 > fused_max_density -> modules
    assert calls == []
    with sparsemask.backend("cpu"):               # forced: fused
        dense_ish(x)
    assert len(calls) == 4
    # The functional op under auto counts the mask when it is not told `keep`.
    unit_calls = []
    monkeypatch.setattr(torch.ops.sparsemask, "defective_unit", _Counting(torch.ops.sparsemask.defective_unit,
                                                                          unit_calls))
    w = torch.randn(4, 3, 3, 3)
    for keep, fused in ((0.9, False), (0.2, True)):
        mask = torch.rand(4, 16, 16) < keep
        out = sparsemask.ops.defective_unit(x, w, mask, None, None, None, None, padding=1)
        assert (len(unit_calls) == 1) == fused and (out[:, ~mask] == 0).all()
        unit_calls.clear()


class _Counting:
    def __init__(self, op, calls):
        self.op, self.calls = op, calls

    def __call__(self, *args):
        self.calls.append(1)
        return self.op(*args)
