"""Shared machinery of the experiments, in one import: configuration (:mod:`.config`), model
specs and training (:mod:`.specs`), evaluation adapters (:mod:`.evaluation`), reporting
(:mod:`.report`) and the helpers below.

Every experiment module (``seed001_transfer`` …) defines ``NAME``, ``DESCRIPTION``,
``DEFAULTS`` (per-scale overrides of :data:`SCALES`) and ``run(cfg, out) -> dict``. The
runner (:func:`sparsemask.experiments.run_experiment`) resolves the configuration as

    SCALES[scale]  <-  module.DEFAULTS["all"]  <-  module.DEFAULTS[scale]  <-  config file  <-  --set

and hands it to ``run``; everything in the resolved configuration is written to the output
JSON, so a result file alone says how it was made.

Scales:
  ``smoke``  scikit-learn's shipped 8x8 digits, tiny models, 1-2 epochs: seconds (CI).
  ``small``  Fashion-MNIST (28x28, from /usr/share/datasets/fashion-mnist) on CPU: minutes.
  ``paper``  the seed's settings: CIFAR-10 from ``data.root`` (the user's copy), GPU, full
             training schedule. Hours to days.

ε and σ in configs are on the seeds' 0-255 pixel scale (``eps255``); they are divided by 255
exactly once, in :func:`make_attack` / the corruption helpers.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from torch import nn

from .config import *  # noqa: F401,F403
from .config import __all__ as _config_names
from .evaluation import *  # noqa: F401,F403
from .evaluation import __all__ as _evaluation_names
from .evaluation import make_attack, predict, run_attack
from .report import *  # noqa: F401,F403
from .report import __all__ as _report_names
from .report import ResultWriter, save_adversarial_grid
from .specs import *  # noqa: F401,F403
from .specs import __all__ as _specs_names
from .specs import Data, ModelSpec, arch_name, builder_kwargs, model_from_spec

__all__ = [*_config_names, *_specs_names, *_evaluation_names, *_report_names, "variants", "model_key",
           "adversarial_grid", "attack_text"]


# --------------------------------------------------------------------------- experiment helpers

def variants(arch: str, keeps: Sequence[float], seed: int = 0, where: str = "bottom", kind: str = "neuron",
             standard: bool = True, cfg: Optional[Mapping[str, Any]] = None, **defective_extra) -> list[ModelSpec]:
    """The standard ``arch`` (if ``standard``) followed by one defective variant per keep.

    With ``cfg`` the standard model is labelled with its configured size (e.g. ``ResNet-8``).
    """
    label = arch_name(arch, builder_kwargs({"arch": arch}, cfg)) if cfg is not None else None
    specs = [ModelSpec(arch=arch, defective=None, seed=seed, label=label)] if standard else []
    for k, keep in enumerate(keeps):
        specs.append(ModelSpec(arch=arch, seed=seed + 1 + k,
                               defective=dict(keep=keep, where=where, kind=kind, **defective_extra)))
    return specs


def model_key(spec: Mapping[str, Any]) -> str:
    """A unique key of a model in result JSON: ``resnet18/0.5-Bottom`` (plus ``#seed`` if labelled)."""
    spec = ModelSpec(spec)
    return f"{spec['arch']}/{spec.label}"


def adversarial_grid(writer: "ResultWriter", model: nn.Module, data: Data, cfg: Mapping[str, Any],
                     title: str, filename: str = "adversarial_grid.png") -> None:
    """White-box adversarial examples of ``model`` on the first test images, as a PNG grid.

    Attack from ``cfg["grid_attack"]`` (default: seed 001's Figure 1 attack, MI-FGSM ε16).
    """
    from sparsemask import attacks

    params = dict(cfg.get("grid_attack") or {"name": "mifgsm", "eps255": 16, "steps": 10})
    n = int(cfg.get("grid_images", 8))
    x, y = data.x_test[:n], data.y_test[:n]
    x_adv = run_attack(make_attack(model, params, cfg), x, y, cfg, desc="grid")
    label = attacks.attack_label(params)
    save_adversarial_grid(writer.figure(filename, f"{label} white-box examples: {title}"),
                          x, x_adv, y, predict(model, x, cfg), predict(model, x_adv, cfg), n=n,
                          title=f"{attack_text(params, label)} white-box adversarial examples on {title}\n"
                                f"{writer.subtitle(data)}", classes=data.classes)


def attack_text(params: Mapping[str, Any], label: Optional[str] = None) -> str:
    """``PGD16 (ε = 16/255, L∞)``: an attack's seed-style label with its budget spelled out."""
    from sparsemask import attacks

    label = label or attacks.attack_label(params)
    norm = str(params.get("norm", "inf"))
    norm = "L∞" if norm == "inf" else "L" + norm
    if "eps255" in params:
        return f"{label} (ε = {params['eps255']:g}/255, {norm})"
    if "eps" in params:  # the [0, 1] pixel scale (L2 budgets)
        return f"{label} (ε = {params['eps']:g}, {norm}, pixels in [0, 1])"
    return label


def build_model(spec: Mapping[str, Any], cfg: Mapping[str, Any], data: Data) -> nn.Module:
    """Deprecated name of :func:`model_from_spec` (``sparsemask.models.build`` builds by name)."""
    import warnings

    warnings.warn("experiments.common.build_model is deprecated; use model_from_spec", DeprecationWarning,
                  stacklevel=2)
    return model_from_spec(spec, cfg, data)
