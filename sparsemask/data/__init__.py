"""Dataset readers for real file formats, read from a path, never downloaded.

    load_dataset(name, root=None, split="train", *, pixel_mean=False, augment=None, **options) -> ImageDataset
    load_arrays(name, root=None, *, n_train=None, n_test=None, seed=0, **options) -> Data (tensors in memory)

Names: ``fashion-mnist``, ``mnist`` (IDX, .gz or not), ``cifar10`` (python pickle batches,
read with a restricted unpickler), ``svhn`` (.mat), ``imagefolder`` (class subfolders,
Pillow) and ``digits`` (scikit-learn's shipped 8x8 digits, always available).
Images are float in [0, 1], [N, C, H, W]; labels int64. Missing files raise
:class:`DatasetNotFoundError` and damaged ones :class:`CorruptDatasetError`, both saying
which file was looked for where and how to get it. Fashion-MNIST on Debian/Ubuntu:
``apt-get install -y dataset-fashion-mnist`` (files in /usr/share/datasets/fashion-mnist).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

from .arrays import Data, load_arrays
from .base import CorruptDatasetError, DatasetNotFoundError, ImageDataset, PathLike
from .cifar import SafeUnpickler, load_cifar10, read_batch
from .digits import load_digits
from .folder import ImageFolderStream, load_image_folder
from .idx import load_idx_dataset, read_idx
from .svhn import load_svhn
from .transforms import PixelMeanNormalize, RandomCropFlip

__all__ = ["load_dataset", "load_arrays", "Data", "DATASETS", "ImageDataset", "DatasetNotFoundError", "CorruptDatasetError",
           "PixelMeanNormalize", "RandomCropFlip", "ImageFolderStream", "read_idx", "read_batch",
           "SafeUnpickler", "load_digits", "load_cifar10", "load_svhn", "load_image_folder", "seed_augmentation"]

DATASETS: Dict[str, Callable[..., ImageDataset]] = {
    "fashion-mnist": lambda root, split, **kw: load_idx_dataset("fashion-mnist", root, split, **kw),
    "mnist": lambda root, split, **kw: load_idx_dataset("mnist", root, split, **kw),
    "cifar10": lambda root, split, **kw: load_cifar10(root, split, **kw),
    "svhn": lambda root, split, **kw: load_svhn(root, split, **kw),
    "imagefolder": lambda root, split, **kw: load_image_folder(root, split, **kw),
    "digits": lambda root, split, **kw: load_digits(split, **kw),
}
ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
           "cifar-10": "cifar10", "cifar_10": "cifar10", "imagenet": "imagefolder", "folder": "imagefolder"}


def canonical_name(name: str) -> str:
    """The registry key for ``name`` (case-insensitive, with aliases such as 'fmnist', 'cifar-10')."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {type(name).__name__}")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return key


def seed_augmentation(name: str, seed: int = 0) -> Optional[RandomCropFlip]:
    """The seeds' training augmentation for a dataset (seed 001, appendix).

    32x32 colour sets (cifar10, svhn, imagefolder at 32): pad 4 + random crop + flip;
    MNIST-like 28x28: random flip only; digits: none.
    """
    key = canonical_name(name)
    if key in ("cifar10", "svhn", "imagefolder"):
        return RandomCropFlip(pad=4, flip=True, seed=seed)
    if key in ("mnist", "fashion-mnist"):
        return RandomCropFlip(pad=0, flip=True, seed=seed)
    return None


def load_dataset(name: str, root: Optional[PathLike] = None, split: str = "train", *, pixel_mean: bool = False,
                 augment: Optional[Callable] = None, **options) -> ImageDataset:
    """Load split ``split`` of dataset ``name`` from ``root`` (or the default places, see ``paths``).

    ``pixel_mean=True`` attaches ``dataset.pixel_mean`` (float32 [C, H, W]), the per-pixel
    mean of the *train* split (loaded for it when ``split`` is not 'train'); subtract it
    inside the model with :class:`PixelMeanNormalize`. ``augment`` is set as the
    dataset's transform (e.g. ``seed_augmentation(name, seed)`` or ``RandomCropFlip(...)``).
    ``options`` go to the reader (imagefolder: ``image_size``, ``grayscale``).
    """
    key = canonical_name(name)
    ds = DATASETS[key](root, split, **options)
    if pixel_mean:
        train = ds if split == "train" else DATASETS[key](root, "train", **options)
        ds.pixel_mean = train.compute_pixel_mean()
    ds.transform = augment
    return ds
