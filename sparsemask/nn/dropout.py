"""Dropout with Monte-Carlo inference, and the machinery every randomized defense shares.

Shared pieces (used by ``mad``, ``spiking``, ``randomization`` and ``dropblock``):

* :class:`Randomized` — a mixin that gives a module its own random stream (``seed`` or
  ``generator``), so a defense is reproducible and an EOT attack can reseed it.
* :func:`combine_outputs` — turns ``n`` logits tensors into one: ``"mean"`` (log of the
  averaged softmax; seed 003's "MC Avg.") or ``"vote"`` (majority vote, ties to the smaller
  label; seed 003's "Voting", seed 002's decision rule).
* :class:`RandomizedInference` — runs a model ``n`` times and combines, i.e. MC inference
  for any model whose randomness is active at inference time.

Which pieces are active in ``eval()`` mode (attacks never call ``.eval()``/``.train()``, so a
defense's behaviour must not hinge on the attacker's choice of mode):

* dropout-style baselines (:class:`MCDropout`, ``SpatialDropout2d``, ``DropBlock2d``) are
  active in training, and at inference only with ``mc=True``;
* inference-time defenses (MAD wrapper, ``RandomResizePad``, ``RandomSpiking`` with
  ``mode != "off"``, :class:`RandomizedInference`) are active in both modes.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..seeding import check_seed

COMBINE_MODES = ("mean", "vote")


def check_probability(name: str, value, *, open_low: bool = False, open_high: bool = False) -> float:
    """``value`` as a float in [0, 1] (ends excluded on request), else ValueError/TypeError naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}") from None
    low_ok = value > 0.0 if open_low else value >= 0.0
    high_ok = value < 1.0 if open_high else value <= 1.0
    if not (low_ok and high_ok):
        lo, hi = "(" if open_low else "[", ")" if open_high else "]"
        raise ValueError(f"{name} must be in {lo}0, 1{hi}, got {value}")
    return value


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class Randomized:
    """Mixin: a module's own random stream.

    ``seed`` -> a private generator per device, created lazily and seeded with ``seed`` (so the
    same seed gives the same draws on the same device; CPU and CUDA streams differ).
    ``generator`` -> that generator is used as is (draws happen on its device and are moved).
    Neither -> torch's global generator. :meth:`reseed` restarts the stream, e.g. between the
    attack and the evaluation, or to make two runs draw the same randomness.
    """

    def _init_random(self, seed: Optional[int], generator: Optional[torch.Generator]) -> None:
        check_seed(seed, generator)
        self.seed = seed
        self.generator = generator
        self._device_generators: dict = {}

    def reseed(self, seed: Optional[int] = None, generator: Optional[torch.Generator] = None):
        """Restart the random stream from ``seed`` (or use ``generator``); returns self."""
        self._init_random(seed, generator)
        return self

    def _generator_for(self, device: torch.device) -> Optional[torch.Generator]:
        if self.generator is not None:
            return self.generator
        if self.seed is None:
            return None
        key = str(device)
        g = self._device_generators.get(key)
        if g is None:
            g = torch.Generator(device=device).manual_seed(self.seed)
            self._device_generators[key] = g
        return g

    def _rand(self, shape, device) -> Tensor:
        """Uniform [0, 1) float32 of ``shape`` on ``device`` from this module's stream."""
        device = torch.device(device)
        g = self._generator_for(device)
        if g is None:
            return torch.rand(shape, device=device)
        return torch.rand(shape, generator=g, device=g.device).to(device)

    def _randint(self, low: int, high: int, shape, device) -> Tensor:
        """Integers uniform in [low, high) of ``shape`` on ``device`` from this module's stream."""
        device = torch.device(device)
        g = self._generator_for(device)
        if g is None:
            return torch.randint(low, high, shape, device=device)
        return torch.randint(low, high, shape, generator=g, device=g.device).to(device)


def combine_outputs(outputs: Iterable[Tensor], combine: str = "mean") -> Tensor:
    """Combine ``n`` logits tensors [N, K] into one [N, K] of class scores (usable as logits).

    ``"mean"``: ``log(mean_i softmax(outputs_i))`` — the MC average; its softmax is the averaged
    probability vector, and it is differentiable, so attacks can use it as logits.
    ``"vote"``: the value is ``log`` of the vote fractions (floored at 1e-6) plus a tie-break
    smaller than the gap between vote counts, favouring the smaller label, so ``argmax`` is
    the majority vote with ties to the smaller index (seed 003). A vote has no gradient; the returned tensor carries the gradient
    of the ``"mean"`` scores (straight-through), so gradient attacks still see a signal —
    report such attacks as attacks on the averaged surrogate.
    """
    if combine not in COMBINE_MODES:
        raise ValueError(f"combine must be one of {', '.join(COMBINE_MODES)}, got {combine!r}")
    outputs = list(outputs)
    if not outputs:
        raise ValueError("combine_outputs needs at least one output")
    stacked = torch.stack(outputs)  # [n, N, K]
    if stacked.dim() != 3:
        raise ValueError(f"outputs must be logits of shape [N, K], got {tuple(outputs[0].shape)}")
    n, _, k = stacked.shape
    mean_scores = torch.logsumexp(F.log_softmax(stacked, dim=-1), dim=0) - torch.log(
        torch.tensor(float(n), dtype=stacked.dtype, device=stacked.device))
    if combine == "mean":
        return mean_scores
    votes = F.one_hot(stacked.detach().argmax(-1), k).sum(0).to(stacked.dtype)  # [N, K]
    # Distinct vote counts differ by more than log1p(1/n) in log space; half of that, spread
    # over the labels, breaks ties towards the smaller label without reordering counts.
    ranks = torch.arange(k - 1, -1, -1, dtype=stacked.dtype, device=stacked.device) / k
    tie_break = 0.5 * math.log1p(1.0 / n) * ranks
    vote_scores = torch.log((votes / n).clamp_min(1e-6)) + tie_break
    return mean_scores + (vote_scores - mean_scores).detach()


