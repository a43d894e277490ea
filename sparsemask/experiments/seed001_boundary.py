"""Seed 001 Table 7: the decision-based Boundary attack, score S(M).

S(M) = median over images of ||P||²/N with P the final Boundary perturbation (images in
[0, 1]); larger is more robust. Models: standard, standard + label smoothing (ε = 0.1, a
gradient-masking baseline), and the defective model (keep 0.1 on the bottom blocks).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .common import (ModelSpec, ResultWriter, arch_name, builder_kwargs, get_model, load_data, markdown_table,
                     predict, resolve_device, save_adversarial_grid)

NAME = "001-boundary"
DESCRIPTION = "seed 001 Table 7: Boundary attack score S(M), standard vs label smoothing vs defective"

DEFAULTS: dict[str, Any] = {
    "all": {"arch": None, "keep": 0.1, "label_smoothing": 0.1, "n_images": 500,
            "boundary": {"steps": 1000, "spherical_step": 0.01, "source_step": 0.01}},
    "smoke": {"n_images": 8, "boundary": {"steps": 30}},
    "small": {"n_images": 100, "boundary": {"steps": 300}},
}


def model_specs(cfg: Mapping[str, Any], input_size: int) -> list[ModelSpec]:
    """Standard, standard + label smoothing, defective: the models :func:`run` trains (and ``--dry-run``)."""
    arch = cfg["arch"] or cfg["model"]["arch"]
    return [ModelSpec(arch=arch, defective=None, seed=0, label="Standard CNN"),
            ModelSpec(arch=arch, defective=None, seed=0, label="Standard CNN + LS",
                      label_smoothing=cfg["label_smoothing"]),
            ModelSpec(arch=arch, defective={"keep": cfg["keep"], "where": "bottom"}, seed=1, label="Defective CNN")]


def run(cfg: Mapping[str, Any], out: str | Path) -> dict:
    from sparsemask import attacks

    writer = ResultWriter(out, NAME, cfg, DESCRIPTION)
    data = load_data(cfg)
    arch = cfg["arch"] or cfg["model"]["arch"]
    name = arch_name(arch, builder_kwargs({"arch": arch}, cfg))
    specs = model_specs(cfg, data.input_size)
    x, y = data.x_test[:cfg["n_images"]], data.y_test[:cfg["n_images"]]
    device = resolve_device(cfg)
    scores, medians = {}, {}
    for spec in specs:
        model = get_model(spec, cfg, data, writer.models)
        attack = attacks.Boundary(model, seed=int(cfg.get("seed", 0)), progress=bool(cfg.get("progress")),
                                  **cfg["boundary"])
        x_adv, dist = attack.trace(x.to(device), y.to(device))
        x_adv = x_adv.cpu()
        success = predict(model, x_adv, cfg) != y
        scores[spec.label] = attacks.boundary_score(x, x_adv, success)
        medians[spec.label] = {"success_rate": float(success.float().mean()),
                               "median_l2": float(dist[-1].median())}
        if spec.get("defective"):
            save_adversarial_grid(writer.figure("adversarial_grid.png", "Boundary adversarial examples, defective"),
                                  x, x_adv, y, predict(model, x, cfg), predict(model, x_adv, cfg), classes=data.classes,
                                  title=f"Boundary-attack adversarial examples on {spec.label}\n{writer.subtitle(data)}")
    writer.numbers.update({"S(M)": scores, "details": medians, "n_images": len(y)})
    writer.table("Table 7 layout: S(M)", markdown_table(
        ["Model", "S(M)"], [[k, f"{v:.2g}"] for k, v in scores.items()],
        f"{name}; median over {len(y)} images of ||P||²/N (images in [0, 1]); larger is more robust."))
    return writer.finish(data)
