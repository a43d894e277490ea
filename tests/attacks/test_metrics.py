"""Metrics against hand computations."""
from __future__ import annotations

import pytest
import torch

from sparsemask import attacks as A


class Fixed(torch.nn.Module):
    """Predicts a fixed label per example (given as a tensor), whatever the input."""

    def __init__(self, labels, k=10):
        super().__init__()
        self.logits = torch.nn.functional.one_hot(labels, k).float()

    def forward(self, x):
        return self.logits[: x.shape[0]]


def test_accuracy_and_success_rates():
    x = torch.rand(6, 1, 2, 2)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    clean = Fixed(torch.tensor([0, 1, 2, 3, 9, 9]))  # 4/6 correct
    assert A.accuracy(clean, x, y) == pytest.approx(4 / 6)
    assert A.accuracy(clean, x, y, batch_size=4) == pytest.approx(4 / 6)  # batching is exact

    class Switch(torch.nn.Module):
        """Clean predictions on x, adversarial predictions on anything else."""

        def forward(self, z):
            if torch.equal(z, x):
                return clean(z)
            return Fixed(torch.tensor([7, 1, 2, 8, 4, 9]))(z)

    m = Switch()
    x_adv = x + 0.01
    # among the 4 correct (rows 0-3), rows 0 and 3 are fooled
    assert A.attack_success_rate(m, x, x_adv, y) == pytest.approx(2 / 4)
    assert A.success_defense_rate(m, x, x_adv, y) == pytest.approx(2 / 4)
    targets = torch.tensor([7, 0, 0, 0, 0, 0])
    assert A.attack_success_rate(m, x, x_adv, y, targets) == pytest.approx(1 / 4)


def test_success_defense_rate_is_one_minus_asr(digits_model, batch):
    x, y = batch
    x_adv = A.FGSM(digits_model, eps=0.1, progress=False)(x, y)
    asr = A.attack_success_rate(digits_model, x, x_adv, y)
    assert 0 < asr < 1
    assert A.success_defense_rate(digits_model, x, x_adv, y) == pytest.approx(1 - asr)


def test_robust_accuracy_mean_std(digits_model, randomized_model, batch):
    x, y = batch
    mean, std = A.robust_accuracy(digits_model, x, y, draws=4)
    assert mean == pytest.approx(A.accuracy(digits_model, x, y)) and std == 0
    torch.manual_seed(0)
    mean, std = A.robust_accuracy(randomized_model, x, y, draws=8)
    torch.manual_seed(0)
    accs = torch.tensor([A.accuracy(randomized_model, x, y) for _ in range(8)], dtype=torch.float64)
    assert mean == pytest.approx(accs.mean().item()) and std == pytest.approx(accs.std().item())
    assert std > 0
    assert A.robust_accuracy(digits_model, x, y, draws=1)[1] == 0.0


def test_perturbation_norms():
    x = torch.zeros(2, 1, 2, 2)
    x_adv = torch.tensor([[[[0.3, -0.4], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    n = A.perturbation_norms(x, x_adv)
    torch.testing.assert_close(n["l0"], torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(n["l1"], torch.tensor([0.7, 0.0]))
    torch.testing.assert_close(n["l2"], torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(n["linf"], torch.tensor([0.4, 0.0]))
    assert A.perturbation_norms(x, x_adv, tol=0.35)["l0"][0] == 1
    with pytest.raises(ValueError, match="same shape"):
        A.perturbation_norms(x, x_adv[:1])


def test_prediction_stability(digits_model, batch):
    x, _ = batch
    assert A.prediction_stability(digits_model, x, lambda z: z.clone(), repeats=2) == 1.0
    small = A.prediction_stability(digits_model, x, lambda z: A.gaussian_noise_l2(z, 0.2), repeats=3)
    large = A.prediction_stability(digits_model, x, lambda z: A.gaussian_noise_l2(z, 6.0), repeats=3)
    assert small > large
    assert 0 <= large <= 1


def test_boundary_score_by_hand():
    x = torch.zeros(3, 1, 2, 2)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] = 0.2  # ||P||^2 / N = 0.04 / 4 = 0.01
    x_adv[1, 0, 0, 0] = 0.4  # 0.04
    x_adv[2] = 1.0           # 1.0
    assert A.boundary_score(x, x_adv) == pytest.approx(0.04)
    # a failed image counts as +inf, which moves the median up
    assert A.boundary_score(x, x_adv, success=torch.tensor([False, True, True])) == pytest.approx(1.0)
    assert A.boundary_score(x[:2], x_adv[:2]) == pytest.approx(0.025)  # mean of the two middle values
