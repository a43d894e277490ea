"""Seed 001 Figure 5: accuracy under additive Gaussian noise, defective vs standard CNN.

Noise x ~ N(0, σ²) on the 0-255 scale, clipped to [-2σ, 2σ], added to every pixel; the
test images are those that every tested model classifies correctly (so every curve starts
at 100%). Each σ is averaged over ``draws`` noise draws (seeded).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .common import (ModelSpec, ResultWriter, adversarial_grid, fmt_pct, get_model, load_data, markdown_table,
                     model_key, plot_curves, predict, variants)

NAME = "001-gaussian"
DESCRIPTION = "seed 001 Figure 5: accuracy vs additive Gaussian noise sigma (0-255), standard vs p-Bottom"

DEFAULTS: dict[str, Any] = {
    "all": {
        "archs": None,  # None: the configured model.arch
        "keeps": [0.5, 0.3, 0.1],
        "sigmas": [1, 2, 4, 8, 12, 16, 20, 24, 28, 32],
        "draws": 1,
    },
    "smoke": {"keeps": [0.1], "sigmas": [4, 16, 32], "grid_attack": {"name": "mifgsm", "eps255": 16, "steps": 3}},
    "small": {"sigmas": [1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 48, 64], "draws": 2},
}


def add_noise(x: torch.Tensor, sigma255: float, seed: int) -> torch.Tensor:
    """x [N, C, H, W] in [0, 1] plus seed 001's clipped Gaussian noise (via sparsemask.attacks)."""
    from sparsemask import attacks

    return attacks.gaussian_noise_255(x, sigma255, seed=seed)


def model_specs(cfg: Mapping[str, Any], input_size: int) -> list[ModelSpec]:
    """Every model :func:`run` trains: each arch standard and p-Bottom (also used by ``--dry-run``)."""
    return [spec for arch in cfg["archs"] or [cfg["model"]["arch"]]
            for spec in variants(arch, cfg["keeps"], seed=int(cfg.get("seed", 0)), cfg=cfg)]


def run(cfg: Mapping[str, Any], out: str | Path) -> dict:
    writer = ResultWriter(out, NAME, cfg, DESCRIPTION)
    data = load_data(cfg)
    models = [(spec, get_model(spec, cfg, data, writer.models)) for spec in model_specs(cfg, data.input_size)]
    x, y = data.x_test, data.y_test
    correct = torch.ones(len(y), dtype=torch.bool)
    for _, model in models:
        correct &= predict(model, x, cfg) == y
    x, y = x[correct], y[correct]
    writer.note(f"{len(y)} of {len(data.y_test)} test images are classified correctly by all "
                f"{len(models)} models; accuracies below are on those.")

    sigmas = [float(s) for s in cfg["sigmas"]]
    acc = {model_key(spec): [] for spec, _ in models}
    for i, sigma in enumerate(sigmas):
        noisy = [add_noise(x, sigma, seed=int(cfg.get("seed", 0)) * 1000 + 17 * i + d) for d in range(cfg["draws"])]
        for spec, model in models:
            hits = [float((predict(model, xn, cfg) == y).float().mean()) if len(y) else float("nan") for xn in noisy]
            acc[model_key(spec)].append(sum(hits) / len(hits))
    writer.numbers.update({"sigmas_255": sigmas, "accuracy": acc, "n_images": int(len(y)),
                           "clean_accuracy": {e["label"]: e["clean_accuracy"] for e in writer.models}})

    labels = {model_key(spec): spec.label for spec, _ in models}
    header = ["Model", *[f"σ={s:g}" for s in sigmas]]
    writer.table("Figure 5 data: accuracy under additive Gaussian noise", markdown_table(
        header, [[labels[k], *map(fmt_pct, v)] for k, v in acc.items()],
        "Accuracy on test images every model classifies correctly, noise N(0, σ²) on the 0-255 scale "
        "clipped to [-2σ, 2σ]."))
    plot_curves(writer.figure("gaussian_noise.png", "Figure 5: accuracy vs Gaussian noise σ"), sigmas,
                {labels[k]: v for k, v in acc.items()}, xlabel="noise σ (0-255 pixel scale)",
                ylabel="accuracy (on images all models get right)", title="Accuracy under additive Gaussian noise",
                subtitle=writer.subtitle(data, f"{len(y)} test images"), legend_title="model", percent=True)
    defective = [(s, m) for s, m in models if s.get("defective")]
    if defective:
        adversarial_grid(writer, defective[-1][1], data, cfg, title=defective[-1][0].label)
    return writer.finish(data)
