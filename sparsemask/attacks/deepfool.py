"""DeepFool (Moosavi-Dezfooli et al. 2016), L2 and L∞, with overshoot."""
from __future__ import annotations

import torch

from ._common import Attack, check_nonneg, check_norm, flat_norm
from .registry import register_attack


@register_attack("deepfool")
class DeepFool(Attack):
    """Minimal-perturbation attack: linearise the classifier around the current point and step
    to the nearest linearised decision boundary among the ``candidates`` most likely classes,
    until the label changes; the total step is scaled by ``1 + overshoot``.

    Args:
        model: callable [N, ...] -> logits [N, K]; mode and randomness left alone (with EOT the
            logits are averaged over the forward passes before linearising).
        norm: ``"2"`` or ``"inf"``.
        steps: maximum iterations (paper: 50).
        overshoot: paper: 0.02.
        candidates: how many top classes (by clean logit, the true one included) are considered;
            the boundaries to the other ``candidates - 1`` are tried (paper: 10).
    Call: ``attack(x, y, targets=None) -> x_adv``; with targets only the target's boundary is
    used. Examples the model already misclassifies are returned unchanged. Deterministic.
    """

    def __init__(self, model, norm="2", *, steps: int = 50, overshoot: float = 0.02,
                 candidates: int = 10, progress: bool = False):
        super().__init__(model, progress=progress)
        self.norm = check_norm(norm, ("2", "inf"))
        self.steps = check_nonneg("steps", steps, integer=True)
        self.overshoot = check_nonneg("overshoot", overshoot)
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 2:
            raise ValueError(f"candidates must be an int >= 2 (the true class plus others), got {candidates!r}")
        self.candidates = candidates

    def _run(self, x, y, targets):
        n = x.shape[0]
        view = (n, *([1] * (x.dim() - 1)))
        with torch.no_grad():
            clean = self.logits(x)
        k = min(self.candidates, clean.shape[1])
        if targets is None:
            cand = self._others(clean.argsort(1, descending=True), y, k)
        else:
            cand = targets[:, None]
        r_tot = torch.zeros_like(x)
        x_adv = x.clone()
        active = clean.argmax(1) == y
        if targets is not None:
            active &= targets != y
        with self._pbar(self.steps, "DeepFool") as bar:
            for _ in range(self.steps):
                if not active.any():
                    break
                x_req = x_adv.detach().requires_grad_(True)
                logits = self.logits(x_req)
                if targets is None:
                    active &= logits.argmax(1) == y
                else:
                    active &= logits.argmax(1) != targets
                if not active.any():
                    break
                f0 = logits.gather(1, y[:, None])
                g0 = torch.autograd.grad(f0.sum(), x_req, retain_graph=True)[0]
                best_pert = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
                best_w = torch.zeros_like(x)
                for j in range(cand.shape[1]):
                    fj = logits.gather(1, cand[:, j:j + 1])
                    gj = torch.autograd.grad(fj.sum(), x_req, retain_graph=j + 1 < cand.shape[1])[0]
                    w = gj - g0
                    f = (fj - f0).detach().view(n)
                    dual = "1" if self.norm == "inf" else "2"
                    pert = f.abs() / flat_norm(w, dual).view(n).clamp_min(1e-12)
                    take = pert < best_pert
                    best_pert = torch.where(take, pert, best_pert)
                    best_w = torch.where(take.view(view), w, best_w)
                if self.norm == "2":
                    r = (best_pert + 1e-4).view(view) * best_w / flat_norm(best_w, "2").clamp_min(1e-12)
                else:
                    r = (best_pert + 1e-4).view(view) * best_w.sign()
                r_tot = r_tot + torch.where(active.view(view), r, torch.zeros_like(r))
                x_adv = (x + (1 + self.overshoot) * r_tot).clamp(0, 1).detach()
                bar.update()
        return x_adv

    @staticmethod
    def _others(order, y, k):
        """The k-1 most likely classes other than y, per example [N, k-1]."""
        keep = order != y[:, None]
        return order[keep].view(order.shape[0], -1)[:, : k - 1]

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, steps={self.steps}, overshoot={self.overshoot}, candidates={self.candidates}"
