"""The ``seed`` / ``generator`` pair every random component takes (attacks, randomized
defenses): validated the same way everywhere."""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["check_seed"]


def check_seed(seed: Optional[int], generator: Optional[torch.Generator]
               ) -> tuple[Optional[int], Optional[torch.Generator]]:
    """Validate a ``seed`` (int or None) / ``generator`` (torch.Generator or None) pair —
    at most one of them — and return it."""
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return seed, generator
