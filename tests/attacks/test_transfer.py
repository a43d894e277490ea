"""Transfer attacks: surrogate ensembles and seed 003's multi-surrogate attack with validation."""
from __future__ import annotations

import copy

import pytest
import torch

from sparsemask import attacks as A


def jittered(model, seed, scale=0.05):
    """A different model near ``model``: every weight perturbed by relative Gaussian noise."""
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1 + scale * torch.randn(p.shape, generator=g))
    return m


class Fixed(torch.nn.Module):
    def __init__(self, labels):
        super().__init__()
        self.labels = labels

    def forward(self, x):
        return torch.nn.functional.one_hot(self.labels, 10).float()


def test_ensemble_is_mean_of_logits(digits_model, batch):
    x, _ = batch
    ms = [jittered(digits_model, s) for s in range(3)]
    ens = A.Ensemble(ms)
    with torch.no_grad():
        torch.testing.assert_close(ens(x), sum(m(x) for m in ms) / 3)
        w = A.Ensemble(ms[:2], weights=[0.25, 0.75])(x)
        torch.testing.assert_close(w, 0.25 * ms[0](x) + 0.75 * ms[1](x))
    assert "n=3" in repr(ens)
    with pytest.raises(ValueError, match="weights"):
        A.Ensemble(ms, weights=[1.0])
    with pytest.raises(ValueError, match="at least one"):
        A.Ensemble([])


def test_transfer_from_ensemble(digits_model, batch):
    """Examples made on surrogates fool the target far more often than noise of the same size."""
    x, y = batch
    surrogates = A.Ensemble([jittered(digits_model, s, 0.2) for s in range(2)])
    x_adv = A.PGD(surrogates, eps=0.15, steps=10, seed=0, progress=False)(x, y)
    noise = (x + 0.15 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    transfer = A.attack_success_rate(digits_model, x, x_adv, y)
    assert transfer > 0.5
    assert transfer > A.attack_success_rate(digits_model, x, noise, y) + 0.3


def test_multi_surrogate_bookkeeping():
    """Leave-one-out validation counted by hand on models with fixed predictions."""
    x = torch.rand(4, 1, 2, 2)
    y = torch.zeros(4, dtype=torch.long)
    # fooled pattern [v=4, N=4]: model i fools example j where pattern[i, j]
    pattern = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    validators = [Fixed(torch.where(row, 1, 0)) for row in pattern]
    ms = A.MultiSurrogate(lambda m: A.FGSM(m, eps=0.0, progress=False), [Fixed(y)], validators, k=2)
    out = ms.evaluate(x, y, x_adv=x)
    assert torch.equal(out["fooled"], pattern)
    others = pattern.sum(0) - pattern.long()
    torch.testing.assert_close(out["passed"], others >= 2)
    expected = [(pattern[j] & (others[j] >= 2)).sum() / (others[j] >= 2).sum() for j in range(4)]
    torch.testing.assert_close(out["transfer_rate"], torch.stack(expected).double())
    tgt = A.MultiSurrogate(lambda m: A.FGSM(m, eps=0.0, progress=False), [Fixed(y)], validators, k=3)
    res = tgt.evaluate(x, y, x_adv=x, target_model=Fixed(torch.tensor([1, 0, 0, 0])))
    # fools >= 3 of all 4 validators: examples 0, 1, 2; the target is fooled on example 0 only
    assert torch.equal(res["target_passed"], torch.tensor([True, True, True, False]))
    assert res["target_transfer_rate"] == pytest.approx(1 / 3)


def test_multi_surrogate_end_to_end(digits_model, batch):
    x, y = batch
    gens = [jittered(digits_model, s, 0.2) for s in range(2)]
    vals = [jittered(digits_model, 10 + s, 0.2) for s in range(4)]
    ms = A.MultiSurrogate(lambda m: A.PGD(m, eps=0.2, steps=10, seed=0, progress=False), gens, vals, k=2)
    out = ms.evaluate(x, y)
    assert out["x_adv"].shape == x.shape
    assert out["pass_rate"] > 0.3
    assert out["mean_transfer_rate"] > 0.8  # validated examples transfer to the held-out model


def test_multi_surrogate_errors(digits_model):
    with pytest.raises(ValueError, match="k must be <= v - 1"):
        A.MultiSurrogate(lambda m: A.FGSM(m), [digits_model], [digits_model] * 3, k=3)
    with pytest.raises(ValueError, match="at least two"):
        A.MultiSurrogate(lambda m: A.FGSM(m), [digits_model], [digits_model], k=0)
    with pytest.raises(ValueError, match="generators"):
        A.MultiSurrogate(lambda m: A.FGSM(m), [], [digits_model] * 3, k=1)
