"""ResNet-18, ResNet-50 and the CIFAR ResNet-32x4 (He et al. 2016), torchvision module names.

Blocks as the seeds count them (000/001 appendix C): block 0 is the stem conv, blocks 1-4
are ``layer1``..``layer4``. Defective placement (``defect_placement``, as the published code
``tiangeluo/DefectiveCNN`` masks; ``defect_placement_text`` the paper text's reading):
  ResNet-18  bottom = blocks 0, 1, 2 (stem conv + every 3x3 conv of layer1, layer2) **and the
             projection shortcut of layer2.0** (``layer2.0.downsample.0``: its BN output is
             masked, ``resnet_drop_012_*``); top = blocks 3, 4 and the shortcuts of layer3.0 and
             layer4.0 (``resnet_drop_34_*``). The text reading leaves the shortcuts dense.
  ResNet-50  bottom = the 3x3 convs of blocks 0, 1, 2 (the CIFAR stem is 3x3, so it counts;
             the 7x7 ImageNet stem does not); top = the 3x3 convs of blocks 3, 4 (code = text).
  ResNet-32x4 (``resnet32x4``, post-activation, 3 stages) bottom = blocks 0, 1 (stem + the 10 3x3
             convs of layer1, ``resnet32_k4_drop_01_*``); top = layer2-3 (ours, no published variant).
Published structural variants of ResNet-18: ``resnet18_x2`` (``*_c20``: 128/256 channels and a
1x1 conv + BN shortcut on layer1.0) and ``resnet18_dc`` (``*_dc05/dc09``: a narrower dense net).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..nn.defective import has_forward_hooks, basic_block, conv_bn_act
from .common import Normalize, check_builder_args, choose_stem, default_stats, finish

__all__ = ["ResNet", "CifarResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet18_x2", "resnet18_dc", "dc_widths",
           "resnet50", "resnet32x4"]


def _downsample(in_planes: int, out_planes: int, stride: int, projection: bool = False) -> Optional[nn.Module]:
    """1x1 conv + BN where the shape changes, or everywhere with ``projection`` (the published
    ×2 and DC files put one on layer1.0 although its shape does not change)."""
    if stride == 1 and in_planes == out_planes and not projection:
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

    def __init__(self, in_planes: int, planes: int, stride: int = 1, projection: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = _downsample(in_planes, planes, stride, projection)

    def forward(self, x: Tensor) -> Tensor:
        # relu(bn2(conv2(relu(bn1(conv1 x)))) + identity): one fused op when both convs are
        # defective (sparsemask.nn.defective.basic_block), else unit by unit.
        identity = _shortcut(self.downsample, x)
        return basic_block(self.conv1, self.bn1, self.conv2, self.bn2, self.relu, x, identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride), 1x1 expand (x4), post-activation; [N, C_in, H, W] -> [N, 4*planes, H/s, W/s]."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, projection: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = _downsample(in_planes, planes * 4, stride, projection)

    def forward(self, x: Tensor) -> Tensor:
        out = conv_bn_act(self.conv1, self.bn1, x, self.relu)
        out = conv_bn_act(self.conv2, self.bn2, out, self.relu)
        identity = _shortcut(self.downsample, x)
        return conv_bn_act(self.conv3, self.bn3, out, self.relu, residual=identity)


_WIDTHS = (64, 64, 128, 256, 512)  # stem, layer1 .. layer4 (torchvision)


def _check_widths(name: str, widths, n: int) -> tuple[int, ...]:
    if widths is None:
        return _WIDTHS[:n]
    if (not isinstance(widths, (list, tuple)) or len(widths) != n
            or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)):
        raise ValueError(f"{name}: widths must be {n} positive ints (stem, then each stage), got {widths!r}")
    return tuple(widths)


class ResNet(nn.Module):
    """ResNet with a Normalize first module; input [N, C, H, W] in [0, 1] -> logits [N, num_classes].

    ``widths``: channels of (stem, layer1, layer2, layer3, layer4), default (64, 64, 128, 256, 512)
    (a bottleneck stage outputs 4x its width); ``layer1_projection``: a 1x1 conv + BN shortcut on
    layer1.0 even where its shape does not change (the published ×2 and DC files have one).
    """

    def __init__(self, block, layers: list[int], num_classes: int = 10, in_channels: int = 3, stem: str = "cifar",
                 mean=None, std=None, widths=None, layer1_projection: bool = False) -> None:
        super().__init__()
        widths = _check_widths("ResNet", widths, 5)
        d_mean, d_std = default_stats(in_channels)
        self.normalize = Normalize(d_mean if mean is None else mean, d_std if std is None else std)
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        in_planes = widths[0]
        for i, (planes, n) in enumerate(zip(widths[1:], layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(in_planes, planes, 2 if (j == 0 and i > 0) else 1,
                                    projection=layer1_projection and i == 0 and j == 0))
                in_planes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(conv_bn_act(self.conv1, self.bn1, self.normalize(x), self.relu))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _placement(model: nn.Module, only_3x3: bool, shortcuts: bool, stages: int = 4) -> dict:
    """bottom = blocks 0-2, top = blocks 3-4 (``stages=3``: bottom = blocks 0-1, top = 2-3);
    ``shortcuts``: with the projection shortcut conv of each down-sampling stage
    (``layerI.0.downsample.0``, I >= 2), whose BN output the published code masks. layer1's
    projection (ResNet-32x4's 16 -> 64, the ×2/DC extra one) stays dense in every published file."""
    blocks = [["conv1"]]
    for i in range(1, stages + 1):
        blocks.append([f"layer{i}.{n}" for n, m in getattr(model, f"layer{i}").named_modules()
                       if isinstance(m, nn.Conv2d) and ("downsample" not in n or (shortcuts and i > 1))])
    if only_3x3:
        blocks = [[n for n in b if tuple(model.get_submodule(n).kernel_size) == (3, 3)] for b in blocks]
    split = 3 if stages == 4 else 2
    return {"bottom": sum(blocks[:split], []), "top": sum(blocks[split:], [])}


def scale_widths(widths: tuple[int, ...], width: float) -> tuple[int, ...]:
    """``widths`` times the multiplier ``width`` (> 0), each rounded to the nearest int, at least 1."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 64:
        raise ValueError(f"width must be a number in (0, 64], got {width!r}")
    return tuple(max(1, round(w * width)) for w in widths)


def resnet18(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, defective: Optional[dict] = None,
             *, stem: Optional[str] = None, mean=None, std=None, widths=None,
             layer1_projection: bool = False, width: float = 1.0) -> ResNet:
    """ResNet-18 (2-2-2-2 basic blocks). ``defective=dict(keep=..., where="bottom", kind=..., widen=1, seed=...)``.

    Input [N, in_channels, input_size, input_size] in [0, 1] -> logits [N, num_classes].
    Placement as the published code: bottom = stem + layer1-2 convs + layer2.0's shortcut
    (10 masks), top = layer3-4 convs + layer3.0/layer4.0 shortcuts (10 masks);
    ``defective=dict(..., reading="text")`` leaves the shortcuts dense (9 / 8 masks).
    ``widths`` (stem, layer1..layer4) and ``layer1_projection`` change the structure (see
    :class:`ResNet`); :func:`resnet18_x2` and :func:`resnet18_dc` are the published ones.
    ``width`` multiplies every stage's channels (:func:`scale_widths`; 0.25: 16/16/32/64/128), the
    knob that makes CPU-scale reproductions of the seeds' architecture feasible.
    """
    check_builder_args("resnet18", num_classes, in_channels, input_size)
    if not isinstance(layer1_projection, bool):
        raise ValueError(f"resnet18: layer1_projection must be a bool, got {layer1_projection!r}")
    widths = scale_widths(_check_widths("resnet18", widths, 5), width)
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, choose_stem(stem, input_size), mean, std,
                   widths, layer1_projection)
    return finish(model, in_channels, input_size, _placement(model, only_3x3=False, shortcuts=True), defective,
                  _placement(model, only_3x3=False, shortcuts=False))


def resnet18_x2(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, defective: Optional[dict] = None,
                **kw) -> ResNet:
    """The published "×2 channels" ResNet-18 (``resnet_drop_012_*_c20``): stem and layer1 at 128
    channels, layer2 and layer3 at 256, layer4 at 512, and a 1x1 conv + BN shortcut on layer1.0.

    Not ``defective=dict(widen=2)``: that doubles only the defective layers' channels and adds no
    shortcut conv. Placement as :func:`resnet18` (bottom: 10 masks; layer1.0's shortcut stays dense).
    Input [N, in_channels, input_size, input_size] in [0, 1] -> logits [N, num_classes].
    """
    return resnet18(num_classes, in_channels, input_size, defective, widths=(128, 128, 256, 256, 512),
                    layer1_projection=True, **kw)


def dc_widths(channel_keep: float) -> tuple[int, ...]:
    """(stem, layer1, layer2, layer3, layer4) channels of the published DC ResNet-18: blocks 0-2
    keep ``ceil(channel_keep * width)`` channels (0.5: 32/32/64, ``dc05``; 0.1: 7/7/13, ``dc09``)."""
    if isinstance(channel_keep, bool) or not isinstance(channel_keep, (int, float)) or not 0 < channel_keep <= 1:
        raise ValueError(f"resnet18_dc: channel_keep must be in (0, 1], got {channel_keep!r}")
    # rounded first so float error cannot add a channel (0.3 * 10 is 3.0000000000000004 in floats)
    return tuple(math.ceil(round(channel_keep * w, 6)) for w in _WIDTHS[:3]) + _WIDTHS[3:]


def resnet18_dc(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, defective: Optional[dict] = None,
                *, channel_keep: float = 0.5, **kw) -> ResNet:
    """The published "defective channels" ResNet-18 (``resnet_drop_012_dc05/dc09``): a genuinely
    narrower dense network, not masks — stem, layer1 and layer2 keep ``ceil(channel_keep · width)``
    channels (:func:`dc_widths`; ``dc05`` = 0.5, ``dc09`` = 0.1), layer3-4 are full width, and
    layer1.0 has a 1x1 conv + BN shortcut. No mask unless ``defective`` asks for one.
    Input [N, in_channels, input_size, input_size] in [0, 1] -> logits [N, num_classes].
    """
    return resnet18(num_classes, in_channels, input_size, defective, widths=dc_widths(channel_keep),
                    layer1_projection=True, **kw)


def resnet50(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, defective: Optional[dict] = None,
             *, stem: Optional[str] = None, mean=None, std=None) -> ResNet:
    """ResNet-50 (3-4-6-3 bottlenecks); defective placement on the 3x3 convs of blocks 0-2."""
    check_builder_args("resnet50", num_classes, in_channels, input_size)
    model = ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, choose_stem(stem, input_size), mean, std)
    return finish(model, in_channels, input_size, _placement(model, only_3x3=True, shortcuts=False), defective)


class CifarResNet(nn.Module):
    """Post-activation CIFAR ResNet-(6n+2) of width k (the published ``resnet32_k4``):
    conv3x3(16)-BN-ReLU, three stages of n basic blocks (conv-BN-ReLU-conv-BN + shortcut, ReLU)
    at 16k, 32k, 64k channels (stride 1, 2, 2), projection shortcuts (1x1 conv + BN, also 16 ->
    16k on layer1.0), no final BN, global average pooling (the published ``AvgPool2d(8)`` on the
    8x8 map of a 32 px input), one Linear. Input [N, C, H, W] in [0, 1] -> logits [N, num_classes].
    """

    def __init__(self, depth: int = 32, width: int = 4, num_classes: int = 10, in_channels: int = 3,
                 mean=None, std=None) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"resnet32x4: depth must be 6n+2 (8, 14, 20, 32, ...), got {depth!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"resnet32x4: width must be a positive int, got {width!r}")
        n = (depth - 2) // 6
        d_mean, d_std = default_stats(in_channels)
        self.normalize = Normalize(d_mean if mean is None else mean, d_std if std is None else std)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        in_planes = 16
        for i, planes in enumerate((16 * width, 32 * width, 64 * width)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, planes, 2 if (j == 0 and i > 0) else 1))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self.depth, self.width = depth, width
        # the published initialisation: convs N(0, 2 / (k·k·C_out)) (He, fan-out), BN 1 / 0
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = conv_bn_act(self.conv1, self.bn1, self.normalize(x), self.relu)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def extra_repr(self) -> str:
        return f"depth={self.depth}, width={self.width}"


def resnet32x4(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, defective: Optional[dict] = None,
               *, depth: int = 32, width: int = 4, mean=None, std=None) -> CifarResNet:
    """ResNet-32x4, post-activation (the published ``resnet32_k4_drop_01_09``; seed 001's
    transfer-attack source and target, "WRN-32-4" in the paper's text). Not :func:`wrn_32_4`,
    which is the pre-activation Wide ResNet.

    Input [N, in_channels, input_size, input_size] in [0, 1] -> logits [N, num_classes].
    Placement as the published code: bottom = blocks 0, 1 = the stem conv and the 10 3x3 convs
    of layer1 (11 masks; layer1.0's 16 -> 64 shortcut stays dense); top (no published variant,
    ours) = the 3x3 convs of layer2-3 (20).
    """
    check_builder_args("resnet32x4", num_classes, in_channels, input_size)
    model = CifarResNet(depth, width, num_classes, in_channels, mean, std)
    return finish(model, in_channels, input_size, _placement(model, only_3x3=True, shortcuts=False, stages=3),
                  defective)
