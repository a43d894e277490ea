"""Square attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a
query-efficient black-box adversarial attack via random search"): AutoAttack's score-based
attack, which needs no gradients and so is not fooled by gradient masking.

L∞: start from vertical stripes of ±ε; at each query change one random square window of
side s (a fraction p of the image, shrinking on the paper's schedule) to a random ±ε per
channel, and keep the change only if the margin loss decreases. Runs on each example until it
is misclassified (or reaches its target) or the query budget is spent. L2: the paper's
version that moves L2 mass between two random windows with the η profile (``norm="2"``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ._common import (Attack, Eps, check_eps, check_eps_scale, check_nonneg, check_norm, check_seed, make_generator,
                      margin_from_logits, per_sample)
from .registry import register_attack


def p_schedule(i: int, queries: int, p_init: float) -> float:
    """The fraction p of pixels a window covers at query ``i`` (the paper's schedule for a
    10 000-query budget, rescaled to ``queries``): p_init halved at 10, 50, 200, 500, 1000,
    2000, 4000, 6000 and 8000 (of 10 000)."""
    it = int(i / queries * 10000)
    for k, bound in enumerate((10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)):
        if it <= bound:
            return p_init / 2 ** k
    return p_init / 512


def _eta_rectangles(a: int, b: int) -> torch.Tensor:
    """[a, b] of nested rectangles around the centre, weights 1/(k+1)^2, unit L2 norm."""
    delta = torch.zeros(a, b)
    ya, yb = a // 2, b // 2
    for k in range(max(ya + 1, yb + 1)):
        rows = slice(max(ya - k, 0), min(ya + k + 1, a))
        cols = slice(max(yb - k, 0), min(yb + k + 1, b))
        delta[rows, cols] += 1.0 / (k + 1) ** 2
    return delta / delta.norm()


def eta(s: int) -> torch.Tensor:
    """The L2 Square attack's s x s update profile: +/- halves of centred rectangles, unit L2
    norm (the paper's η; transposed at random by the caller)."""
    delta = torch.zeros(s, s)
    delta[: s // 2] = _eta_rectangles(s // 2, s)
    delta[s // 2:] = -_eta_rectangles(s - s // 2, s)
    return delta / delta.norm()


@register_attack("square", label="Square")
class Square(Attack):
    """Square attack, L∞ or L2 (score-based: model outputs only, no gradients, no EOT).

    Args:
        model: callable [N, C, H, W] -> logits [N, K]; its mode and randomness are left alone.
        eps: budget, float or per-sample tensor [N] on the [0, 1] scale.
        norm: ``"inf"`` or ``"2"``.
        queries: model queries per example and restart (AutoAttack: 5000).
        p_init: initial fraction of the image a square covers (paper: 0.8 for L∞ on CIFAR-10).
        restarts: each restart runs on the examples not yet fooled.
        seed / generator: for the stripes, windows and signs.
        progress: tqdm bar over the queries.
    Call: ``attack(x, y, targets=None) -> x_adv`` [N, C, H, W]: per example the point of
    lowest margin found (misclassified where the attack succeeded), in the ε-ball and [0, 1].
    """

    gradient_based = False

    def __init__(self, model, eps: Eps = 8 / 255, norm="inf", *, queries: int = 5000, p_init: float = 0.8,
                 restarts: int = 1, seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 progress: bool = False):
        super().__init__(model, progress=progress)
        self.eps = check_eps(eps)
        self.norm = check_norm(norm, ("inf", "2"))
        check_eps_scale(self.eps, self.norm)
        self.queries = check_nonneg("queries", queries, integer=True)
        if not 0 < check_nonneg("p_init", p_init) <= 1:
            raise ValueError(f"p_init must be in (0, 1], got {p_init}")
        self.p_init = float(p_init)
        self.restarts = check_nonneg("restarts", restarts, integer=True, positive=True)
        self.seed, self.generator = check_seed(seed, generator)

    def _margin(self, x_adv, y, targets):
        """Margin [n] to push to <= 0: z_y - max other (untargeted), max other - z_t (targeted)."""
        with torch.no_grad():
            logits = self._forward(x_adv)
        return margin_from_logits(logits, y) if targets is None else -margin_from_logits(logits, targets)

    def _run(self, x, y, targets):
        if x.dim() != 4:
            raise ValueError(f"Square needs images x [N, C, H, W], got shape {tuple(x.shape)}")
        gen = make_generator(self.seed, self.generator)
        eps = per_sample(self.eps, x)
        out = x.clone()
        margin_out = torch.full((x.shape[0],), float("inf"), device=x.device)
        with self._pbar(self.restarts * self.queries, type(self).__name__) as bar:
            for _ in range(self.restarts):
                todo = (margin_out > 0).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                sub_t = None if targets is None else targets[todo]
                adv, margin = self._single_run(x[todo], y[todo], sub_t, eps[todo], gen, bar)
                better = margin < margin_out[todo]
                out[todo[better]] = adv[better]
                margin_out[todo[better]] = margin[better]
        return out

    def _draw(self, shape, gen, device):
        cpu = torch.rand(shape, generator=gen, device=gen.device if gen is not None else "cpu")
        return cpu.to(device)

    def _signs(self, shape, gen, device):
        return torch.where(self._draw(shape, gen, device) < 0.5, -1.0, 1.0)

    def _single_run(self, x, y, targets, eps, gen, bar):
        if self.norm == "2":
            return self._single_run_l2(x, y, targets, eps, gen, bar)
        n, c, h, w = x.shape
        # Vertical stripes: the initialisation the paper found best for L∞ (one ±ε per column and channel).
        x_best = (x + eps * self._signs((n, c, 1, w), gen, x.device)).clamp(0, 1)
        margin = self._margin(x_best, y, targets)
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        for i in range(self.queries):
            # Draws for every row of the batch every query, so a row's randomness does not
            # depend on when the others succeed.
            p = p_schedule(i, self.queries, self.p_init)
            s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
            top = (self._draw((n,), gen, x.device) * (h - s + 1)).long().clamp_max(h - s).view(n, 1, 1)
            left = (self._draw((n,), gen, x.device) * (w - s + 1)).long().clamp_max(w - s).view(n, 1, 1)
            signs = self._signs((n, c, 1, 1), gen, x.device)
            active = margin > 0
            if not active.any():
                bar.update(self.queries - i)
                break
            window = ((rows >= top) & (rows < top + s) & (cols >= left) & (cols < left + s)).unsqueeze(1)
            idx = active.nonzero().squeeze(1)
            xa, ea = x[idx], eps[idx]
            # Set the window to x ± ε (a vertex of the ball), the paper's update.
            cand = torch.where(window[idx], xa + ea * signs[idx], x_best[idx]).clamp(0, 1)
            cand = torch.minimum(torch.maximum(cand, xa - ea), xa + ea)
            m = self._margin(cand, y[idx], None if targets is None else targets[idx])
            improved = m < margin[idx]
            x_best[idx[improved]] = cand[improved]
            margin[idx[improved]] = m[improved]
            bar.update()
        return x_best, margin

    def _window_index(self, n, h, w, s, gen, device):
        """Per-example indices of a random s x s window: (rows [n, 1, s, 1], cols [n, 1, 1, s])."""
        top = (self._draw((n,), gen, device) * (h - s + 1)).long().clamp_max(h - s)
        left = (self._draw((n,), gen, device) * (w - s + 1)).long().clamp_max(w - s)
        ar = torch.arange(s, device=device)
        return (top[:, None] + ar).view(n, 1, s, 1), (left[:, None] + ar).view(n, 1, 1, s)

    def _single_run_l2(self, x, y, targets, eps, gen, bar):
        """L2 Square (the paper's Algorithm 3): move L2 mass between two random windows with the
        η profile, renormalise the perturbation to ε."""
        n, c, h, w = x.shape
        view = (n, 1, 1, 1)
        dev = x.device

        def l2(t):
            return t.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

        def profile(s, m):
            # η or its transpose per example, times a random sign per example and channel: [m, c, s, s]
            base = eta(s).to(dev, x.dtype)
            flip = self._draw((m,), gen, dev) < 0.5
            prof = torch.where(flip.view(m, 1, 1), base.t().expand(m, s, s), base.expand(m, s, s))
            return prof.unsqueeze(1) * self._signs((m, c, 1, 1), gen, dev).to(x.dtype)

        # Start: a grid of η tiles with random signs (the reference's 5 x 5 tiling), scaled to ε.
        s0 = max(h // 5, 1)
        delta = torch.zeros_like(x)
        off = (h - s0 * 5) // 2 if h >= 5 else 0
        for r in range(off, h - s0 + 1, s0):
            for q in range(off, w - s0 + 1, s0):
                delta[:, :, r:r + s0, q:q + s0] += profile(s0, n)
        x_best = (x + delta / l2(delta).clamp_min(1e-12) * eps).clamp(0, 1)
        margin = self._margin(x_best, y, targets)
        ar_n = torch.arange(n, device=dev).view(n, 1, 1, 1)
        ar_c = torch.arange(c, device=dev).view(1, c, 1, 1)
        for i in range(self.queries):
            p = p_schedule(i, self.queries, self.p_init)
            s = min(max(int(round(math.sqrt(p * h * w))), 3), h, w)
            if s % 2 == 0:
                s = s + 1 if s < min(h, w) else s - 1
            r1, c1 = self._window_index(n, h, w, s, gen, dev)
            r2, c2 = self._window_index(n, h, w, s, gen, dev)
            prof = profile(s, n)
            active = margin > 0
            if not active.any():
                bar.update(self.queries - i)
                break
            d = x_best - x
            win1 = d[ar_n, ar_c, r1, c1]                                           # [n, c, s, s]
            mask = torch.zeros_like(x)
            mask[ar_n, ar_c, r1, c1] = 1.0
            mask[ar_n, ar_c, r2, c2] = 1.0
            norm_img, norm_windows = l2(d), l2(d * mask)
            new = prof + win1 / win1.flatten(2).norm(dim=2).clamp_min(1e-12)[..., None, None]
            # Each channel's window gets the mass of both windows plus the unused budget.
            budget = ((eps.view(view) ** 2 - norm_img ** 2).clamp_min(0) / c + norm_windows ** 2).sqrt()
            new = new / new.flatten(2).norm(dim=2).clamp_min(1e-12)[..., None, None] * budget
            d = d.clone()
            d[ar_n, ar_c, r2, c2] = 0.0
            d[ar_n, ar_c, r1, c1] = new
            cand = (x + d / l2(d).clamp_min(1e-12) * eps).clamp(0, 1)
            idx = active.nonzero().squeeze(1)
            m = self._margin(cand[idx], y[idx], None if targets is None else targets[idx])
            improved = m < margin[idx]
            x_best[idx[improved]] = cand[idx[improved]]
            margin[idx[improved]] = m[improved]
            bar.update()
        return x_best, margin

    def extra_repr(self) -> str:
        return (f"eps={self.eps}, norm={self.norm!r}, queries={self.queries}, p_init={self.p_init}, "
                f"restarts={self.restarts}")
