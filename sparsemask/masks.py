"""Random masks for defective layers: the three kinds the seeds ablate.

``neuron``   independent Bernoulli(keep) per (channel, y, x) — the method of seeds 000/001;
``channel``  whole channels kept or dropped ("DC", defective channels);
``shared``   one spatial mask repeated in every channel ("SM").

Two ways to sample them:

``exact``      exactly ``int(n * (1 - keep))`` units dropped out of the ``n`` a mask draws
               (C*H*W neurons, C channels or H*W positions), chosen uniformly without
               replacement — how the published code (``Masks/genmask_*.py``) made its masks,
               here from a seeded torch generator;
``bernoulli``  every unit kept independently with probability ``keep`` (the papers' text).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

MASK_KINDS = ("neuron", "channel", "shared")
SAMPLINGS = ("exact", "bernoulli")


def check_keep(keep: float) -> float:
    """Validate a keep probability (the seeds' p; drop ratio sigma = 1 - p)."""
    try:
        keep = float(keep)
    except (TypeError, ValueError):
        raise TypeError(f"keep must be a number in [0, 1], got {keep!r}") from None
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must be in [0, 1], got {keep}")
    return keep


def check_sampling(sampling: str) -> str:
    """Validate a mask sampling name (see :data:`SAMPLINGS`)."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown mask sampling {sampling!r}; expected one of {', '.join(SAMPLINGS)}")
    return sampling


def exact_drop_count(n: int, keep: float) -> int:
    """How many of ``n`` units an ``exact`` mask drops: ``int(n * (1 - keep))``, the published
    code's ``int(n * drop)`` for a decimal drop ratio (rounded to 6 decimals first, so that
    ``1 - 0.9`` = 0.0999... does not lose a unit to float error)."""
    return int(math.floor(round(n * (1.0 - check_keep(keep)), 6)))


def random_mask(channels: int, height: int, width: int, keep: float, kind: str = "neuron", *,
                seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
                device: Optional[torch.device] = None, sampling: str = "bernoulli") -> Tensor:
    """A bool mask [channels, height, width] whose True entries are the kept neurons.

    ``sampling="bernoulli"``: each unit (neuron, channel or position, by ``kind``) kept
    independently with probability ``keep``. ``sampling="exact"``: exactly
    :func:`exact_drop_count` units dropped, a uniformly random subset (the published code).

    Drawn on the CPU from ``generator`` (or a fresh one seeded with ``seed``; with neither,
    from torch's global generator), so the same seed gives the same mask on every machine
    and every DDP rank, then moved to ``device``.
    """
    keep = check_keep(keep)
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; expected one of {', '.join(MASK_KINDS)}")
    check_sampling(sampling)
    for name, v in (("channels", channels), ("height", height), ("width", width)):
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"random_mask: {name} must be a positive int, got {v!r}")
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    shape = {"neuron": (channels, height, width), "channel": (channels, 1, 1), "shared": (1, height, width)}[kind]
    if sampling == "exact":
        n = shape[0] * shape[1] * shape[2]
        mask = torch.ones(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=generator)[:exact_drop_count(n, keep)]] = False
        mask = mask.view(shape)
    else:
        mask = torch.rand(shape, generator=generator) < keep
    return mask.expand(channels, height, width).contiguous().to(device)
