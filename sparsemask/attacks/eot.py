"""Expectation over Transformation (Athalye et al. 2018): attacks on randomized models."""
from __future__ import annotations

from typing import Union

import torch
from torch import nn

from ._common import Attack, check_nonneg


class EOTModel(nn.Module):
    """Wraps a randomized model: forward returns the mean logits of ``n`` forward passes.

    Any attack built on it therefore follows the gradient of the averaged logits, which is the
    average of the per-pass logit gradients. Each pass draws the model's own randomness (its
    generator or torch's global RNG): seed that, not this wrapper.

    Input [N, ...] -> logits [N, K].
    """

    def __init__(self, model: nn.Module, n: int = 10):
        super().__init__()
        self.model = model
        self.n = check_nonneg("n", n, integer=True, positive=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(x) for _ in range(self.n)]).mean(0)

    def extra_repr(self) -> str:
        return f"n={self.n}"


def EOT(attack_or_model: Union[Attack, nn.Module], n: int = 10):  # noqa: N802 - the name the EOT literature uses
    """EOT wrapper, usable with every gradient attack.

    * ``EOT(attack, n)``: a copy of the attack whose every gradient is the mean of the loss
      gradients of ``n`` forward passes (exact EOT of the attack's loss; for DeepFool the
      logits are averaged before linearising). The original attack is not changed.
    * ``EOT(model, n)``: an :class:`EOTModel` (mean logits of ``n`` passes) to hand to any attack.

    On a deterministic model both give the plain attack's result.
    The decision-based :class:`~sparsemask.attacks.Boundary` raises TypeError.
    """
    if isinstance(attack_or_model, Attack):
        return attack_or_model.with_eot(n)
    if isinstance(attack_or_model, nn.Module) or callable(attack_or_model):
        return EOTModel(attack_or_model, n)
    raise TypeError(f"EOT expects an attack or a model, got {type(attack_or_model).__name__}")
