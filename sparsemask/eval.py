"""Scoring a model over a dataset, in batches: predictions, accuracy, adversarial examples.

The one implementation behind the CLI, the experiments and the attack metrics
(:mod:`sparsemask.attacks.metrics` re-exports :func:`predict` and :func:`accuracy`). Each
batch runs on ``device`` (default: the model's), results come back on the input's device,
so a dataset can stay on the CPU while a GPU scores it. Nothing here changes the model's
train/eval mode: randomized defenses keep drawing as their owner set them.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

__all__ = ["model_device", "predict", "accuracy", "run_attack", "run_attack_sweep", "check_labels"]


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
            device: Optional[torch.device] = None, progress: bool = False, desc: str = "predict") -> Tensor:
    """Predicted labels int64 [N] (on x's device) for x [N, ...], ``batch_size`` at a time on
    ``device`` (default: the model's); ``progress``: a tqdm bar over the batches (off by default:
    library calls stay quiet)."""
    from tqdm.auto import tqdm

    _check_batch_size(batch_size)
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise ValueError(f"x must be a batched tensor [N, ...], got {type(x).__name__}")
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    dev = torch.device(device) if device is not None else model_device(model, default=x.device)
    batches = tqdm(x.split(batch_size), desc=desc, disable=not progress, leave=False)
    return torch.cat([model(b.to(dev)).argmax(1).to(x.device) for b in batches])


def accuracy(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, batch_size: int = 512, *,
             device: Optional[torch.device] = None, progress: bool = False, desc: str = "accuracy") -> float:
    """Fraction of x [N, ...] predicted as y [N] (nan for N = 0)."""
    check_labels(x, y)
    return float((predict(model, x, batch_size, device=device, progress=progress, desc=desc)
                  == y.to(x.device)).double().mean())


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


AttackSpec = Union[str, Mapping[str, Any], Callable[[float], Callable[..., Tensor]]]


def run_attack_sweep(model: Callable[[Tensor], Tensor], attack: AttackSpec, x: Tensor, y: Tensor, *,
                     eps: Optional[Sequence[float]] = None, eps255: Optional[Sequence[float]] = None,
                     source: Optional[Callable[[Tensor], Tensor]] = None, seed: Optional[int] = 0,
                     batch_size: int = 256, device: Optional[torch.device] = None, progress: bool = False,
                     keep_examples: bool = False) -> dict[float, dict[str, Any]]:
    """Run one attack at several budgets and score ``model`` on each: ``{ε: row}``.

    Args:
        model: the classifier scored (any defense wrapper), x [N, ...] -> logits [N, K].
        attack: a registry name (``"pgd"``) or entry (``{"name": "pgd", "steps": 20, "eot": 8}``),
            built on ``source`` (default ``model``: white-box) with ``eps`` set per budget; or a
            callable ``eps -> attack`` (``lambda e: PGD(m, eps=e)``) called with the [0, 1]-scale ε.
        x, y: inputs [N, ...] in [0, 1], int64 labels [N].
        eps / eps255: the budgets, on the [0, 1] or the 0-255 scale (one of the two); the
            result's keys are the values as given.
        seed: passed to registry attacks. batch_size / device / progress: as :func:`run_attack`.
        keep_examples: also return each budget's adversarial examples (``x_adv`` [N, ...]).
    Returns: ``{ε: {"eps", "eps255", "clean_accuracy", "adversarial_accuracy",
    "success_defense_rate", "mean_linf_255", "mean_l2"[, "x_adv"]}}``; clean accuracy and the
    clean-correct set come from one prediction shared by every budget.
    """
    if (eps is None) == (eps255 is None):
        raise ValueError("give one of eps ([0, 1] scale) or eps255 (0-255 scale), as a list of budgets")
    given = list(eps if eps is not None else eps255)
    scale = 1.0 if eps is not None else 255.0
    if not given or any(isinstance(e, bool) or not isinstance(e, (int, float)) or not e > 0 for e in given):
        raise ValueError(f"the budgets must be a non-empty list of numbers > 0, got {given!r}")
    check_labels(x, y)
    make = _attack_factory(attack, source if source is not None else model, seed, progress)
    correct = predict(model, x, batch_size, device=device, progress=progress, desc="clean") == y.to(x.device)
    rows = {}
    for e in given:
        x_adv = run_attack(make(e / scale), x, y, batch_size=batch_size, device=device, progress=progress,
                           desc=f"attack eps={e:g}")
        rows[e] = _sweep_row(model, x, x_adv, y, correct, e / scale, batch_size, device, progress)
        if keep_examples:
            rows[e]["x_adv"] = x_adv
    return rows


def _attack_factory(attack: AttackSpec, source, seed, progress) -> Callable[[float], Callable[..., Tensor]]:
    """``eps -> attack`` for any form :func:`run_attack_sweep` accepts."""
    if isinstance(attack, (str, Mapping)):
        from .attacks import make_attack

        params = {"name": attack} if isinstance(attack, str) else dict(attack)
        if "eps" in params or "eps255" in params:
            raise ValueError("run_attack_sweep sets the budget itself: leave eps/eps255 out of the attack's params")
        return lambda e: make_attack(source, {**params, "eps": e}, seed=seed, progress=progress)
    if callable(attack):
        return attack
    raise TypeError(f"attack must be a registry name, a params dict or a callable eps -> attack, "
                    f"got {type(attack).__name__}")


def _sweep_row(model, x: Tensor, x_adv: Tensor, y: Tensor, correct: Tensor, eps: float, batch_size: int,
               device, progress: bool) -> dict[str, Any]:
    adv_correct = predict(model, x_adv, batch_size, device=device, progress=progress, desc="score") == y.to(x.device)
    delta = (x_adv - x).flatten(1)
    # The success defense rate (seeds 000/001): accuracy on the examples classified correctly
    # clean, from the shared clean prediction (a randomized model would redraw it otherwise).
    sdr = float(adv_correct[correct].double().mean()) if correct.any() else float("nan")
    return {"eps": eps, "eps255": eps * 255, "clean_accuracy": float(correct.double().mean()),
            "adversarial_accuracy": float(adv_correct.double().mean()), "success_defense_rate": sdr,
            "mean_linf_255": float(delta.abs().amax(1).mean() * 255) if len(x) else float("nan"),
            "mean_l2": float(delta.norm(dim=1).mean()) if len(x) else float("nan")}
