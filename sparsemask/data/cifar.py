"""CIFAR-10 "python version" batches, read without executing pickled code.

The official files (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``,
``batches.meta``) are Python pickles of dicts ``{b'data': uint8 [10000, 3072],
b'labels': [int], ...}``. ``pickle.load`` would run whatever callable a file names, so
:class:`SafeUnpickler` resolves only the handful of globals a numpy array needs
(``numpy.ndarray``, ``numpy.dtype``, ``numpy.core.multiarray._reconstruct`` and
``_codecs.encode``, which Python 3 uses to pickle bytes at protocol 2); anything else is
refused before it can be called.
"""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .base import CorruptDatasetError, ImageDataset, PathLike
from .paths import find_dir, search_dirs

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
HOW_TO_GET = ("Download the CIFAR-10 python version (cifar-10-python.tar.gz) from "
              "https://www.cs.toronto.edu/~kriz/cifar.html, unpack it with `tar xzf cifar-10-python.tar.gz` and "
              "pass root=<folder containing cifar-10-batches-py> (or put it in $SPARSEMASK_DATA).")

try:  # numpy >= 2 moved numpy.core to numpy._core; old pickles still name numpy.core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("_codecs", "encode"): codecs.encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that only reconstructs numpy arrays, dtypes and builtin containers."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: a CIFAR batch only holds "
                                         f"numpy arrays, lists, bytes and strings") from None


def _str_keys(obj):
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    return obj


def read_batch(path: PathLike) -> dict:
    """Safely unpickle one CIFAR batch file into a dict with str keys.

    Raises CorruptDatasetError naming the file when it is not a pickle, holds anything but
    arrays and builtins, or is truncated.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, MemoryError) as e:
        raise CorruptDatasetError(f"{path}: not a valid CIFAR batch pickle ({type(e).__name__}: {e}); "
                                  f"fetch the file again. {HOW_TO_GET}") from e
    if not isinstance(obj, dict):
        raise CorruptDatasetError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return _str_keys(obj)


def _batch_arrays(path: Path):
    batch = read_batch(path)
    if "data" not in batch or ("labels" not in batch and "fine_labels" not in batch):
        raise CorruptDatasetError(f"{path}: CIFAR batch lacks 'data' or 'labels' (keys: {sorted(batch)})")
    data = batch["data"]
    labels = np.asarray(batch.get("labels", batch.get("fine_labels")))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise CorruptDatasetError(f"{path}: 'data' must be uint8 [N, 3072], got "
                                  f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or labels.dtype.kind not in "iu":
        raise CorruptDatasetError(f"{path}: 'labels' must be {data.shape[0]} integers, got {labels.dtype} "
                                  f"{labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= 10):
        raise CorruptDatasetError(f"{path}: labels must be in 0..9, got {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(root: Optional[PathLike] = None, split: str = "train") -> ImageDataset:
    """CIFAR-10, split 'train' (data_batch_1..5, 50k) or 'test' (test_batch, 10k): [N, 3, 32, 32]."""
    if split not in ("train", "test"):
        raise ValueError(f"cifar10: split must be 'train' or 'test', got {split!r}")
    files = TRAIN_FILES if split == "train" else TEST_FILES
    dirs = search_dirs(root, ["cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10", "cifar-10"])
    folder = find_dir(dirs, files, dataset="cifar10", how_to_get=HOW_TO_GET)
    parts = [_batch_arrays(folder / f) for f in files]
    data = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    classes = CIFAR10_CLASSES
    meta = folder / "batches.meta"
    if meta.is_file():
        names = read_batch(meta).get("label_names")
        if isinstance(names, list) and len(names) == 10:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return ImageDataset(data, labels, classes=classes, scale=1 / 255, name="cifar10", split=split,
                        source=str(folder))
