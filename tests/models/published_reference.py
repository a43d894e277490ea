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

Inputs are normalised with the published constants (CIFAR mean (0.4914, 0.4822, 0.4465),
std (0.2023, 0.1994, 0.2010)), as the published data pipeline did.

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


class _Masked(nn.Module):
    """Holds the masks (float buffers [C, H, W], set by the test) by slot name."""

    def __init__(self, slots: list[str]) -> None:
        super().__init__()
        self.slots = list(slots)
        self._masks: dict[str, Tensor] = {}
        # The published constants; a test may copy a model's (float32-rounded) values in.
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN)[:, None, None])
        self.register_buffer("std", torch.tensor(CIFAR_STD)[:, None, None])

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


class RefResNet18(_Masked):
    """Post-activation ResNet-18 with the published masks (``where`` = "bottom" | "top")."""

    def __init__(self, where: str, num_classes: int = 10) -> None:
        stages = (1, 2) if where == "bottom" else (3, 4)
        slots = ["stem"] if where == "bottom" else []
        for s in stages:
            for b in range(2):
                slots += [f"s{s}b{b}a", f"s{s}b{b}b"] + ([f"s{s}b{b}sc"] if (b == 0 and s > 1) else [])
        super().__init__(slots)
        self.stem_conv = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(64)
        self.blocks = nn.ModuleList()
        self.names = []
        cin = 64
        for s, width in enumerate((64, 128, 256, 512), start=1):
            for b in range(2):
                stride = 2 if (b == 0 and s > 1) else 1
                blk = nn.Module()
                blk.ca = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
                blk.ba = nn.BatchNorm2d(width)
                blk.cb = nn.Conv2d(width, width, 3, 1, 1, bias=False)
                blk.bb = nn.BatchNorm2d(width)
                if stride != 1 or cin != width:
                    blk.csc = nn.Conv2d(cin, width, 1, stride, bias=False)
                    blk.bsc = nn.BatchNorm2d(width)
                self.blocks.append(blk)
                self.names.append(f"s{s}b{b}")
                cin = width
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.m("stem", self.stem_bn(self.stem_conv(self.normalise(x)))))
        for name, blk in zip(self.names, self.blocks):
            y = F.relu(self.m(name + "a", blk.ba(blk.ca(h))))
            y = self.m(name + "b", blk.bb(blk.cb(y)))
            sc = self.m(name + "sc", blk.bsc(blk.csc(h))) if hasattr(blk, "csc") else h
            h = F.relu(y + sc)
        return self.fc(h.mean((2, 3)))


class RefDenseNet121(_Masked):
    """DenseNet-121 (growth 32) with the published bottom masks (BN outputs before 1x1 convs)."""

    def __init__(self, num_classes: int = 10) -> None:
        counts, growth = (6, 12, 24, 16), 32
        slots = [f"d1l{i}" for i in range(6)] + ["t1"] + [f"d2l{i}" for i in range(12)] + ["t2"]
        super().__init__(slots)
        self.stem = nn.Conv2d(3, 2 * growth, 3, 1, 1, bias=False)
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
            if s < 4:
                h = F.avg_pool2d(stage.trans_c(F.relu(self.m(f"t{s}", stage.trans_n(h)))), 2)
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
