"""Where dataset files are looked for, and the "not found" error that says how to get them.

Search order for a dataset with default folder name ``sub`` (e.g. ``fashion-mnist``):
``root`` and ``root/sub`` when ``root`` is given (nothing else then); otherwise
``$SPARSEMASK_DATA/sub``, ``./data/sub`` and ``/usr/share/datasets/sub`` (where Debian's
``dataset-*`` packages install).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

from .base import DatasetNotFoundError, PathLike

SYSTEM_DATA_DIR = Path("/usr/share/datasets")


def search_dirs(root: Optional[PathLike], subdirs: Sequence[str]) -> List[Path]:
    """Folders to look in, in order, without duplicates (see the module docstring)."""
    if root is not None:
        root = Path(root).expanduser()
        dirs = [root] + [root / s for s in subdirs]
    else:
        bases = []
        if os.environ.get("SPARSEMASK_DATA"):
            bases.append(Path(os.environ["SPARSEMASK_DATA"]).expanduser())
        bases += [Path("data"), SYSTEM_DATA_DIR]
        dirs = [b / s for b in bases for s in subdirs]
    seen, out = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def find_file(dirs: Sequence[Path], names: Sequence[str], *, dataset: str, how_to_get: str) -> Path:
    """The first ``dir/name`` that exists (dirs outer, names inner), else DatasetNotFoundError."""
    for d in dirs:
        for n in names:
            p = d / n
            if p.is_file():
                return p
    raise DatasetNotFoundError(
        f"{dataset}: none of the files {', '.join(names)} found in "
        f"{', '.join(str(d) for d in dirs)}. {how_to_get}")


def find_dir(dirs: Sequence[Path], required: Sequence[str], *, dataset: str, how_to_get: str) -> Path:
    """The first folder of ``dirs`` that holds every file of ``required``, else DatasetNotFoundError."""
    for d in dirs:
        if all((d / r).is_file() for r in required):
            return d
    partial = [d for d in dirs if d.is_dir() and any((d / r).is_file() for r in required)]
    detail = ""
    if partial:
        missing = [r for r in required if not (partial[0] / r).is_file()]
        detail = f" ({partial[0]} has some of them but lacks {', '.join(missing)})"
    raise DatasetNotFoundError(
        f"{dataset}: looked for {', '.join(required)} in {', '.join(str(d) for d in dirs)}{detail}. {how_to_get}")
