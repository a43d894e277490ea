"""Attack strength on the undefended digits model: iterative >= FGSM, success grows with ε,
CW's margin, DeepFool's minimality, Boundary's monotone distance, EOT."""
from __future__ import annotations

import pytest
import torch

from sparsemask import attacks as A
from sparsemask.attacks._common import margin_from_logits


def asr(model, x, x_adv, y):
    return A.attack_success_rate(model, x, x_adv, y)


@pytest.mark.parametrize("norm,eps", [("inf", 0.1), ("2", 0.8), ("1", 6.0)])
def test_iterative_at_least_as_strong_as_fgsm(digits_model, batch, norm, eps):
    x, y = batch
    fgsm = asr(digits_model, x, A.FGSM(digits_model, eps=eps, norm=norm, progress=False)(x, y), y)
    pgd = asr(digits_model, x, A.PGD(digits_model, eps=eps, norm=norm, steps=20, seed=0,
                                     progress=False)(x, y), y)
    bim = asr(digits_model, x, A.BIM(digits_model, eps=eps, norm=norm, steps=20, progress=False)(x, y), y)
    assert pgd >= fgsm and bim >= fgsm, (fgsm, pgd, bim)
    if norm != "1":  # MI-FGSM is defined for L∞ (and L2)
        mi = asr(digits_model, x, A.MIFGSM(digits_model, eps=eps, norm=norm, steps=20, progress=False)(x, y), y)
        assert mi >= fgsm, (fgsm, mi)


@pytest.mark.parametrize("norm,grid", [("inf", [0.0, 0.03, 0.08, 0.15, 0.4]),
                                       ("2", [0.0, 0.3, 0.7, 1.5, 4.0])])
def test_success_rises_with_eps(digits_model, batch, norm, grid):
    x, y = batch
    rates = [asr(digits_model, x, A.PGD(digits_model, eps=e, norm=norm, steps=20, seed=0,
                                        progress=False)(x, y), y) for e in grid]
    assert rates[0] == 0.0
    assert all(b >= a for a, b in zip(rates, rates[1:])), rates
    assert rates[-1] >= 0.99, rates


def test_l1_pgd_reaches_full_success(digits_model, batch):
    x, y = batch
    x_adv = A.PGD(digits_model, eps=20.0, norm="1", steps=30, l1_sparsity=0.05, seed=0, progress=False)(x, y)
    assert asr(digits_model, x, x_adv, y) >= 0.99


@pytest.mark.parametrize("kappa", [0.0, 2.0])
def test_cw_margin_at_least_kappa(digits_model, batch, kappa):
    x, y = batch
    x_adv = A.CW(digits_model, kappa=kappa, c=0.1, binary_steps=4, steps=40, lr=0.1, progress=False)(x, y)
    with torch.no_grad():
        margin = -margin_from_logits(digits_model(x_adv), y)  # max other - true
    moved = (x_adv != x).flatten(1).any(1)
    assert moved.double().mean() > 0.9  # it succeeded on almost every example
    assert (margin[moved] >= kappa - 1e-4).all(), margin[moved].min()
    if kappa > 0:  # a confident attack needs a larger perturbation than kappa = 0
        x0 = A.CW(digits_model, kappa=0.0, c=0.1, binary_steps=4, steps=40, lr=0.1, progress=False)(x, y)
        assert A.perturbation_norms(x, x_adv)["l2"].median() > A.perturbation_norms(x, x0)["l2"].median()


def test_deepfool_smaller_than_flipping_fgsm(digits_model, batch):
    """For each example, DeepFool's L2 perturbation is below the smallest FGSM-L2 budget on a
    grid that flips the same example."""
    x, y = batch
    df = A.DeepFool(digits_model, norm="2", progress=False)(x, y)
    df_fooled = A.fooled_mask(digits_model, df, y)
    df_l2 = A.perturbation_norms(x, df)["l2"]
    correct = A.predict(digits_model, x) == y
    flip_eps = torch.full_like(df_l2, float("inf"))
    for e in torch.linspace(0.1, 4.0, 40):
        fg = A.FGSM(digits_model, eps=float(e), norm="2", progress=False)(x, y)
        flipped = A.fooled_mask(digits_model, fg, y) & torch.isinf(flip_eps)
        flip_eps[flipped] = A.perturbation_norms(x, fg)["l2"][flipped]
    both = correct & df_fooled & torch.isfinite(flip_eps)
    assert both.sum() > 30
    assert (df_l2[both] < flip_eps[both]).double().mean() >= 0.95
    assert df_fooled[correct].all()


def test_deepfool_linf_smaller_than_flipping_fgsm(digits_model, batch):
    x, y = batch
    df = A.DeepFool(digits_model, norm="inf", progress=False)(x, y)
    df_linf = A.perturbation_norms(x, df)["linf"]
    correct = A.predict(digits_model, x) == y
    flip_eps = torch.full_like(df_linf, float("inf"))
    for e in torch.linspace(0.01, 0.5, 50):
        fg = A.FGSM(digits_model, eps=float(e), progress=False)(x, y)
        flipped = A.fooled_mask(digits_model, fg, y) & torch.isinf(flip_eps)
        flip_eps[flipped] = float(e)
    both = correct & A.fooled_mask(digits_model, df, y) & torch.isfinite(flip_eps)
    assert (df_linf[both] <= flip_eps[both] + 1e-6).double().mean() >= 0.9


