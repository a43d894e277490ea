"""Pieces every builder shares: input normalisation, stem choice, and applying ``defective=``.

Models take inputs in [0, 1] and normalise inside (a :class:`Normalize` first module), so
attacks work in pixel space. Builders record ``model.input_shape`` (used by
:func:`sparsemask.defect` to size masks) and ``model.defect_placement`` (the seeds'
bottom/top layers of that architecture).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = ["Normalize", "default_stats", "choose_stem", "finish", "DEFECTIVE_KEYS", "check_builder_args",
           "STATS"]

# Per-channel (mean, std) of inputs in [0, 1]. The defaults are the constants the published
# code (tiangeluo/DefectiveCNN, Mains/) normalised with: "cifar10-published" — note its std
# is the widely copied (0.2023, 0.1994, 0.2010), not the train set's pixel std — and
# "mnist-published". The measured train-set statistics stay available by name.
STATS = {
    "cifar10-published": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "mnist-published": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),  # CIFAR-10 train set, measured
    "fashion-mnist": ((0.2860,), (0.3530,)),  # Fashion-MNIST train set, measured
}
_DEFAULT_BY_CHANNELS = {3: "cifar10-published", 1: "mnist-published"}
DEFECTIVE_KEYS = ("keep", "where", "kind", "widen", "seed", "reference", "sampling", "reading")


def default_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) used when a builder gets none: the published code's constants — CIFAR-10
    (std 0.2023, 0.1994, 0.2010) for 3 channels, MNIST (0.1307, 0.3081) for 1 — else 0.5s.
    Other sets: ``mean=STATS["fashion-mnist"][0], std=STATS["fashion-mnist"][1]``."""
    name = _DEFAULT_BY_CHANNELS.get(channels)
    return STATS[name] if name else ((0.5,) * channels, (0.5,) * channels)


class Normalize(nn.Module):
    """``(x - mean) / std`` with mean/std buffers [C, 1, 1] (per channel) or [C, H, W] (per pixel).

    Shapes: [N, C, H, W] -> [N, C, H, W]. Loading a state_dict whose statistics have another
    shape (per-pixel vs per-channel) adopts that shape.
    """

    def __init__(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> None:
        super().__init__()
        mean, std = self._as_stats(mean, "mean"), self._as_stats(std, "std")
        if (std <= 0).any():
            raise ValueError("Normalize: std must be positive")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    @staticmethod
    def _as_stats(value, name: str) -> Tensor:
        t = torch.as_tensor(value, dtype=torch.float32)
        if t.dim() == 1:
            t = t[:, None, None]
        if t.dim() != 3:
            raise ValueError(f"Normalize: {name} must be [C] or [C, H, W], got shape {tuple(t.shape)}")
        return t.clone()

    @torch.no_grad()
    def fit_(self, data: Tensor, per_pixel: bool = False) -> "Normalize":
        """Set mean/std from ``data`` [N, C, H, W] in [0, 1]; ``per_pixel``: the seeds' per-pixel mean
        subtraction (mean [C, H, W]; std stays per channel)."""
        if data.dim() != 4 or data.shape[1] != self.mean.shape[0]:
            raise ValueError(f"Normalize.fit_: data must be [N, {self.mean.shape[0]}, H, W], got {tuple(data.shape)}")
        data = data.float()
        mean = data.mean(0) if per_pixel else data.mean((0, 2, 3))[:, None, None]
        std = data.std(dim=(0, 2, 3)).clamp_min(1e-6)[:, None, None]
        self.mean = mean.to(self.mean.device)
        self.std = std.to(self.std.device)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in ("mean", "std"):
            incoming = state_dict.get(prefix + key)
            if incoming is not None and incoming.shape != getattr(self, key).shape:
                setattr(self, key, torch.empty_like(incoming, device=getattr(self, key).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        kind = "per-pixel" if self.mean.shape[1:] != (1, 1) else "per-channel"
        return f"channels={self.mean.shape[0]}, {kind}"


def check_builder_args(name: str, num_classes: int, in_channels: int, input_size: int) -> None:
    for arg, v in (("num_classes", num_classes), ("in_channels", in_channels), ("input_size", input_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: {arg} must be a positive int, got {v!r}")


def choose_stem(stem: Optional[str], input_size: int) -> str:
    """``"cifar"`` (3x3 stride-1 stem, for 28-64 px) or ``"imagenet"`` (7x7/2 + max-pool, >= 128 px)."""
    if stem is None:
        return "imagenet" if input_size >= 128 else "cifar"
    if stem not in ("cifar", "imagenet"):
        raise ValueError(f"stem must be 'cifar', 'imagenet' or None (by input_size), got {stem!r}")
    return stem


def finish(model: nn.Module, in_channels: int, input_size: int, placement: dict,
           defective: Optional[dict], placement_text: Optional[dict] = None) -> nn.Module:
    """Record input shape and placements on ``model``, then make it defective if asked.

    ``placement``: {"bottom": [...], "top": [...]} as the published code masks (the default,
    ``model.defect_placement``); ``placement_text``: the paper text's reading where it differs
    (``model.defect_placement_text``; None: the same table). ``defective``: None, a dict
    (:func:`sparsemask.defect`'s keywords) or a list of such dicts applied in turn (e.g.
    ``[dict(keep=0.3, where="bottom"), dict(keep=0.7, where="top", seed=1)]``).
    """
    model.input_shape = (1, in_channels, input_size, input_size)
    model.defect_placement = placement
    model.defect_placement_text = placement if placement_text is None else placement_text
    if defective is None:
        return model
    if isinstance(defective, (list, tuple)):
        # Several placements with their own keep (seed 001 Table 4's "p-Bottom, q-Top"):
        # defect() composes, each entry making its own layers defective, in order.
        if not defective:
            raise TypeError("defective: an empty list; pass None for a standard model")
        for entry in defective:
            model = finish(model, in_channels, input_size, placement, entry, placement_text)
        return model
    if not isinstance(defective, dict):
        raise TypeError(f"defective must be None, a dict with keys {', '.join(DEFECTIVE_KEYS)} or a list of "
                        f"such dicts, got {defective!r}")
    unknown = set(defective) - set(DEFECTIVE_KEYS)
    if unknown:
        raise TypeError(f"defective: unknown keys {sorted(unknown)}; expected some of {', '.join(DEFECTIVE_KEYS)}")
    if "keep" not in defective:
        raise TypeError("defective: the key 'keep' (keep probability) is required")
    from ..nn.defect import defect

    return defect(model, **defective)
