"""Seed 002 Tables 2-4: MAD (mask-based adversarial defense).

Models are trained on grid-masked images (cells of ``train_grid`` pixels masked black with
probability ``rate``); at test time :class:`sparsemask.nn.MADClassifier` masks again
(``test_grid``) and takes the majority vote over ``tests`` maskings. Adversarial examples
are crafted on the undefended standard model (the seed's setting) with FGSM / BIM / PGD in
L1 / L2 / L∞, CW-L2 and DeepFool; rows below are accuracies. An adaptive row (PGD with EOT
through the voting wrapper) shows what a defense-aware attacker achieves — not in the seed.

  Table 2: mask rates (columns) at the seed's grid sizes;
  Table 3: undefended vs MAD accuracy per attack;
  Table 4: (train grid, test grid) pairs (columns) at rate 3/4.

The adaptive row's verdict (results.md notes, ``numbers["adaptive"]``) compares MAD under the
EOT attack with MAD under the seed's transferred attack of the same kind and budget, and with
the undefended model under that attack white-box; computed, never written by hand.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .adaptive import adaptive_verdict
from .common import (ModelSpec, ResultWriter, accuracy, attack_text, fmt_pct, get_model, load_data, make_attack,
                     markdown_table, predict, run_attack, save_adversarial_grid)

NAME = "002-mad"
DESCRIPTION = "seed 002 Tables 2-4: MAD grid-mask training + voting, by mask rate and grid size"

DEFAULTS: dict[str, Any] = {
    "all": {
        "arch": None,
        "grids": None,         # None: the seed's (train, test) grids for the image size (nn.mad_defaults)
        "rates": [0.25, 0.5, 0.75],
        "grid_pairs": None,    # Table 4 columns; None: (g, g//2), (g, g), (2g, g) from the default grids
        "tests": 5,
        "attacks": [{"name": "fgsm", "norm": "inf", "eps255": 2.55}, {"name": "fgsm", "norm": "inf", "eps255": 5.1},
                    {"name": "bim", "norm": "inf", "eps255": 2.55, "steps": 10},
                    {"name": "pgd", "norm": "inf", "eps255": 3.825, "steps": 10},
                    {"name": "pgd", "norm": "2", "eps": 0.3, "steps": 10},
                    {"name": "cw", "kappa": 0, "steps": 50, "binary_steps": 5},
                    {"name": "deepfool", "norm": "2", "steps": 50}],
        "adaptive": {"name": "pgd", "norm": "inf", "eps255": 3.825, "steps": 10, "eot": 5, "label": "PGD EOT-adaptive"},
        "n_images": 1000,
    },
    "smoke": {"rates": [0.5, 0.75], "tests": 3, "n_images": 64,
              "attacks": [{"name": "fgsm", "norm": "inf", "eps255": 8},
                          {"name": "pgd", "norm": "inf", "eps255": 8, "steps": 2},
                          {"name": "pgd", "norm": "2", "eps": 0.5, "steps": 3}],
              "adaptive": {"name": "pgd", "norm": "inf", "eps255": 8, "steps": 2, "eot": 2, "label": "PGD EOT-adaptive"}},
    "small": {"n_images": 500},
}


def attack_row_label(p: Mapping[str, Any]) -> str:
    """Row name of one attack in the seed's Table 2-4 layout: ``PGD Linf ε=0.015``, or its ``label``."""
    if p.get("label"):
        return p["label"]
    norm = {"inf": "Linf", "2": "L2", "1": "L1"}.get(str(p.get("norm", "")), "")
    eps = f" ε={p['eps255'] / 255:.3g}" if "eps255" in p else (f" ε={p['eps']:g}" if "eps" in p else "")
    return f"{p['name'].upper()} {norm}{eps}".replace("  ", " ").strip()


