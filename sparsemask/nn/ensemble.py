"""Ensembles of classifiers: the seeds' EN (models with different masks) and DIF (different seeds).

``Ensemble(models, combine)`` averages logits, averages probabilities, or takes a majority
vote; ``make_ensemble(builder, n, ...)`` builds n models whose defective masks (and/or
initial weights) come from different seeds.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = ["Ensemble", "make_ensemble", "ENSEMBLE_COMBINE"]

ENSEMBLE_COMBINE = ("logits", "probs", "vote")


class Ensemble(nn.Module):
    """Combine the outputs of ``models`` (each [N, ...] -> logits [N, K]).

    combine:
      ``"logits"``  mean of the logits (what seed 000/001's source ensembles attack; with
                    ``weights``, their weighted sum — Liu et al. 2017's transfer ensemble);
      ``"probs"``   ``log(mean softmax)``: scores whose softmax is the averaged probability;
      ``"vote"``    majority vote (ties to the smaller label), returned as scores whose argmax
                    is the vote and whose gradient is that of ``"probs"`` (straight-through).

    Shapes: input [N, C, H, W] -> [N, K]. Members keep their own train/eval mode. Also
    exported as :class:`sparsemask.attacks.Ensemble` (the surrogate ensemble of transfer attacks).
    """

    def __init__(self, models: Sequence[nn.Module], combine: str = "logits", *,
                 weights: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        models = list(models)
        if not models or not all(isinstance(m, nn.Module) for m in models):
            raise ValueError("Ensemble: models must be a non-empty sequence of nn.Module (at least one model)")
        if combine not in ENSEMBLE_COMBINE:
            raise ValueError(f"Ensemble: combine must be one of {', '.join(ENSEMBLE_COMBINE)}, got {combine!r}")
        if weights is not None:
            if combine != "logits":
                raise ValueError(f"Ensemble: weights need combine='logits', got combine={combine!r}")
            if len(weights) != len(models):
                raise ValueError(f"Ensemble: weights must have one entry per model ({len(models)}), got {len(weights)}")
        self.models = nn.ModuleList(models)
        self.combine = combine
        self.weights = None if weights is None else [float(w) for w in weights]

    @property
    def members(self) -> nn.ModuleList:
        """The models (the name :class:`sparsemask.attacks.Ensemble` used)."""
        return self.models

    def forward(self, x: Tensor) -> Tensor:
        outputs = [m(x) for m in self.models]
        if self.combine == "logits" and self.weights is not None:
            return sum(w * out for w, out in zip(self.weights, outputs))
        if self.combine == "logits":
            return torch.stack(outputs).mean(0)
        from .dropout import combine_outputs  # shared with the randomized defenses

        return combine_outputs(outputs, "mean" if self.combine == "probs" else "vote")

    def extra_repr(self) -> str:
        return f"n={len(self.models)}, combine={self.combine}"


def make_ensemble(builder: Callable[..., nn.Module], n: int = 5, *, defective: Optional[dict] = None,
                  mode: str = "EN", seed: int = 0, combine: str = "logits", **builder_kwargs) -> Ensemble:
    """Build ``n`` models with ``builder(defective=..., **builder_kwargs)`` and wrap them.

    mode ``"EN"``: same initial weights (torch seed ``seed``), masks from seeds
    ``seed, seed+1, ...`` — models differing only in their defective masks (seed 000/001 EN).
    mode ``"DIF"``: everything differs — weights from torch seed ``seed + i`` and masks from
    mask seed ``seed + i`` (the gray-box "different sampling" models of Table 9).
    With ``defective=None`` both modes give n standard models (EN: identical copies).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"make_ensemble: n must be a positive int, got {n!r}")
    if mode not in ("EN", "DIF"):
        raise ValueError(f"make_ensemble: mode must be 'EN' or 'DIF', got {mode!r}")
    models = []
    for i in range(n):
        # fork_rng: building must not disturb the caller's global random stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed if mode == "EN" else seed + i)
            d = None if defective is None else {**defective, "seed": seed + i}
            models.append(builder(defective=d, **builder_kwargs))
    return Ensemble(models, combine)
