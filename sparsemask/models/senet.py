"""SENet-18 (Hu et al. 2017) with pre-activation shortcut blocks, as seeds 000/001 use it.

Eight SE blocks (2 per stage, 64-128-256-512 channels), squeeze-excitation reduction 16.
Defective placement as the published code (``senet_drop_012_*``, ``defect_placement``): the
BN output in front of every conv of the **first 4** SE blocks (``layer1.0`` .. ``layer2.1``):
``bn1`` (a BN-output mask: the block's pre-activation, which also feeds layer2.0's 1x1
shortcut) and ``bn2`` (fed by ``conv1``, so ``conv1`` is made defective: 8 masks; ``conv2``'s
output is not masked. top (no published variant; ours): the same points of the last 4 blocks.
The paper text's reading (``defect_placement_text``, ``reading="text"``): bottom = conv1 and
conv2 of the first 3 SE blocks (the 1x1 shortcut conv and the SE squeeze/excite, which act on
pooled vectors, are not defective); top = the last 3 SE blocks.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import Normalize, check_builder_args, choose_stem, default_stats, finish

__all__ = ["SENet", "PreActSEBlock", "senet18"]


class PreActSEBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3, SE gate, plus shortcut: [N, C_in, H, W] -> [N, planes, H/s, W/s]."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, reduction: int = 16) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))
        self.fc1 = nn.Linear(planes, planes // reduction)
        self.fc2 = nn.Linear(planes // reduction, planes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(out.mean((2, 3))))))
        return out * w[:, :, None, None] + shortcut


class SENet(nn.Module):
    """SENet-18; input [N, C, H, W] in [0, 1] -> logits [N, num_classes]."""

    def __init__(self, layers=(2, 2, 2, 2), num_classes: int = 10, in_channels: int = 3, stem: str = "cifar",
                 mean=None, std=None) -> None:
        super().__init__()
        d_mean, d_std = default_stats(in_channels)
        self.normalize = Normalize(d_mean if mean is None else mean, d_std if std is None else std)
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                blocks.append(PreActSEBlock(in_planes, planes, 2 if (j == 0 and i > 0) else 1))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.maxpool(F.relu(self.bn1(self.conv1(self.normalize(x)))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def _blocks(model: SENet) -> list[str]:
    return [f"layer{i}.{j}" for i in range(1, 5) for j in range(len(getattr(model, f"layer{i}")))]


def _placement(model: SENet) -> dict:
    """The published code's masks: bn1 (own mask) and conv1 (-> bn2) of the first / last 4 blocks."""
    blocks = _blocks(model)
    points = lambda b: [f"{b}.bn1", f"{b}.conv1"]  # noqa: E731
    return {"bottom": sum((points(b) for b in blocks[:4]), []), "top": sum((points(b) for b in blocks[-4:]), [])}


def _placement_text(model: SENet) -> dict:
    blocks = _blocks(model)
    convs = lambda b: [f"{b}.conv1", f"{b}.conv2"]  # noqa: E731
    return {"bottom": sum((convs(b) for b in blocks[:3]), []), "top": sum((convs(b) for b in blocks[-3:]), [])}


def senet18(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, defective: Optional[dict] = None,
            *, stem: Optional[str] = None, mean=None, std=None) -> SENet:
    """SENet-18 (pre-activation SE blocks).

    Input [N, in_channels, input_size, input_size] in [0, 1] -> logits [N, num_classes].
    ``where="bottom"``: the published code's 8 masks in the first 4 SE blocks
    (``reading="text"``: conv1/conv2 of the first 3 SE blocks).
    """
    check_builder_args("senet18", num_classes, in_channels, input_size)
    model = SENet((2, 2, 2, 2), num_classes, in_channels, choose_stem(stem, input_size), mean, std)
    return finish(model, in_channels, input_size, _placement(model), defective, _placement_text(model))
