"""Seed 001 Table 1: accuracy on k x k patch-shuffled images, standard vs defective.

Images both models classify correctly with more than ``min_confidence`` are split into a
k x k grid of patches that are randomly relocated (texture kept, shape destroyed). A model
that relies on shape (the defective CNN, per the seed) loses more accuracy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .common import (ModelSpec, ResultWriter, fmt_pct, get_model, load_data, markdown_table, predict,
                     save_adversarial_grid)

NAME = "001-patch-shuffle"
DESCRIPTION = "seed 001 Table 1: accuracy on k x k patch-shuffled images, standard vs defective"

DEFAULTS: dict[str, Any] = {
    "all": {"arch": None, "keep": 0.1, "ks": [2, 4, 8], "min_confidence": 0.99, "n_images": 4000},
    "smoke": {"min_confidence": 0.5},
    "small": {"ks": [2, 4, 7]},  # 28x28: k must divide 28
}


@torch.no_grad()
def confidence(model, x, y, cfg) -> torch.Tensor:
    """Softmax probability of the true class, [N]."""
    bs = cfg["eval"]["batch_size"]
    return torch.cat([model(x[i:i + bs]).softmax(1).gather(1, y[i:i + bs, None])[:, 0] for i in range(0, len(x), bs)])


def model_specs(cfg: Mapping[str, Any], input_size: int) -> list[ModelSpec]:
    """Standard and defective: the models :func:`run` trains (and ``--dry-run`` builds)."""
    arch = cfg["arch"] or cfg["model"]["arch"]
    return [ModelSpec(arch=arch, defective=None, seed=0, label="Standard CNN"),
            ModelSpec(arch=arch, defective={"keep": cfg["keep"], "where": "bottom"}, seed=1, label="Defective CNN")]


def run(cfg: Mapping[str, Any], out: str | Path) -> dict:
    from sparsemask import attacks

    writer = ResultWriter(out, NAME, cfg, DESCRIPTION)
    data = load_data(cfg)
    models = [(s, get_model(s, cfg, data, writer.models)) for s in model_specs(cfg, data.input_size)]
    x, y = data.x_test, data.y_test
    keep = torch.ones(len(y), dtype=torch.bool)
    for _, m in models:
        keep &= confidence(m, x, y, cfg) > cfg["min_confidence"]
    x, y = x[keep][:cfg["n_images"]], y[keep][:cfg["n_images"]]
    writer.note(f"{len(y)} test images classified correctly with confidence > {cfg['min_confidence']} by both models.")
    size = x.shape[-1]
    ks = [k for k in cfg["ks"] if size % k == 0]
    if len(ks) < len(cfg["ks"]):
        writer.note(f"k values not dividing the image size {size} skipped: {[k for k in cfg['ks'] if size % k]}")
    acc = {s.label: {} for s, _ in models}
    for k in ks:
        xs = attacks.patch_shuffle(x, k, seed=int(cfg.get("seed", 0)) + k)
        for spec, m in models:
            acc[spec.label][f"{k}x{k}"] = float((predict(m, xs, cfg) == y).float().mean()) if len(y) else float("nan")
        if k == ks[-1] and len(y):
            save_adversarial_grid(writer.figure("patch_shuffle_grid.png", f"{k}x{k} patch-shuffled images"),
                                  x, xs, y, predict(models[1][1], x, cfg), predict(models[1][1], xs, cfg),
                                  classes=data.classes, row_names=("original", f"{k}x{k} patch-shuffled"),
                                  difference=None, title=f"{k}x{k} patch-shuffled images (not adversarial), "
                                  f"predictions of the {models[1][0].label}\n{writer.subtitle(data)}")
    cols = [f"{k}x{k}" for k in ks]
    writer.table("Table 1 layout: patch shuffle", markdown_table(
        ["Model", *cols], [[label, *(fmt_pct(v[c]) for c in cols)] for label, v in acc.items()]))
    writer.numbers.update({"accuracy": acc, "n_images": len(y)})
    return writer.finish(data)
