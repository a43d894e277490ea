"""Random Spiking (seed 003): spiked fraction, noise range, zero gradients, inference modes."""
import copy

import pytest
import torch
from torch import nn

from sparsemask.nn.dropout import MCDropout, RandomizedInference
from sparsemask.nn.spiking import RandomSpiking, insert_after_first_conv, spiking_inference


@pytest.mark.parametrize("p", [0.8, 0.5, 0.95])
def test_spiked_fraction_and_noise_range(p):
    layer = RandomSpiking(p=p, seed=0).train()
    x = torch.randn(32, 16, 12, 12) * 3 + 1
    out = layer(x)
    spiked = layer.last_spiked
    # 73728 units: 4 standard deviations of the fraction are < 0.008
    assert abs(spiked.float().mean().item() - (1 - p)) < 0.008
    assert torch.equal(out[~spiked], x[~spiked])
    noise = out[spiked]
    assert noise.min() >= x.min() and noise.max() <= x.max()
    # uniform over [min, max]: mean in the middle, spread ~ range / sqrt(12)
    lo, hi = x.min().item(), x.max().item()
    assert abs(noise.mean().item() - (lo + hi) / 2) < 0.02 * (hi - lo)
    assert abs(noise.std().item() - (hi - lo) / 12 ** 0.5) < 0.02 * (hi - lo)


def test_min_max_are_over_the_whole_batch():
    layer = RandomSpiking(p=0.0, seed=1).train()  # every unit spiked
    x = torch.zeros(2, 1, 50, 50)
    x[0] = -1.0  # image 0 in [-1, -1], image 1 in [0, 0]: the batch range is [-1, 0]
    out = layer(x)
    for i in range(2):
        assert out[i].min() < -0.9 and out[i].max() > -0.1  # both images draw from [-1, 0]
    assert out.min() >= -1.0 and out.max() <= 0.0


def test_gradient_is_exactly_zero_at_spiked_units():
    layer = RandomSpiking(p=0.7, seed=2).train()
    x = torch.randn(4, 8, 9, 9, requires_grad=True)
    w = torch.randn(4, 8, 9, 9)
    (layer(x) * w).sum().backward()
    spiked = layer.last_spiked
    assert spiked.any() and (~spiked).any()
    assert torch.equal(x.grad[spiked], torch.zeros(int(spiked.sum())))
    assert torch.equal(x.grad[~spiked], w[~spiked])


def test_modes_in_eval_and_train():
    x = torch.randn(8, 4, 6, 6)
    off = RandomSpiking(p=0.5, mode="off", seed=0)
    assert torch.equal(off.eval()(x), x)  # single prediction: spiking off at inference
    assert not torch.equal(off.train()(x), x)  # always spikes in training
    for mode in ("mc", "vote"):
        layer = RandomSpiking(p=0.5, mode=mode, seed=0).eval()
        assert not torch.equal(layer(x), x)
    assert torch.equal(RandomSpiking(p=1.0).train()(x), x)


def test_seeded_streams_reproduce():
    x = torch.randn(8, 4, 6, 6)
    a, b = RandomSpiking(seed=5).train(), RandomSpiking(seed=5).train()
    outs = [a(x) for _ in range(2)]
    assert torch.equal(outs[0], b(x)) and torch.equal(outs[1], b(x))
    assert not torch.equal(outs[0], outs[1])
    a.reseed(5)
    assert torch.equal(a(x), outs[0])
    c = copy.deepcopy(a)
    assert torch.equal(a(x), c(x))  # a copy continues the same stream


class _Net(nn.Module):
    """conv inside a nested block, then pooling: the layer must land after that conv."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.head = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv2(self.stem(x))).flatten(1))


def test_insert_after_first_conv_places_layer_before_pooling():
    torch.manual_seed(0)
    net = _Net()
    x = torch.rand(5, 1, 8, 8)
    before = net(x)
    layer = RandomSpiking(p=0.8, seed=0)
    assert insert_after_first_conv(net, layer) is net
    assert isinstance(net.stem[0], nn.Sequential) and net.stem[0][1] is layer
    assert isinstance(net.stem[0][0], nn.Conv2d) and isinstance(net.stem[2], nn.MaxPool2d)
    assert isinstance(net.conv2, nn.Conv2d)
    net.eval()
    assert torch.equal(net(x), before)  # mode "off": identity at inference
    net.train()
    net(x)
    assert layer.last_spiked.shape == (5, 6, 8, 8)  # the first conv's output, before pooling
    with pytest.raises(ValueError, match="no convolution"):
        insert_after_first_conv(nn.Sequential(nn.Linear(2, 2)), RandomSpiking())
    with pytest.raises(TypeError, match="layer"):
        insert_after_first_conv(_Net(), "spike")


def test_spiking_inference_modes_and_rsd(digits_data, digits_model):
    _, _, x, y = digits_data
    model = copy.deepcopy(digits_model)
    assert spiking_inference(insert_after_first_conv(model, RandomSpiking(0.8, "off"))) is model

    for mode, combine in (("mc", "mean"), ("vote", "vote")):
        model = insert_after_first_conv(copy.deepcopy(digits_model), RandomSpiking(0.8, mode, n=6, seed=3))
        wrapped = spiking_inference(model).eval()
        assert isinstance(wrapped, RandomizedInference) and wrapped.n == 6 and wrapped.combine == combine
        pred = wrapped.predict(x)
        assert ((pred >= 0) & (pred < 10)).all()
        model.features[0][1].reseed(3)
        assert torch.equal(wrapped.predict(x), pred)  # deterministic under a seed
        # spiking 20% of the first layer's units costs some but not most accuracy
        assert (pred == y).float().mean() > 0.5

    # RSD: spiking composes with MC dropout in the same model
    rsd = insert_after_first_conv(copy.deepcopy(digits_model), RandomSpiking(0.8, "mc", n=4, seed=0))
    rsd.head = nn.Sequential(MCDropout(0.9, mc=True, seed=1), rsd.head)
    out = spiking_inference(rsd).eval()(x[:10])
    assert out.shape == (10, 10) and torch.isfinite(out).all()

    bad = nn.Sequential(RandomSpiking(mode="mc", n=2), RandomSpiking(mode="vote", n=2))
    with pytest.raises(ValueError, match="disagree"):
        spiking_inference(bad)
    with pytest.raises(ValueError, match="no RandomSpiking"):
        spiking_inference(nn.Linear(2, 2))


def test_bad_arguments():
    with pytest.raises(ValueError, match="p must"):
        RandomSpiking(p=1.2)
    with pytest.raises(TypeError, match="p must"):
        RandomSpiking(p="high")
    with pytest.raises(ValueError, match="mode"):
        RandomSpiking(mode="average")
    with pytest.raises(ValueError, match="n must"):
        RandomSpiking(n=0)
    with pytest.raises(ValueError, match="seed or generator"):
        RandomSpiking(seed=0, generator=torch.Generator())
