"""The in-memory image dataset every reader returns, and the data errors.

Images are kept as uint8 (4x less memory than float32: CIFAR-10's train set is 150 MB
instead of 600 MB) and converted to float in [0, 1] batch by batch.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset

PathLike = Union[str, os.PathLike]


class DatasetNotFoundError(FileNotFoundError):
    """A data file is missing. The message names the file, where it was looked for and how to get it."""


class CorruptDatasetError(ValueError):
    """A data file exists but is not in the expected format (truncated, wrong magic, bad pickle, ...)."""


class ImageDataset(Dataset):
    """Images ``[N, C, H, W]`` with integer labels ``[N]``, held in memory.

    ``data`` is stored as uint8 (or any integer type) and ``scale`` maps it to [0, 1]
    (1/255 for 8-bit images, 1/16 for scikit-learn's digits). ``dataset[i]`` returns
    ``(image float32 [C, H, W] in [0, 1], label int64 scalar)``; :meth:`batch` fetches many
    at once without a DataLoader, which is what :func:`sparsemask.train.train` uses.

    ``transform`` (optional) is applied to each float image in ``__getitem__`` and
    :meth:`batch` (batched transforms such as :class:`RandomCropFlip` accept both).
    ``pixel_mean`` (optional, float32 [C, H, W]) is the train split's per-pixel mean,
    attached by ``load_dataset(..., pixel_mean=True)``; it is *not* subtracted here,
    because attacks work on images in [0, 1]: put it inside the model with
    :class:`sparsemask.data.PixelMeanNormalize`.
    """

    def __init__(self, data: Tensor, labels: Tensor, *, classes: Sequence[str], scale: float = 1 / 255,
                 name: str = "", split: str = "", source: str = "",
                 transform: Optional[Callable[[Tensor], Tensor]] = None):
        if not isinstance(data, Tensor) or data.dim() != 4:
            raise ValueError(f"ImageDataset: data must be a tensor [N, C, H, W], got "
                             f"{tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__}")
        if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != data.shape[0]:
            raise ValueError(f"ImageDataset: labels must be a tensor [N] with N = {data.shape[0]}, got "
                             f"{tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__}")
        self.data = data
        self.labels = labels.to(torch.int64)
        self.classes = tuple(classes)
        self.scale = float(scale)
        self.name, self.split, self.source = name, split, source
        self.transform = transform
        self.pixel_mean: Optional[Tensor] = None

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int):
        x = self.data[index].to(torch.float32) * self.scale
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[index]

    def batch(self, index: Tensor, transform: bool = True):
        """``(images float32 [B, C, H, W] in [0, 1], labels int64 [B])`` for the indices ``index`` [B]."""
        x = self.data[index].to(torch.float32) * self.scale
        if transform and self.transform is not None:
            x = self.transform(x)
        return x, self.labels[index]

    @property
    def images(self) -> Tensor:
        """All images as float32 [N, C, H, W] in [0, 1] (a new tensor; no transform)."""
        return self.data.to(torch.float32) * self.scale

    def tensors(self):
        """``(images float32 [N, C, H, W], labels int64 [N])``, no transform applied."""
        return self.images, self.labels

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self):
        """``(C, H, W)``."""
        return tuple(self.data.shape[1:])

    def compute_pixel_mean(self) -> Tensor:
        """Per-pixel mean over this dataset's images, float32 [C, H, W] (no transform)."""
        total = torch.zeros(self.data.shape[1:], dtype=torch.float64)
        for chunk in self.data.split(8192):
            total += chunk.to(torch.float64).sum(0)
        return (total * self.scale / max(len(self), 1)).to(torch.float32)

    def subset(self, indices: Union[int, Sequence[int], Tensor]) -> "ImageDataset":
        """A new dataset with the first ``indices`` images (int) or the given indices."""
        if isinstance(indices, int):
            indices = torch.arange(min(indices, len(self)))
        indices = torch.as_tensor(indices, dtype=torch.int64)
        out = ImageDataset(self.data[indices], self.labels[indices], classes=self.classes, scale=self.scale,
                           name=self.name, split=self.split, source=self.source, transform=self.transform)
        out.pixel_mean = self.pixel_mean
        return out

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, shape=({c}, {h}, {w}), "
                f"classes={self.num_classes}, source={self.source!r})")
