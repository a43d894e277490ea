"""Conventions every attack keeps: ε-ball and [0, 1] box, ε = 0, untouched inputs and model,
batch consistency, per-sample ε, seeds, targeted mode."""
from __future__ import annotations

import pytest
import torch

from sparsemask import attacks as A


def make(name, model, eps, norm, **kw):
    """One attack per family/norm, with small step counts so the tests stay fast."""
    kw.setdefault("progress", False)
    if name == "FGSM":
        return A.FGSM(model, eps=eps, norm=norm, **kw)
    if name == "PGD":
        return A.PGD(model, eps=eps, norm=norm, steps=5, seed=0, **kw)
    if name == "PGD-sparse":
        return A.PGD(model, eps=eps, norm=norm, steps=5, seed=0, l1_sparsity=0.1, **kw)
    if name == "BIM":
        return A.BIM(model, eps=eps, norm=norm, steps=5, **kw)
    if name == "MIFGSM":
        return A.MIFGSM(model, eps=eps, norm=norm, steps=5, **kw)
    raise KeyError(name)


BOUNDED = [("FGSM", n) for n in ("inf", "2", "1")] + [("PGD", n) for n in ("inf", "2", "1")] + \
          [("PGD-sparse", "1"), ("BIM", "inf"), ("BIM", "2"), ("MIFGSM", "inf"), ("MIFGSM", "2")]
EPS = {"inf": 0.1, "2": 0.8, "1": 4.0}


def unbounded(model):
    return [A.CW(model, kappa=0.5, binary_steps=3, steps=30, lr=0.05, progress=False),
            A.DeepFool(model, norm="2", progress=False), A.DeepFool(model, norm="inf", progress=False),
            A.Boundary(model, steps=30, seed=0, progress=False)]


