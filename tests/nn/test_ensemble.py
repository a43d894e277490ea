"""Ensemble combine modes and the EN / DIF ensemble builder."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsemask.models import lenet5
from sparsemask.nn import Ensemble, make_ensemble


def _linear(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 4))


def test_combine_modes():
    models = [_linear(s) for s in range(3)]
    x = torch.randn(6, 3, 2, 2)
    outs = torch.stack([m(x) for m in models])
    torch.testing.assert_close(Ensemble(models, "logits")(x), outs.mean(0))
    probs = Ensemble(models, "probs")(x)
    torch.testing.assert_close(probs.softmax(-1), outs.softmax(-1).mean(0))
    votes = F.one_hot(outs.argmax(-1), 4).sum(0)
    vote = Ensemble(models, "vote")(x).argmax(-1)
    assert torch.equal(votes.gather(1, vote[:, None])[:, 0], votes.max(1).values)
    assert "n=3, combine=vote" in repr(Ensemble(models, "vote"))


def test_make_ensemble_en_vs_dif():
    d = dict(keep=0.5)
    en = make_ensemble(lenet5, 3, defective=d, mode="EN", seed=10, in_channels=1, input_size=28)
    dif = make_ensemble(lenet5, 3, defective=d, mode="DIF", seed=10, in_channels=1, input_size=28)
    a, b = en.models[0], en.models[1]
    assert torch.equal(a.conv2.weight, b.conv2.weight)  # same initial weights
    assert not torch.equal(a.conv1.mask, b.conv1.mask)  # different masks
    assert not torch.equal(dif.models[0].conv2.weight, dif.models[1].conv2.weight)
    assert not torch.equal(dif.models[0].conv1.mask, dif.models[1].conv1.mask)
    assert torch.equal(en.models[0].conv1.mask, dif.models[0].conv1.mask)  # mask seed = seed + i
    assert en(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_errors():
    with pytest.raises(ValueError, match="combine"):
        Ensemble([_linear(0)], "median")
    with pytest.raises(ValueError, match="non-empty"):
        Ensemble([], "logits")
    with pytest.raises(ValueError, match="mode"):
        make_ensemble(lenet5, 2, mode="SAME")
    with pytest.raises(ValueError, match="n must be"):
        make_ensemble(lenet5, 0)
