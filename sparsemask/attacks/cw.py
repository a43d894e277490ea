"""Carlini-Wagner L2 attack (Carlini & Wagner 2017), the seeds' CW-L2 (κ = 20/40 in seed 000)."""
from __future__ import annotations

import torch

from ._common import Attack, check_nonneg, flat_norm, margin_from_logits
from .registry import register_attack


@register_attack("cw")
class CW(Attack):
    """C&W L2: minimise ``||x' - x||_2^2 + c * f(x')`` over ``x' = (tanh(w) + 1) / 2`` with Adam,
    ``f = max(logit_y - max_{j≠y} logit_j, -kappa)`` (untargeted) or
    ``max(max_{j≠t} logit_j - logit_t, -kappa)`` (targeted), and a per-example binary search over c.

    An example counts as a success when its logit margin reaches ``kappa`` (untargeted:
    ``max_{j≠y} Z_j - Z_y >= kappa``; targeted: ``Z_t - max_{j≠t} Z_j >= kappa``). The attack
    returns, per example, the successful x' of smallest L2 distance seen over all binary-search
    steps, and ``x`` itself where it never succeeded.

    Args:
        model: callable [N, ...] -> logits [N, K]; mode and randomness left alone.
        kappa: confidence κ >= 0.
        c: initial trade-off constant (original: 1e-3; a larger start saves search steps).
        binary_steps: binary-search steps over c.
        steps: Adam iterations per binary-search step.
        lr: Adam learning rate.
        abort_early: stop a search step when the loss has not improved for steps/10 iterations.
    Call: ``attack(x, y, targets=None) -> x_adv``. Deterministic.
    """

    def __init__(self, model, *, kappa: float = 0.0, c: float = 1e-2, binary_steps: int = 9,
                 steps: int = 100, lr: float = 1e-2, abort_early: bool = True,
                 progress: bool = False):
        super().__init__(model, progress=progress)
        self.kappa = check_nonneg("kappa", kappa)
        self.c = check_nonneg("c", c, positive=True)
        self.binary_steps = check_nonneg("binary_steps", binary_steps, integer=True, positive=True)
        self.steps = check_nonneg("steps", steps, integer=True)
        self.lr = check_nonneg("lr", lr, positive=True)
        self.abort_early = bool(abort_early)

    def _margin(self, logits, y, targets):
        """Success margin [N]: >= kappa means adversarial with confidence kappa."""
        return -margin_from_logits(logits, y) if targets is None else margin_from_logits(logits, targets)

    def _run(self, x, y, targets):
        n = x.shape[0]
        view = (n, *([1] * (x.dim() - 1)))
        w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        c = torch.full((n,), float(self.c), dtype=x.dtype, device=x.device)
        lower = torch.zeros_like(c)
        upper = torch.full_like(c, float("inf"))
        best_l2 = torch.full_like(c, float("inf"))
        best_adv = x.clone()
        with self._pbar(self.binary_steps * self.steps, "CW") as bar:
            for _ in range(self.binary_steps):
                w = w0.clone()
                m, v = torch.zeros_like(w), torch.zeros_like(w)
                succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
                prev = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
                done = torch.zeros(n, dtype=torch.bool, device=x.device)
                for it in range(self.steps):
                    loss, grad, x_new, margin = self._loss_grad_w(w, x, y, targets, c)
                    # Record the best before stepping: x_new is the point the model just scored.
                    ok = margin >= self.kappa
                    l2 = flat_norm(x_new - x, "2").view(n)
                    better = ok & (l2 < best_l2)
                    best_l2 = torch.where(better, l2, best_l2)
                    best_adv = torch.where(better.view(view), x_new, best_adv)
                    succeeded |= ok
                    # Early abort is decided per example, so a row's result never depends on
                    # the rest of the batch.
                    if self.abort_early and it % max(1, self.steps // 10) == 0:
                        done |= loss > prev * 0.9999
                        prev = torch.where(done, prev, loss)
                        if done.all():
                            bar.update(self.steps - it)
                            break
                    # Adam (elementwise, so every example is optimised independently of the batch)
                    m = 0.9 * m + 0.1 * grad
                    v = 0.999 * v + 0.001 * grad * grad
                    m_hat, v_hat = m / (1 - 0.9 ** (it + 1)), v / (1 - 0.999 ** (it + 1))
                    w = torch.where(done.view(view), w, w - self.lr * m_hat / (v_hat.sqrt() + 1e-8))
                    bar.update()
                # Binary search on c, per example.
                upper = torch.where(succeeded, torch.minimum(upper, c), upper)
                lower = torch.where(succeeded, lower, torch.maximum(lower, c))
                c = torch.where(torch.isinf(upper), c * 10, (lower + upper) / 2)
        return best_adv

    def _loss_grad_w(self, w, x, y, targets, c):
        """Per-example C&W loss [N], its gradient w.r.t. w (mean over EOT passes), x' and margin."""
        w = w.detach().requires_grad_(True)
        grad = torch.zeros_like(w)
        loss_sum, margin_sum = 0.0, 0.0
        for _ in range(self.eot_n):
            x_new = (torch.tanh(w) + 1) / 2  # rebuilt per pass: each autograd.grad frees its graph
            dist = (x_new - x).flatten(1).pow(2).sum(1)
            logits = self._forward(x_new)  # the first pass checks y/targets against K
            margin = self._margin(logits, y, targets)
            loss = dist + c * torch.clamp(self.kappa - margin, min=0)
            (g,) = torch.autograd.grad(loss.sum(), w)
            grad += g
            loss_sum = loss_sum + loss.detach()
            margin_sum = margin_sum + margin.detach()
        n = self.eot_n
        return loss_sum / n, grad / n, x_new.detach(), margin_sum / n

    def extra_repr(self) -> str:
        return (f"kappa={self.kappa}, c={self.c}, binary_steps={self.binary_steps}, "
                f"steps={self.steps}, lr={self.lr}")