@pytest.mark.parametrize("name,norm", BOUNDED)
def test_eps_ball_and_box(digits_model, batch, name, norm):
    x, y = batch
    eps = EPS[norm]
    x_adv = make(name, digits_model, eps, norm)(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    d = (x_adv - x).flatten(1)
    size = {"inf": d.abs().amax(1), "2": d.norm(dim=1), "1": d.abs().sum(1)}[norm]
    assert (size <= eps * (1 + 1e-5) + 1e-6).all(), size.max()
    assert (size > 0).any()  # it did move


@pytest.mark.parametrize("name,norm", BOUNDED)
def test_per_sample_eps(digits_model, batch, name, norm):
    x, y = batch
    eps = torch.linspace(0, EPS[norm], x.shape[0])
    x_adv = make(name, digits_model, eps, norm)(x, y)
    d = (x_adv - x).flatten(1)
    size = {"inf": d.abs().amax(1), "2": d.norm(dim=1), "1": d.abs().sum(1)}[norm]
    assert (size <= eps * (1 + 1e-5) + 1e-6).all()
    assert size[0] == 0


@pytest.mark.parametrize("name,norm", BOUNDED)
def test_eps_zero_returns_input(digits_model, batch, name, norm):
    x, y = batch
    torch.testing.assert_close(make(name, digits_model, 0.0, norm)(x, y), x, atol=0, rtol=0)


def test_unbounded_attacks_stay_in_box(digits_model, batch):
    x, y = batch
    for attack in unbounded(digits_model):
        x_adv = attack(x, y)
        assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1, attack


def all_attacks(model):
    return [make(n, model, EPS[norm], norm) for n, norm in BOUNDED] + unbounded(model)


def test_inputs_and_model_untouched(digits_model, batch):
    x, y = batch
    x0, y0 = x.clone(), y.clone()
    targets = (y + 1) % 10
    t0 = targets.clone()
    params = {k: v.clone() for k, v in digits_model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in digits_model.parameters()]
    for attack in all_attacks(digits_model):
        attack(x, y)
        attack(x, y, targets)
        torch.testing.assert_close(x, x0, atol=0, rtol=0)
        assert torch.equal(y, y0) and torch.equal(targets, t0)
    assert not digits_model.training, "attacks must not switch the model's mode"
    for k, v in digits_model.state_dict().items():
        assert torch.equal(v, params[k]), k
    for p, g in zip(digits_model.parameters(), grads):  # nothing accumulated into .grad
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


def test_train_mode_and_randomness_left_on(randomized_model, batch):
    """A model in train mode (dropout active) stays in train mode and stays random."""
    x, y = batch
    attack = A.FGSM(randomized_model, eps=0.1, progress=False)
    torch.manual_seed(1)
    a = attack(x, y)
    torch.manual_seed(2)
    b = attack(x, y)
    assert randomized_model.training and randomized_model.drop.training
    assert not torch.equal(a, b), "dropout was switched off: the attack must not call eval()"
    randomized_model.eval()
    A.FGSM(randomized_model, eps=0.1, progress=False)(x, y)
    assert not randomized_model.training


@pytest.mark.parametrize("attack_name", ["FGSM", "PGD", "BIM", "MIFGSM", "CW", "DeepFool2", "DeepFoolInf"])
def test_batch_consistency(digits_model, batch, attack_name):
    """A batch gives per row the same result as the rows attacked one at a time."""
    x, y = batch
    x, y = x[:6], y[:6]
    attack = {
        "FGSM": A.FGSM(digits_model, eps=0.1, progress=False),
        "PGD": A.PGD(digits_model, eps=0.1, steps=5, random_start=False, progress=False),
        "BIM": A.BIM(digits_model, eps=0.5, norm="2", steps=5, progress=False),
        "MIFGSM": A.MIFGSM(digits_model, eps=0.1, steps=5, progress=False),
        "CW": A.CW(digits_model, binary_steps=2, steps=20, lr=0.05, progress=False),
        "DeepFool2": A.DeepFool(digits_model, norm="2", progress=False),
        "DeepFoolInf": A.DeepFool(digits_model, norm="inf", progress=False),
    }[attack_name]
    whole = attack(x, y)
    rows = torch.cat([attack(x[i:i + 1], y[i:i + 1]) for i in range(len(y))])
    torch.testing.assert_close(whole, rows, atol=1e-5, rtol=1e-5)


def test_seeded_random_start(digits_model, batch):
    x, y = batch
    a = A.PGD(digits_model, eps=0.1, steps=3, seed=7, progress=False)(x, y)
    b = A.PGD(digits_model, eps=0.1, steps=3, seed=7, progress=False)(x, y)
    c = A.PGD(digits_model, eps=0.1, steps=3, seed=8, progress=False)(x, y)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(a, c)
    # Noise is drawn row by row from the seed, so the first row matches the single example.
    first = A.PGD(digits_model, eps=0.1, steps=3, seed=7, progress=False)(x[:1], y[:1])
    torch.testing.assert_close(first, a[:1], atol=1e-5, rtol=1e-5)
    g = torch.Generator().manual_seed(7)
    torch.testing.assert_close(A.PGD(digits_model, eps=0.1, steps=3, generator=g, progress=False)(x, y), a)
    d = A.Boundary(digits_model, steps=10, seed=3, progress=False)(x, y)
    e = A.Boundary(digits_model, steps=10, seed=3, progress=False)(x, y)
    torch.testing.assert_close(d, e, atol=0, rtol=0)


def test_targeted_attacks_reach_targets(digits_model, batch):
    x, y = batch
    targets = (y + 3) % 10
    for attack in [A.PGD(digits_model, eps=0.4, steps=20, seed=0, progress=False),
                   A.CW(digits_model, c=0.1, binary_steps=5, steps=50, lr=0.2, progress=False),
                   A.DeepFool(digits_model, progress=False)]:
        pred = A.predict(digits_model, attack(x, y, targets))
        assert (pred == targets).double().mean() > 0.9, attack


def test_repr(digits_model):
    assert "eps=0.1" in repr(A.PGD(digits_model, eps=0.1))
    assert "eot_n=3" in repr(A.EOT(A.FGSM(digits_model), n=3))
    assert "n=3" in repr(A.EOTModel(digits_model, n=3))


def test_eps255():
    assert A.eps255(16) == pytest.approx(16 / 255)
    torch.testing.assert_close(A.eps255(torch.tensor([255.0])), torch.tensor([1.0]))
