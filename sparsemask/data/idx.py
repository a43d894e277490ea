"""MNIST and Fashion-MNIST: the IDX file format, gzipped or not.

IDX header (big-endian): two zero bytes, a type code (0x08 = uint8, ...), the number of
dimensions d, then d uint32 sizes, then the data. Image files have magic 0x00000803
(uint8, 3 dims [N, 28, 28]), label files 0x00000801 (uint8, 1 dim [N]).
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .base import CorruptDatasetError, DatasetNotFoundError, ImageDataset, PathLike
from .paths import find_file, search_dirs

# type code -> big-endian numpy dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"
# The largest expansion deflate can produce (a run of one byte): 1032 output bytes per input byte.
MAX_GZIP_RATIO = 1032

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
    data size that does not match the header (truncated or trailing bytes). A gzip stream
    is decompressed only up to the size its header implies (plus one byte to detect
    trailing data), so a small damaged or hostile file cannot exhaust memory.
    """
    path = Path(path)
    if not path.is_file():  # missing is not damaged: the fix is to fetch it, not to fetch it again
        raise DatasetNotFoundError(f"{path}: no such file" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == GZIP_MAGIC
            f.seek(0)
            stream = gzip.GzipFile(fileobj=f, mode="rb") if gz else f
            # deflate expands at most ~1032:1, so a header asking for more is a lie.
            limit = os.fstat(f.fileno()).st_size * (MAX_GZIP_RATIO if gz else 1)
            return _read_idx_stream(stream, path, limit)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError; a bad deflate block is zlib.error
        raise CorruptDatasetError(f"{path}: cannot read or decompress ({type(e).__name__}: {e}); the file is "
                                  f"damaged, fetch it again") from e


def _read_idx_stream(stream, path: Path, limit: int) -> np.ndarray:
    """Parse an IDX header and its data from ``stream``, reading no more than the header implies + 1 byte."""
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_TYPES or magic[3] == 0:
        raise CorruptDatasetError(f"{path}: not an IDX file (header bytes {magic.hex() or 'empty'}; expected "
                                  f"00 00 <type> <ndim>, e.g. 00000803 for images, 00000801 for labels)")
    dtype, ndim = np.dtype(IDX_TYPES[magic[2]]), magic[3]
    header = 4 + 4 * ndim
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise CorruptDatasetError(f"{path}: truncated IDX header ({4 + len(sizes)} bytes, need {header})")
    shape = struct.unpack(f">{ndim}I", sizes)
    # math.prod of Python ints cannot overflow (np.prod wraps around in int64 for 3 sizes near 2**32).
    n_bytes = math.prod(shape) * dtype.itemsize
    if header + n_bytes > limit:
        raise CorruptDatasetError(f"{path}: IDX header says shape {shape} ({header + n_bytes} bytes), more than a "
                                  f"file of this size can hold; the header is damaged, fetch the file again")
    data = stream.read(n_bytes + 1)
    if len(data) != n_bytes:
        raise CorruptDatasetError(f"{path}: IDX header says shape {shape} ({header + n_bytes} bytes) but the file "
                                  f"has {'more' if len(data) > n_bytes else header + len(data)} bytes; it is "
                                  f"truncated or damaged, fetch it again")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


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
