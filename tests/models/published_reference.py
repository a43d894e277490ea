"""Small reference networks written from a *description* of the published code
(tiangeluo/DefectiveCNN, ``Models/<arch>_drop_<blocks>_<drop x 10>.py``) — no code copied.

What the published files do, in words (read layer by layer; this file re-states it):

* Every defective point multiplies a tensor by a fixed 0/1 mask [C, H, W] *after* a
  BatchNorm, on dense values (the conv itself is dense).
* ResNet-18 (post-activation basic blocks, CIFAR stem 3x3, no max-pool, avg-pool 4 on the
  4x4 map, linear): bottom (``012``) masks the BN outputs of the stem, of all 8 convs of
  stages 1-2, and of stage 2 block 0's projection shortcut (conv1x1 + BN) before the add:
  10 masks. top (``34``) masks the BN outputs of the 8 convs of stages 3-4 and of the
  projection shortcuts of stages 3 and 4 (block 0): 10 masks.
* DenseNet-121 (growth 32, CIFAR stem conv3x3 without BN, layers BN-ReLU-conv1x1(128)-BN-
  ReLU-conv3x3(32) concatenated in front of their input, transitions BN-ReLU-conv1x1-avgpool2,
  final BN-ReLU-avgpool-linear): bottom masks the output of the BN in front of each 1x1
  conv of dense blocks 1 and 2 (6 + 12) and of the BN of transitions 1 and 2: 20 masks;
  nothing else.
* SENet-18 (stem conv3x3-BN-ReLU, then pre-activation SE blocks: a = ReLU(BN1(x)), the
  shortcut is a bias-free conv1x1 of ``a`` where the shape changes (else x), conv3x3(a),
  BN2-ReLU, conv3x3, SE gate sigmoid(fc2(ReLU(fc1(mean_hw)))) on that output, plus the
  shortcut; no activation after the add; avg-pool, linear): bottom masks BN1's and BN2's
  outputs (before their ReLU) in the first 4 SE blocks: 8 masks.

* ResNet-50 (post-activation bottlenecks 1x1-3x3(stride)-1x1(x4), projection shortcuts):
  bottom masks the stem's BN output and the BN output of the 3x3 conv of every block of
  stages 1-2 (3 + 4): 8 masks.
* ResNet-32x4 (``resnet32_k4``; post-activation CIFAR ResNet: stem conv3x3 to 16 channels +
  BN + ReLU, three stages of 5 basic blocks at 64 / 128 / 256 channels, strides 1 / 2 / 2,
  every shape change through a 1x1 conv + BN shortcut — also 16 -> 64 in stage 1 — no BN at
  the end, avg-pool 8, linear): ``01`` masks the stem's BN output and both BN outputs of the
  5 blocks of stage 1: 11 masks; the stage-1 shortcut is not masked.
* ResNet-18 "x2" (``c20``): the ResNet-18 above with stem/stage 1 at 128 channels, stages 2-3
  at 256, stage 4 at 512, and a 1x1 conv + BN shortcut on stage 1 block 0 although its shape
  does not change (not masked); the 10 bottom masks sit where ResNet-18's do.
* ResNet-18 DC (``dc05`` / ``dc09``): the same extra stage-1 shortcut, stem/stage 1 at 32
  (7) channels, stage 2 at 64 (13), stages 3-4 full width; no masks at all.
* VGG-19 (conv3x3 with bias + BN + ReLU, 2x2 max-pools with floor, 16 convs in 64x2, 128x2,
  256x4, 512x4, 512x4, one linear on the 512 features): bottom masks the BN outputs of the
  first four convs. On CIFAR (32 px) five pools reach 1x1; the MNIST file (28 px, one input
  channel) has no fifth pool (28 -> 14 -> 7 -> 3 -> 1).
* DenseNet-121 on MNIST: as above with one input channel; its floor pools give 28 -> 14 -> 7
  -> 3 and an avg-pool 3 at the end (the mean of the 3x3 map).

Inputs are normalised with the published constants (CIFAR mean (0.4914, 0.4822, 0.4465),
std (0.2023, 0.1994, 0.2010); MNIST 0.1307, 0.3081), as the published data pipeline did.

Each reference lists its mask slots in network order (``slots``) so a test can copy the
masks of a sparsemask model across, and its Conv2d / BatchNorm2d / Linear modules are
created in the same order as the sparsemask builder's, so weights copy by zipping.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


class _Masked(nn.Module):
    """Holds the masks (float buffers [C, H, W], set by the test) by slot name."""

    def __init__(self, slots: list[str], channels: int = 3) -> None:
        super().__init__()
        self.slots = list(slots)
        self._masks: dict[str, Tensor] = {}
        # The published constants; a test may copy a model's (float32-rounded) values in.
        mean, std = (CIFAR_MEAN, CIFAR_STD) if channels == 3 else (MNIST_MEAN, MNIST_STD)
        self.register_buffer("mean", torch.tensor(mean)[:, None, None])
        self.register_buffer("std", torch.tensor(std)[:, None, None])

    def set_masks(self, masks: list[Tensor]) -> None:
        assert len(masks) == len(self.slots), (len(masks), len(self.slots))
        self._masks = {s: m for s, m in zip(self.slots, masks)}

    def m(self, slot: str, t: Tensor) -> Tensor:
        mask = self._masks.get(slot)
        if slot in self.slots:
            assert mask is not None, f"mask {slot} not set"
            assert mask.shape == t.shape[1:], (slot, tuple(mask.shape), tuple(t.shape))
            return t * mask.to(t.dtype)
        return t

    def normalise(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class RefPostActResNet(_Masked):
    """Post-activation ResNet (basic blocks or bottlenecks) with masks on chosen BN outputs.

    ``stages``: (width, blocks, stride) per stage; ``masked``: the stages whose block convs are
    masked (basic: both; bottleneck: the 3x3 only); ``masked_sc``: the stages whose projection
    shortcut is masked; ``stem_masked``; ``stage1_projection``: a 1x1 conv + BN shortcut on
    stage 1 block 0 even where the shape does not change.
    """

    def __init__(self, stem_width: int, stages, bottleneck: bool = False, masked=(), masked_sc=(),
                 stem_masked: bool = False, stage1_projection: bool = False, num_classes: int = 10,
                 in_channels: int = 3) -> None:
        slots = ["stem"] if stem_masked else []
        for s, (_, n, _) in enumerate(stages, start=1):
            for b in range(n):
                if s in masked:
                    slots += [f"s{s}b{b}mid"] if bottleneck else [f"s{s}b{b}a", f"s{s}b{b}b"]
                if s in masked_sc and b == 0:
                    slots.append(f"s{s}b{b}sc")
        super().__init__(slots, channels=in_channels)
        self.bottleneck = bottleneck
        self.stem_conv = nn.Conv2d(in_channels, stem_width, 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(stem_width)
        self.blocks = nn.ModuleList()
        self.names = []
        cin = stem_width
        for s, (width, n, first_stride) in enumerate(stages, start=1):
            cout = 4 * width if bottleneck else width
            for b in range(n):
                stride = first_stride if b == 0 else 1
                blk = nn.Module()
                if bottleneck:
                    blk.ca = nn.Conv2d(cin, width, 1, bias=False)
                    blk.ba = nn.BatchNorm2d(width)
                    blk.cm = nn.Conv2d(width, width, 3, stride, 1, bias=False)
                    blk.bm = nn.BatchNorm2d(width)
                    blk.cb = nn.Conv2d(width, cout, 1, bias=False)
                    blk.bb = nn.BatchNorm2d(cout)
                else:
                    blk.ca = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
                    blk.ba = nn.BatchNorm2d(width)
                    blk.cb = nn.Conv2d(width, width, 3, 1, 1, bias=False)
                    blk.bb = nn.BatchNorm2d(width)
                if stride != 1 or cin != cout or (stage1_projection and s == 1 and b == 0):
                    blk.csc = nn.Conv2d(cin, cout, 1, stride, bias=False)
                    blk.bsc = nn.BatchNorm2d(cout)
                self.blocks.append(blk)
                self.names.append(f"s{s}b{b}")
                cin = cout
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.m("stem", self.stem_bn(self.stem_conv(self.normalise(x)))))
        for name, blk in zip(self.names, self.blocks):
            if self.bottleneck:
                y = F.relu(blk.ba(blk.ca(h)))
                y = F.relu(self.m(name + "mid", blk.bm(blk.cm(y))))
                y = blk.bb(blk.cb(y))
            else:
                y = F.relu(self.m(name + "a", blk.ba(blk.ca(h))))
                y = self.m(name + "b", blk.bb(blk.cb(y)))
            sc = self.m(name + "sc", blk.bsc(blk.csc(h))) if hasattr(blk, "csc") else h
            h = F.relu(y + sc)
        # every published file pools the whole last map (avg-pool 4 on CIFAR's 4x4, 8 on 8x8)
        return self.fc(h.mean((2, 3)))


_R18 = ((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2))


def RefResNet18(where: str, num_classes: int = 10, in_channels: int = 3) -> RefPostActResNet:
    """ResNet-18, published masks: bottom (``012``) or top (``34``). The MNIST file (one input
    channel, 28 -> 14 -> 7 -> 4, avg-pool 4) is the same network and bottom placement."""
    if where == "bottom":
        return RefPostActResNet(64, _R18, masked=(1, 2), masked_sc=(2,), stem_masked=True, num_classes=num_classes,
                                in_channels=in_channels)
    return RefPostActResNet(64, _R18, masked=(3, 4), masked_sc=(3, 4), num_classes=num_classes)


def RefResNet18x2(num_classes: int = 10) -> RefPostActResNet:
    """The published ×2 channels ResNet-18 (``resnet_drop_012_*_c20``), bottom masks."""
    stages = ((128, 2, 1), (256, 2, 2), (256, 2, 2), (512, 2, 2))
    return RefPostActResNet(128, stages, masked=(1, 2), masked_sc=(2,), stem_masked=True, stage1_projection=True,
                            num_classes=num_classes)


def RefResNet18DC(narrow: tuple[int, int], num_classes: int = 10) -> RefPostActResNet:
    """The published DC ResNet-18 (``resnet_drop_012_dc05``: narrow = (32, 64); ``dc09``: (7, 13)), no masks."""
    stages = ((narrow[0], 2, 1), (narrow[1], 2, 2), (256, 2, 2), (512, 2, 2))
    return RefPostActResNet(narrow[0], stages, stage1_projection=True, num_classes=num_classes)


def RefResNet50(num_classes: int = 10) -> RefPostActResNet:
    """ResNet-50 (``resnet50_drop_012_*``), bottom masks: stem + the 3x3 convs of stages 1-2."""
    stages = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
    return RefPostActResNet(64, stages, bottleneck=True, masked=(1, 2), stem_masked=True, num_classes=num_classes)


def RefResNet32x4(num_classes: int = 10) -> RefPostActResNet:
    """Post-activation ResNet-32x4 (``resnet32_k4_drop_01_*``): stem + stage 1 masked (11)."""
    stages = ((64, 5, 1), (128, 5, 2), (256, 5, 2))
    return RefPostActResNet(16, stages, masked=(1,), stem_masked=True, num_classes=num_classes)


class RefVGG19(_Masked):
    """VGG-19-BN with one linear layer, the first four BN outputs masked; ``mnist``: one input
    channel and no fifth max-pool (the published MNIST file)."""

    def __init__(self, mnist: bool = False, num_classes: int = 10) -> None:
        super().__init__([f"c{i}" for i in range(4)], channels=1 if mnist else 3)
        widths = [(64, 2), (128, 2), (256, 4), (512, 4), (512, 4)]
        self.pools = 4 if mnist else 5
        self.units = nn.ModuleList()  # conv, BN, conv, BN, ... (the order weights are copied in)
        self.stage_of = []
        cin = 1 if mnist else 3
        for s, (w, n) in enumerate(widths):
            for _ in range(n):
                self.units.append(nn.Conv2d(cin, w, 3, 1, 1))  # with bias, as the published convs
                self.units.append(nn.BatchNorm2d(w))
                self.stage_of.append(s)
                cin = w
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.normalise(x)
        for i, (conv, bn) in enumerate(zip(self.units[0::2], self.units[1::2])):
            h = F.relu(self.m(f"c{i}", bn(conv(h))))
            last_of_stage = i + 1 == len(self.stage_of) or self.stage_of[i + 1] != self.stage_of[i]
            if last_of_stage and self.stage_of[i] < self.pools:
                h = F.max_pool2d(h, 2)
        assert h.shape[2:] == (1, 1), h.shape  # both published files end on a 1x1 map
        return self.fc(h.flatten(1))


class RefDenseNet121(_Masked):
    """DenseNet-121 (growth 32) with the published bottom masks (BN outputs before 1x1 convs)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        counts, growth = (6, 12, 24, 16), 32
        slots = [f"d1l{i}" for i in range(6)] + ["t1"] + [f"d2l{i}" for i in range(12)] + ["t2"]
        super().__init__(slots, channels=in_channels)
        self.stem = nn.Conv2d(in_channels, 2 * growth, 3, 1, 1, bias=False)
        planes = 2 * growth
        self.stages = nn.ModuleList()  # each: .layers, then .trans (stages 1-3), in network order
        for s, n in enumerate(counts):
            stage = nn.Module()
            stage.layers = nn.ModuleList()
            for _ in range(n):
                lay = nn.Module()
                lay.n1 = nn.BatchNorm2d(planes)
                lay.c1 = nn.Conv2d(planes, 4 * growth, 1, bias=False)
                lay.n2 = nn.BatchNorm2d(4 * growth)
                lay.c2 = nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False)
                stage.layers.append(lay)
                planes += growth
            if s < 3:
                stage.trans_n = nn.BatchNorm2d(planes)
                stage.trans_c = nn.Conv2d(planes, planes // 2, 1, bias=False)
                planes //= 2
            self.stages.append(stage)
        self.final_bn = nn.BatchNorm2d(planes)
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(self.normalise(x))
        for s, stage in enumerate(self.stages, start=1):
            for i, lay in enumerate(stage.layers):
                y = lay.c1(F.relu(self.m(f"d{s}l{i}", lay.n1(h))))
                y = lay.c2(F.relu(lay.n2(y)))
                h = torch.cat([y, h], 1)
            if s < 4:  # floor pooling: 28 -> 14 -> 7 -> 3 on MNIST
                h = F.avg_pool2d(stage.trans_c(F.relu(self.m(f"t{s}", stage.trans_n(h)))), 2)
        # the published avg-pool (4 on CIFAR's 4x4 map, 3 on MNIST's 3x3) covers the whole map
        return self.fc(F.relu(self.final_bn(h)).mean((2, 3)))


class RefSENet18(_Masked):
    """Pre-activation SENet-18 with the published bottom masks (BN1/BN2 of the first 4 SE blocks)."""

    def __init__(self, num_classes: int = 10) -> None:
        slots = []
        for b in range(4):
            slots += [f"b{b}pre", f"b{b}mid"]
        super().__init__(slots)
        self.stem_conv = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(64)
        self.blocks = nn.ModuleList()
        cin = 64
        for s, width in enumerate((64, 128, 256, 512)):
            for b in range(2):
                stride = 2 if (b == 0 and s > 0) else 1
                blk = nn.Module()
                blk.n1 = nn.BatchNorm2d(cin)
                blk.c1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
                blk.n2 = nn.BatchNorm2d(width)
                blk.c2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
                if stride != 1 or cin != width:
                    blk.proj = nn.Conv2d(cin, width, 1, stride, bias=False)
                blk.squeeze = nn.Linear(width, width // 16)
                blk.excite = nn.Linear(width // 16, width)
                self.blocks.append(blk)
                cin = width
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.stem_bn(self.stem_conv(self.normalise(x))))
        for i, blk in enumerate(self.blocks):
            a = F.relu(self.m(f"b{i}pre", blk.n1(h)))
            sc = blk.proj(a) if hasattr(blk, "proj") else h
            y = blk.c1(a)
            y = blk.c2(F.relu(self.m(f"b{i}mid", blk.n2(y))))
            gate = torch.sigmoid(blk.excite(F.relu(blk.squeeze(y.mean((2, 3))))))
            h = y * gate[:, :, None, None] + sc
        return self.fc(h.mean((2, 3)))
