"""Randomization at inference (seed 004, Xie et al. 2018): random resize, then random zero padding.

The image [N, C, H, W] is resized to ``size x size`` with ``size`` uniform in
``[min_size, out_size)`` (seed: [299, 331)), then zero-padded to ``out_size x out_size``
with ``top``, ``left`` uniform in ``[0, out_size - size]`` (the seed's
``(W'' - W' + 1) x (H'' - H' + 1)`` padding patterns), optionally flipped horizontally with
probability ``p_flip`` (the seed's challenge entry used 0.5). Resizing is nearest-neighbour by
default, as in the authors' released code. No retraining; the seed's challenge entry
averaged 30 random patterns (:func:`randomization_defense` with ``n=30``).

A *pattern* is one choice :class:`Pattern` ``(size, top, left, flip)``. For attacks:

* :meth:`RandomResizePad.fix_pattern` makes the layer deterministic (the seed's
  *single-pattern* scenario uses :meth:`RandomResizePad.single_pattern`: no resizing,
  centred);
* :class:`PatternEnsemble` averages a model over a list of patterns — the seed's
  *ensemble-pattern* scenario is :meth:`RandomResizePad.ensemble_patterns` (5 sizes
  ``{299, 307, 315, 323, 331}`` x 5 placements, the largest only centred: 21 patterns);
* :meth:`RandomResizePad.patterns` enumerates every pattern (12528 for 299 -> 331);
* EOT attacks just call the layer repeatedly: every call draws fresh patterns from the
  layer's stream (``seed``/``generator``, :meth:`reseed`).

Works for small images as well, e.g. ``RandomResizePad(out_size=32, min_size=28)`` for 28x28.
Active in train and eval mode alike.
"""
from __future__ import annotations

from typing import Iterator, List, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dropout import RandomizedInference, Randomized, check_positive_int, check_probability, combine_outputs

RESIZE_MODES = ("nearest", "bilinear", "bicubic", "area")


class Pattern(NamedTuple):
    """One randomization pattern: resize to ``size x size``, pad with ``top`` rows above and
    ``left`` columns on the left (the rest below/right), flip horizontally if ``flip``."""

    size: int
    top: int
    left: int
    flip: bool = False


