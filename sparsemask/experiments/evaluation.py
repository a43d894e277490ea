"""Evaluation inside experiments: thin adapters of :mod:`sparsemask.eval` and
:mod:`sparsemask.attacks` that read the batch size, device, seed and progress setting from an
experiment config."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from torch import Tensor, nn

from .config import resolve_device

__all__ = ["predict", "accuracy", "success_defense_rate", "make_attack", "run_attack"]

# --------------------------------------------------------------------------- evaluation

# Thin adapters of sparsemask.eval that read the batch size, device and progress setting
# from an experiment config.

def _eval_batch_size(cfg: Mapping[str, Any]) -> int:
    return int(cfg.get("eval", {}).get("batch_size", 256))


def predict(model: nn.Module, x: Tensor, cfg: Mapping[str, Any]) -> Tensor:
    """Predicted labels [N] (on x's device) for x [N, C, H, W] (:func:`sparsemask.eval.predict`)."""
    from sparsemask import eval as ev

    return ev.predict(model, x, _eval_batch_size(cfg))


def accuracy(model: nn.Module, x: Tensor, y: Tensor, cfg: Mapping[str, Any]) -> float:
    """Fraction of x classified as y (nan for no images; :func:`sparsemask.eval.accuracy`)."""
    from sparsemask import eval as ev

    return ev.accuracy(model, x, y, _eval_batch_size(cfg))


def success_defense_rate(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, cfg: Mapping[str, Any]) -> float:
    """Seed 001's metric (:func:`sparsemask.attacks.success_defense_rate`): accuracy on
    adversarial examples whose clean originals ``model`` classifies correctly."""
    from sparsemask import attacks

    return attacks.success_defense_rate(model, x, x_adv, y, batch_size=_eval_batch_size(cfg))


def make_attack(model: nn.Module, params: Mapping[str, Any],
                cfg: Optional[Mapping[str, Any]] = None) -> Callable[..., Tensor]:
    """An attack from a config entry (:func:`sparsemask.attacks.make_attack`), with the
    run's ``seed`` and ``progress`` setting where the attack takes them."""
    from sparsemask import attacks

    if cfg is None:
        return attacks.make_attack(model, params)
    return attacks.make_attack(model, params, seed=int(cfg.get("seed", 0)), progress=bool(cfg.get("progress", False)))


def run_attack(attack: Callable[..., Tensor], x: Tensor, y: Tensor, cfg: Mapping[str, Any],
               targets: Optional[Tensor] = None, desc: str = "attack") -> Tensor:
    """``attack(x, y)`` in batches on the configured device (:func:`sparsemask.eval.run_attack`); CPU result."""
    from sparsemask import eval as ev

    bs = cfg.get("eval", {}).get("attack_batch_size", _eval_batch_size(cfg))
    return ev.run_attack(attack, x.cpu(), y.cpu(), batch_size=int(bs), device=resolve_device(cfg), targets=targets,
                         progress=bool(cfg.get("progress", False)), desc=desc)
