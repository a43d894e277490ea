"""defect(): placement resolution, feature sizes from an example input, BN pairing, widen, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsemask
from sparsemask.nn import DefectiveConv2d, MaskedBatchNorm2d, defect, defective_layers


class Net(nn.Module):
    """conv-BN-ReLU, residual pair, stride-2 conv without BN, then a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.a = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(8)
        self.down = nn.Conv2d(8, 12, 3, stride=2)
        self.head = nn.Linear(12 * 4 * 4, 5)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(self.bn_a(self.a(x)) + x)
        return self.head(torch.flatten(F.relu(self.down(x)), 1))


class InputResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)  # the conv's channels are the input's: cannot widen


def test_defect_by_names_sizes_masks_from_example_input_and_pairs_bn():
    torch.manual_seed(0)
    net = Net()
    x = torch.rand(2, 3, 10, 10)
    before = net(x)
    defect(net, 0.4, where=["stem", "down"], seed=0, example_input=x[:1])
    assert defective_layers(net) == ["stem.0", "down"]
    assert net.stem[0].feature_size == (10, 10) and net.down.feature_size == (4, 4)
    assert isinstance(net.stem[1], MaskedBatchNorm2d) and net.stem[1].source is net.stem[0]
    assert type(net.bn_a) is nn.BatchNorm2d and type(net.a) is nn.Conv2d
    with sparsemask.backend("cpu"):
        y = net(x)
    assert y.shape == before.shape
    # the stem's BN output is exactly zero at its conv's defective positions
    seen = {}
    net.stem[1].register_forward_hook(lambda m, a, o: seen.setdefault("bn", o))
    net(x)
    assert bool((seen["bn"][:, ~net.stem[0].mask] == 0).all())


def test_defect_keeps_weights_and_parameter_count():
    net = Net()
    w = net.a.weight.detach().clone()
    n = sum(p.numel() for p in net.parameters())
    defect(net, 0.5, where=["a"], example_input=torch.rand(1, 3, 10, 10), seed=1)
    assert torch.equal(net.a.weight, w)
    assert sum(p.numel() for p in net.parameters()) == n


def test_seed_gives_same_masks_and_layers_differ():
    a = defect(Net(), 0.5, where=["stem", "a"], example_input=torch.rand(1, 3, 10, 10), seed=3)
    b = defect(Net(), 0.5, where=["stem", "a"], example_input=torch.rand(1, 3, 10, 10), seed=3)
    assert torch.equal(a.stem[0].mask, b.stem[0].mask) and torch.equal(a.a.mask, b.a.mask)
    assert not torch.equal(a.stem[0].mask, a.a.mask)


def test_defect_composes_and_rejects_double_defect():
    net = Net()
    x = torch.rand(1, 3, 10, 10)
    defect(net, 0.7, where=["stem"], example_input=x, seed=0)
    defect(net, 0.3, where=["down"], example_input=x, seed=1)
    assert net.stem[0].keep == 0.7 and net.down.keep == 0.3
    with pytest.raises(ValueError, match="already defective"):
        defect(net, 0.3, where=["down"], example_input=x)


def test_widen_resizes_following_layers():
    net = Net()
    n = sum(p.numel() for p in net.parameters())
    defect(net, 0.5, where=["stem"], widen=2, example_input=torch.rand(1, 3, 10, 10), seed=0)
    # stem output joins the residual stream of `a`, so `a` is widened with it; `down` reads it.
    assert net.stem[0].out_channels == 16 and net.stem[1].num_features == 16
    assert net.a.in_channels == 16 and net.a.out_channels == 16 and net.bn_a.num_features == 16
    assert net.down.in_channels == 16 and net.down.out_channels == 12
    assert sum(p.numel() for p in net.parameters()) > n
    assert net(torch.rand(2, 3, 10, 10)).shape == (2, 5)


