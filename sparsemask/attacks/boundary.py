"""Boundary attack (Brendel et al. 2018): decision-based, and seed 001's S(M) score."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ._common import (Attack, check_inputs, check_nonneg, flat_norm, is_adversarial,
                      make_generator, check_seed, rand_like, randn_like)
from .registry import register_attack


@register_attack("boundary")
class Boundary(Attack):
    """Decision-based Boundary attack: uses only the model's predicted labels.

    Start from an adversarial point (uniform noise blended towards x by a binary search, as
    foolbox's ``LinearSearchBlendedUniformNoiseAttack``, or ``starting_points``), then walk
    along the decision boundary: a random step orthogonal to the direction to x (relative size
    ``spherical_step``) followed by a step towards x (relative size ``source_step``). A
    candidate is accepted only if it is adversarial *and* closer to x, so the L2 distance never
    increases. Every ``update_every`` steps both step sizes adapt (×/÷ ``adaptation``) to keep
    the success rate of the orthogonal step and of the full step between 20% and 50%.

    Args:
        model: callable [N, ...] -> logits [N, K]; only ``argmax`` is used.
        steps: iterations (each costs two forward passes of the batch).
        spherical_step, source_step: initial relative step sizes (foolbox defaults 0.01).
        adaptation: step-size adaptation factor (1.5).
        init_attempts: uniform-noise draws tried to find an adversarial start.
        seed / generator: every random draw.
    Call: ``attack(x, y, targets=None, starting_points=None) -> x_adv``; examples with no
    adversarial start are returned unchanged. :meth:`trace` also returns the per-step L2
    distances [steps + 1, N] (``inf`` where no start was found).
    """

    gradient_based = False

    def __init__(self, model, *, steps: int = 1000, spherical_step: float = 0.01,
                 source_step: float = 0.01, adaptation: float = 1.5, update_every: int = 10,
                 init_attempts: int = 50, seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None, progress: bool = False):
        super().__init__(model, progress=progress)
        self.steps = check_nonneg("steps", steps, integer=True)
        self.spherical_step = check_nonneg("spherical_step", spherical_step, positive=True)
        self.source_step = check_nonneg("source_step", source_step, positive=True)
        self.adaptation = check_nonneg("adaptation", adaptation, positive=True)
        if self.adaptation <= 1:
            raise ValueError(f"adaptation must be > 1, got {adaptation}")
        self.update_every = check_nonneg("update_every", update_every, integer=True, positive=True)
        self.init_attempts = check_nonneg("init_attempts", init_attempts, integer=True, positive=True)
        self.seed, self.generator = check_seed(seed, generator)

    def __call__(self, x, y, targets=None, starting_points: Optional[torch.Tensor] = None):
        return self.trace(x, y, targets, starting_points)[0]

    def trace(self, x, y, targets=None, starting_points: Optional[torch.Tensor] = None):
        """Run the attack; returns ``(x_adv [N, ...], distances [steps + 1, N])``."""
        check_inputs(x, y, targets)
        if starting_points is not None:
            check_inputs(starting_points, y)
            if starting_points.shape != x.shape:
                raise ValueError(f"starting_points must have x's shape {tuple(x.shape)}, got "
                                 f"{tuple(starting_points.shape)}")
            starting_points = starting_points.detach().clone()
        x, y = x.detach().clone(), y.detach().clone().long()
        targets = None if targets is None else targets.detach().clone().long()
        self._unchecked_labels = (y, targets)  # checked against K at the first forward pass
        try:
            with torch.no_grad():
                return self._trace(x, y, targets, starting_points)
        finally:
            self._unchecked_labels = None

    def _run(self, x, y, targets):
        return self._trace(x, y, targets, None)[0]

    def _adv(self, z, y, targets):
        return is_adversarial(self.logits(z), y, targets)

    def _initialise(self, x, y, targets, starting_points, gen):
        """Adversarial starting points [N, ...] and a bool [N] of which were found."""
        n = x.shape[0]
        view = (n, *([1] * (x.dim() - 1)))
        if starting_points is not None:
            return starting_points, self._adv(starting_points, y, targets)
        noise, found = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(self.init_attempts):
            u = rand_like(x, gen)
            hit = self._adv(u, y, targets) & ~found
            noise = torch.where(hit.view(view), u, noise)
            found |= hit
            if found.all():
                break
        # Binary search on the blend (1 - a) x + a u for the smallest adversarial a.
        lo, hi = torch.zeros(n, device=x.device, dtype=x.dtype), torch.ones(n, device=x.device, dtype=x.dtype)
        for _ in range(20):
            mid = (lo + hi) / 2
            ok = self._adv((1 - mid.view(view)) * x + mid.view(view) * noise, y, targets)
            hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
        start = (1 - hi.view(view)) * x + hi.view(view) * noise
        return torch.where(found.view(view), start, x), found

    def _trace(self, x, y, targets, starting_points):
        gen = make_generator(self.seed, self.generator)
        n = x.shape[0]
        view = (n, *([1] * (x.dim() - 1)))
        adv, found = self._initialise(x, y, targets, starting_points, gen)
        dist = torch.where(found, flat_norm(adv - x, "2").view(n), torch.full((n,), float("inf"),
                                                                              device=x.device, dtype=x.dtype))
        history = [dist.clone()]
        sph = torch.full((n,), self.spherical_step, device=x.device, dtype=x.dtype)
        src = torch.full((n,), self.source_step, device=x.device, dtype=x.dtype)
        sph_hits, src_hits = torch.zeros_like(sph), torch.zeros_like(src)
        with self._pbar(self.steps, "Boundary") as bar:
            for step in range(1, self.steps + 1):
                spherical, cand = self._proposals(x, adv, dist, sph, src, gen)
                sph_ok = self._adv(spherical, y, targets)
                cand_ok = self._adv(cand, y, targets)
                new_dist = flat_norm(cand - x, "2").view(n)
                accept = found & cand_ok & (new_dist < dist)
                adv = torch.where(accept.view(view), cand, adv)
                dist = torch.where(accept, new_dist, dist)
                history.append(dist.clone())
                sph_hits += sph_ok.to(x.dtype)
                src_hits += (sph_ok & cand_ok).to(x.dtype)
                if step % self.update_every == 0:
                    sph, src = self._adapt(sph, src, sph_hits, src_hits)
                    sph_hits.zero_()
                    src_hits.zero_()
                bar.update()
        return adv, torch.stack(history)

    def _proposals(self, x, adv, dist, sph, src, gen):
        """Spherical candidates (same distance to x) and full candidates (closer by ``src``)."""
        n = x.shape[0]
        view = (n, *([1] * (x.dim() - 1)))
        d = dist.clamp_min(1e-12).view(view)
        d = torch.where(torch.isinf(d), torch.ones_like(d), d)
        source_dir = (x - adv) / d
        eta = randn_like(x, gen)
        eta = eta - (eta * source_dir).flatten(1).sum(1).view(view) * source_dir  # orthogonal
        eta = eta / flat_norm(eta, "2").clamp_min(1e-12) * sph.view(view) * d
        # Step sideways, then rescale so the point lies on the sphere of radius d around x.
        new_dir = x - (adv + eta)
        spherical = x - new_dir / flat_norm(new_dir, "2").clamp_min(1e-12) * d
        # Step towards x by a fraction src of the distance.
        cand = spherical + src.view(view) * (x - spherical)
        return spherical.clamp(0, 1), cand.clamp(0, 1)

    def _adapt(self, sph, src, sph_hits, src_hits):
        rate_sph = sph_hits / self.update_every
        rate_src = src_hits / sph_hits.clamp_min(1)
        f = self.adaptation
        up, down = rate_sph > 0.5, rate_sph < 0.2
        sph = torch.where(up, sph * f, torch.where(down, sph / f, sph))
        src = torch.where(up, src * f, torch.where(down, src / f, src))
        up, down = rate_src > 0.5, (rate_src < 0.2) & (sph_hits > 0)
        src = torch.where(up, src * f, torch.where(down, src / f, src))
        return sph.clamp(max=1.0), src.clamp(max=0.5)

    def extra_repr(self) -> str:
        return (f"steps={self.steps}, spherical_step={self.spherical_step}, "
                f"source_step={self.source_step}")


def boundary_score(x: torch.Tensor, x_adv: torch.Tensor, success: Optional[torch.Tensor] = None) -> float:
    """Seed 001's S(M) = median over images of ||P_i||_2^2 / N, P_i = x_adv_i - x_i, images in [0, 1].

    Args:
        x, x_adv: [B, ...] in [0, 1] (N in the formula is the number of values per image).
        success: optional bool [B]; images the attack failed on count as +inf (the model
            withstood it) instead of as the zero perturbation.
    Larger is more robust (paper: 3.5e-05 defective vs 7.3e-06 standard ResNet-18, CIFAR-10).
    """
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    p = (x_adv - x).flatten(1).double()
    per_image = p.pow(2).sum(1) / p.shape[1]
    if success is not None:
        if success.shape != per_image.shape:
            raise ValueError(f"success must have shape [B] = ({x.shape[0]},), got {tuple(success.shape)}")
        per_image = torch.where(success.to(per_image.device), per_image, torch.full_like(per_image, float("inf")))
    # np.median averages the two middle values (torch.median would return the lower one).
    return float(np.median(per_image.cpu().numpy()))
