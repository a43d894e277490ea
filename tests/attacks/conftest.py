"""Fixtures for the attack tests: a small slice of the digits test split and a randomized
(dropout left in train mode) copy of the digits model."""
from __future__ import annotations

import copy

import pytest
import torch


@pytest.fixture(scope="session")
def batch(digits_data):
    """(x [48, 1, 8, 8] in [0, 1], y [48]) from the digits test split."""
    _, _, x_test, y_test = digits_data
    return x_test[:48].clone(), y_test[:48].clone()


class _Randomized(torch.nn.Module):
    """The digits model with dropout on its input features: random whenever in train mode."""

    def __init__(self, base, p=0.3):
        super().__init__()
        self.base = base
        self.drop = torch.nn.Dropout(p)

    def forward(self, x):
        return self.base.head(self.drop(self.base.features((x - 0.5) / 0.5).flatten(1)))


@pytest.fixture
def randomized_model(digits_model):
    """A fresh randomized model (train mode => dropout active) sharing the digits weights."""
    return _Randomized(copy.deepcopy(digits_model)).train()
