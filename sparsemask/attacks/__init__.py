"""Adversarial attacks, corruptions and robustness metrics in plain PyTorch.

Every attack is built as ``Attack(model, eps=..., norm="inf"|"2"|"1", ...)`` and called as
``attack(x, y, targets=None) -> x_adv`` with x [N, ...] in [0, 1]. The model's train/eval mode
and randomness are left exactly as the caller set them (existing libraries call
``model.eval()``, which would switch randomized defenses off); random draws take ``seed=`` /
``generator=``; the caller's tensors are never modified. ε on the seeds' 0-255 scale:
:func:`eps255`. See docs/attacks.md.
"""
from __future__ import annotations

from ._common import Attack, eps255, project
from .boundary import Boundary, boundary_score
from .corruptions import gaussian_noise_255, gaussian_noise_l2, jpeg, patch_shuffle
from .cw import CW
from .deepfool import DeepFool
from .eot import EOT, EOTModel
from .fgsm import FGSM
from .metrics import (accuracy, attack_success_rate, fooled_mask, perturbation_norms, predict,
                      prediction_stability, robust_accuracy, success_defense_rate)
from .mifgsm import MIFGSM
from .pgd import BIM, PGD
from .transfer import Ensemble, MultiSurrogate, fooled

__all__ = [
    "Attack", "eps255", "project",
    "FGSM", "PGD", "BIM", "MIFGSM", "CW", "DeepFool", "Boundary", "boundary_score",
    "EOT", "EOTModel", "Ensemble", "MultiSurrogate", "fooled",
    "gaussian_noise_255", "gaussian_noise_l2", "jpeg", "patch_shuffle",
    "accuracy", "predict", "attack_success_rate", "success_defense_rate", "robust_accuracy",
    "perturbation_norms", "prediction_stability", "fooled_mask",
]
