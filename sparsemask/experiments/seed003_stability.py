"""Seed 003 Figures 1 and 2: prediction stability under L2-scaled Gaussian noise and JPEG.

Stability = fraction of test predictions unchanged by the corruption (mean over ``repeats``
noise draws), per model family (standard, RS-1, defective), as a function of the noise's L2
norm (Figure 1) and of the JPEG quality (Figure 2).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .common import ModelSpec, ResultWriter, fmt_pct, get_model, load_data, markdown_table, plot_curves, save_adversarial_grid, predict
from .seed003_common import family_specs

NAME = "003-stability"
DESCRIPTION = "seed 003 Figures 1/2: prediction stability vs L2 Gaussian noise and JPEG quality"

DEFAULTS: dict[str, Any] = {
    "all": {"arch": None, "keep": 0.1, "spiking_p": 0.8, "n_images": 1000, "repeats": 5,
            "l2_levels": [0.5, 1, 2, 3, 4, 5], "jpeg_qualities": [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]},
    "smoke": {"n_images": 64, "repeats": 2, "l2_levels": [0.5, 2, 4], "jpeg_qualities": [10, 50, 90]},
}


def model_specs(cfg: Mapping[str, Any], input_size: int) -> list[ModelSpec]:
    """The three families :func:`run` trains (used by ``--dry-run``)."""
    return family_specs(cfg)


def run(cfg: Mapping[str, Any], out: str | Path) -> dict:
    from sparsemask import attacks

    writer = ResultWriter(out, NAME, cfg, DESCRIPTION)
    data = load_data(cfg)
    x = data.x_test[:cfg["n_images"]]
    bs = cfg["eval"]["batch_size"]
    models = [(f, get_model(f, cfg, data, writer.models)) for f in model_specs(cfg, data.input_size)]
    seed = int(cfg.get("seed", 0))
    noise, jpeg = {}, {}
    for fam, m in models:
        noise[fam.label] = []
        for i, l2 in enumerate(cfg["l2_levels"]):
            draws = iter(range(10 ** 6))
            noise[fam.label].append(attacks.prediction_stability(
                m, x, lambda z, l2=l2, i=i: attacks.gaussian_noise_l2(z, l2, seed=seed * 10 ** 6 + 1000 * i + next(draws)),
                repeats=cfg["repeats"], batch_size=bs))
        jpeg[fam.label] = [attacks.prediction_stability(m, x, lambda z, q=q: attacks.jpeg(z, int(q)), batch_size=bs)
                           for q in cfg["jpeg_qualities"]]
    plot_curves(writer.figure("stability_noise.png", "Figure 1: stability vs L2 Gaussian noise"), cfg["l2_levels"],
                noise, "Gaussian noise L2 norm per image (pixels in [0, 1])", "prediction stability (unchanged)",
                "Prediction stability under Gaussian noise", subtitle=writer.subtitle(data, f"{len(x)} test images"),
                legend_title="model", percent=True)
    plot_curves(writer.figure("stability_jpeg.png", "Figure 2: stability vs JPEG quality"), cfg["jpeg_qualities"],
                jpeg, "JPEG quality (100 = best)", "prediction stability (unchanged)",
                "Prediction stability under JPEG compression", subtitle=writer.subtitle(data, f"{len(x)} test images"),
                legend_title="model", percent=True)
    xn = attacks.gaussian_noise_l2(x[:8], cfg["l2_levels"][-1], seed=seed)
    save_adversarial_grid(writer.figure("noise_grid.png", f"L2 = {cfg['l2_levels'][-1]} noise examples"), x[:8], xn,
                          data.y_test[:8], predict(models[-1][1], x[:8], cfg), predict(models[-1][1], xn, cfg),
                          classes=data.classes, row_names=("clean", f"noise L2 = {cfg['l2_levels'][-1]:g}"),
                          difference="noise", title=f"Gaussian noise (not an attack), predictions of "
                                                    f"{models[-1][0].label}\n{writer.subtitle(data)}")
    writer.table("Figure 1 data: stability vs L2 noise", markdown_table(
        ["Model", *[f"L2={v:g}" for v in cfg["l2_levels"]]], [[k, *map(fmt_pct, v)] for k, v in noise.items()]))
    writer.table("Figure 2 data: stability vs JPEG quality", markdown_table(
        ["Model", *[f"q={q}" for q in cfg["jpeg_qualities"]]], [[k, *map(fmt_pct, v)] for k, v in jpeg.items()]))
    writer.numbers.update({"l2_levels": cfg["l2_levels"], "noise_stability": noise,
                           "jpeg_qualities": cfg["jpeg_qualities"], "jpeg_stability": jpeg, "n_images": len(x)})
    return writer.finish(data)
