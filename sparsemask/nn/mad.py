"""MAD, mask-based adversarial defense (seed 002): grid masking of input images.

An image is cut into square cells of ``grid`` x ``grid`` pixels, aligned to the top-left
corner; each cell is masked (set to ``fill``, the seed's "black") with probability ``rate``,
independently per cell and per image, the same cells in every channel. The model is trained
on masked images (:class:`GridMask` as a transform or :meth:`GridMask.collate`) and, at test
time, :class:`MADClassifier` masks the input ``n`` times and takes the majority vote
(ties to the smaller label) or averages the probabilities.

``grid`` is the cell side in pixels — the seed's "the length of a grid always divides the
length of an image": 8 (train) / 4 (test) for 32x32 images, 7 / 7 for 28x28, rate 3/4
(:func:`mad_defaults`). When ``grid`` does not divide the image side, the last row/column of
cells is cut short (still aligned to the top-left corner).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from .dropout import Randomized, check_positive_int, check_probability, combine_outputs

#: The seed's settings: image side -> (train grid, test grid). Rate 3/4 for all.
SEED_GRIDS = {32: (8, 4), 28: (7, 7)}
SEED_RATE = 0.75


def mad_defaults(input_size: int) -> dict:
    """MAD settings for square images of side ``input_size``.

    Returns ``dict(train_grid=, test_grid=, rate=0.75, from_seed=bool)``. Sizes the seed used
    (32: grids 8/4; 28: 7/7) come from the paper; for other sizes the rule is extrapolated
    (``from_seed=False``): train cells of side ``input_size // 4`` (16 cells, as both seed
    settings), test cells of half that when ``input_size`` is divisible by 8, else the same.
    """
    size = check_positive_int("input_size", input_size)
    if size in SEED_GRIDS:
        train, test = SEED_GRIDS[size]
        return dict(train_grid=train, test_grid=test, rate=SEED_RATE, from_seed=True)
    if size < 4:
        raise ValueError(f"input_size must be >= 4 for MAD grids, got {size}")
    train = size // 4
    test = train // 2 if size % 8 == 0 and train >= 2 else train
    return dict(train_grid=train, test_grid=test, rate=SEED_RATE, from_seed=False)


def cell_counts(height: int, width: int, grid: int) -> tuple:
    """(rows, cols) of grid cells covering a ``height`` x ``width`` image."""
    return -(-height // grid), -(-width // grid)


def expand_cells(cells: Tensor, height: int, width: int, grid: int) -> Tensor:
    """Cell mask [..., rows, cols] -> pixel mask [..., height, width] (cell (i, j) covers
    rows ``i*grid:(i+1)*grid`` and columns ``j*grid:(j+1)*grid``)."""
    pixels = cells.repeat_interleave(grid, dim=-2).repeat_interleave(grid, dim=-1)
    return pixels[..., :height, :width]


class GridMask(Randomized, nn.Module):
    """Mask grid cells of images with probability ``rate`` (seed 002's training transform).

    Args:
        grid: cell side in pixels (seed: 8 for 32x32 training, 7 for 28x28).
        rate: probability that a cell is masked (seed: 0.75).
        fill: value written into masked cells (seed: black, 0.0 for images in [0, 1]).
        seed / generator: the random stream (see :class:`~sparsemask.nn.dropout.Randomized`).

    Call on an image [C, H, W] or a batch [N, C, H, W] (one independent mask per image, shared
    by the channels); returns the masked tensor of the same shape. Active in train and eval
    mode alike: it is a transform, the caller decides when to apply it. As a
    ``DataLoader(collate_fn=GridMask(...).collate)`` it masks every batch after collation.
    """

    def __init__(self, grid: int = 8, rate: float = SEED_RATE, fill: float = 0.0, *,
                 seed: Optional[int] = None, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.grid = check_positive_int("grid", grid)
        self.rate = check_probability("rate", rate)
        if isinstance(fill, bool) or not isinstance(fill, (int, float)):
            raise TypeError(f"fill must be a number, got {fill!r}")
        self.fill = float(fill)
        self._init_random(seed, generator)

    def sample(self, n: int, height: int, width: int, device=None) -> Tensor:
        """``n`` masks, bool [n, height, width], True where the pixel is masked."""
        check_positive_int("n", n)
        check_positive_int("height", height)
        check_positive_int("width", width)
        rows, cols = cell_counts(height, width, self.grid)
        cells = self._rand((n, rows, cols), device or "cpu") < self.rate
        return expand_cells(cells, height, width, self.grid)

    def apply(self, x: Tensor, masks: Tensor) -> Tensor:
        """Write ``fill`` where ``masks`` is True. x [N, C, H, W]; masks bool [N, H, W] or [H, W]."""
        if masks.dtype != torch.bool:
            raise TypeError(f"masks must be bool, got {masks.dtype}")
        if masks.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"masks of size {tuple(masks.shape[-2:])} do not match images of "
                             f"size {tuple(x.shape[-2:])}")
        masks = masks.to(x.device).unsqueeze(-3)  # broadcast over channels
        return x.masked_fill(masks, self.fill)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in (3, 4):
            raise ValueError(f"GridMask expects [C, H, W] or [N, C, H, W], got shape {tuple(x.shape)}")
        single = x.dim() == 3
        batch = x.unsqueeze(0) if single else x
        masks = self.sample(batch.shape[0], batch.shape[-2], batch.shape[-1], batch.device)
        out = self.apply(batch, masks)
        return out[0] if single else out

    def collate(self, samples: Sequence) -> object:
        """A ``collate_fn``: ``default_collate`` then mask the images (the first field of each
        sample when samples are tuples, else the samples themselves)."""
        batch = default_collate(samples)
        if isinstance(batch, (list, tuple)):
            return type(batch)([self(batch[0]), *batch[1:]])
        return self(batch)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, rate={self.rate}, fill={self.fill}, seed={self.seed}"


class MADClassifier(Randomized, nn.Module):
    """Test-time MAD: classify ``n`` random grid maskings of the input and combine.

    Args:
        model: classifier x [N, C, H, W] in [0, 1] -> logits [N, K], trained on masked images.
        grid, rate, fill: masking (seed test setting: grid 4 for 32x32, 7 for 28x28; rate 0.75).
        n: number of maskings (seed: 1, 3, 5 or 7).
        combine: ``"vote"`` (seed: majority vote, ties to the smaller label) or ``"probs"``
            (average of the softmax probabilities).
        seed / generator: the random stream of the masks.

    Output: class scores [N, K] whose argmax is the decision (see
    :func:`~sparsemask.nn.dropout.combine_outputs`; "vote" passes the gradient of the
    averaged probabilities straight through). Active in train and eval mode alike.

    Fixed masks for attacks: :meth:`fix_masks` (e.g. with :meth:`sample_masks`) makes the
    wrapper deterministic — one fixed masking is the "single pattern" target, ``n`` fixed
    maskings an ensemble; :meth:`release_masks` returns to fresh random masks per call.
    """

    def __init__(self, model: nn.Module, grid: int = 4, rate: float = SEED_RATE, n: int = 5,
                 combine: str = "vote", fill: float = 0.0, *, seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if combine not in ("vote", "probs"):
            raise ValueError(f"combine must be 'vote' or 'probs', got {combine!r}")
        self.model = model
        self.masker = GridMask(grid, rate, fill)  # holds the settings; masks come from the wrapper's stream
        self.n = check_positive_int("n", n)
        self.combine = combine
        self._fixed: Optional[Tensor] = None
        self._init_random(seed, generator)

    @property
    def grid(self) -> int:
        return self.masker.grid

    @property
    def rate(self) -> float:
        return self.masker.rate

    def sample_masks(self, height: int, width: int, n: Optional[int] = None, device=None) -> Tensor:
        """``n`` (default ``self.n``) masks bool [n, height, width] from this wrapper's stream."""
        n = self.n if n is None else check_positive_int("n", n)
        rows, cols = cell_counts(height, width, self.grid)
        cells = self._rand((n, rows, cols), device or "cpu") < self.rate
        return expand_cells(cells, height, width, self.grid)

    def fix_masks(self, masks: Tensor) -> "MADClassifier":
        """Use these masks on every call: bool [m, H, W] (same for every image) or [m, N, H, W]
        (per image); m replaces ``n``. Returns self."""
        if not isinstance(masks, Tensor) or masks.dtype != torch.bool or masks.dim() not in (3, 4):
            raise TypeError("masks must be a bool tensor [m, H, W] or [m, N, H, W]")
        self._fixed = masks
        return self

    def release_masks(self) -> "MADClassifier":
        """Back to fresh random masks on every call. Returns self."""
        self._fixed = None
        return self

    @property
    def fixed_masks(self) -> Optional[Tensor]:
        return self._fixed

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"MADClassifier expects [N, C, H, W], got shape {tuple(x.shape)}")
        n_img, _, h, w = x.shape
        if self._fixed is not None:
            masks = self._fixed
            if masks.dim() == 4 and masks.shape[1] != n_img:
                raise ValueError(f"fixed masks are for {masks.shape[1]} images, got a batch of {n_img}")
        else:
            masks = self.sample_masks(h, w, self.n * n_img, x.device).view(self.n, n_img, h, w)
        outputs = [self.model(self.masker.apply(x, m)) for m in masks]
        return combine_outputs(outputs, "mean" if self.combine == "probs" else "vote")

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Labels [N] (int64)."""
        return self.forward(x).argmax(-1)

    def extra_repr(self) -> str:
        fixed = "" if self._fixed is None else f", fixed_masks={self._fixed.shape[0]}"
        return (f"grid={self.grid}, rate={self.rate}, fill={self.masker.fill}, n={self.n}, "
                f"combine={self.combine!r}, seed={self.seed}{fixed}")

