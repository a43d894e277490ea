"""Adaptive-attack verdicts: how much of a defense's robustness survives an attack that knows it.

Every experiment with an adaptive row (EOT-PGD against a randomized defense, many-restart PGD
against a deterministic one) reports, next to the numbers, the drop from the non-adaptive
attack and whether the defense still beats a *reference* (the undefended model under the same
attack) by more than ``margin``. The sentences are computed from the numbers, never written by
hand, so a results.md says "its robustness vanishes" only where the numbers say so.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from .report import fmt_pct

__all__ = ["adaptive_verdict", "VANISH_MARGIN"]

# A defense whose adaptive-attack number is within this of the undefended model's has no
# robustness left worth the name (2 points: about the sampling error of 500 images at 50%).
VANISH_MARGIN = 0.02


def adaptive_verdict(defense: str, non_adaptive_label: str, non_adaptive: Optional[float], adaptive_label: str,
                     adaptive: Optional[float], reference: Optional[float] = None, reference_label: str = "",
                     metric: str = "accuracy", margin: float = VANISH_MARGIN) -> tuple[str, dict[str, Any]]:
    """(a results.md line, its numbers) for one defense under one adaptive attack.

    ``non_adaptive`` / ``adaptive``: the defense's metric (higher = more robust) under the
    non-adaptive attack the seed ran and under the adaptive one, on the same images.
    ``reference``: the undefended model's metric under the same adaptive (white-box) attack;
    ``vanishes`` is True when the defense is within ``margin`` of it (None without a reference).
    """
    def ok(v):
        return v is not None and not (isinstance(v, float) and math.isnan(v))

    drop = non_adaptive - adaptive if ok(non_adaptive) and ok(adaptive) else None
    numbers: dict[str, Any] = {"non_adaptive": non_adaptive, "adaptive": adaptive, "drop": drop,
                               "reference": reference, "margin": margin, "vanishes": None}
    text = (f"{defense}: {metric} {fmt_pct(non_adaptive)} under {non_adaptive_label} (non-adaptive), "
            f"{fmt_pct(adaptive)} under {adaptive_label}")
    text += f" (drop {100 * drop:+.2f} points)." if drop is not None else "."
    if ok(reference) and ok(adaptive):
        lead = adaptive - reference
        numbers["vanishes"] = bool(lead <= margin)
        if numbers["vanishes"]:
            text += (f" Under the adaptive attack it leads {reference_label} ({fmt_pct(reference)}) by "
                     f"{100 * lead:+.2f} points (at most {100 * margin:g}): **its robustness vanishes**.")
        else:
            text += (f" Under the adaptive attack it still leads {reference_label} ({fmt_pct(reference)}) by "
                     f"{100 * lead:+.2f} points.")
    return text, numbers
