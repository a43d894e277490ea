"""Seed 001 Tables 8 and 9: white-box and gray-box attacks on defective CNNs.

Table 8: white-box FGSM1/2/4 and PGD2/4/8 (4, 6, 10 steps of 1/255) against the standard
model and p-Bottom models. Table 9 (gray-box): PGD16 examples crafted on a p-Bottom model
are tested on a p'-Bottom model with different initialisation (same masks' keep, new weights
and masks) and on p'-Bottom_DIF (same weights' seed, different sampling of the defective
neurons). Numbers are success defense rates.

Adaptive row (not in the seed): a defective CNN is deterministic, so its adaptive white-box
attack is PGD with many random restarts and more steps (``adaptive``, on the first
``adaptive_images`` test images). Its table puts the seed's PGD (same ε, on the same images)
next to it with the drop, and results.md says, from the numbers, whether a defective model
keeps any lead over the standard model under it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from ..attacks import attack_label
from .adaptive import VANISH_MARGIN, adaptive_verdict
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
        # The adaptive attack: PGD8 from `restarts` random starts, `steps` steps each, compared
        # with the Table 8 attack of the same name and eps ("PGD8": 10 steps of 1, no restart).
        "adaptive": {"name": "pgd", "eps255": 8, "steps": 100, "step255": 1, "random_start": True, "restarts": 20},
        "adaptive_images": 1000,
    },
    # 5 restarts x 40 steps on 200 images per model: 40k gradient evaluations per model (PGD8 on
    # the whole test set: 10k).
    "small": {"adaptive": {"steps": 40, "step255": 1, "restarts": 5}, "adaptive_images": 200},
    "smoke": {"keeps": [0.5, 0.1],
              "whitebox_attacks": [{"name": "fgsm", "eps255": 4},
                                   {"name": "pgd", "eps255": 8, "steps": 3, "step255": 3, "random_start": False}],
              "graybox_attack": {"name": "pgd", "eps255": 16, "steps": 3, "step255": 6, "random_start": False},
              "grid_attack": {"name": "mifgsm", "eps255": 16, "steps": 2},
              "adaptive": {"eps255": 8, "steps": 4, "step255": 3, "restarts": 2}, "adaptive_images": 32},
}


def adaptive_labels(cfg: Mapping[str, Any]) -> tuple[str, Optional[str]]:
    """(label of the adaptive attack, label of the Table 8 attack it is compared with or None)."""
    p = cfg["adaptive"]
    base = {k: v for k, v in p.items() if k in ("name", "eps255", "kappa")}
    label = p.get("label") or (f"{attack_label(base)} adaptive ({p.get('restarts', 1)} restarts x "
                               f"{p.get('steps')} steps)")
    same = [q for q in cfg["whitebox_attacks"] if q["name"] == p["name"] and q.get("eps255") == p.get("eps255")
            and str(q.get("norm", "inf")) == str(p.get("norm", "inf"))]
    return label, (attack_label(same[0]) if same else None)


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


def adaptive_table(writer: ResultWriter, cfg: Mapping[str, Any], models, x, y, ad_label: str,
                   base_label: Optional[str], base_adv: Mapping[str, Any]) -> None:
    """The many-restart PGD row on the first ``adaptive_images`` images, next to the seed's PGD."""
    params = {k: v for k, v in cfg["adaptive"].items() if k != "label"}
    n = int(cfg.get("adaptive_images") or len(y))
    xs, ys = x[:n], y[:n]
    res: dict[str, dict[str, Any]] = {}
    for spec, model in models:
        x_ad = run_attack(make_attack(model, params, cfg), xs, ys, cfg, desc=f"adaptive {spec.label}")
        res[spec.label] = {"adaptive": success_defense_rate(model, xs, x_ad, ys, cfg),
                           "non_adaptive": (success_defense_rate(model, xs, base_adv[spec.label][:n], ys, cfg)
                                            if spec.label in base_adv else None)}
    standard = next(s.label for s, _ in models if not s.get("defective"))
    notes = {}
    for spec, _ in models:
        r = res[spec.label]
        is_def = bool(spec.get("defective"))
        text, nums = adaptive_verdict(spec.label, base_label or "-", r["non_adaptive"], ad_label, r["adaptive"],
                                      reference=res[standard]["adaptive"] if is_def else None,
                                      reference_label=f"the standard {standard}", metric="success defense rate")
        r.update(nums)
        if is_def:
            notes[spec.label] = text
            writer.note(text)
    rows = [[s.label, fmt_pct(res[s.label]["non_adaptive"]), fmt_pct(res[s.label]["adaptive"]),
             "-" if res[s.label]["drop"] is None else f"{100 * res[s.label]['drop']:+.2f}",
             {True: "yes", False: "no", None: "-"}[res[s.label]["vanishes"]]] for s, _ in models]
    writer.table(f"Adaptive white-box attack: {ad_label}", markdown_table(
        ["Architecture", f"{base_label or '-'} (seed's)", ad_label, "Drop (points)",
         f"Lead over {standard} vanishes"], rows,
        f"Success defense rates on the first {len(ys)} test images (a subset: the adaptive attack runs "
        f"{params.get('restarts', 1)} x {params.get('steps')} PGD steps per image). The defective CNN is "
        "deterministic, so PGD with random restarts and more steps is its adaptive attack (not in the seed). "
        f"'Vanishes': the defective model leads the standard model by at most {100 * VANISH_MARGIN:g} points under "
        f"{ad_label}."))
    writer.numbers["adaptive_whitebox"] = {"attack": ad_label, "compared_with": base_label, "n_images": len(ys),
                                           "success_defense_rate": res}


def run(cfg: Mapping[str, Any], out: str | Path) -> dict:
    writer = ResultWriter(out, NAME, cfg, DESCRIPTION)
    data = load_data(cfg)
    arch = cfg["arch"] or cfg["model"]["arch"]
    x, y = data.x_test, data.y_test

    models = [(s, get_model(s, cfg, data, writer.models)) for s in whitebox_specs(cfg)]
    clean = {s.label: e["clean_accuracy"] for (s, _), e in zip(models, writer.models)}
    white: dict[str, dict[str, float]] = {s.label: {} for s, _ in models}
    ad_label, base_label = adaptive_labels(cfg) if cfg.get("adaptive") else (None, None)
    base_adv = {}
    for params in cfg["whitebox_attacks"]:
        a = attack_label(params)
        for spec, model in models:
            x_adv = run_attack(make_attack(model, params, cfg), x, y, cfg, desc=f"{a} {spec.label}")
            white[spec.label][a] = success_defense_rate(model, x, x_adv, y, cfg)
            if a == base_label:
                base_adv[spec.label] = x_adv
    attacks = [attack_label(p) for p in cfg["whitebox_attacks"]]
    writer.table("Table 8 layout: white-box attacks", markdown_table(
        ["Architecture", *attacks, "Test Accuracy"],
        [[s.label, *(fmt_pct(white[s.label][a]) for a in attacks), fmt_pct(clean[s.label])] for s, _ in models]))
    if cfg.get("adaptive"):
        adaptive_table(writer, cfg, models, x, y, ad_label, base_label, base_adv)

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
