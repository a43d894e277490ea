"""VGG-19 with batch norm and one fully connected layer (seeds 000/001 appendix C.5).

Sixteen 3x3 conv-BN-ReLU layers in five stages (64x2, 128x2, 256x4, 512x4, 512x4), each
stage ended by a 2x2 max-pool (floor, as the published code), global average pooling and one
Linear (the seeds replace VGG's three FC layers by one). A max-pool that would meet a 1x1 map
is left out (an ``nn.Identity`` in its place, so module indices do not move): at 28x28 that is
the last one, as in the published MNIST VGG (``MNIST/Models/vgg_drop_01_*``: no ``mp4``,
28 -> 14 -> 7 -> 3 -> 1); at 32x32 all five pool (32 -> 1, the published CIFAR VGG).
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

    def __init__(self, cfg=_CFG19, num_classes: int = 10, in_channels: int = 3, mean=None, std=None,
                 input_size: int = 32) -> None:
        super().__init__()
        d_mean, d_std = default_stats(in_channels)
        self.normalize = Normalize(d_mean if mean is None else mean, d_std if std is None else std)
        layers, c, size = [], in_channels, input_size
        for v in cfg:
            if v == "M":
                # floor pooling as the published code; a pool on a 1x1 map would make it 0x0
                layers.append(nn.MaxPool2d(2, 2) if size >= 2 else nn.Identity())
                size = max(size // 2, 1)
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
    """VGG-19-BN with one FC layer; defective bottom = first four 3x3 convs (top: last four).

    Input [N, in_channels, input_size, input_size] in [0, 1] -> logits [N, num_classes]. The
    max-pools are laid out for ``input_size`` (see the module docstring: 28 px drops the last).
    """
    check_builder_args("vgg19", num_classes, in_channels, input_size)
    model = VGG(_CFG19, num_classes, in_channels, mean, std, input_size)
    convs = [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    return finish(model, in_channels, input_size, {"bottom": convs[:4], "top": convs[-4:]}, defective)
