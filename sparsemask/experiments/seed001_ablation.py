"""Seed 001 Table 4: ablations of the defective CNN under transfer attacks.

One standard source model (DenseNet-121 in the paper) attacks one target architecture
(ResNet-18) built as: standard; p-Bottom and p-Top for each keep p; p-Bottom_DC (whole
channels defective); p-Bottom_SM (one spatial mask shared by every channel); p-Bottom_xn
(n times the channels at defective layers); p-Bottom_EN (logit ensemble of ``en_size``
models with different masks); the mixed rows "p-Bottom, q-Top" (both bottom and top layers
defective, keep p at the bottom and q at the top: ``mixed: [[p, q], ...]``, built with a
list-valued ``defective=``). Numbers are success defense rates; attacks FGSM16, PGD16,
PGD32, CW40 as in the seed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..attacks import attack_label
from .common import (ModelSpec, ResultWriter, accuracy, adversarial_grid, arch_name, builder_kwargs, fmt_pct,
                     get_model, load_data, make_attack, markdown_table, run_attack, success_defense_rate)

NAME = "001-ablation"
DESCRIPTION = "seed 001 Table 4: bottom vs top, DC, SM, xn, EN ablations under transfer attacks"

DEFAULTS: dict[str, Any] = {
    "all": {
        "source": {"arch": None, "seed": 100},
        "target_arch": None,
        "keeps": [0.7, 0.5, 0.3, 0.1],
        "variants": ["bottom", "top", "mixed", "channel", "shared", "widen", "ensemble"],
        # Table 4's "p-Bottom, q-Top" rows, as [p, q] pairs (the seed's five).
        "mixed": [[0.5, 0.5], [0.7, 0.7], [0.7, 0.3], [0.3, 0.3], [0.3, 0.7]],
        "variant_keeps": [0.5, 0.1],  # keeps for DC / SM / xn / EN rows (the seed: 0.5 and 0.1)
        "widen": 2,
        "en_size": 5,
        "attacks": [{"name": "fgsm", "eps255": 16},
                    {"name": "pgd", "eps255": 16, "steps": 20, "step255": 1, "random_start": False},
                    {"name": "pgd", "eps255": 32, "steps": 20, "step255": 2, "random_start": False},
                    {"name": "cw", "kappa": 40, "steps": 30, "binary_steps": 5}],
    },
    "smoke": {
        "keeps": [0.1], "variant_keeps": [0.1], "en_size": 2, "mixed": [[0.1, 0.5]],
        "attacks": [{"name": "fgsm", "eps255": 16},
                    {"name": "pgd", "eps255": 16, "steps": 3, "step255": 6, "random_start": False},
                    {"name": "cw", "kappa": 40, "steps": 5, "binary_steps": 1}],
        "grid_attack": {"name": "mifgsm", "eps255": 16, "steps": 2},
    },
    # Two mixed rows (the seed's best pair and its symmetric one): one model each.
    "small": {"keeps": [0.5, 0.3, 0.1], "en_size": 3, "mixed": [[0.3, 0.7], [0.3, 0.3]]},
    "paper": {"source": {"arch": "densenet121", "seed": 100}, "target_arch": "resnet18"},
}


def target_specs(cfg: Mapping[str, Any]) -> list[tuple[str, list[ModelSpec]]]:
    """(row label, [specs]) per Table 4 row; EN rows hold several specs (one ensemble)."""
    arch = cfg["target_arch"] or cfg["model"]["arch"]
    rows = [(arch_name(arch, builder_kwargs({"arch": arch}, cfg)), [ModelSpec(arch=arch, defective=None, seed=0)])]
    v = set(cfg["variants"])
    for where in ("bottom", "top"):
        if where in v:
            for i, p in enumerate(cfg["keeps"]):
                d = {"keep": p, "where": where}
                rows.append((ModelSpec(arch=arch, defective=d).label, [ModelSpec(arch=arch, defective=d, seed=1 + i)]))
    if "mixed" in v:
        for i, (p, q) in enumerate(cfg.get("mixed") or []):
            d = [{"keep": p, "where": "bottom"}, {"keep": q, "where": "top"}]
            rows.append((ModelSpec(arch=arch, defective=d).label, [ModelSpec(arch=arch, defective=d, seed=60 + i)]))
    for i, p in enumerate(cfg["variant_keeps"]):
        for key, extra in (("channel", {"kind": "channel"}), ("shared", {"kind": "shared"}),
                           ("widen", {"widen": cfg["widen"]})):
            if key in v:
                d = {"keep": p, "where": "bottom", **extra}
                rows.append((ModelSpec(arch=arch, defective=d).label, [ModelSpec(arch=arch, defective=d, seed=20 + i)]))
        if "ensemble" in v:
            d = {"keep": p, "where": "bottom"}
            rows.append((f"{p:g}-Bottom_EN", [ModelSpec(arch=arch, defective=d, seed=40 + 10 * i + j)
                                               for j in range(cfg["en_size"])]))
    return rows


def source_spec(cfg: Mapping[str, Any]) -> ModelSpec:
    """The standard model the transfer attacks are crafted on."""
    return ModelSpec(cfg["source"], arch=cfg["source"].get("arch") or cfg["model"]["arch"])


def model_specs(cfg: Mapping[str, Any], input_size: int) -> list[ModelSpec]:
    """Every model :func:`run` trains: the source, then each row's (EN rows: several) (used by ``--dry-run``)."""
    return [source_spec(cfg)] + [spec for _, specs in target_specs(cfg) for spec in specs]


def run(cfg: Mapping[str, Any], out: str | Path) -> dict:
    from sparsemask.nn import Ensemble

    writer = ResultWriter(out, NAME, cfg, DESCRIPTION)
    data = load_data(cfg)
    src_spec = source_spec(cfg)
    source = get_model(src_spec, cfg, data, writer.models)
    targets, clean = [], {}
    for label, specs in target_specs(cfg):
        models = [get_model(s, cfg, data, writer.models) for s in specs]
        model = models[0] if len(models) == 1 else Ensemble(models, combine="logits").eval()
        targets.append((label, model))
        clean[label] = accuracy(model, data.x_test, data.y_test, cfg)
    x, y = data.x_test, data.y_test
    sdr: dict[str, dict[str, float]] = {label: {} for label, _ in targets}
    for params in cfg["attacks"]:
        a = attack_label(params)
        x_adv = run_attack(make_attack(source, params, cfg), x, y, cfg, desc=a)
        for label, model in targets:
            sdr[label][a] = success_defense_rate(model, x, x_adv, y, cfg)
    writer.numbers.update({"success_defense_rate": sdr, "clean_accuracy": clean,
                           "source": arch_name(src_spec["arch"], builder_kwargs(src_spec, cfg))})
    attacks = [attack_label(p) for p in cfg["attacks"]]
    writer.table("Table 4 layout: ablations", markdown_table(
        ["Architecture", *attacks, "Test Accuracy"],
        [[label, *(fmt_pct(sdr[label][a]) for a in attacks), fmt_pct(clean[label])] for label, _ in targets],
        f"Success defense rates against transfer attacks from {writer.numbers['source']} (seed {src_spec['seed']})."))
    adversarial_grid(writer, targets[-1][1], data, cfg, title=targets[-1][0])
    return writer.finish(data)
