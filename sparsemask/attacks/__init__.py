"""Adversarial attacks, corruptions and robustness metrics in plain PyTorch.

Every attack is built as ``Attack(model, eps=..., norm="inf"|"2"|"1", ...)`` and called as
``attack(x, y, targets=None) -> x_adv`` with x [N, ...] in [0, 1]. The model's train/eval mode
and randomness are left exactly as the caller set them (existing libraries call
``model.eval()``, which would switch randomized defenses off); random draws take ``seed=`` /
``generator=``; the caller's tensors are never modified. ε on the seeds' 0-255 scale:
:func:`eps255`. Every attack is registered by name (:func:`attack_names`,
:func:`make_attack` from a config entry). See docs/attacks.md.
"""
from __future__ import annotations

from ._common import Attack, eps255, project
from .registry import (AttackSpec, attack_label, attack_names, get_attack, make_attack, register_attack,
                       unregister_attack)

# The registered attacks, in the order the CLI lists them (each file registers its classes).
from .fgsm import FGSM  # noqa: E402  (isort: the order is the registry's)
from .pgd import BIM, PGD  # noqa: E402
from .mifgsm import MIFGSM  # noqa: E402
from .cw import CW  # noqa: E402
from .deepfool import DeepFool  # noqa: E402
from .boundary import Boundary, boundary_score  # noqa: E402
from .apgd import APGD, APGDCE, APGDDLR, APGDT  # noqa: E402
from .square import Square  # noqa: E402

from .corruptions import gaussian_noise_255, gaussian_noise_l2, jpeg, patch_shuffle  # noqa: E402
from .eot import EOT, EOTModel  # noqa: E402
from .metrics import (accuracy, attack_success_rate, fooled_mask, perturbation_norms, predict,  # noqa: E402
                      prediction_stability, robust_accuracy, success_defense_rate)
from .transfer import Ensemble, MultiSurrogate, fooled  # noqa: E402

__all__ = [
    "Attack", "eps255", "project",
    "AttackSpec", "register_attack", "unregister_attack", "attack_names", "get_attack", "make_attack", "attack_label",
    "FGSM", "PGD", "BIM", "MIFGSM", "CW", "DeepFool", "Boundary", "boundary_score", "APGD", "APGDCE", "APGDDLR", "APGDT", "Square",
    "EOT", "EOTModel", "Ensemble", "MultiSurrogate", "fooled",
    "gaussian_noise_255", "gaussian_noise_l2", "jpeg", "patch_shuffle",
    "accuracy", "predict", "attack_success_rate", "success_defense_rate", "robust_accuracy",
    "perturbation_norms", "prediction_stability", "fooled_mask",
]