class RandomResizePad(Randomized, nn.Module):
    """Random resize to [min_size, out_size) then random zero padding to out_size (seed 004).

    Args:
        out_size: side of the output (seed: 331).
        min_size: smallest resize (seed: 299, the input side).
        p_flip: probability of a horizontal flip (seed: 0; 0.5 in its challenge entry).
        mode: interpolation for the resize (``F.interpolate`` mode; default nearest).
        fill: padding value (seed: zeros).
        per_image: draw a pattern per image (default) or one per batch (the authors' code).
        seed / generator: the random stream of the patterns.

    Shape: [N, C, H, W] -> [N, C, out_size, out_size] (any H, W: the image is resized to a
    square). Differentiable w.r.t. the input for every pattern.
    """

    def __init__(self, out_size: int = 331, min_size: int = 299, p_flip: float = 0.0, *,
                 mode: str = "nearest", fill: float = 0.0, per_image: bool = True,
                 seed: Optional[int] = None, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.out_size = check_positive_int("out_size", out_size)
        self.min_size = check_positive_int("min_size", min_size)
        if self.min_size >= self.out_size:
            raise ValueError(f"min_size must be < out_size (sizes are drawn from [min_size, out_size)), "
                             f"got min_size={min_size}, out_size={out_size}")
        self.p_flip = check_probability("p_flip", p_flip)
        if mode not in RESIZE_MODES:
            raise ValueError(f"mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
        self.mode = mode
        if isinstance(fill, bool) or not isinstance(fill, (int, float)):
            raise TypeError(f"fill must be a number, got {fill!r}")
        self.fill = float(fill)
        self.per_image = bool(per_image)
        self._fixed: Optional[Pattern] = None
        self._init_random(seed, generator)

    # -- patterns ---------------------------------------------------------------------------
    def check_pattern(self, pattern) -> Pattern:
        """``pattern`` as a :class:`Pattern`, or ValueError if it does not fit ``out_size``."""
        if isinstance(pattern, list):
            pattern = tuple(pattern)
        if not isinstance(pattern, tuple) or len(pattern) not in (3, 4):
            raise TypeError(f"pattern must be Pattern(size, top, left[, flip]), got {pattern!r}")
        pattern = Pattern(*pattern)
        size, top, left = (int(v) for v in pattern[:3])
        if not 1 <= size <= self.out_size:
            raise ValueError(f"pattern size must be in [1, {self.out_size}], got {size}")
        rem = self.out_size - size
        if not (0 <= top <= rem and 0 <= left <= rem):
            raise ValueError(f"pattern offsets must be in [0, {rem}] for size {size}, got top={top}, left={left}")
        return Pattern(size, top, left, bool(pattern.flip))

    def num_patterns(self) -> int:
        """How many distinct random patterns the layer can draw (x2 when flips are possible)."""
        count = sum((self.out_size - s + 1) ** 2 for s in range(self.min_size, self.out_size))
        return count * (2 if self.p_flip > 0 else 1)

    def patterns(self) -> Iterator[Pattern]:
        """Every pattern the layer can draw, sizes ascending, then top, then left (then flip)."""
        flips = (False, True) if self.p_flip > 0 else (False,)
        for size in range(self.min_size, self.out_size):
            rem = self.out_size - size
            for top in range(rem + 1):
                for left in range(rem + 1):
                    for flip in flips:
                        yield Pattern(size, top, left, flip)

    def single_pattern(self) -> Pattern:
        """The seed's single-pattern attack target: no resizing (``min_size``, the input side
        in the seed), centred (299 -> 331: 16 zeros on every side)."""
        rem = self.out_size - self.min_size
        return Pattern(self.min_size, rem // 2, rem // 2)

    def ensemble_patterns(self, n_sizes: int = 5) -> List[Pattern]:
        """The seed's ensemble-pattern attack targets: ``n_sizes`` sizes evenly spaced from
        ``min_size`` to ``out_size`` (inclusive; 299 -> {299, 307, 315, 323, 331}), each at
        the top-left, top-right, bottom-left, bottom-right and centre; a placement that
        coincides with another (always for ``out_size``, which has one) is listed once:
        21 patterns for 299 -> 331; fewer for small images (28 -> 32: 20, since 31 has no
        distinct centre)."""
        check_positive_int("n_sizes", n_sizes)
        sizes = torch.linspace(self.min_size, self.out_size, n_sizes).round().long().tolist()
        out: List[Pattern] = []
        for size in dict.fromkeys(sizes):
            rem = self.out_size - size
            for top, left in ((0, 0), (0, rem), (rem, 0), (rem, rem), (rem // 2, rem // 2)):
                p = Pattern(size, top, left)
                if p not in out:
                    out.append(p)
        return out

    def sample_patterns(self, n: int, device=None) -> List[Pattern]:
        """``n`` random patterns from the layer's stream."""
        check_positive_int("n", n)
        device = device or "cpu"
        sizes = self._randint(self.min_size, self.out_size, (n,), device).cpu()
        rem = (self.out_size - sizes).to(torch.float64)
        # offsets uniform in [0, rem] inclusive: floor(u * (rem + 1)), u in [0, 1)
        u = self._rand((2, n), device).cpu().to(torch.float64)
        tops = torch.minimum((u[0] * (rem + 1)).floor(), rem).long()
        lefts = torch.minimum((u[1] * (rem + 1)).floor(), rem).long()
        flips = self._rand((n,), device).cpu() < self.p_flip
        return [Pattern(int(s), int(t), int(l), bool(f))
                for s, t, l, f in zip(sizes, tops, lefts, flips)]

    def fix_pattern(self, pattern: Optional[Sequence]) -> "RandomResizePad":
        """Use ``pattern`` for every image and call (None: back to random). Returns self."""
        self._fixed = None if pattern is None else self.check_pattern(pattern)
        return self

    def release_pattern(self) -> "RandomResizePad":
        """Back to random patterns. Returns self."""
        self._fixed = None
        return self

    @property
    def fixed_pattern(self) -> Optional[Pattern]:
        return self._fixed

    # -- transform --------------------------------------------------------------------------
    def apply(self, x: Tensor, pattern) -> Tensor:
        """Apply one ``pattern`` to every image: [N, C, H, W] -> [N, C, out_size, out_size]."""
        pattern = self.check_pattern(pattern)
        self._check_input(x)
        size, top, left, flip = pattern
        if x.shape[-2:] != (size, size):
            kwargs = {} if self.mode in ("nearest", "area") else {"align_corners": False}
            x = F.interpolate(x, size=(size, size), mode=self.mode, **kwargs)
        if flip:
            x = x.flip(-1)
        rem = self.out_size - size
        return F.pad(x, (left, rem - left, top, rem - top), value=self.fill)

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(f"RandomResizePad expects images [N, C, H, W], got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if self._fixed is not None:
            return self.apply(x, self._fixed)
        if not self.per_image:
            return self.apply(x, self.sample_patterns(1, x.device)[0])
        patterns = self.sample_patterns(x.shape[0], x.device)
        return torch.cat([self.apply(x[i:i + 1], p) for i, p in enumerate(patterns)])

    def extra_repr(self) -> str:
        fixed = "" if self._fixed is None else f", fixed={tuple(self._fixed)}"
        return (f"out_size={self.out_size}, min_size={self.min_size}, p_flip={self.p_flip}, "
                f"mode={self.mode!r}, fill={self.fill}, per_image={self.per_image}, seed={self.seed}{fixed}")


class PatternEnsemble(nn.Module):
    """A classifier averaged over fixed patterns (seed 004's ensemble-pattern attack target).

    Args:
        model: classifier for the padded images [N, C, out, out] -> logits [N, K].
        transform: the :class:`RandomResizePad` whose patterns to use.
        patterns: list of patterns (default ``transform.ensemble_patterns()``, the seed's 21).
        combine: ``"mean"`` (log of the averaged softmax; differentiable) or ``"vote"``.

    Deterministic: ``[N, C, H, W] -> [N, K]``.
    """

    def __init__(self, model: nn.Module, transform: RandomResizePad,
                 patterns: Optional[Sequence] = None, combine: str = "mean"):
        super().__init__()
        if not isinstance(transform, RandomResizePad):
            raise TypeError(f"transform must be a RandomResizePad, got {type(transform).__name__}")
        patterns = transform.ensemble_patterns() if patterns is None else list(patterns)
        if not patterns:
            raise ValueError("patterns must not be empty")
        self.model, self.transform, self.combine = model, transform, combine
        self.patterns = [transform.check_pattern(p) for p in patterns]
        combine_outputs([torch.zeros(1, 2)], combine)  # validates `combine` now, not at first call

    def forward(self, x: Tensor) -> Tensor:
        return combine_outputs((self.model(self.transform.apply(x, p)) for p in self.patterns), self.combine)

    def extra_repr(self) -> str:
        return f"patterns={len(self.patterns)}, combine={self.combine!r}"


def randomization_defense(model: nn.Module, out_size: int = 331, min_size: int = 299, *, n: int = 1,
                          p_flip: float = 0.0, combine: str = "mean", seed: Optional[int] = None,
                          **kwargs) -> nn.Module:
    """``model`` behind a :class:`RandomResizePad` (``nn.Sequential(layer, model)``), averaged
    over ``n`` random patterns when ``n > 1`` (:class:`RandomizedInference`). ``kwargs`` go to
    :class:`RandomResizePad`. The layer is ``result[0]`` (n = 1) or ``result.model[0]``."""
    layer = RandomResizePad(out_size, min_size, p_flip, seed=seed, **kwargs)
    defended = nn.Sequential(layer, model)
    return defended if check_positive_int("n", n) == 1 else RandomizedInference(defended, n, combine)
