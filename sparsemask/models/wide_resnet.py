"""Wide ResNets (Zagoruyko & Komodakis 2016), pre-activation, three stages of width 16k/32k/64k.

``wide_resnet(depth=32, width=4)`` is WRN-32-4 as the paper's text names seed 001's
transfer-attack source/target (the ResNet-32 of Madry et al. / Buckman et al.: depth = 6n + 2,
n = 5 units per stage). The network the published code trained under that name is
post-activation (conv-BN-ReLU, no final BN): :func:`sparsemask.models.resnet32x4`;
``wrn_28_10`` is WRN-28-10 of seed 003 (depth = 6n + 4, counting shortcut convs: n = 4).
Blocks as seed 001 counts them: block 0 = stem conv, blocks 1-3 = ``block1``..``block3``.
Defective placement: bottom = blocks 0 and 1 (stem + every 3x3 conv of block1; the 1x1
shortcut convs are not block layers); top = blocks 2 and 3.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import Normalize, check_builder_args, default_stats, finish

__all__ = ["WideResNet", "wide_resnet", "wrn_28_10", "wrn_32_4"]


class WideBasic(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-(dropout)-conv3x3 + shortcut: [N, C_in, H, W] -> [N, C_out, H/s, W/s]."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(act)))))
        return out + (x if self.shortcut is None else self.shortcut(act))


def _units(depth: int) -> int:
    if depth >= 8 and (depth - 2) % 6 == 0:
        return (depth - 2) // 6
    if depth >= 10 and (depth - 4) % 6 == 0:
        return (depth - 4) // 6
    raise ValueError(f"wide_resnet: depth must be 6n+2 (e.g. 32) or 6n+4 (e.g. 28), got {depth}")


class WideResNet(nn.Module):
    """WRN-depth-width; input [N, C, H, W] in [0, 1] -> logits [N, num_classes]."""

    def __init__(self, depth: int = 32, width: int = 4, num_classes: int = 10, in_channels: int = 3,
                 dropout: float = 0.0, mean=None, std=None) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"wide_resnet: width must be a positive int, got {width!r}")
        n = _units(depth)
        d_mean, d_std = default_stats(in_channels)
        self.normalize = Normalize(d_mean if mean is None else mean, d_std if std is None else std)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        in_planes = 16
        for i, planes in enumerate((16 * width, 32 * width, 64 * width)):
            units = []
            for j in range(n):
                units.append(WideBasic(in_planes, planes, 2 if (j == 0 and i > 0) else 1, dropout))
                in_planes = planes
            setattr(self, f"block{i + 1}", nn.Sequential(*units))
        self.bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)
        self.depth, self.width = depth, width

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(self.normalize(x)))))
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1)
        return self.fc(torch.flatten(out, 1))

    def extra_repr(self) -> str:
        return f"depth={self.depth}, width={self.width}"


def _placement(model: WideResNet) -> dict:
    blocks = [["conv1"]] + [[f"block{i}.{n}" for n, m in getattr(model, f"block{i}").named_modules()
                             if isinstance(m, nn.Conv2d) and "shortcut" not in n] for i in range(1, 4)]
    return {"bottom": blocks[0] + blocks[1], "top": blocks[2] + blocks[3]}


def wide_resnet(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, defective: Optional[dict] = None,
                *, depth: int = 32, width: int = 4, dropout: float = 0.0, mean=None, std=None) -> WideResNet:
    """WRN-depth-width (default WRN-32-4); defective bottom = blocks 0 and 1."""
    check_builder_args("wide_resnet", num_classes, in_channels, input_size)
    model = WideResNet(depth, width, num_classes, in_channels, dropout, mean, std)
    return finish(model, in_channels, input_size, _placement(model), defective)


def wrn_32_4(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, defective: Optional[dict] = None,
             **kw) -> WideResNet:
    """WRN-32-4 (seed 001's transfer-attack architecture)."""
    return wide_resnet(num_classes, in_channels, input_size, defective, depth=32, width=4, **kw)


def wrn_28_10(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, defective: Optional[dict] = None,
              **kw) -> WideResNet:
    """WRN-28-10 (seed 003's CIFAR-10 model)."""
    return wide_resnet(num_classes, in_channels, input_size, defective, depth=28, width=10, **kw)