def test_errors():
    net = Net()
    x = torch.rand(1, 3, 10, 10)
    with pytest.raises(ValueError, match="no layer named 'stemm'.*stem"):
        defect(net, 0.5, where=["stemm"], example_input=x)
    with pytest.raises(ValueError, match="Sequential runs no Conv2d"):  # the generic rule has nothing to split
        defect(nn.Sequential(nn.Flatten(), nn.Linear(300, 5)), 0.5, where="bottom", example_input=x)
    with pytest.raises(ValueError, match="no Conv2d inside"):
        defect(net, 0.5, where=["head"], example_input=x)
    with pytest.raises(ValueError, match="keep must be in"):
        defect(net, 1.2, where=["a"], example_input=x)
    with pytest.raises(ValueError, match="unknown kind"):
        defect(net, 0.5, where=["a"], kind="block", example_input=x)
    with pytest.raises(ValueError, match="widen"):
        defect(net, 0.5, where=["a"], widen=0, example_input=x)
    with pytest.raises(ValueError, match="reference"):
        defect(net, 0.5, where=["a"], reference="dense", example_input=x)
    with pytest.raises(ValueError, match="example_input"):
        defect(net, 0.5, where=["a"])
    with pytest.raises(ValueError, match="input channels"):
        defect(InputResidual(), 0.5, where=["conv"], widen=2, example_input=x)
    assert not defective_layers(net)  # failed calls changed nothing


def test_bn_output_mask_by_bn_name():
    """A BatchNorm2d's name masks that BN's output with a mask of its own (the published
    DenseNet-121 / SENet-18 points); no conv becomes defective."""
    torch.manual_seed(0)
    net = Net()
    ref = Net()
    ref.load_state_dict(net.state_dict())
    x = torch.rand(3, 3, 10, 10, dtype=torch.float64)
    net, ref = net.double(), ref.double()
    defect(net, 0.4, where=["bn_a"], example_input=x[:1], seed=3)
    assert defective_layers(net) == [] and sparsemask.nn.masked_norms(net) == ["bn_a"]
    bn = net.bn_a
    assert isinstance(bn, MaskedBatchNorm2d) and bn.source is None
    assert bn.mask.shape == (8, 10, 10) and bn.mask.dtype == torch.bool
    assert int((~bn.mask).sum()) == 480          # exact: int(800 * 0.6)
    assert "own_mask=(8, 10, 10)" in repr(bn) and "sampling=exact" in repr(bn)
    assert set(net.state_dict()) - set(ref.state_dict()) == {"bn_a.mask"}
    for train in (True, False):
        net.train(train), ref.train(train)
        ref.bn_a.register_forward_hook(lambda m, a, o: o * bn.mask)
        y, y_ref = net(x), ref(x)
        ref.bn_a._forward_hooks.clear()
        torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(net.bn_a.running_mean, ref.bn_a.running_mean, atol=1e-12, rtol=0)
    other = Net().double()
    defect(other, 0.4, where=["bn_a"], example_input=x[:1], seed=4)
    assert not torch.equal(other.bn_a.mask, bn.mask)
    other.load_state_dict(net.state_dict())
    assert torch.equal(other.bn_a.mask, bn.mask)


def test_bn_output_mask_errors():
    net = Net()
    x = torch.rand(1, 3, 10, 10)
    with pytest.raises(ValueError, match="masked twice"):
        defect(net, 0.5, where=["a", "bn_a"], example_input=x)
    defect(Net(), 0.5, where=["a"], example_input=x)           # the conv alone masks bn_a
    masked = defect(Net(), 0.5, where=["bn_a"], example_input=x)
    with pytest.raises(ValueError, match="already masked"):
        defect(masked, 0.5, where=["bn_a"], example_input=x)
    with pytest.raises(ValueError, match="no conv"):
        defect(Net(), 0.5, where=["bn_a"], widen=2, example_input=x)
    with pytest.raises(ValueError, match="exactly one of source"):
        MaskedBatchNorm2d(8)
    with pytest.raises(ValueError, match=r"bool tensor \[8, H, W\]"):
        MaskedBatchNorm2d(8, mask=torch.ones(4, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"bool tensor \[8, H, W\]"):
        MaskedBatchNorm2d(8, mask=torch.ones(8, 5, 5))
    with pytest.raises(ValueError, match="sampling"):
        defect(Net(), 0.5, where=["a"], example_input=x, sampling="exactly")
    with pytest.raises(ValueError, match="reading"):
        defect(Net(), 0.5, where="bottom", example_input=x, reading="paper")
