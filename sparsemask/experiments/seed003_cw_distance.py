"""Seed 003 Tables 4 and 5: targeted C&W-L2 distances (mean ± std), single model and multi-n.

For each model family (standard, RS-1, defective) the targeted C&W-L2 attack (random target
class ≠ label, seeded) is run on one model (Table 4) and on the logit ensemble of ``multi``
independently trained models of the family (Table 5, the seed's "Multi 8"). Larger
distances mean a harder-to-attack model; success rates are reported next to them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .common import (ModelSpec, ResultWriter, fmt_pct, get_model, load_data, make_attack, markdown_table, predict, run_attack,
                     save_adversarial_grid)
from .seed003_common import family_specs

NAME = "003-cw-distance"
DESCRIPTION = "seed 003 Tables 4/5: targeted CW-L2 distance (mean±std), single model and multi-n ensembles"

DEFAULTS: dict[str, Any] = {
    "all": {"arch": None, "keep": 0.1, "spiking_p": 0.8, "multi": 8, "n_images": 100,
            "cw": {"name": "cw", "kappa": 0, "steps": 1000, "binary_steps": 9, "c": 0.01}},
    "smoke": {"multi": 2, "n_images": 16, "cw": {"steps": 20, "binary_steps": 1, "c": 10.0}},
    # small: the seed's own MNIST CNN (Carlini & Wagner's), on Fashion-MNIST
    "small": {"arch": "cw_mnist", "multi": 4, "cw": {"steps": 200, "binary_steps": 5}},
}


def member_specs(fam: ModelSpec, cfg: Mapping[str, Any]) -> list[ModelSpec]:
    """The ``multi`` independently trained models of one family (the first is the single model)."""
    return [fam] + [ModelSpec(fam, seed=100 + j) for j in range(cfg["multi"] - 1)]


def model_specs(cfg: Mapping[str, Any], input_size: int) -> list[ModelSpec]:
    """Every model :func:`run` trains, family by family (used by ``--dry-run``)."""
    return [spec for fam in family_specs(cfg) for spec in member_specs(fam, cfg)]


def run(cfg: Mapping[str, Any], out: str | Path) -> dict:
    from sparsemask.nn import Ensemble

    writer = ResultWriter(out, NAME, cfg, DESCRIPTION)
    data = load_data(cfg)
    x, y = data.x_test[:cfg["n_images"]], data.y_test[:cfg["n_images"]]
    g = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    targets = (y + torch.randint(1, data.num_classes, y.shape, generator=g)) % data.num_classes

    def distances(model, tag):
        x_adv = run_attack(make_attack(model, cfg["cw"], cfg), x, y, cfg, targets=targets, desc=tag)
        ok = predict(model, x_adv, cfg) == targets
        d = (x_adv - x).flatten(1).norm(dim=1)[ok]
        return {"mean": float(d.mean()) if len(d) else float("nan"),
                "std": float(d.std()) if len(d) > 1 else 0.0, "success_rate": float(ok.float().mean())}, x_adv

    single, multi = {}, {}
    for fam in family_specs(cfg):
        model = get_model(fam, cfg, data, writer.models)
        single[fam.label], x_adv = distances(model, fam.label)
        if fam.get("defective"):
            save_adversarial_grid(writer.figure("adversarial_grid.png", "targeted CW-L2 on the defective model"),
                                  x, x_adv, y, predict(model, x, cfg), predict(model, x_adv, cfg), classes=data.classes,
                                  targets=targets,
                                  title=f"Targeted CW-L2 adversarial examples on {fam.label}\n{writer.subtitle(data)}")
        members = [model] + [get_model(s, cfg, data, writer.models) for s in member_specs(fam, cfg)[1:]]
        multi[fam.label], _ = distances(Ensemble(members, combine="logits").eval(), f"multi {fam.label}")

    def table(res):
        return markdown_table(["Model", "L2 (mean ± std)", "Success"],
                              [[k, f"{v['mean']:.3f} ± {v['std']:.3f}", fmt_pct(v["success_rate"])] for k, v in res.items()])

    writer.table("Table 4 layout: C&W targeted L2, single model", table(single))
    writer.table(f"Table 5 layout: C&W L2, multi-{cfg['multi']}", table(multi))
    writer.numbers.update({"single": single, f"multi_{cfg['multi']}": multi, "n_images": len(y)})
    return writer.finish(data)
