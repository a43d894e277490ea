"""Small MNIST-style CNNs: LeNet-5 (seed 002's MNIST model) and the Carlini-Wagner MNIST CNN (seed 003).

Both take [N, C, H, W] in [0, 1] (the MNIST experiments pass in_channels=1, input_size=28; any size
that leaves a positive feature map) and normalise inside.
Defective placement: LeNet-5 bottom = ``conv1``, top = ``conv2``; C&W CNN bottom =
``conv1, conv2`` (before the first pool), top = ``conv3, conv4``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import Normalize, check_builder_args, default_stats, finish

__all__ = ["LeNet5", "CWMnist", "lenet5", "cw_mnist"]


def _check_size(name: str, size: int, minimum: int) -> None:
    if size < minimum:
        raise ValueError(f"{name}: input_size must be at least {minimum}, got {size}")


class LeNet5(nn.Module):
    """conv5x5(6, pad 2)-ReLU-pool-conv5x5(16)-ReLU-pool-FC120-FC84-FC(num_classes)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28, mean=None, std=None):
        super().__init__()
        d_mean, d_std = default_stats(in_channels)
        self.normalize = Normalize(d_mean if mean is None else mean, d_std if std is None else std)
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        s = (input_size // 2 - 4) // 2
        self.fc1 = nn.Linear(16 * s * s, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(self.normalize(x))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc3(F.relu(self.fc2(x)))


class CWMnist(nn.Module):
    """Carlini & Wagner (2017) MNIST CNN: conv3x3(32)x2-pool-conv3x3(64)x2-pool-FC200-FC200-FC."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28, dropout: float = 0.5,
                 mean=None, std=None):
        super().__init__()
        d_mean, d_std = default_stats(in_channels)
        self.normalize = Normalize(d_mean if mean is None else mean, d_std if std is None else std)
        self.conv1 = nn.Conv2d(in_channels, 32, 3)
        self.conv2 = nn.Conv2d(32, 32, 3)
        self.conv3 = nn.Conv2d(32, 64, 3)
        self.conv4 = nn.Conv2d(64, 64, 3)
        s = ((input_size - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(64 * s * s, 200)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(200, 200)
        self.fc3 = nn.Linear(200, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(self.normalize(x)))))
        x = F.relu(self.conv4(F.relu(self.conv3(F.max_pool2d(x, 2)))))
        x = self.dropout(F.relu(self.fc1(torch.flatten(F.max_pool2d(x, 2), 1))))
        return self.fc3(F.relu(self.fc2(x)))


def lenet5(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, defective: Optional[dict] = None,
           *, mean=None, std=None) -> LeNet5:
    """LeNet-5 (ReLU, max-pool) for 28x28 or 32x32 inputs."""
    check_builder_args("lenet5", num_classes, in_channels, input_size)
    _check_size("lenet5", input_size, 12)
    model = LeNet5(num_classes, in_channels, input_size, mean, std)
    return finish(model, in_channels, input_size, {"bottom": ["conv1"], "top": ["conv2"]}, defective)


def cw_mnist(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, defective: Optional[dict] = None,
             *, dropout: float = 0.5, mean=None, std=None) -> CWMnist:
    """The C&W MNIST CNN (seed 003's MNIST model)."""
    check_builder_args("cw_mnist", num_classes, in_channels, input_size)
    _check_size("cw_mnist", input_size, 18)
    model = CWMnist(num_classes, in_channels, input_size, dropout, mean, std)
    return finish(model, in_channels, input_size, {"bottom": ["conv1", "conv2"], "top": ["conv3", "conv4"]},
                  defective)
