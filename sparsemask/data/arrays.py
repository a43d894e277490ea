"""A dataset's train and test splits as in-memory tensors, optionally a seeded subset:
what the CLI and the experiments train and evaluate on.

    load_arrays(name, root=None, *, n_train=None, n_test=None, seed=0, **options) -> Data
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from .base import PathLike

__all__ = ["Data", "load_arrays"]


class Data:
    """Tensors of one dataset split pair, all in memory.

    x_train [N, C, H, W] float32 in [0, 1], y_train [N] int64; same for test.
    ``classes``: the class names by label (the reader's, e.g. Fashion-MNIST's "T-shirt/top" …;
    default "0" … "num_classes - 1"), for plots and tables.
    """

    def __init__(self, name: str, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
                 num_classes: int, note: str = "", classes: Optional[Sequence[str]] = None):
        self.name, self.note = name, note
        self.x_train, self.y_train, self.x_test, self.y_test = x_train, y_train, x_test, y_test
        self.num_classes = num_classes
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"Data: {len(classes)} class names for num_classes={num_classes}")
        self.classes = tuple(str(c) for c in classes) if classes is not None else \
            tuple(str(i) for i in range(num_classes))

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def input_size(self) -> int:
        return self.x_train.shape[-1]

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "n_train": len(self.y_train), "n_test": len(self.y_test),
                "shape": list(self.x_train.shape[1:]), "num_classes": self.num_classes, "note": self.note}


def _take(ds, n: Optional[int], seed: int) -> tuple[Tensor, Tensor]:
    """(x float32 [n, C, H, W] in [0, 1], y int64 [n]): a seeded random subset of an ImageDataset."""
    total = len(ds)
    if n is None or n >= total:
        idx = torch.arange(total)
    else:
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
    x, y = ds.batch(idx, transform=False)
    return x.float().contiguous(), y.long()


def load_arrays(name: str, root: Optional[PathLike] = None, *, n_train: Optional[int] = None,
                n_test: Optional[int] = None, seed: int = 0, **options) -> Data:
    """Dataset ``name`` (:func:`sparsemask.data.load_dataset`) as tensors, each split
    subsampled to ``n_train`` / ``n_test`` images (None: all) with the seeded subset rule
    (train subset from ``seed``, test from ``seed + 1``). ``options`` go to the reader."""
    from . import load_dataset

    train = load_dataset(name, root=root, split="train", **options)
    test = load_dataset(name, root=root, split="test", **options)
    x_tr, y_tr = _take(train, n_train, int(seed))
    x_te, y_te = _take(test, n_test, int(seed) + 1)
    classes = getattr(train, "classes", None) or None
    num_classes = len(classes) if classes else int(y_tr.max()) + 1
    return Data(name, x_tr, y_tr, x_te, y_te, num_classes, classes=classes)
