"""Scoring a model over a dataset, in batches: predictions, accuracy, adversarial examples.

The one implementation behind the CLI, the experiments and the attack metrics
(:mod:`sparsemask.attacks.metrics` re-exports :func:`predict` and :func:`accuracy`). Each
batch runs on ``device`` (default: the model's), results come back on the input's device,
so a dataset can stay on the CPU while a GPU scores it. Nothing here changes the model's
train/eval mode: randomized defenses keep drawing as their owner set them.
"""
from __future__ import annotations

import itertools
from typing import Callable, Optional

import torch
from torch import Tensor, nn

__all__ = ["model_device", "predict", "accuracy", "run_attack", "check_labels"]


def model_device(model, default: Optional[torch.device] = None) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); ``default`` (CPU if None) for
    a parameter-free module or a plain callable."""
    if isinstance(model, nn.Module):
        for t in itertools.chain(model.parameters(), model.buffers()):  # the first one only
            return t.device
    return torch.device(default) if default is not None else torch.device("cpu")


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def check_labels(x: Tensor, y: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a batched tensor [N, ...], got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape [N] = ({x.shape[0]},), got "
                         f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")


@torch.no_grad()
def predict(model: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 512, *,
            device: Optional[torch.device] = None) -> Tensor:
    """Predicted labels int64 [N] (on x's device) for x [N, ...], ``batch_size`` at a time on
    ``device`` (default: the model's)."""
    _check_batch_size(batch_size)
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise ValueError(f"x must be a batched tensor [N, ...], got {type(x).__name__}")
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    dev = torch.device(device) if device is not None else model_device(model, default=x.device)
    return torch.cat([model(b.to(dev)).argmax(1).to(x.device) for b in x.split(batch_size)])


def accuracy(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, batch_size: int = 512, *,
             device: Optional[torch.device] = None) -> float:
    """Fraction of x [N, ...] predicted as y [N] (nan for N = 0)."""
    check_labels(x, y)
    return float((predict(model, x, batch_size, device=device) == y.to(x.device)).double().mean())


def run_attack(attack: Callable[..., Tensor], x: Tensor, y: Tensor, *, batch_size: int = 256,
               device: Optional[torch.device] = None, targets: Optional[Tensor] = None, progress: bool = False,
               desc: str = "attack") -> Tensor:
    """``attack(x, y[, targets=])`` ``batch_size`` examples at a time on ``device`` (default:
    the device of ``attack.model`` when it has one), detached, on x's device: [N, ...]."""
    from tqdm.auto import tqdm

    _check_batch_size(batch_size)
    check_labels(x, y)
    if device is None:
        device = model_device(getattr(attack, "model", None), default=x.device)
    out = []
    for i in tqdm(range(0, len(x), batch_size), desc=desc, disable=not progress, leave=False):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        kwargs = {} if targets is None else {"targets": targets[i:i + batch_size].to(device)}
        out.append(attack(xb, yb, **kwargs).detach().to(x.device))
    return torch.cat(out) if out else x.clone()
