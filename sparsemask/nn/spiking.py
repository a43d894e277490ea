"""Random Spiking (seed 003): replace random units by uniform noise, no gradient through them.

With probability ``1 - p`` a unit's value is replaced by noise drawn uniformly from
``[min, max]`` of all the layer's values over the batch (seed: min and max "computed from
the whole batch"); kept units pass unchanged. Spiked units pass no gradient back (their
value is noise, not the unit's behaviour), so the gradient w.r.t. the input is exactly zero
there. Seed setting (RS-1): one layer after the first convolution, before any pooling,
``p = 0.8`` (20% of units spiked); inference by a single prediction (spiking off), the MC
average of 10 runs, or a vote of 10 runs (ties to the smaller label). RS-1-Dropout (RSD)
is the same layer in a model that also has dropout.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .dropout import RandomizedInference, Randomized, check_positive_int, check_probability

SPIKING_MODES = ("off", "mc", "vote")


class RandomSpiking(Randomized, nn.Module):
    """Random Spiking filter layer. Shape: any [N, ...] -> same.

    Args:
        p: probability that a unit is kept (seed: 0.8); ``1 - p`` are spiked.
        mode: inference behaviour — ``"off"``: identity in eval mode (seed's "Single pred.");
            ``"mc"`` / ``"vote"``: spikes in eval mode too; aggregate ``n`` runs with
            :func:`spiking_inference` (or :class:`~sparsemask.nn.dropout.RandomizedInference`).
        n: number of runs used by :func:`spiking_inference` (seed: 10).
        seed / generator: the random stream (which units spike, and the noise).

    Always active in training mode. In eval mode active iff ``mode != "off"``, so an attack
    that leaves an eval-mode model alone meets the same randomness as the deployed model.
    """

    def __init__(self, p: float = 0.8, mode: str = "off", n: int = 10, *,
                 seed: Optional[int] = None, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.p = check_probability("p", p)
        if mode not in SPIKING_MODES:
            raise ValueError(f"mode must be one of {', '.join(SPIKING_MODES)}, got {mode!r}")
        self.mode = mode
        self.n = check_positive_int("n", n)
        self._init_random(seed, generator)
        self.last_spiked: Optional[Tensor] = None  # bool, same shape as the last input

    @property
    def active(self) -> bool:
        return self.training or self.mode != "off"

    def forward(self, x: Tensor) -> Tensor:
        if not self.active or self.p == 1.0 or x.numel() == 0:
            self.last_spiked = None
            return x
        spiked = self._rand(x.shape, x.device) >= self.p  # Bernoulli(1 - p)
        lo, hi = x.detach().aminmax()
        noise = lo + (hi - lo) * self._rand(x.shape, x.device).to(x.dtype)
        self.last_spiked = spiked
        # torch.where sends no gradient to x where `spiked` is True: exactly zero there.
        return torch.where(spiked, noise, x)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}, n={self.n}, seed={self.seed}"


def spiking_inference(model: nn.Module) -> nn.Module:
    """The seed's decision procedure for a model containing :class:`RandomSpiking` layers.

    All spiking layers must agree on ``mode`` and ``n``. ``"off"`` returns ``model`` itself
    (single prediction, spiking inactive in eval mode); ``"mc"`` / ``"vote"`` return
    ``RandomizedInference(model, n, "mean" | "vote")``.
    """
    layers = [m for m in model.modules() if isinstance(m, RandomSpiking)]
    if not layers:
        raise ValueError("model has no RandomSpiking layer")
    settings = {(m.mode, m.n) for m in layers}
    if len(settings) > 1:
        raise ValueError(f"RandomSpiking layers disagree on (mode, n): {sorted(settings)}")
    mode, n = settings.pop()
    if mode == "off":
        return model
    return RandomizedInference(model, n=n, combine="mean" if mode == "mc" else "vote")


def _is_conv(module: nn.Module) -> bool:
    # DefectiveConv2d and other conv variants count as convolutions: match by type or name.
    return isinstance(module, nn.modules.conv._ConvNd) or type(module).__name__.endswith("Conv2d")


def insert_after_first_conv(model: nn.Module, layer: nn.Module) -> nn.Module:
    """Insert ``layer`` right after the first convolution of ``model`` (in registration order),
    i.e. before any pooling — seed 003's placement. In place; returns ``model``.

    The convolution ``parent.name`` becomes ``parent.name = Sequential(conv, layer)``, so its
    state_dict keys gain a ``.0`` (``conv1.weight`` -> ``conv1.0.weight``): load pretrained
    weights before inserting. The model must use the convolution as a submodule (models that
    call a shared conv twice or use functional convs are not supported).
    """
    if not isinstance(layer, nn.Module):
        raise TypeError(f"layer must be an nn.Module, got {type(layer).__name__}")
    if _is_conv(model):
        raise ValueError("model is itself a convolution; wrap it: nn.Sequential(conv, layer)")
    for path, child in model.named_modules():
        if path and _is_conv(child):
            parent_path, _, name = path.rpartition(".")
            parent = model.get_submodule(parent_path)
            setattr(parent, name, nn.Sequential(child, layer))
            return model
    raise ValueError(f"{type(model).__name__} has no convolution to insert after")
