"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"): the gradient attacks of AutoAttack.

APGD is PGD without a step size to tune: it starts at 2ε, adds momentum (α = 0.75) and, at
checkpoints placed ever closer together, halves the step of each example whose loss stopped
improving and restarts it from its best point. Losses: cross-entropy (``ce``, APGD-CE) and the
scale-invariant Difference of Logits Ratio (``dlr``, APGD-DLR); with ``targets`` the targeted
DLR of the paper (APGD-T). The gradient comes from the base class, so ``EOT(APGD(...), n)``
averages it over n draws of a randomized model.
"""
from __future__ import annotations

from typing import Optional

import torch

from ._common import (Attack, Eps, check_eps, check_eps_scale, check_nonneg, check_norm, check_seed, make_generator,
                      per_sample, project, random_in_ball)
from .registry import register_attack

APGD_LOSSES = ("ce", "dlr")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, targets: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The Difference of Logits Ratio [N] that APGD *ascends*, for logits [N, K].

    Untargeted (K >= 3): ``-(z_y - max_{i != y} z_i) / (z_π1 - z_π3)``; targeted (K >= 4):
    ``-(z_y - z_t) / (z_π1 - (z_π3 + z_π4) / 2)``, with z_π1 >= z_π2 >= ... the sorted logits.
    Dividing by a difference of logits makes it invariant to the scale of the logits, so a
    model cannot hide behind saturated softmax (the failure of CE that DLR fixes).
    """
    k = logits.shape[1]
    need = 3 if targets is None else 4
    if k < need:
        raise ValueError(f"loss='dlr' needs logits with at least {need} classes "
                         f"({'targeted' if targets is not None else 'untargeted'}), got K={k}")
    z_sorted = logits.sort(dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    if targets is None:
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        return -(z_y - other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)
    z_t = logits.gather(1, targets[:, None]).squeeze(1)
    return -(z_y - z_t) / (z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + 1e-12)


def apgd_loss(logits: torch.Tensor, y: torch.Tensor, targets: Optional[torch.Tensor], loss: str) -> torch.Tensor:
    """Per-example loss [N] that APGD ascends: ``ce`` (minus the target's CE when targeted) or ``dlr``."""
    if loss == "ce":
        if targets is None:
            return torch.nn.functional.cross_entropy(logits, y, reduction="none")
        return -torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return dlr_loss(logits, y, targets)


def checkpoints(steps: int) -> list[int]:
    """The iterations (0-based, < ``steps``) after which APGD checks its progress.

    The paper's w_j = ceil(p_j * steps) with p_0 = 0, p_1 = 0.22 and
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), in the integer form of the reference
    code (fra31/auto-attack): first period int(0.22 * steps), each next one shorter by
    int(0.03 * steps), never below int(0.06 * steps) (all at least 1).
    """
    period = max(int(0.22 * steps), 1)
    shrink, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks, at = [], period - 1
    while at < steps:
        marks.append(at)
        period = max(period - shrink, shortest)
        at += period
    return marks


@register_attack("apgd", label="APGD")
class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020) in L∞ or L2, with restarts.

    Args:
        model: callable [N, ...] -> logits [N, K]; its mode and randomness are left alone.
        eps: budget, float or per-sample tensor [N] on the [0, 1] scale.
        norm: ``"inf"`` | ``"2"``.
        steps: iterations per restart (AutoAttack: 100).
        restarts: random restarts; each one attacks only the examples not yet fooled.
        loss: ``"ce"`` (APGD-CE) or ``"dlr"`` (APGD-DLR; targeted DLR when ``targets`` given).
        rho: a checkpoint halves the step of an example whose loss rose on fewer than
            ``rho`` of the steps since the previous checkpoint (paper: 0.75).
        momentum: α of the paper (0.75): x_{k+1} = P(x_k + α(z_{k+1} - x_k) + (1-α)(x_k - x_{k-1})).
        seed / generator: for the random starts.
        progress: tqdm bar over restarts × steps.
    Call: ``attack(x, y, targets=None) -> x_adv`` [N, ...]: per example the last iterate that
    was misclassified (reached the target), else the iterate of highest loss; in the ε-ball and [0, 1].
    """

    default_loss = "ce"

    def __init__(self, model, eps: Eps = 8 / 255, norm="inf", *, steps: int = 100, restarts: int = 1,
                 loss: Optional[str] = None, rho: float = 0.75, momentum: float = 0.75,
                 seed: Optional[int] = None, generator: Optional[torch.Generator] = None, progress: bool = False):
        super().__init__(model, progress=progress)
        self.eps = check_eps(eps)
        self.norm = check_norm(norm, ("inf", "2"))
        check_eps_scale(self.eps, self.norm)
        self.steps = check_nonneg("steps", steps, integer=True)
        self.restarts = check_nonneg("restarts", restarts, integer=True, positive=True)
        loss = self.default_loss if loss is None else loss
        if loss not in APGD_LOSSES:
            raise ValueError(f"loss must be one of {APGD_LOSSES}, got {loss!r}")
        self.loss = loss
        if not 0 < check_nonneg("rho", rho) <= 1:
            raise ValueError(f"rho must be in (0, 1], got {rho}")
        if not 0 < check_nonneg("momentum", momentum) <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.rho, self.momentum = float(rho), float(momentum)
        self.seed, self.generator = check_seed(seed, generator)

    # ------------------------------------------------------------------------------------------
    def _run(self, x, y, targets):
        gen = make_generator(self.seed, self.generator)
        eps = per_sample(self.eps, x)
        n = x.shape[0]
        out = x.clone()
        fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        best_loss = torch.full((n,), float("-inf"), device=x.device)
        with self._pbar(self.restarts * self.steps, type(self).__name__) as bar:
            for _ in range(self.restarts):
                # Drawn for the whole batch every restart, so row i's start does not depend on
                # which other rows were already fooled.
                start = random_in_ball(x, eps, self.norm, gen)
                todo = (~fooled).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                sub_t = None if targets is None else targets[todo]
                adv, hit, loss = self._single_run(x[todo], y[todo], sub_t, eps[todo], start[todo], bar)
                # Fooled rows take the adversarial point; the others keep their highest-loss point.
                take = hit | (loss > best_loss[todo])
                out[todo[take]] = adv[take]
                best_loss[todo] = torch.maximum(best_loss[todo], loss)
                fooled[todo] = hit
        return out

    def _single_run(self, x, y, targets, eps, start, bar, *, untargeted_success: bool = False):
        """One APGD run from ``x + start``: (x_out [n, ...], fooled [n], best loss [n]).

        ``targets`` steer the loss; success means reaching them, or with
        ``untargeted_success`` (APGD-T) any label other than y."""
        n = x.shape[0]
        view = (n, *([1] * (x.dim() - 1)))
        marks = set(checkpoints(self.steps))
        recorded: list[torch.Tensor] = []

        def loss_fn(logits):
            recorded.append(logits.detach())
            return apgd_loss(logits, y, targets, self.loss)

        def evaluate(point):
            recorded.clear()
            loss, grad = self.loss_grad(point, loss_fn)
            logits = torch.stack(recorded).mean(0)  # the EOT mean when eot_n > 1
            pred = logits.argmax(1)
            return loss, grad, (pred != y) if targets is None or untargeted_success else (pred == targets)

        def to_ball(point):
            return (x + project(point - x, eps, self.norm)).clamp(0, 1)

        def direction(grad):
            if self.norm == "inf":
                return grad.sign()
            return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)

        x_adv = (x + start).clamp(0, 1)
        loss, grad, hit = evaluate(x_adv)
        fooled, x_fooled = hit.clone(), x_adv.clone()
        x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss.clone()
        step = 2 * eps * torch.ones(view, dtype=x.dtype, device=x.device)
        x_prev = x_adv.clone()
        prev_loss = loss.clone()
        rises = torch.zeros(n, device=x.device)  # steps since the last checkpoint that raised the loss
        since = 0
        best_at_check = loss_best.clone()
        reduced_at_check = torch.ones(n, dtype=torch.bool, device=x.device)  # reference: True at the start
        for i in range(self.steps):
            with torch.no_grad():
                z = to_ball(x_adv + step * direction(grad))
                a = 1.0 if i == 0 else self.momentum  # the first step has no previous step to follow
                x_new = to_ball(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev))
                x_prev, x_adv = x_adv, x_new
            loss, grad, hit = evaluate(x_adv)
            with torch.no_grad():
                x_fooled[hit] = x_adv[hit]
                fooled |= hit
                rises += (loss > prev_loss).float()
                prev_loss = loss
                better = loss > loss_best
                x_best[better], grad_best[better], loss_best[better] = x_adv[better], grad[better], loss[better]
                since += 1
                if i in marks:
                    # Condition 1: the loss rose on too few steps; condition 2: the step was not
                    # halved at the previous checkpoint and the best loss has not moved since.
                    halve = (rises < self.rho * since) | (~reduced_at_check & (best_at_check >= loss_best))
                    reduced_at_check, best_at_check = halve.clone(), loss_best.clone()
                    step[halve] /= 2
                    x_adv[halve], grad[halve] = x_best[halve], grad_best[halve]
                    rises.zero_()
                    since = 0
            bar.update()
        result = torch.where(fooled.view(view), x_fooled, x_best)
        return result, fooled, loss_best

    def extra_repr(self) -> str:
        return (f"eps={self.eps}, norm={self.norm!r}, steps={self.steps}, restarts={self.restarts}, "
                f"loss={self.loss!r}")


@register_attack("apgd_ce", label="APGD-CE")
class APGDCE(APGD):
    """APGD with the cross-entropy loss (AutoAttack's first attack). Arguments as :class:`APGD`."""

    default_loss = "ce"


@register_attack("apgd_dlr", label="APGD-DLR")
class APGDDLR(APGD):
    """APGD with the DLR loss (targeted DLR when called with ``targets``). Arguments as :class:`APGD`."""

    default_loss = "dlr"


@register_attack("apgd_t", label="APGD-T")
class APGDT(APGD):
    """AutoAttack's APGD-T: targeted-DLR APGD against each of the ``target_classes`` classes
    ranked highest by the clean logits after the top one, on the examples not yet misclassified.

    An untargeted attack (success = any label but y) that uses targeted losses, which are
    easier to optimise than the untargeted one. Arguments as :class:`APGD` plus
    ``target_classes`` (AutoAttack: 9; at most K - 1); ``steps`` and ``restarts`` apply to
    each target class. Called with explicit ``targets`` it is plain targeted APGD.
    """

    default_loss = "dlr"

    def __init__(self, model, eps: Eps = 8 / 255, norm="inf", *, target_classes: int = 9, **kwargs):
        super().__init__(model, eps, norm, **kwargs)
        self.target_classes = check_nonneg("target_classes", target_classes, integer=True, positive=True)

    def _run(self, x, y, targets):
        if targets is not None:
            return super()._run(x, y, targets)
        gen = make_generator(self.seed, self.generator)
        eps = per_sample(self.eps, x)
        n = x.shape[0]
        with torch.no_grad():
            ranked = self.logits(x).argsort(dim=1, descending=True)  # [N, K]
        out = x.clone()
        fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
        best_loss = torch.full((n,), float("-inf"), device=x.device)
        classes = min(self.target_classes, ranked.shape[1] - 1)
        with self._pbar(self.restarts * classes * self.steps, type(self).__name__) as bar:
            for _ in range(self.restarts):
                for rank in range(1, classes + 1):
                    start = random_in_ball(x, eps, self.norm, gen)
                    todo = (~fooled).nonzero().squeeze(1)
                    if todo.numel() == 0:
                        return out
                    # rank 1 = the highest logit other than the top one (the reference's
                    # sorted[-2]), whatever y is.
                    adv, hit, loss = self._single_run(x[todo], y[todo], ranked[todo, rank], eps[todo],
                                                      start[todo], bar, untargeted_success=True)
                    take = hit | (loss > best_loss[todo])
                    out[todo[take]] = adv[take]
                    best_loss[todo] = torch.maximum(best_loss[todo], loss)
                    fooled[todo] = hit
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + f", target_classes={self.target_classes}"
