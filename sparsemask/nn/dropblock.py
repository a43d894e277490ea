"""SpatialDropout and DropBlock, the dropout baselines of seed 001.

Seed 001 follows Ghiasi et al. (2018): apply them to the 3rd block with keep probability
0.9; DropBlock's block is a 3x3 square. Both are active in training; at inference only with
``mc=True`` (MC dropout; wrap the model in
:class:`~sparsemask.nn.dropout.RandomizedInference` to average runs).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dropout import MCDropout, Randomized, check_positive_int, check_probability


def _check_4d(name: str, x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} expects feature maps [N, C, H, W], got shape {tuple(x.shape)}")


class SpatialDropout2d(MCDropout):
    """Drop whole channels (Tompson et al. 2015): each (image, channel) is kept with
    probability ``keep`` and scaled by ``1/keep``. Shape: [N, C, H, W] -> same.

    Args:
        keep: keep probability (seed 001: 0.9).
        mc: also active in eval mode.
        seed / generator: the random stream.
    """

    def __init__(self, keep: float = 0.9, *, mc: bool = False, seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None):
        super().__init__(keep, mc=mc, seed=seed, generator=generator)

    def _noise_shape(self, x: Tensor) -> tuple[int, ...]:
        _check_4d("SpatialDropout2d", x)
        return (x.shape[0], x.shape[1], 1, 1)


class DropBlock2d(Randomized, nn.Module):
    """DropBlock (Ghiasi et al. 2018): drop ``block_size`` x ``block_size`` squares.

    Block corners are sampled where a whole block fits, independently per image and channel,
    with rate ``gamma = (1 - keep) / block_size**2 * H*W / ((H - block_size + 1)(W - block_size + 1))``
    so that about ``1 - keep`` of the units are dropped (fewer when blocks overlap). With
    ``rescale`` the kept units are multiplied by ``numel / kept`` (the paper's normalisation).
    A block larger than the feature map is clipped to it. Shape: [N, C, H, W] -> same.

    Args:
        keep: target keep probability (seed 001: 0.9).
        block_size: side of the dropped squares (seed 001: 3).
        rescale: normalise the kept units (default True).
        mc: also active in eval mode.
        seed / generator: the random stream.

    After a call in active mode, ``last_mask`` holds the bool keep mask [N, C, H, W].
    """

    def __init__(self, keep: float = 0.9, block_size: int = 3, *, rescale: bool = True, mc: bool = False,
                 seed: Optional[int] = None, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.keep = check_probability("keep", keep, open_low=True)
        self.block_size = check_positive_int("block_size", block_size)
        self.rescale = bool(rescale)
        self.mc = bool(mc)
        self._init_random(seed, generator)
        self.last_mask: Optional[Tensor] = None

    @property
    def active(self) -> bool:
        return self.training or self.mc

    def gamma(self, height: int, width: int) -> float:
        """Bernoulli rate of block corners for a ``height`` x ``width`` map."""
        bs = min(self.block_size, height, width)
        valid = (height - bs + 1) * (width - bs + 1)
        return min(1.0, (1.0 - self.keep) / bs ** 2 * height * width / valid)

    def sample_mask(self, shape, device) -> Tensor:
        """A bool keep mask of ``shape`` [N, C, H, W] (False inside dropped blocks)."""
        n, c, h, w = shape
        bs = min(self.block_size, h, w)
        corners = (self._rand((n, c, h - bs + 1, w - bs + 1), device) < self.gamma(h, w)).float()
        # Zero padding of bs-1 on every side then a stride-1 max pool turns a corner at (i, j)
        # into the block [i, i+bs) x [j, j+bs) of an [h, w] map; even and odd bs alike.
        dropped = F.max_pool2d(F.pad(corners, (bs - 1, bs - 1, bs - 1, bs - 1)), bs, stride=1)
        return dropped == 0

    def forward(self, x: Tensor) -> Tensor:
        _check_4d("DropBlock2d", x)
        if not self.active or self.keep == 1.0:
            self.last_mask = None
            return x
        mask = self.sample_mask(x.shape, x.device)
        self.last_mask = mask
        out = x * mask.to(x.dtype)
        if self.rescale:
            kept = mask.sum()
            out = out * (mask.numel() / kept.clamp_min(1)).to(x.dtype)
        return out

    def extra_repr(self) -> str:
        return (f"keep={self.keep}, block_size={self.block_size}, rescale={self.rescale}, "
                f"mc={self.mc}, seed={self.seed}")
