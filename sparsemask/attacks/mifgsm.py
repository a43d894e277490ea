"""Momentum iterative FGSM (Dong et al. 2018), the attack seed 001 used for its figures."""
from __future__ import annotations

from typing import Optional

import torch

from ._common import (Attack, check_eps_scale, check_loss, Eps, adversarial_loss, check_eps, check_nonneg, check_norm,
                      flat_norm, per_sample, project, steepest_direction)
from .registry import register_attack


@register_attack("mifgsm")
class MIFGSM(Attack):
    """MI-FGSM: ``g <- decay * g + grad / ||grad||_1``, ``x <- proj(x + alpha * dir(g))``.

    Args:
        model: callable [N, ...] -> logits [N, K]; mode and randomness left alone.
        eps: budget, float or per-sample [N].
        norm: ``"inf"`` (sign step, the paper's) or ``"2"`` (g / ||g||_2 step).
        steps: iterations (paper: 10); step_size default ``eps / steps``.
        decay: momentum factor μ (paper: 1.0).
        loss: ``"ce"`` or ``"margin"``.
    Call: ``attack(x, y, targets=None) -> x_adv``. Deterministic (no random start).
    """

    def __init__(self, model, eps: Eps = 8 / 255, norm="inf", *, steps: int = 10,
                 step_size: Optional[Eps] = None, decay: float = 1.0, loss: str = "ce",
                 progress: bool = False):
        super().__init__(model, progress=progress)
        self.eps = check_eps(eps)
        self.norm = check_norm(norm, ("inf", "2"))
        check_eps_scale(self.eps, self.norm)
        self.steps = check_nonneg("steps", steps, integer=True)
        self.step_size = None if step_size is None else check_eps(step_size, "step_size")
        self.decay = check_nonneg("decay", decay)
        self.loss = check_loss(loss)

    def _run(self, x, y, targets):
        eps = per_sample(self.eps, x)
        alpha = eps / max(self.steps, 1) if self.step_size is None else per_sample(self.step_size, x)
        x_adv, momentum = x.clone(), torch.zeros_like(x)
        with self._pbar(self.steps, "MIFGSM") as bar:
            for _ in range(self.steps):
                _, grad = self.loss_grad(x_adv, lambda z: adversarial_loss(z, y, targets, self.loss))
                momentum = self.decay * momentum + grad / flat_norm(grad, "1").clamp_min(1e-12)
                step = alpha * steepest_direction(momentum, self.norm)
                x_adv = (x + project(x_adv + step - x, eps, self.norm)).clamp(0, 1).detach()
                bar.update()
        return x_adv

    def extra_repr(self) -> str:
        return f"eps={self.eps}, norm={self.norm!r}, steps={self.steps}, decay={self.decay}"