def test_boundary_distance_never_increases(digits_model, batch):
    x, y = batch
    attack = A.Boundary(digits_model, steps=150, seed=0, progress=False)
    x_adv, hist = attack.trace(x, y)
    assert hist.shape == (151, x.shape[0])
    finite = torch.isfinite(hist[0])
    assert finite.double().mean() > 0.9
    h = hist[:, finite]
    assert (h[1:] <= h[:-1]).all()
    assert (h[-1] < h[0]).double().mean() > 0.9  # it made progress
    fooled = A.fooled_mask(digits_model, x_adv, y)
    assert fooled[finite].all()  # every accepted point is adversarial
    torch.testing.assert_close(A.perturbation_norms(x, x_adv)["l2"][finite], h[-1])
    score = A.boundary_score(x[finite], x_adv[finite])
    assert 0 < score < 1


def test_boundary_starting_points_and_targeted(digits_model, batch):
    x, y = batch
    pgd = A.PGD(digits_model, eps=0.3, steps=10, seed=0, progress=False)(x, y)
    start_ok = A.fooled_mask(digits_model, pgd, y)
    x_adv, hist = A.Boundary(digits_model, steps=50, seed=0, progress=False).trace(x, y, starting_points=pgd)
    torch.testing.assert_close(hist[0][start_ok], A.perturbation_norms(x, pgd)["l2"][start_ok])
    assert (hist[-1][start_ok] <= hist[0][start_ok]).all()
    # Targeted: start from examples of the target class.
    targets = y.roll(1)
    starts = x.roll(1, 0)
    xa = A.Boundary(digits_model, steps=30, seed=0, progress=False)(x, y, targets, starting_points=starts)
    ok = A.predict(digits_model, starts) == targets
    assert (A.predict(digits_model, xa)[ok] == targets[ok]).all()


def test_eot_on_deterministic_model_equals_plain(digits_model, batch):
    x, y = batch
    for attack in [A.FGSM(digits_model, eps=0.1, progress=False),
                   A.PGD(digits_model, eps=0.5, norm="2", steps=5, seed=0, progress=False),
                   A.MIFGSM(digits_model, eps=0.1, steps=5, progress=False),
                   A.CW(digits_model, binary_steps=2, steps=10, lr=0.05, progress=False),
                   A.DeepFool(digits_model, progress=False)]:
        plain = attack(x, y)
        torch.testing.assert_close(A.EOT(attack, n=3)(x, y), plain, atol=1e-5, rtol=1e-5)
        # wrapping the model instead of the attack gives the same for a deterministic model
        other = type(attack).__new__(type(attack))
        other.__dict__.update(attack.__dict__, model=A.EOT(digits_model, n=3))
        torch.testing.assert_close(other(x, y), plain, atol=1e-5, rtol=1e-5)
        assert attack.eot_n == 1  # EOT copies, it does not modify the attack


def test_eot_averages_gradients_of_random_passes(randomized_model, batch):
    x, y = batch
    attack = A.FGSM(randomized_model, eps=0.1, progress=False)
    eot = A.EOT(attack, n=4)
    loss_fn = lambda z: torch.nn.functional.cross_entropy(z, y, reduction="none")  # noqa: E731
    torch.manual_seed(5)
    _, g_eot = eot.loss_grad(x, loss_fn)
    torch.manual_seed(5)
    singles = [attack.loss_grad(x, loss_fn)[1] for _ in range(4)]
    torch.testing.assert_close(g_eot, torch.stack(singles).mean(0))
    assert not torch.allclose(singles[0], singles[1])  # the passes really were random


def test_eot_gradient_closer_to_expectation(randomized_model, batch):
    """On a dropout model the EOT gradient (n = 16) points closer to the expected gradient
    (estimated with 256 passes) than a single random pass does."""
    x, y = batch
    loss_fn = lambda z: torch.nn.functional.cross_entropy(z, y, reduction="none")  # noqa: E731
    attack = A.PGD(randomized_model, eps=0.1, progress=False)
    torch.manual_seed(11)
    _, reference = A.EOT(attack, n=256).loss_grad(x, loss_fn)
    _, single = attack.loss_grad(x, loss_fn)
    _, eot = A.EOT(attack, n=16).loss_grad(x, loss_fn)
    cos = lambda a, b: torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).mean()  # noqa: E731
    assert cos(eot, reference) > cos(single, reference) + 0.05


def test_eot_rejects_decision_based(digits_model):
    with pytest.raises(TypeError, match="EOT"):
        A.EOT(A.Boundary(digits_model), n=3)
    with pytest.raises(ValueError, match="n must be"):
        A.EOT(A.FGSM(digits_model), n=0)
