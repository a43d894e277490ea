"""MNIST and Fashion-MNIST: the IDX file format, gzipped or not.

IDX header (big-endian): two zero bytes, a type code (0x08 = uint8, ...), the number of
dimensions d, then d uint32 sizes, then the data. Image files have magic 0x00000803
(uint8, 3 dims [N, 28, 28]), label files 0x00000801 (uint8, 1 dim [N]).
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .base import CorruptDatasetError, ImageDataset, PathLike
from .paths import find_file, search_dirs

# type code -> big-endian numpy dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

HOW_TO_GET = {
    "fashion-mnist": ("Install the Debian package (as root): `apt-get update && apt-get install -y "
                      "dataset-fashion-mnist` (files go to /usr/share/datasets/fashion-mnist), or download "
                      "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
                      "t10k-labels-idx1-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist "
                      "(data/fashion) into a folder and pass root=<that folder>."),
    "mnist": ("Download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
              "t10k-labels-idx1-ubyte.gz (http://yann.lecun.com/exdb/mnist/ or a mirror such as "
              "https://ossci-datasets.s3.amazonaws.com/mnist/) into a folder and pass root=<that folder> "
              "(or put them in $SPARSEMASK_DATA/mnist)."),
}


def read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not, detected from its first bytes) into a numpy array.

    Raises CorruptDatasetError naming the file for a bad gzip stream, a bad header or a
    data size that does not match the header (truncated or trailing bytes).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise CorruptDatasetError(f"{path}: cannot read or decompress ({e}); the file is damaged, fetch it again") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES or raw[3] == 0:
        raise CorruptDatasetError(f"{path}: not an IDX file (header bytes {raw[:4].hex() or 'empty'}; expected "
                                  f"00 00 <type> <ndim>, e.g. 00000803 for images, 00000801 for labels)")
    dtype, ndim = np.dtype(IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDatasetError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise CorruptDatasetError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the file has "
                                  f"{len(raw)} bytes; it is truncated or damaged, fetch it again")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _idx_names(stem: str):
    # Standard names, the dotted variant some archives unpack to, gzipped or not.
    kind, idx = stem.rsplit("-", 1)[0], stem.rsplit("-", 1)[1]  # "train-images", "idx3"
    plain = [f"{stem}-ubyte", f"{kind}.{idx}-ubyte"]
    return [n + ".gz" for n in plain] + plain


def load_idx_dataset(name: str, root: Optional[PathLike] = None, split: str = "train") -> ImageDataset:
    """MNIST-format dataset ``name`` ('mnist' or 'fashion-mnist'), split 'train' (60k) or 'test' (10k).

    Returns an :class:`ImageDataset` of [N, 1, 28, 28] images.
    """
    if split not in ("train", "test"):
        raise ValueError(f"{name}: split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    dirs = search_dirs(root, [name, name.replace("-", "_"), name.replace("-", "")])
    how = HOW_TO_GET[name]
    img_path = find_file(dirs, _idx_names(f"{prefix}-images-idx3"), dataset=name, how_to_get=how)
    lbl_path = find_file([img_path.parent] + dirs, _idx_names(f"{prefix}-labels-idx1"), dataset=name, how_to_get=how)
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CorruptDatasetError(f"{img_path}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise CorruptDatasetError(f"{lbl_path}: expected {images.shape[0]} labels to match {img_path}, "
                                  f"got shape {labels.shape}")
    if labels.size and int(labels.max()) >= 10:
        raise CorruptDatasetError(f"{lbl_path}: labels must be in 0..9, found {int(labels.max())}")
    classes = FASHION_MNIST_CLASSES if name == "fashion-mnist" else MNIST_CLASSES
    data = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1)
    return ImageDataset(data, torch.from_numpy(labels.astype(np.int64)), classes=classes, scale=1 / 255,
                        name=name, split=split, source=str(img_path.parent))
