"""Evaluation metrics: accuracy, attack success, the seeds' success defense rate, robust
accuracy of randomized models (mean ± std over draws), perturbation norms, prediction stability.

None of these changes the model's train/eval mode; all run under ``torch.no_grad``.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch

from ..eval import accuracy, check_labels, predict  # noqa: F401  (accuracy, predict: re-exported)
from ._common import check_nonneg, is_adversarial


def attack_success_rate(model: Callable, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                        targets: Optional[torch.Tensor] = None, batch_size: int = 512) -> float:
    """Fraction of the examples the model classifies correctly on x whose x_adv fools it
    (prediction != y, or == target when targeted). nan when none is classified correctly."""
    check_labels(x, y)
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv must have x's shape {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    correct = predict(model, x, batch_size) == y
    pred = predict(model, x_adv, batch_size)
    hit = pred != y if targets is None else pred == targets
    return float(hit[correct].double().mean()) if correct.any() else float("nan")


def success_defense_rate(model: Callable, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                         batch_size: int = 512) -> float:
    """Seeds 000/001: accuracy on adversarial examples whose clean originals the (target)
    model classifies correctly. For transfer attacks x_adv comes from the source model."""
    check_labels(x, y)
    correct = predict(model, x, batch_size) == y
    if not correct.any():
        return float("nan")
    return float((predict(model, x_adv[correct], batch_size) == y[correct]).double().mean())


def robust_accuracy(model: Callable, x: torch.Tensor, y: torch.Tensor, draws: int = 10,
                    batch_size: int = 512) -> Tuple[float, float]:
    """Accuracy of a randomized model as (mean, std) over ``draws`` independent forward passes
    (std is the sample std, 0 for one draw). x may be clean or adversarial."""
    check_labels(x, y)
    check_nonneg("draws", draws, integer=True, positive=True)
    accs = torch.tensor([accuracy(model, x, y, batch_size) for _ in range(draws)], dtype=torch.float64)
    return float(accs.mean()), float(accs.std()) if draws > 1 else 0.0


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor, tol: float = 0.0) -> Dict[str, torch.Tensor]:
    """Per-example norms of ``x_adv - x``: dict ``l0`` (entries with |Δ| > tol), ``l1``, ``l2``,
    ``linf``, each a float tensor [N]."""
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    d = (x_adv - x).flatten(1)
    return dict(l0=(d.abs() > tol).sum(1).to(d.dtype), l1=d.abs().sum(1), l2=d.norm(dim=1),
                linf=d.abs().amax(1) if d.shape[1] else d.new_zeros(d.shape[0]))


def prediction_stability(model: Callable, x: torch.Tensor, corrupt: Callable[[torch.Tensor], torch.Tensor],
                         repeats: int = 1, batch_size: int = 512) -> float:
    """Seed 003: fraction of predictions unchanged when x is corrupted (mean over ``repeats``
    corruptions, e.g. 20 Gaussian draws), relative to the predictions on x.

    ``corrupt``: x [N, ...] -> corrupted x, e.g. ``lambda z: gaussian_noise_l2(z, 2.0)`` or
    ``lambda z: jpeg(z, 50)``.
    """
    check_nonneg("repeats", repeats, integer=True, positive=True)
    ref = predict(model, x, batch_size)
    same = [(predict(model, corrupt(x), batch_size) == ref).double().mean() for _ in range(repeats)]
    return float(torch.stack(same).mean())


def fooled_mask(model: Callable, x_adv: torch.Tensor, y: torch.Tensor,
                targets: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bool [N]: whether the model is fooled by each adversarial example."""
    with torch.no_grad():
        return is_adversarial(model(x_adv), y, targets)
