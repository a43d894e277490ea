"""Per-pixel mean normalisation and the seeds' augmentation (pad + random crop + flip).

Seed 001 (appendix): CIFAR-10 "subtract per-pixel mean, zero-padding of width 4, a random
horizontal flip and a random crop of size 32x32"; MNIST "subtract per-pixel mean, random
horizontal flip". The mean is subtracted inside the model (:class:`PixelMeanNormalize`)
so that images stay in [0, 1] for the attacks.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PixelMeanNormalize(nn.Module):
    """``x - mean`` (then ``/ std`` when given), mean/std [C, H, W] or [C, 1, 1] stored as buffers.

    Put it first in a model (``nn.Sequential(PixelMeanNormalize(train.pixel_mean), net)``):
    the mean travels with the model's state_dict and inputs stay in [0, 1].
    """

    def __init__(self, mean: Tensor, std: Optional[Tensor] = None):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32)
        if mean.dim() != 3:
            raise ValueError(f"PixelMeanNormalize: mean must be [C, H, W] or [C, 1, 1], got {tuple(mean.shape)}")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", None if std is None else torch.as_tensor(std, dtype=torch.float32).clone())

    def forward(self, x: Tensor) -> Tensor:
        """x [N, C, H, W] -> [N, C, H, W]."""
        x = x - self.mean
        return x if self.std is None else x / self.std

    def extra_repr(self) -> str:
        return f"mean_shape={tuple(self.mean.shape)}, std={'yes' if self.std is not None else 'no'}"


class RandomCropFlip:
    """Zero-pad by ``pad``, crop back to the original size at a random offset, flip with p=0.5.

    Works on one image [C, H, W] or a batch [N, C, H, W] (each image its own offset and flip).
    Random numbers come from the object's own ``torch.Generator`` seeded with ``seed``, so
    a run is reproducible and does not disturb the global RNG; :meth:`reseed` sets a new
    seed (the training loop uses (seed, epoch, rank) so a resumed run replays exactly).
    """

    def __init__(self, pad: int = 4, flip: bool = True, seed: int = 0):
        if not isinstance(pad, int) or pad < 0:
            raise ValueError(f"RandomCropFlip: pad must be an int >= 0, got {pad!r}")
        self.pad, self.flip = pad, bool(flip)
        self.generator = torch.Generator()
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.seed = int(seed)
        self.generator.manual_seed(self.seed)

    def __call__(self, x: Tensor) -> Tensor:
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise ValueError(f"RandomCropFlip: expected [C, H, W] or [N, C, H, W], got {tuple(x.shape)}")
        n, c, h, w = x.shape
        if self.pad > 0:
            p = self.pad
            padded = F.pad(x, (p, p, p, p))
            oy = torch.randint(0, 2 * p + 1, (n,), generator=self.generator)
            ox = torch.randint(0, 2 * p + 1, (n,), generator=self.generator)
            rows = (oy[:, None] + torch.arange(h)).to(x.device)  # [N, H]
            cols = (ox[:, None] + torch.arange(w)).to(x.device)  # [N, W]
            x = padded[torch.arange(n, device=x.device)[:, None, None, None],
                       torch.arange(c, device=x.device)[None, :, None, None],
                       rows[:, None, :, None], cols[:, None, None, :]]
        if self.flip:
            flip = (torch.rand(n, generator=self.generator) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x[0] if single else x

    def __repr__(self) -> str:
        return f"RandomCropFlip(pad={self.pad}, flip={self.flip}, seed={self.seed})"
