"""Fast gradient attacks: FGSM (L∞) and the L2 / L1 fast gradient methods (seed 002)."""
from __future__ import annotations

from typing import Optional

from ._common import (check_eps_scale, check_l1_sparsity, Attack, check_loss, Eps, adversarial_loss, check_eps, check_norm, per_sample,
                      steepest_direction)
from .registry import register_attack


@register_attack("fgsm")
class FGSM(Attack):
    """One-step fast gradient attack (Goodfellow et al. 2015) in L∞, L2 or L1.

    ``x_adv = clip(x + eps * d, 0, 1)`` with d the unit steepest-ascent direction of the loss
    under ``norm`` (sign for L∞, grad/||grad||_2 for L2, grad/||grad||_1 for L1 — the
    foolbox/ART fast gradient methods seed 002 evaluated; ``l1_sparsity=q`` uses the sparse
    top-q step instead).

    Args:
        model: callable [N, ...] -> logits [N, K]; its mode and randomness are left alone.
        eps: budget, a float or a per-sample tensor [N] (see :func:`eps255` for 0-255 units).
        norm: ``"inf"`` | ``"2"`` | ``"1"``.
        loss: ``"ce"`` (cross-entropy) or ``"margin"`` (C&W margin).
    Call: ``attack(x [N, ...] in [0,1], y [N], targets=None [N]) -> x_adv [N, ...]``.
    """

    def __init__(self, model, eps: Eps = 8 / 255, norm="inf", *, loss: str = "ce",
                 l1_sparsity: Optional[float] = None, progress: bool = False):
        super().__init__(model, progress=progress)
        self.eps = check_eps(eps)
        self.norm = check_norm(norm)
        check_eps_scale(self.eps, self.norm)
        self.loss = check_loss(loss)
        self.l1_sparsity = check_l1_sparsity(l1_sparsity)

    def _run(self, x, y, targets):
        eps = per_sample(self.eps, x)
        _, grad = self.loss_grad(x, lambda z: adversarial_loss(z, y, targets, self.loss))
        direction = steepest_direction(grad, self.norm, self.l1_sparsity)
        return (x + eps * direction).clamp(0, 1)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, norm={self.norm!r}, loss={self.loss!r}"
