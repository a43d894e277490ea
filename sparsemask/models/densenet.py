"""DenseNet-121 (Huang et al. 2017), growth rate 32, pre-activation bottleneck layers.

CIFAR layout (3x3 stem conv, dense blocks 6-12-24-16, transitions with compression 0.5 and
floor 2x2 average pooling, global average pooling at the end) as the published code
(on MNIST 28 -> 14 -> 7 -> 3, then its ``avg_pool2d(3)``: the global mean);
``stem="imagenet"`` puts the 7x7/2 conv + BN + ReLU + max-pool in front.
Blocks as the seeds count them: block 0 = stem conv, blocks 1-4 = ``dense1``..``dense4``.
Defective placement as the published code (``densenet_drop_012_*``, ``defect_placement``):
BN-output masks, no conv made defective — the output of the BN in front of every 1x1 conv
of blocks 1, 2 (``dense1/dense2.*.bn1``, 6 + 12) and of the transitions after them
(``trans1.bn``, ``trans2.bn``): 20 masks; no 3x3 output is masked. These masks zero the
*inputs* of 1x1 convs, so the sparse op has no output neurons to skip (no compute saving).
top (no published variant; ours, the same points in blocks 3, 4): ``dense3.*.bn1``,
``trans3.bn``, ``dense4.*.bn1``. The paper text's reading (``defect_placement_text``,
``reading="text"``): bottom = the 3x3 convs of blocks 0, 1, 2 (stem if 3x3, every
``dense1/dense2.*.conv2``); top = the 3x3 convs of blocks 3, 4.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import Normalize, check_builder_args, choose_stem, default_stats, finish

__all__ = ["DenseNet", "densenet121"]


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1(4g)-BN-ReLU-conv3x3(g), concatenated to the input: [N, C, H, W] -> [N, C + g, H, W]."""

    def __init__(self, in_planes: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1-avgpool2 (floor): [N, C, H, W] -> [N, C', floor(H/2), floor(W/2)]."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        # floor, as the published code: 28 -> 14 -> 7 -> 3 on MNIST (then its avg_pool 3 is our global mean)
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    """DenseNet-BC; input [N, C, H, W] in [0, 1] -> logits [N, num_classes]."""

    def __init__(self, blocks=(6, 12, 24, 16), growth: int = 32, reduction: float = 0.5, num_classes: int = 10,
                 in_channels: int = 3, stem: str = "cifar", mean=None, std=None) -> None:
        super().__init__()
        d_mean, d_std = default_stats(in_channels)
        self.normalize = Normalize(d_mean if mean is None else mean, d_std if std is None else std)
        planes = 2 * growth
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, planes, 7, 2, 3, bias=False)
            self.pool1 = nn.Sequential(nn.BatchNorm2d(planes), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        else:
            self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
            self.pool1 = nn.Identity()
        for i, n in enumerate(blocks):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(planes, growth))
                planes += growth
            setattr(self, f"dense{i + 1}", nn.Sequential(*layers))
            if i < len(blocks) - 1:
                out = int(math.floor(planes * reduction))
                setattr(self, f"trans{i + 1}", Transition(planes, out))
                planes = out
        self.bn = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.pool1(self.conv1(self.normalize(x)))
        out = self.trans1(self.dense1(out))
        out = self.trans2(self.dense2(out))
        out = self.trans3(self.dense3(out))
        out = F.relu(self.bn(self.dense4(out)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def _placement(model: DenseNet) -> dict:
    """The published code's BN-output masks (see the module docstring)."""
    def points(i):
        return [f"dense{i}.{j}.bn1" for j in range(len(getattr(model, f"dense{i}")))] + \
            ([f"trans{i}.bn"] if hasattr(model, f"trans{i}") else [])

    return {"bottom": points(1) + points(2), "top": points(3) + points(4)}


def _placement_text(model: DenseNet) -> dict:
    """The paper text's reading: the 3x3 convs of blocks 0-2 / 3-4."""
    def three(names):
        return [n for n in names if tuple(model.get_submodule(n).kernel_size) == (3, 3)]

    blocks = [["conv1"]] + [[f"dense{i}.{n}" for n, m in getattr(model, f"dense{i}").named_modules()
                             if isinstance(m, nn.Conv2d)] for i in range(1, 5)]
    blocks = [three(b) for b in blocks]
    return {"bottom": blocks[0] + blocks[1] + blocks[2], "top": blocks[3] + blocks[4]}


def densenet121(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, defective: Optional[dict] = None,
                *, stem: Optional[str] = None, mean=None, std=None) -> DenseNet:
    """DenseNet-121, growth 32 (seed 000/001 appendix C.3). ``widen`` is not supported (concatenation).

    Input [N, in_channels, input_size, input_size] in [0, 1] -> logits [N, num_classes].
    ``where="bottom"`` masks the 20 BN outputs the published code masks (``reading="text"``:
    the 19 3x3 convs of the text instead).
    """
    check_builder_args("densenet121", num_classes, in_channels, input_size)
    stem = choose_stem(stem, input_size)
    if input_size < (32 if stem == "imagenet" else 8):
        raise ValueError(f"densenet121: input_size must be >= 8 (>= 32 with the ImageNet stem): the transitions' "
                         f"floor pooling would reach an empty map, got {input_size}")
    model = DenseNet((6, 12, 24, 16), 32, 0.5, num_classes, in_channels, stem, mean, std)
    return finish(model, in_channels, input_size, _placement(model), defective, _placement_text(model))
