"""Training-time baselines of seeds 001/003: PGD adversarial training and defensive distillation."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsemask.attacks import PGD
from sparsemask.data import load_dataset
from sparsemask.train import TrainConfig, defensive_distillation, evaluate, train


def small_cnn():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(32 * 16, 10))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits"), load_dataset("digits", split="test")


def pgd_accuracy(model, x, y, eps):
    model.eval()
    x_adv = PGD(model, eps=eps, norm="inf", steps=10, step_size=eps / 4, seed=0, progress=False)(x, y)
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


def test_adversarial_training_improves_pgd_accuracy(digits):
    tr, te = digits
    x, y = te.tensors()
    eps = 0.1  # digits are 8x8 with 17 grey levels: 8/255 is too small to matter here
    base = dict(epochs=8, batch_size=64, lr=0.05, milestones=(), progress=False)
    torch.manual_seed(0)
    std = small_cnn()
    train(std, tr, None, TrainConfig(**base))
    torch.manual_seed(0)
    adv = small_cnn()
    train(adv, tr, None, TrainConfig(**base, method="adversarial", adv_eps=eps, adv_steps=3, adv_step_size=eps / 2))
    clean_std, clean_adv = evaluate(std, te)["acc"], evaluate(adv, te)["acc"]
    rob_std, rob_adv = pgd_accuracy(std, x, y, eps), pgd_accuracy(adv, x, y, eps)
    assert clean_adv > 0.85 and clean_std > 0.9
    assert rob_adv > rob_std + 0.15, (rob_std, rob_adv)


def test_madry_defaults():
    c = TrainConfig(method="adversarial")
    assert (c.adv_eps, c.adv_steps, c.adv_step_size, c.adv_norm) == (8 / 255, 7, 2 / 255, "inf")


def test_defensive_distillation_student_matches_teacher(digits):
    tr, te = digits
    T = 100.0
    torch.manual_seed(0)
    teacher, student, hist = defensive_distillation(
        small_cnn, tr, te, TrainConfig(epochs=8, batch_size=64, lr=0.05, milestones=(), progress=False),
        temperature=T)
    x, _ = tr.tensors()
    with torch.no_grad():
        p_t = torch.softmax(teacher(x) / T, 1)
        p_s = torch.softmax(student(x) / T, 1)
        p_untrained = torch.softmax(small_cnn()(x) / T, 1)
    agreement = (p_t.argmax(1) == p_s.argmax(1)).float().mean().item()
    assert agreement > 0.9
    tv = lambda a, b: (a - b).abs().sum(1).mean().item() / 2  # noqa: E731
    assert tv(p_t, p_s) < 0.25 * tv(p_t, p_untrained)
    assert hist["student"][-1]["test_acc"] > 0.85
    # Trained at T = 100, deployed at T = 1: logits are ~T times larger than a normal model's, so the
    # T = 1 softmax saturates (the gradient masking the defense relies on).
    with torch.no_grad():
        assert student(x).softmax(1).max(1).values.mean() > 0.99


def test_distillation_needs_teacher(digits):
    tr, _ = digits
    with pytest.raises(ValueError, match="teacher"):
        train(small_cnn(), tr, None, TrainConfig(method="distillation", epochs=1, progress=False))
