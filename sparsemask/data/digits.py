"""scikit-learn's shipped 8x8 digits (1,797 images, values 0..16): the tiny embedded set.

Always available (it is inside the scikit-learn wheel), used by smoke runs and tests.
The split is the one of ``tests/conftest.py``: a permutation with seed 0, the first 1,400
images for training and the remaining 397 for testing.
"""
from __future__ import annotations

import torch

from .base import ImageDataset

N_TRAIN = 1400


def load_digits(split: str = "train") -> ImageDataset:
    """Digits split 'train' (1,400), 'test' (397) or 'all' (1,797): [N, 1, 8, 8], scale 1/16."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"digits: split must be 'train', 'test' or 'all', got {split!r}")
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    data = torch.tensor(d.images, dtype=torch.uint8).unsqueeze(1)
    labels = torch.tensor(d.target, dtype=torch.int64)
    if split != "all":
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        perm = perm[:N_TRAIN] if split == "train" else perm[N_TRAIN:]
        data, labels = data[perm], labels[perm]
    return ImageDataset(data, labels, classes=tuple(str(i) for i in range(10)), scale=1 / 16, name="digits",
                        split=split, source="sklearn.datasets.load_digits")
