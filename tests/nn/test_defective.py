"""DefectiveConv2d and MaskedBatchNorm2d: masks, exact zeros, sparse == dense, plan caching, errors."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsemask
from sparsemask.nn import DefectiveConv2d, MaskedBatchNorm2d
from sparsemask.plan import cache_info, clear_cache


def _within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    sd = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= sigmas * sd + 1


@pytest.mark.parametrize("keep", [0.05, 0.3, 0.7])
def test_kept_fraction_within_binomial_bounds_per_kind(keep):
    c, h, w = 96, 12, 11
    neuron = DefectiveConv2d(4, c, 3, padding=1, keep=keep, kind="neuron", feature_size=(h, w), seed=1).mask
    channel = DefectiveConv2d(4, c, 3, padding=1, keep=keep, kind="channel", feature_size=(h, w), seed=2).mask
    shared = DefectiveConv2d(4, c, 3, padding=1, keep=keep, kind="shared", feature_size=(h, w), seed=3).mask
    assert _within_binomial(int(neuron.sum()), c * h * w, keep)
    assert _within_binomial(int(channel[:, 0, 0].sum()), c, keep)  # one draw per channel
    assert _within_binomial(int(shared[0].sum()), h * w, keep)  # one draw per position


def test_mask_structure_per_kind():
    c, h, w, keep = 64, 16, 16, 0.3
    neuron = DefectiveConv2d(3, c, 3, padding=1, keep=keep, feature_size=h, seed=0).mask
    channel = DefectiveConv2d(3, c, 3, padding=1, keep=keep, kind="channel", feature_size=h, seed=0).mask
    shared = DefectiveConv2d(3, c, 3, padding=1, keep=keep, kind="shared", feature_size=h, seed=0).mask
    # neuron: channels independent -> agreement between two channels ~ p^2 + (1-p)^2, not 1.
    flat = neuron.reshape(c, -1).float()
    agree = (flat[:-1] == flat[1:]).float().mean(1)
    expected = keep ** 2 + (1 - keep) ** 2
    assert abs(float(agree.mean()) - expected) < 0.03
    assert not any(torch.equal(neuron[i], neuron[0]) for i in range(1, c))
    # shared: the same spatial mask in every channel.
    assert all(torch.equal(shared[i], shared[0]) for i in range(c))
    assert 0 < int(shared[0].sum()) < h * w
    # channel: whole channels kept or dropped.
    per_channel = channel.reshape(c, -1)
    assert bool((per_channel.all(1) | (~per_channel).all(1)).all())
    assert 0 < int(per_channel.all(1).sum()) < c


def test_same_seed_same_mask_and_generator_stream():
    a = DefectiveConv2d(3, 8, 3, keep=0.4, feature_size=6, seed=7).mask
    b = DefectiveConv2d(3, 8, 3, keep=0.4, feature_size=6, seed=7).mask
    c = DefectiveConv2d(3, 8, 3, keep=0.4, feature_size=6, seed=8).mask
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(DefectiveConv2d(3, 8, 3, keep=0.4, feature_size=6, generator=g).mask, a)


@pytest.mark.parametrize("kind", ["neuron", "channel", "shared"])
def test_sparse_path_equals_dense_reference_forward_and_grads(kind):
    torch.manual_seed(1)
    layer = DefectiveConv2d(5, 7, 3, stride=2, padding=1, keep=0.35, kind=kind, feature_size=(5, 4), seed=3,
                            dtype=torch.float64)
    x = torch.randn(2, 5, 9, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 7, 5, 4, dtype=torch.float64)
    with sparsemask.backend("cpu"):
        y = layer(x)
        gx, gw, gb = torch.autograd.grad(y, (x, layer.weight, layer.bias), g)
    ref = F.conv2d(x, layer.weight, layer.bias, 2, 1) * layer.mask
    rx, rw, rb = torch.autograd.grad(ref, (x, layer.weight, layer.bias), g)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)
    torch.testing.assert_close(gb, rb)
    assert bool((y.detach()[:, ~layer.mask] == 0).all())  # exactly zero, bias included


def test_from_conv2d_keeps_weights_and_mode():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    conv.eval()
    layer = DefectiveConv2d.from_conv2d(conv, keep=0.5, feature_size=7, seed=0)
    assert torch.equal(layer.weight, conv.weight) and torch.equal(layer.bias, conv.bias)
    assert layer.weight is not conv.weight and not layer.training
    x = torch.rand(3, 4, 7, 7)
    with sparsemask.backend("cpu"):
        torch.testing.assert_close(layer(x), conv(x) * layer.mask)


def test_extra_repr_shows_keep_kind_and_kept_fraction():
    layer = DefectiveConv2d(3, 16, 3, padding=1, keep=0.25, kind="shared", feature_size=8, seed=0)
    r = repr(layer)
    assert "keep=0.25" in r and "kind=shared" in r and f"kept={layer.kept_fraction():.3f}" in r


def test_plan_built_once_then_rebuilt_once_after_load_state_dict():
    layer = DefectiveConv2d(8, 16, 3, padding=1, keep=0.2, feature_size=10, seed=0)
    other = DefectiveConv2d(8, 16, 3, padding=1, keep=0.2, feature_size=10, seed=1)
    x = torch.rand(2, 8, 10, 10)
    clear_cache()
    mask_id = id(layer.mask)
    with sparsemask.backend("cpu"):
        for _ in range(5):
            layer(x).sum().backward()
        assert cache_info().builds == 1
        layer.load_state_dict(other.state_dict())
        assert id(layer.mask) == mask_id and torch.equal(layer.mask, other.mask)
        for _ in range(5):
            y = layer(x)
        assert cache_info().builds == 2
    assert bool((y.detach()[:, ~other.mask] == 0).all())


def test_mask_is_persistent_buffer_and_follows_to():
    layer = DefectiveConv2d(3, 4, 3, keep=0.5, feature_size=4, seed=0)
    assert "mask" in layer.state_dict() and layer.state_dict()["mask"].dtype == torch.bool
    layer = layer.double()
    assert layer.mask.dtype == torch.bool and layer.weight.dtype == torch.float64


def test_masked_batchnorm_zeroes_defective_positions_and_shares_parameters():
    conv = DefectiveConv2d(3, 6, 3, padding=1, keep=0.3, feature_size=5, seed=0)
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.bias.uniform_(0.5, 1.0)  # a nonzero shift would leak into defective positions without the mask
    mbn = MaskedBatchNorm2d.from_batchnorm(bn, conv)
    assert mbn.weight is bn.weight and mbn.running_mean is bn.running_mean
    assert set(mbn.state_dict()) == set(bn.state_dict())
    y = mbn(conv(torch.rand(4, 3, 5, 5)))
    assert bool((y.detach()[:, ~conv.mask] == 0).all())
    assert bool((y.detach()[:, conv.mask] != 0).any())
    net = copy.deepcopy(nn.Sequential(conv, mbn))
    assert net[1].source is net[0]
    assert "masked_by=DefectiveConv2d(keep=0.3" in repr(mbn)


def test_paper_reference_differs_in_train_bn_stats_but_not_in_eval():
    torch.manual_seed(0)
    conv = DefectiveConv2d(3, 6, 3, padding=1, keep=0.3, feature_size=6, seed=0)
    sparse = nn.Sequential(conv, MaskedBatchNorm2d.from_batchnorm(nn.BatchNorm2d(6), conv))
    paper = copy.deepcopy(sparse)
    paper[0].defer_mask = True
    assert "reference=paper" in repr(paper[0])
    x = torch.rand(8, 3, 6, 6)
    ys, yp = sparse(x), paper(x)
    assert bool((yp.detach()[:, ~conv.mask] == 0).all())
    # BN statistics: the paper order normalises with the dense conv's channel statistics.
    dense = F.conv2d(x, conv.weight, conv.bias, padding=1)
    expected = 0.1 * dense.mean((0, 2, 3))
    torch.testing.assert_close(paper[1].running_mean, expected.detach())
    assert not torch.allclose(sparse[1].running_mean, paper[1].running_mean)
    assert not torch.allclose(ys, yp)
    sparse.eval(), paper.eval()
    paper[1].load_state_dict(sparse[1].state_dict())
    torch.testing.assert_close(sparse(x), paper(x))


def test_errors():
    # Grouped convs, padding strings and padding modes are nn.Conv2d's (grouped ones run dense,
    # tests/nn/test_defect_torchvision.py); its own errors name the argument.
    with pytest.raises(ValueError, match="divisible by groups"):
        DefectiveConv2d(4, 4, 3, keep=0.5, feature_size=4, groups=3)
    with pytest.raises(ValueError, match="padding_mode"):
        DefectiveConv2d(4, 4, 3, keep=0.5, feature_size=4, padding_mode="mirror")
    with pytest.raises(ValueError, match="mask_resize"):
        DefectiveConv2d(4, 4, 3, keep=0.5, feature_size=4, mask_resize="stretch")
    with pytest.raises(ValueError, match="keep must be in"):
        DefectiveConv2d(4, 4, 3, keep=1.5, feature_size=4)
    with pytest.raises(ValueError, match="keep must be in"):
        DefectiveConv2d(4, 4, 3, keep=-0.1, feature_size=4)
    with pytest.raises(ValueError, match="unknown kind"):
        DefectiveConv2d(4, 4, 3, keep=0.5, kind="pixel", feature_size=4)
    with pytest.raises(ValueError, match="padding"):
        DefectiveConv2d(4, 4, 3, padding="full", keep=0.5, feature_size=4)
    with pytest.raises(TypeError, match="feature_size"):
        DefectiveConv2d(4, 4, 3, keep=0.5, feature_size="big")
    layer = DefectiveConv2d(4, 4, 3, keep=0.5, feature_size=(6, 6))
    with pytest.raises(ValueError, match=r"feature size \(6, 6\) but the input gives \(8, 8\)"):
        layer(torch.rand(1, 4, 10, 10))
    with pytest.raises(TypeError, match="DefectiveConv2d"):
        MaskedBatchNorm2d(4, nn.Conv2d(4, 4, 3))


def test_keep_zero_and_one():
    x = torch.rand(2, 3, 6, 6)
    off = DefectiveConv2d(3, 5, 3, padding=1, keep=0.0, feature_size=6, seed=0)
    on = DefectiveConv2d(3, 5, 3, padding=1, keep=1.0, feature_size=6, seed=0)
    with sparsemask.backend("cpu"):
        assert bool((off(x) == 0).all())
        torch.testing.assert_close(on(x), F.conv2d(x, on.weight, on.bias, padding=1))


def test_defective_unit_compiles_fullgraph():
    conv = DefectiveConv2d(3, 6, 3, padding=1, keep=0.3, feature_size=6, seed=0)
    unit = nn.Sequential(conv, MaskedBatchNorm2d.from_batchnorm(nn.BatchNorm2d(6), conv), nn.ReLU())
    ref = copy.deepcopy(unit)
    x = torch.rand(2, 3, 6, 6)
    with sparsemask.backend("cpu"):
        y = torch.compile(unit, fullgraph=True, backend="aot_eager")(x)
        torch.testing.assert_close(y, ref(x))
