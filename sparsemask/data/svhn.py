"""SVHN cropped digits (format 2): ``train_32x32.mat``, ``test_32x32.mat``, ``extra_32x32.mat``.

Each file is a MATLAB v5 .mat with ``X`` uint8 [32, 32, 3, N] and ``y`` [N, 1] where the
digit 0 is stored as label 10 (mapped back to 0 here).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.io
import torch

from .base import CorruptDatasetError, ImageDataset, PathLike
from .paths import find_file, search_dirs

SPLITS = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
HOW_TO_GET = ("Download train_32x32.mat and test_32x32.mat (and extra_32x32.mat if wanted) from "
              "http://ufldl.stanford.edu/housenumbers/ into a folder and pass root=<that folder> "
              "(or put them in $SPARSEMASK_DATA/svhn).")


def load_svhn(root: Optional[PathLike] = None, split: str = "train") -> ImageDataset:
    """SVHN split 'train' (73,257), 'test' (26,032) or 'extra' (531,131): [N, 3, 32, 32], labels 0..9."""
    if split not in SPLITS:
        raise ValueError(f"svhn: split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = find_file(search_dirs(root, ["svhn", "SVHN"]), [SPLITS[split]], dataset="svhn", how_to_get=HOW_TO_GET)
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except NotImplementedError as e:  # MATLAB v7.3 (HDF5) files
        raise CorruptDatasetError(f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported; the official SVHN "
                                  f"files are v5. {HOW_TO_GET}") from e
    except Exception as e:  # scipy's parser raises many kinds (IndexError, ValueError, ...) on damaged files
        raise CorruptDatasetError(f"{path}: not a readable .mat file ({type(e).__name__}: {e}); "
                                  f"fetch it again. {HOW_TO_GET}") from e
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None:
        raise CorruptDatasetError(f"{path}: expected variables 'X' and 'y', found {sorted(k for k in mat if not k.startswith('__'))}")
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise CorruptDatasetError(f"{path}: 'X' must be uint8 [32, 32, 3, N], got {x.dtype} {x.shape}")
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind == "f" and y.size and not np.array_equal(y, np.round(y)):
        # astype would truncate 2.5 to 2 (NaN to garbage) without a word.
        raise CorruptDatasetError(f"{path}: 'y' must hold integer labels 0..10, got non-integer values such as "
                                  f"{y[~(y == np.round(y))][0]!r}")
    if y.dtype.kind not in "iuf":
        raise CorruptDatasetError(f"{path}: 'y' must hold integer labels 0..10, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.shape[0] != x.shape[3]:
        raise CorruptDatasetError(f"{path}: 'y' has {y.shape[0]} labels for {x.shape[3]} images")
    if y.size and (y.min() < 0 or y.max() > 10):
        raise CorruptDatasetError(f"{path}: labels must be in 0..10 (10 = digit 0), got {y.min()}..{y.max()}")
    y[y == 10] = 0
    data = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
    return ImageDataset(data, torch.from_numpy(y), classes=tuple(str(i) for i in range(10)), scale=1 / 255,
                        name="svhn", split=split, source=str(path.parent))
