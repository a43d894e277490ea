"""Iterative gradient attacks: PGD (Madry et al.) and BIM (Kurakin et al.) in L∞, L2, L1."""
from __future__ import annotations

from typing import Optional

import torch

from ._common import (check_eps_scale, check_l1_sparsity, Attack, check_loss, box_free, Eps, adversarial_loss, check_eps, check_nonneg, check_norm,
                      make_generator, check_seed, per_sample, project, random_in_ball, steepest_direction)
from .registry import register_attack


@register_attack("pgd")
class PGD(Attack):
    """Projected gradient descent: ``steps`` normalised gradient steps, each projected back
    onto the ``norm`` ball of radius ``eps`` around x and onto the [0, 1] box.

    Args:
        model: callable [N, ...] -> logits [N, K]; its mode and randomness are left alone.
        eps: budget, float or per-sample tensor [N] (:func:`eps255` converts 0-255 units).
        norm: ``"inf"`` | ``"2"`` | ``"1"``.
        steps: number of iterations (the seeds' PGD16: 20 steps of size eps255(1)).
        step_size: absolute step, float or [N]; default ``2.5 * eps / steps``.
        random_start: start from a uniform point of the ball (Madry) instead of x (BIM).
        loss: ``"ce"`` or ``"margin"``.
        keep_best: return, per example, the iterate with the highest loss seen (the last
            iterate otherwise).
        restarts: independent runs from fresh random starts (needs ``random_start`` when > 1);
            per example the result of the run that fools the model (untargeted: any wrong
            label; targeted: the target) is kept, else the one with the highest loss. The
            adaptive attack of a deterministic defense: many restarts, many steps.
        l1_sparsity: for L1, use the sparse top-q step (None: grad / ||grad||_1).
        seed / generator: for the random start.
        progress: tqdm bar over the steps.
    Call: ``attack(x, y, targets=None) -> x_adv``.
    """

    def __init__(self, model, eps: Eps = 8 / 255, norm="inf", *, steps: int = 10,
                 step_size: Optional[Eps] = None, random_start: bool = True, loss: str = "ce",
                 keep_best: bool = True, l1_sparsity: Optional[float] = None, restarts: int = 1,
                 seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 progress: bool = False):
        super().__init__(model, progress=progress)
        self.eps = check_eps(eps)
        self.norm = check_norm(norm)
        check_eps_scale(self.eps, self.norm)
        self.steps = check_nonneg("steps", steps, integer=True)
        self.step_size = None if step_size is None else check_eps(step_size, "step_size")
        self.random_start = bool(random_start)
        self.loss = check_loss(loss)
        self.keep_best = bool(keep_best)
        self.l1_sparsity = check_l1_sparsity(l1_sparsity)
        self.restarts = check_nonneg("restarts", restarts, integer=True, positive=True)
        if self.restarts > 1 and not self.random_start:
            raise ValueError(f"restarts={restarts} needs random_start=True (runs from x are all the same run)")
        self.seed, self.generator = check_seed(seed, generator)

    def _default_step(self, eps: torch.Tensor) -> torch.Tensor:
        return 2.5 * eps / max(self.steps, 1)

    def _run(self, x, y, targets):
        gen = make_generator(self.seed, self.generator) if self.random_start else None
        loss_fn = lambda z: adversarial_loss(z, y, targets, self.loss)  # noqa: E731
        with self._pbar(self.steps * self.restarts, type(self).__name__) as bar:
            best = self._run_once(x, y, targets, gen, loss_fn, bar)
            if self.restarts == 1:
                return best
            best_score = self._restart_score(best, y, targets, loss_fn)
            for _ in range(self.restarts - 1):
                x_adv = self._run_once(x, y, targets, gen, loss_fn, bar)
                score = self._restart_score(x_adv, y, targets, loss_fn)
                better = score > best_score
                best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x_adv, best)
                best_score = torch.where(better, score, best_score)
        return best

    @torch.no_grad()
    def _restart_score(self, x_adv, y, targets, loss_fn):
        """Success first (a fooling example beats any loss), then the loss."""
        logits = self.logits(x_adv)
        pred = logits.argmax(-1)
        fooled = pred != y if targets is None else pred == targets
        return loss_fn(logits).clamp(-1e6, 1e6) + 1e7 * fooled.to(logits.dtype)

    def _run_once(self, x, y, targets, gen, loss_fn, bar):
        eps = per_sample(self.eps, x)
        alpha = self._default_step(eps) if self.step_size is None else per_sample(self.step_size, x)
        x_adv = x.clone()
        if self.random_start:
            x_adv = (x + random_in_ball(x, eps, self.norm, gen)).clamp(0, 1)
        best, best_loss = x_adv.clone(), torch.full((x.shape[0],), float("-inf"), device=x.device)
        for _ in range(self.steps):
            loss, grad = self.loss_grad(x_adv, loss_fn)
            best, best_loss = self._update_best(best, best_loss, x_adv, loss)
            step = alpha * steepest_direction(box_free(grad, x_adv), self.norm, self.l1_sparsity)
            delta = project(x_adv + step - x, eps, self.norm)
            x_adv = (x + delta).clamp(0, 1).detach()
            bar.update()
        if not self.keep_best:
            return x_adv
        with torch.no_grad():
            loss = loss_fn(self.logits(x_adv))
        best, _ = self._update_best(best, best_loss, x_adv, loss)
        return best

    def _update_best(self, best, best_loss, x_adv, loss):
        better = loss >= best_loss  # ">=": ties go to the later (further-optimised) iterate
        mask = better.view(-1, *([1] * (x_adv.dim() - 1)))
        return torch.where(mask, x_adv, best), torch.where(better, loss, best_loss)

    def extra_repr(self) -> str:
        restarts = f", restarts={self.restarts}" if self.restarts != 1 else ""
        return (f"eps={self.eps}, norm={self.norm!r}, steps={self.steps}, step_size={self.step_size}, "
                f"random_start={self.random_start}, loss={self.loss!r}{restarts}")


@register_attack("bim")
class BIM(PGD):
    """Basic iterative method (Kurakin et al. 2017): PGD without random start, default step
    ``eps / steps``. Same arguments as :class:`PGD`."""

    def __init__(self, model, eps: Eps = 8 / 255, norm="inf", *, steps: int = 10,
                 step_size: Optional[Eps] = None, random_start: bool = False, **kwargs):
        super().__init__(model, eps, norm, steps=steps, step_size=step_size,
                         random_start=random_start, **kwargs)

    def _default_step(self, eps: torch.Tensor) -> torch.Tensor:
        return eps / max(self.steps, 1)