def grids(cfg: Mapping[str, Any], input_size: int) -> tuple[int, int, list, bool]:
    """(train grid, test grid, Table 4's (train, test) pairs, whether the grids are the seed's)."""
    from sparsemask.nn import mad_defaults

    d = mad_defaults(input_size)
    g_train, g_test = cfg["grids"] or (d["train_grid"], d["test_grid"])
    pairs = cfg["grid_pairs"] or sorted({(g_train, max(1, g_test // 2)), (g_train, g_test), (2 * g_train, g_test)})
    return g_train, g_test, pairs, d["from_seed"]


def mad_spec(arch: str, rate: float, train_grid: int) -> ModelSpec:
    """A standard model trained on grid-masked images."""
    return ModelSpec(arch=arch, defective=None, seed=0, train={"mad": {"grid": train_grid, "rate": rate}})


# Table 4's columns all use rate 3/4 (the seed's).
TABLE4_RATE = 0.75


def model_specs(cfg: Mapping[str, Any], input_size: int) -> list[ModelSpec]:
    """Every model :func:`run` trains: the standard model, one MAD model per rate (Table 2) and per
    grid pair (Table 4) — repeats included, as run() asks for them (used by ``--dry-run``)."""
    arch = cfg["arch"] or cfg["model"]["arch"]
    g_train, _, pairs, _ = grids(cfg, input_size)
    return ([ModelSpec(arch=arch, defective=None, seed=0)] + [mad_spec(arch, r, g_train) for r in cfg["rates"]] +
            [mad_spec(arch, TABLE4_RATE, gtr) for gtr, _ in pairs])


def run(cfg: Mapping[str, Any], out: str | Path) -> dict:
    from sparsemask.nn import MADClassifier

    writer = ResultWriter(out, NAME, cfg, DESCRIPTION)
    data = load_data(cfg)
    arch = cfg["arch"] or cfg["model"]["arch"]
    g_train, g_test, pairs, from_seed = grids(cfg, data.input_size)
    writer.numbers["grids"] = {"train": g_train, "test": g_test, "from_seed": from_seed, "pairs": pairs}
    x, y = data.x_test[:cfg["n_images"]], data.y_test[:cfg["n_images"]]
    seed = int(cfg.get("seed", 0))

    standard = get_model(ModelSpec(arch=arch, defective=None, seed=0), cfg, data, writer.models)
    adv = {}
    for p in cfg["attacks"]:
        adv[attack_row_label(p)] = run_attack(make_attack(standard, p, cfg), x, y, cfg, desc=attack_row_label(p))
    undefended = {"Benign": accuracy(standard, x, y, cfg), **{a: accuracy(standard, xa, y, cfg) for a, xa in adv.items()}}

    verdict: dict[str, Any] = {}

    def mad_column(rate: float, gtr: int, gte: int, adaptive: bool) -> dict[str, float]:
        model = get_model(mad_spec(arch, rate, gtr), cfg, data, writer.models)
        mad = MADClassifier(model, grid=gte, rate=rate, n=cfg["tests"], seed=seed).eval()
        col = {"Benign": accuracy(mad, x, y, cfg), **{a: accuracy(mad, xa, y, cfg) for a, xa in adv.items()}}
        if adaptive and cfg.get("adaptive"):
            x_ad = run_attack(make_attack(mad, cfg["adaptive"], cfg), x, y, cfg, desc="adaptive")
            col[attack_row_label(cfg["adaptive"])] = accuracy(mad, x_ad, y, cfg)
            # The same attack without EOT, white-box on the undefended model: the reference.
            base = {k: v for k, v in cfg["adaptive"].items() if k not in ("eot", "label")}
            x_ref = run_attack(make_attack(standard, base, cfg), x, y, cfg, desc="reference")
            same = [a for a, p in zip(adv, cfg["attacks"])
                    if all(p.get(k) == base.get(k) for k in ("name", "norm", "eps255", "eps", "steps"))]
            text, nums = adaptive_verdict(
                f"MAD (rate {rate:g}, {cfg['tests']} test maskings)", f"{same[0]} transferred from the undefended model"
                if same else "-", col[same[0]] if same else None, attack_row_label(cfg["adaptive"]), col[attack_row_label(cfg["adaptive"])],
                reference=accuracy(standard, x_ref, y, cfg),
                reference_label=f"the undefended model under {attack_row_label(base)} white-box")
            verdict.update(nums, non_adaptive_attack=same[0] if same else None, attack=attack_row_label(cfg["adaptive"]))
            undefended[attack_row_label(cfg["adaptive"])] = nums["reference"]  # no randomness: EOT is plain PGD there
            writer.note(text)
            save_adversarial_grid(writer.figure("adversarial_grid.png", "EOT-adaptive PGD vs MAD"), x, x_ad, y,
                                  predict(mad, x, cfg), predict(mad, x_ad, cfg), classes=data.classes,
                                  title=f"{attack_text(cfg['adaptive'])} adversarial examples "
                                        f"vs MAD (mask rate {rate:g}, {cfg['tests']} votes)\n{writer.subtitle(data)}")
        return col

    rows = ["Benign", *adv]
    t2 = {f"rate {r:g}": mad_column(r, g_train, g_test, adaptive=(r == cfg["rates"][-1])) for r in cfg["rates"]}
    writer.table("Table 2 layout: mask rates", markdown_table(
        ["Attack", "No defense", *t2], [[a, fmt_pct(undefended.get(a)), *(fmt_pct(c.get(a)) for c in t2.values())]
                                       for a in rows + ([attack_row_label(cfg["adaptive"])] if cfg.get("adaptive") else [])],
        f"Accuracy; train grid {g_train}, test grid {g_test}, {cfg['tests']} test maskings (majority vote)."
        + (f" Row '{attack_row_label(cfg['adaptive'])}' (not in the seed): PGD through the voting wrapper with gradients averaged "
           f"over {cfg['adaptive'].get('eot')} random maskings, run on the last rate's column only; its 'No defense' "
           "entry is the same PGD white-box on the undefended model. The drop from the seed's transferred attack is "
           "in the notes." if cfg.get("adaptive") else "")))
    best = t2[f"rate {cfg['rates'][-1]:g}"]
    writer.table("Table 3 layout: MAD vs no defense", markdown_table(
        ["Attack", "No defense", "MAD"], [[a, fmt_pct(undefended.get(a)), fmt_pct(best.get(a))] for a in best]))
    t4 = {f"{gtr}x{gtr} / {gte}x{gte}": mad_column(TABLE4_RATE, gtr, gte, adaptive=False) for gtr, gte in pairs}
    writer.table("Table 4 layout: grid sizes (train / test), rate 3/4", markdown_table(
        ["Attack", *t4], [[a, *(fmt_pct(c[a]) for c in t4.values())] for a in rows]))
    writer.numbers.update({"undefended": undefended, "rates": t2, "grid_sizes": t4, "n_images": len(y)})
    if verdict:
        writer.numbers["adaptive"] = verdict
    return writer.finish(data)
