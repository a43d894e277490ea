"""Transfer attacks: an ensemble of surrogates, and seed 003's multi-surrogate attack with validation."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch
from torch import nn

from ..nn.ensemble import Ensemble  # the surrogate ensemble (mean or weighted logits)
from ._common import Attack, check_inputs, check_nonneg, is_adversarial


@torch.no_grad()
def fooled(models: Sequence[Callable], x_adv: torch.Tensor, y: torch.Tensor,
           targets: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bool [len(models), N]: whether each model is fooled by each example."""
    return torch.stack([is_adversarial(m(x_adv), y, targets) for m in models])


class MultiSurrogate:
    """Seed 003's translucent-box *multi-surrogate attack with validation*.

    ``t`` generator surrogates are attacked together (an :class:`Ensemble`); each of the ``v``
    validation models is in turn held out as the target while the other ``v - 1`` validate:
    an example counts for that target only if it fools at least ``k`` of them. The paper uses
    t = v = 8, k = 5 ("Multi 8 & passing 5/7 validation").

    Args:
        attack_factory: model -> attack, e.g. ``lambda m: CW(m, kappa=20)``.
        generators: the t surrogates attacked. validators: the v surrogates validating.
        k: validation threshold, 0 <= k <= v - 1.
    Call: ``ms(x, y, targets=None) -> x_adv``. :meth:`evaluate` gives the transfer rates.
    """

    def __init__(self, attack_factory: Callable[[nn.Module], Attack], generators: Sequence[nn.Module],
                 validators: Sequence[nn.Module], k: int = 5):
        if len(generators) == 0:
            raise ValueError("generators must hold at least one model")
        if len(validators) < 2:
            raise ValueError(f"validators must hold at least two models (leave-one-out), got {len(validators)}")
        check_nonneg("k", k, integer=True)
        if k > len(validators) - 1:
            raise ValueError(f"k must be <= v - 1 = {len(validators) - 1}, got {k}")
        self.generators = list(generators)
        self.validators = list(validators)
        self.k = k
        self.attack = attack_factory(Ensemble(self.generators))

    def __call__(self, x, y, targets=None) -> torch.Tensor:
        return self.attack(x, y, targets)

    def evaluate(self, x, y, targets=None, x_adv: Optional[torch.Tensor] = None,
                 target_model: Optional[nn.Module] = None) -> Dict[str, object]:
        """Leave-one-out transfer evaluation.

        Returns a dict: ``x_adv``; ``fooled`` bool [v, N]; ``passed`` bool [v, N] (example
        validated for held-out j); ``transfer_rate`` float [v] (fooled_j among passed_j, nan if
        none passed); ``mean_transfer_rate``; ``pass_rate`` (mean fraction passing). With
        ``target_model`` also ``target_passed`` (fools >= k of all v validators) and
        ``target_transfer_rate`` on that model.
        """
        check_inputs(x, y, targets)
        if x_adv is None:
            x_adv = self(x, y, targets)
        f = fooled(self.validators, x_adv, y, targets)
        total = f.sum(0, keepdim=True)
        passed = (total - f.to(total.dtype)) >= self.k
        hits = (f & passed).sum(1).double()
        n_pass = passed.sum(1).double()
        rate = torch.where(n_pass > 0, hits / n_pass.clamp_min(1), torch.full_like(hits, float("nan")))
        out = dict(x_adv=x_adv, fooled=f, passed=passed, transfer_rate=rate,
                   mean_transfer_rate=float(rate[~rate.isnan()].mean()) if (~rate.isnan()).any() else float("nan"),
                   pass_rate=float(passed.double().mean()))
        if target_model is not None:
            tp = total[0] >= self.k
            tf = fooled([target_model], x_adv, y, targets)[0]
            out["target_passed"] = tp
            out["target_transfer_rate"] = float((tf & tp).sum() / tp.sum()) if tp.any() else float("nan")
        return out
