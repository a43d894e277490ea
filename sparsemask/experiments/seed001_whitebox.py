"""Seed 001 Tables 8 and 9: white-box and gray-box attacks on defective CNNs.

Table 8: white-box FGSM1/2/4 and PGD2/4/8 (4, 6, 10 steps of 1/255) against the standard
model and p-Bottom models. Table 9 (gray-box): PGD16 examples crafted on a p-Bottom model
are tested on a p'-Bottom model with different initialisation (same masks' keep, new weights
and masks) and on p'-Bottom_DIF (same weights' seed, different sampling of the defective
neurons). Numbers are success defense rates.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..attacks import attack_label
from .common import (ModelSpec, ResultWriter, adversarial_grid, fmt_pct, get_model, load_data,
                     make_attack, markdown_table, run_attack, success_defense_rate, variants)

NAME = "001-whitebox"
DESCRIPTION = "seed 001 Tables 8/9: white-box FGSM/PGD and gray-box (other init, DIF masks) success defense rates"

DEFAULTS: dict[str, Any] = {
    "all": {
        "arch": None,
        "keeps": [0.5, 0.3],
        "whitebox_attacks": [{"name": "fgsm", "eps255": e} for e in (1, 2, 4)] +
                            [{"name": "pgd", "eps255": e, "steps": s, "step255": 1, "random_start": False}
                             for e, s in ((2, 4), (4, 6), (8, 10))],
        "graybox_attack": {"name": "pgd", "eps255": 16, "steps": 20, "step255": 1, "random_start": False},
    },
    "smoke": {"keeps": [0.5, 0.1],
              "whitebox_attacks": [{"name": "fgsm", "eps255": 4},
                                   {"name": "pgd", "eps255": 8, "steps": 3, "step255": 3, "random_start": False}],
              "graybox_attack": {"name": "pgd", "eps255": 16, "steps": 3, "step255": 6, "random_start": False},
              "grid_attack": {"name": "mifgsm", "eps255": 16, "steps": 2}},
}


def graybox_specs(sources: list[ModelSpec]) -> list[ModelSpec]:
    """Per defective source: the same keep with other weights and masks, and (_DIF) other masks only."""
    targets = []
    for src in sources:
        d = src["defective"]
        targets.append(ModelSpec(arch=src["arch"], defective=dict(d), seed=src["seed"] + 50))  # new weights + masks
        targets.append(ModelSpec(arch=src["arch"], defective=dict(d), seed=src["seed"], mask_seed=src["seed"] + 77,
                                 label=f"{src.label}_DIF"))                                    # new masks only
    return targets


def whitebox_specs(cfg: Mapping[str, Any]) -> list[ModelSpec]:
    """The standard model and one p-Bottom model per keep."""
    return variants(cfg["arch"] or cfg["model"]["arch"], cfg["keeps"], seed=0, cfg=cfg)


def model_specs(cfg: Mapping[str, Any], input_size: int) -> list[ModelSpec]:
    """Every model :func:`run` trains: white-box variants, then gray-box targets (used by ``--dry-run``)."""
    base = whitebox_specs(cfg)
    return base + graybox_specs([s for s in base if s.get("defective")])


def run(cfg: Mapping[str, Any], out: str | Path) -> dict:
    writer = ResultWriter(out, NAME, cfg, DESCRIPTION)
    data = load_data(cfg)
    arch = cfg["arch"] or cfg["model"]["arch"]
    x, y = data.x_test, data.y_test

    models = [(s, get_model(s, cfg, data, writer.models)) for s in whitebox_specs(cfg)]
    clean = {s.label: e["clean_accuracy"] for (s, _), e in zip(models, writer.models)}
    white: dict[str, dict[str, float]] = {s.label: {} for s, _ in models}
    for params in cfg["whitebox_attacks"]:
        a = attack_label(params)
        for spec, model in models:
            x_adv = run_attack(make_attack(model, params, cfg), x, y, cfg, desc=f"{a} {spec.label}")
            white[spec.label][a] = success_defense_rate(model, x, x_adv, y, cfg)
    attacks = [attack_label(p) for p in cfg["whitebox_attacks"]]
    writer.table("Table 8 layout: white-box attacks", markdown_table(
        ["Architecture", *attacks, "Test Accuracy"],
        [[s.label, *(fmt_pct(white[s.label][a]) for a in attacks), fmt_pct(clean[s.label])] for s, _ in models]))

    # Gray-box: sources are the defective models above; targets per keep: other init / other masks.
    sources = [(s, m) for s, m in models if s.get("defective")]
    targets = [(spec, get_model(spec, cfg, data, writer.models)) for spec in graybox_specs([s for s, _ in sources])]
    gray: dict[str, dict[str, float]] = {s.label if s.get("label") else s.label: {} for s, _ in targets}
    a = attack_label(cfg["graybox_attack"])
    for src, src_model in sources:
        x_adv = run_attack(make_attack(src_model, cfg["graybox_attack"], cfg), x, y, cfg, desc=f"gray {src.label}")
        for spec, model in targets:
            gray[spec.label][src.label] = success_defense_rate(model, x, x_adv, y, cfg)
    writer.table(f"Table 9 layout: gray-box {a}", markdown_table(
        ["Architecture", *(s.label for s, _ in sources)],
        [[s.label, *(fmt_pct(gray[s.label][src.label]) for src, _ in sources)] for s, _ in targets],
        "Columns: source model the examples are crafted on; rows: targets with the same keep probability "
        "and different initialisation, or (_DIF) the same weights' seed and different defective neurons."))
    writer.numbers.update({"whitebox_success_defense_rate": white, "graybox_success_defense_rate": gray,
                           "clean_accuracy": clean})
    adversarial_grid(writer, sources[-1][1], data, cfg, title=sources[-1][0].label)
    return writer.finish(data)
