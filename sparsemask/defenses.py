"""Test-time defenses by name: wrap a trained classifier in one of the seeds' randomized defenses.

    defended = defend(model, "mad", input_size=28, mad_votes=5, seed=0)

The one place that turns a defense name and its settings into a wrapper (the CLI's
``--defense`` for ``evaluate``, ``attack`` and ``robustness``); the wrappers themselves are in
:mod:`sparsemask.nn`:

* ``none``: the model itself.
* ``mad`` (seed 002): :class:`~sparsemask.nn.MADClassifier`, ``mad_votes`` random grid maskings
  and a majority vote; grid cell ``mad_grid`` (default: the seed's test grid for the image
  size, :func:`~sparsemask.nn.mad_defaults`), masking rate ``mad_rate``.
* ``resize-pad`` (seed 004): :class:`~sparsemask.nn.RandomResizePad` before the model, resize to
  a side in ``[resize_min, resize_max)`` then zero-pad to ``resize_max``; averaged over
  ``resize_draws`` patterns. Default ``resize_max`` = the image side, ``resize_min`` = the seed's
  ratio 299/331 of it: the model sees images of the size it was trained on, which models with
  defective layers (masks of a fixed size) require. A larger ``resize_max`` is the seed's
  enlarging version, for models that accept larger inputs.
* ``spiking`` (seed 003): a :class:`~sparsemask.nn.RandomSpiking` layer (keep ``spiking_p``)
  after the first convolution, ``spiking_runs`` runs combined by ``spiking_combine``
  (``vote`` or ``mc``). The layer is added to a copy; the model passed in is unchanged.

Every defense here is randomized: attack it with EOT (``attacks.EOT`` / ``--eot N``).
"""
from __future__ import annotations

import copy
from typing import Optional

from torch import nn

__all__ = ["DEFENSES", "defend", "resize_pad_sizes"]

DEFENSES = ("none", "mad", "resize-pad", "spiking")
SEED_RESIZE_RATIO = 299 / 331  # seed 004: 299-pixel images resized within [299, 331), padded to 331


def resize_pad_sizes(input_size: int, resize_min: Optional[int] = None,
                     resize_max: Optional[int] = None) -> tuple[int, int]:
    """``(min_size, out_size)`` of the resize-and-pad defense for images of side ``input_size``
    (defaults in the module docstring)."""
    out = input_size if resize_max is None else int(resize_max)
    low = min(out - 1, round(out * SEED_RESIZE_RATIO)) if resize_min is None else int(resize_min)
    return low, out


def defend(model: nn.Module, defense: str = "none", *, input_size: int, seed: Optional[int] = 0,
           mad_grid: Optional[int] = None, mad_rate: float = 0.75, mad_votes: int = 5,
           resize_min: Optional[int] = None, resize_max: Optional[int] = None, resize_draws: int = 1,
           spiking_p: float = 0.8, spiking_runs: int = 10, spiking_combine: str = "vote") -> nn.Module:
    """``model`` (images [N, C, input_size, input_size] in [0, 1] -> logits [N, K]) behind the
    test-time ``defense`` of :data:`DEFENSES`, same input and output shapes, in eval mode.
    ``seed`` seeds the defense's own random stream (None: torch's global one)."""
    if defense == "none":
        return model
    if defense == "mad":
        from .nn import MADClassifier, mad_defaults

        grid = mad_defaults(input_size)["test_grid"] if mad_grid is None else mad_grid
        return MADClassifier(model, grid=grid, rate=mad_rate, n=mad_votes, seed=seed).eval()
    if defense == "resize-pad":
        from .nn import randomization_defense

        low, out = resize_pad_sizes(input_size, resize_min, resize_max)
        return randomization_defense(model, out, low, n=resize_draws, seed=seed).eval()
    if defense == "spiking":
        from .nn import RandomSpiking, insert_after_first_conv, spiking_inference

        if spiking_combine not in ("vote", "mc"):
            raise ValueError(f"spiking_combine must be 'vote' or 'mc', got {spiking_combine!r}")
        layer = RandomSpiking(spiking_p, mode=spiking_combine, n=spiking_runs, seed=seed)
        return spiking_inference(insert_after_first_conv(copy.deepcopy(model), layer)).eval()
    raise ValueError(f"unknown defense {defense!r}; expected one of {', '.join(DEFENSES)}")
