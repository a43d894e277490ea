"""Shared test configuration.

* TRITON_INTERPRET=1 is set (when no GPU is present) before anything imports triton, so the
  Triton kernels run on CPU tensors.
* Tests marked ``cuda`` are skipped when no CUDA device is available (queried lazily,
  never at import time of the package under test).
* Fixtures ``digits_data`` / ``digits_model``: scikit-learn's shipped 8x8 digits as
  [N, 1, 8, 8] float tensors in [0, 1], and a small CNN trained on them in a few seconds.
"""
from __future__ import annotations

import os

import pytest  # noqa: E402
import torch  # noqa: E402  (importing torch does not import triton)

if not torch.cuda.is_available():
    # Must be set before anything imports triton; on a GPU machine Triton runs for real.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_backend():
    """Every test starts from the same global seed and the default backend."""
    import sparsemask

    torch.manual_seed(0)
    previous = sparsemask.get_backend()
    yield
    sparsemask.set_backend(previous)


@pytest.fixture(scope="session")
def digits_data():
    """(x_train, y_train, x_test, y_test): x float32 [N, 1, 8, 8] in [0, 1], y int64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    x, y = x[perm], y[perm]
    n_train = 1400
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


class DigitsCNN(torch.nn.Module):
    """Tiny CNN for [N, 1, 8, 8] inputs in [0, 1] (normalisation inside the model)."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1, stride=2), torch.nn.ReLU(),
        )
        self.head = torch.nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        return self.head(self.features((x - 0.5) / 0.5).flatten(1))


def train_digits_model(x, y, epochs: int = 15, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def digits_model(digits_data):
    """A DigitsCNN trained on the digits training split (test accuracy ~97%), in eval mode."""
    x_train, y_train, _, _ = digits_data
    return train_digits_model(x_train, y_train)
