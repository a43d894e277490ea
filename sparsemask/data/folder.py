"""ImageNet-style folders: ``root/[split/]class_name/image.{jpg,jpeg,png,...}``, read with Pillow.

Classes are the sorted subfolder names (label = index). Images are decoded, converted to
RGB (or L with ``grayscale=True``), resized so the shorter side is ``image_size`` and
centre-cropped to ``image_size`` x ``image_size`` (the usual evaluation transform), then
stored as uint8 in memory, so this suits small folders (a few 10k images); for full
ImageNet use :class:`ImageFolderStream`, which decodes on access.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .base import CorruptDatasetError, DatasetNotFoundError, ImageDataset, PathLike

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
HOW_TO_GET = ("An image folder is root/<class>/<images> or root/<split>/<class>/<images> (e.g. ImageNet's "
              "train/ and val/ after sorting val images into class folders); pass root=<that folder>.")


def _split_dir(root: Optional[PathLike], split: str) -> Path:
    if root is None:
        raise DatasetNotFoundError(f"imagefolder: root is required (no default location). {HOW_TO_GET}")
    root = Path(root).expanduser()
    aliases = {"test": ("test", "val"), "val": ("val", "test")}.get(split, (split,))
    for name in aliases:
        if (root / name).is_dir():
            return root / name
    if root.is_dir() and any(p.is_dir() for p in root.iterdir()):
        return root
    raise DatasetNotFoundError(f"imagefolder: no class folders found in {root} (looked for "
                               f"{', '.join(str(root / a) for a in aliases)} and {root} itself). {HOW_TO_GET}")


def list_images(folder: Path) -> Tuple[List[Tuple[Path, int]], Tuple[str, ...]]:
    """(path, label) for every image under ``folder/<class>/`` (sorted), and the class names."""
    classes = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir()))
    items = [(f, label) for label, c in enumerate(classes) for f in sorted((folder / c).rglob("*"))
             if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
    if not items:
        raise DatasetNotFoundError(f"imagefolder: no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of "
                                   f"{folder}. {HOW_TO_GET}")
    return items, classes


def read_image(path: Path, image_size: Optional[int], grayscale: bool = False) -> np.ndarray:
    """One image as uint8 [C, H, W] (resized + centre-cropped to image_size when given)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if grayscale else "RGB")
            if image_size is not None:
                w, h = im.size
                s = image_size / min(w, h)
                nw, nh = max(image_size, round(w * s)), max(image_size, round(h * s))
                im = im.resize((nw, nh), Image.BILINEAR)
                left, top = (nw - image_size) // 2, (nh - image_size) // 2
                im = im.crop((left, top, left + image_size, top + image_size))
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise CorruptDatasetError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_image_folder(root: Optional[PathLike] = None, split: str = "train", *, image_size: Optional[int] = 32,
                      grayscale: bool = False) -> ImageDataset:
    """Every image of ``root/[split/]<class>/`` in memory: [N, C, image_size, image_size].

    With ``image_size=None`` images keep their size, which must then be the same for all.
    """
    if image_size is not None and (not isinstance(image_size, int) or image_size <= 0):
        raise ValueError(f"imagefolder: image_size must be a positive int or None, got {image_size!r}")
    folder = _split_dir(root, split)
    items, classes = list_images(folder)
    arrays = [read_image(p, image_size, grayscale) for p, _ in items]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise CorruptDatasetError(f"imagefolder: images in {folder} have different sizes {sorted(shapes)[:4]}; "
                                  f"pass image_size=<int> to resize them")
    data = torch.from_numpy(np.stack(arrays))
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return ImageDataset(data, labels, classes=classes, scale=1 / 255, name="imagefolder", split=split,
                        source=str(folder))


class ImageFolderStream(Dataset):
    """Lazy variant of :func:`load_image_folder`: decodes each image in ``__getitem__``.

    ``dataset[i]`` -> (float32 [C, image_size, image_size] in [0, 1], int64 label); use it
    with a DataLoader (``num_workers`` > 0) for folders too large for memory.
    """

    def __init__(self, root: PathLike, split: str = "train", *, image_size: int = 224, grayscale: bool = False,
                 transform=None):
        self.folder = _split_dir(root, split)
        self.items, self.classes = list_images(self.folder)
        self.image_size, self.grayscale, self.transform = image_size, grayscale, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor]:
        path, label = self.items[index]
        x = torch.from_numpy(read_image(path, self.image_size, self.grayscale)).to(torch.float32) / 255
        if self.transform is not None:
            x = self.transform(x)
        return x, torch.tensor(label, dtype=torch.int64)
