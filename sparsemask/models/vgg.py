"""VGG-19 with batch norm and one fully connected layer (seeds 000/001 appendix C.5).

Sixteen 3x3 conv-BN-ReLU layers in five stages (64x2, 128x2, 256x4, 512x4, 512x4), each
stage ended by a 2x2 max-pool (``ceil_mode`` so 28x28 inputs work), global average pooling
and one Linear (the seeds replace VGG's three FC layers by one).
Defective placement: bottom = the first four 3x3 convs; top = the last four.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .common import Normalize, check_builder_args, default_stats, finish

__all__ = ["VGG", "vgg19"]

_CFG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


class VGG(nn.Module):
    """VGG-BN; input [N, C, H, W] in [0, 1] -> logits [N, num_classes]."""

    def __init__(self, cfg=_CFG19, num_classes: int = 10, in_channels: int = 3, mean=None, std=None) -> None:
        super().__init__()
        d_mean, d_std = default_stats(in_channels)
        self.normalize = Normalize(d_mean if mean is None else mean, d_std if std is None else std)
        layers, c = [], in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(self.normalize(x)))
        return self.classifier(torch.flatten(x, 1))


def vgg19(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, defective: Optional[dict] = None,
          *, mean=None, std=None) -> VGG:
    """VGG-19-BN with one FC layer; defective bottom = first four 3x3 convs."""
    check_builder_args("vgg19", num_classes, in_channels, input_size)
    model = VGG(_CFG19, num_classes, in_channels, mean, std)
    convs = [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    return finish(model, in_channels, input_size, {"bottom": convs[:4], "top": convs[-4:]}, defective)
