"""Random masks for defective layers: the three kinds the seeds ablate.

``neuron``   independent Bernoulli(keep) per (channel, y, x) — the method of seeds 000/001;
``channel``  whole channels kept or dropped ("DC", defective channels);
``shared``   one spatial mask repeated in every channel ("SM").
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

MASK_KINDS = ("neuron", "channel", "shared")


def check_keep(keep: float) -> float:
    """Validate a keep probability (the seeds' p; drop ratio sigma = 1 - p)."""
    try:
        keep = float(keep)
    except (TypeError, ValueError):
        raise TypeError(f"keep must be a number in [0, 1], got {keep!r}") from None
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must be in [0, 1], got {keep}")
    return keep


def random_mask(channels: int, height: int, width: int, keep: float, kind: str = "neuron", *,
                seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
                device: Optional[torch.device] = None) -> Tensor:
    """A bool mask [channels, height, width] whose True entries are the kept neurons.

    Drawn on the CPU from ``generator`` (or a fresh one seeded with ``seed``; with neither,
    from torch's global generator), so the same seed gives the same mask on every machine
    and every DDP rank, then moved to ``device``.
    """
    keep = check_keep(keep)
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; expected one of {', '.join(MASK_KINDS)}")
    for name, v in (("channels", channels), ("height", height), ("width", width)):
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"random_mask: {name} must be a positive int, got {v!r}")
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    shape = {"neuron": (channels, height, width), "channel": (channels, 1, 1), "shared": (1, height, width)}[kind]
    mask = torch.rand(shape, generator=generator) < keep
    return mask.expand(channels, height, width).contiguous().to(device)