def vote(labels: Tensor, num_classes: int) -> Tensor:
    """Majority label per column of ``labels`` [n, N] (int), ties to the smaller label -> [N]."""
    counts = F.one_hot(labels.long(), num_classes).sum(0)  # [N, K]
    # argmax returns the first maximum; make that explicit so ties go to the smaller label
    # whatever the implementation.
    score = counts * num_classes + torch.arange(num_classes - 1, -1, -1, device=labels.device)
    return score.argmax(-1)


class RandomizedInference(nn.Module):
    """Run ``model`` ``n`` times on the same input and combine (MC average or vote).

    Args:
        model: a classifier x [N, ...] -> logits [N, K] whose randomness is active at inference
            (``RandomSpiking(mode="mc"|"vote")``, ``MCDropout(mc=True)``, ``RandomResizePad``, ...).
        n: number of runs (seed 003: 10).
        combine: ``"mean"`` or ``"vote"`` (see :func:`combine_outputs`).

    Output: class scores [N, K] usable as logits. The model's train/eval mode is left alone:
    the wrapped randomness decides itself whether it is active (see the module docstring).
    """

    def __init__(self, model: nn.Module, n: int = 10, combine: str = "mean"):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        check_positive_int("n", n)
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {', '.join(COMBINE_MODES)}, got {combine!r}")
        self.model, self.n, self.combine = model, n, combine

    def forward(self, x: Tensor) -> Tensor:
        return combine_outputs((self.model(x) for _ in range(self.n)), self.combine)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Labels [N] (int64)."""
        return self.forward(x).argmax(-1)

    def extra_repr(self) -> str:
        return f"n={self.n}, combine={self.combine!r}"


class MCDropout(Randomized, nn.Module):
    """Element-wise dropout with its own random stream and optional MC inference.

    ``keep`` is the keep probability (drop probability ``1 - keep``); kept values are scaled by
    ``1/keep``. Active in training; at inference only with ``mc=True`` (then wrap the model in
    :class:`RandomizedInference` to average ``n`` runs). Shape: any -> same.
    """

    def __init__(self, keep: float = 0.5, *, mc: bool = False, seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        self.keep = check_probability("keep", keep, open_low=True)
        self.mc = bool(mc)
        self._init_random(seed, generator)

    @property
    def active(self) -> bool:
        return self.training or self.mc

    def _noise_shape(self, x: Tensor) -> tuple[int, ...]:
        """Shape of the keep mask, broadcast over x (element-wise here)."""
        return tuple(x.shape)

    def forward(self, x: Tensor) -> Tensor:
        if not self.active or self.keep == 1.0:
            return x
        keep_mask = self._rand(self._noise_shape(x), x.device) < self.keep
        return x * keep_mask.to(x.dtype) / self.keep

    def extra_repr(self) -> str:
        return f"keep={self.keep}, mc={self.mc}, seed={self.seed}"


def enable_mc_dropout(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Make every dropout layer of ``model`` active (``enabled``) or not at inference; in place.

    ``torch.nn.Dropout`` layers are replaced by :class:`MCDropout` with ``keep = 1 - p`` (same
    training behaviour); layers of this package with an ``mc`` flag (``MCDropout``,
    ``SpatialDropout2d``, ``DropBlock2d``) get ``mc = enabled``. Returns ``model``.
    """
    for name, child in list(model.named_children()):
        if type(child) is nn.Dropout:
            if child.p >= 1.0:
                raise ValueError(f"{name}: dropout with p=1 has no MC equivalent")
            new = MCDropout(1.0 - child.p, mc=enabled)
            new.train(child.training)
            setattr(model, name, new)
        elif hasattr(child, "mc") and isinstance(child, Randomized):
            child.mc = bool(enabled)
        else:
            enable_mc_dropout(child, enabled)
    if hasattr(model, "mc") and isinstance(model, Randomized):
        model.mc = bool(enabled)
    return model
