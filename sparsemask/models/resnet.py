"""ResNet-18 and ResNet-50 (He et al. 2016), torchvision module names, CIFAR or ImageNet stem.

Blocks as the seeds count them (000/001 appendix C): block 0 is the stem conv, blocks 1-4
are ``layer1``..``layer4``. Defective placement (``defect_placement``, as the published code
``tiangeluo/DefectiveCNN`` masks; ``defect_placement_text`` the paper text's reading):
  ResNet-18  bottom = blocks 0, 1, 2 (stem conv + every 3x3 conv of layer1, layer2) **and the
             projection shortcut of layer2.0** (``layer2.0.downsample.0``: its BN output is
             masked, ``resnet_drop_012_*``); top = blocks 3, 4 and the shortcuts of layer3.0 and
             layer4.0 (``resnet_drop_34_*``). The text reading leaves the shortcuts dense.
  ResNet-50  bottom = the 3x3 convs of blocks 0, 1, 2 (the CIFAR stem is 3x3, so it counts;
             the 7x7 ImageNet stem does not); top = the 3x3 convs of blocks 3, 4 (code = text).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..nn.defective import has_forward_hooks, basic_block, conv_bn_act
from .common import Normalize, check_builder_args, choose_stem, default_stats, finish

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet50"]


def _downsample(in_planes: int, out_planes: int, stride: int) -> Optional[nn.Module]:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


def _shortcut(downsample: Optional[nn.Module], x: Tensor) -> Tensor:
    """The block's identity branch: ``x`` or ``BN(conv1x1(x))`` — a defective unit (fused on
    CPU, see :func:`conv_bn_act`) when the shortcut conv is defective (published placement)."""
    if downsample is None:
        return x
    if isinstance(downsample, nn.Sequential) and len(downsample) == 2 and not has_forward_hooks(downsample):
        return conv_bn_act(downsample[0], downsample[1], x)
    return downsample(x)


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x)); [N, C_in, H, W] -> [N, planes, H/s, W/s]."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = _downsample(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        # relu(bn2(conv2(relu(bn1(conv1 x)))) + identity): one fused op when both convs are
        # defective (sparsemask.nn.defective.basic_block), else unit by unit.
        identity = _shortcut(self.downsample, x)
        return basic_block(self.conv1, self.bn1, self.conv2, self.bn2, self.relu, x, identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride), 1x1 expand (x4), post-activation; [N, C_in, H, W] -> [N, 4*planes, H/s, W/s]."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = _downsample(in_planes, planes * 4, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = conv_bn_act(self.conv1, self.bn1, x, self.relu)
        out = conv_bn_act(self.conv2, self.bn2, out, self.relu)
        identity = _shortcut(self.downsample, x)
        return conv_bn_act(self.conv3, self.bn3, out, self.relu, residual=identity)


class ResNet(nn.Module):
    """ResNet with a Normalize first module; input [N, C, H, W] in [0, 1] -> logits [N, num_classes]."""

    def __init__(self, block, layers: list[int], num_classes: int = 10, in_channels: int = 3, stem: str = "cifar",
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
        self.relu = nn.ReLU()
        in_planes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(in_planes, planes, 2 if (j == 0 and i > 0) else 1))
                in_planes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(conv_bn_act(self.conv1, self.bn1, self.normalize(x), self.relu))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _placement(model: ResNet, only_3x3: bool, shortcuts: bool) -> dict:
    """bottom = blocks 0-2, top = blocks 3-4; ``shortcuts``: with each stage's projection
    shortcut conv (``layerI.0.downsample.0``), whose BN output the published code masks."""
    blocks = [["conv1"]]
    for i in range(1, 5):
        blocks.append([f"layer{i}.{n}" for n, m in getattr(model, f"layer{i}").named_modules()
                       if isinstance(m, nn.Conv2d) and (shortcuts or "downsample" not in n)])
    if only_3x3:
        blocks = [[n for n in b if tuple(model.get_submodule(n).kernel_size) == (3, 3)] for b in blocks]
    return {"bottom": blocks[0] + blocks[1] + blocks[2], "top": blocks[3] + blocks[4]}


def resnet18(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, defective: Optional[dict] = None,
             *, stem: Optional[str] = None, mean=None, std=None) -> ResNet:
    """ResNet-18 (2-2-2-2 basic blocks). ``defective=dict(keep=..., where="bottom", kind=..., widen=1, seed=...)``.

    Input [N, in_channels, input_size, input_size] in [0, 1] -> logits [N, num_classes].
    Placement as the published code: bottom = stem + layer1-2 convs + layer2.0's shortcut
    (10 masks), top = layer3-4 convs + layer3.0/layer4.0 shortcuts (10 masks);
    ``defective=dict(..., reading="text")`` leaves the shortcuts dense (9 / 8 masks).
    """
    check_builder_args("resnet18", num_classes, in_channels, input_size)
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, choose_stem(stem, input_size), mean, std)
    return finish(model, in_channels, input_size, _placement(model, only_3x3=False, shortcuts=True), defective,
                  _placement(model, only_3x3=False, shortcuts=False))


def resnet50(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, defective: Optional[dict] = None,
             *, stem: Optional[str] = None, mean=None, std=None) -> ResNet:
    """ResNet-50 (3-4-6-3 bottlenecks); defective placement on the 3x3 convs of blocks 0-2."""
    check_builder_args("resnet50", num_classes, in_channels, input_size)
    model = ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, choose_stem(stem, input_size), mean, std)
    return finish(model, in_channels, input_size, _placement(model, only_3x3=True, shortcuts=False), defective)
