"""Seed 001 Tables 2, 3 and 5: black-box defense against transfer-based attacks.

Adversarial examples are generated on standard *source* models (and on ensembles of them,
Table 5) and fed to *target* models: each architecture as a standard CNN and with
defective bottom layers at several keep probabilities. The number is the *success defense
rate*: accuracy on adversarial examples whose clean originals the target classifies
correctly. Sources and targets of the same architecture are initialised differently.

Table 2's baselines are extra target rows (``extra_targets``: specs with a ``dropout_layer``
— SpatialDropout / DropBlock on the 3rd block, keep 0.9, 3x3 blocks — ``label_smoothing`` or
Madry adversarial ``train`` overrides). The *gray-box* source (``graybox_keeps``, not in the
seed): for a p-Bottom target, a p-Bottom source trained with the *same defective masks*
(its ``mask_seed``) from another initialisation seed — the attacker knows the architecture
and the masks, not the weights; its column is filled for that target only.

Tables written:
  * one source x target matrix per attack (Table 3 layout: rows are targets grouped by
    architecture, columns are sources, ensemble sources, then the target's test accuracy);
  * a Table 2-style summary: rows are targets, columns are the attacks from the first
    source, then test accuracy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..attacks import attack_label
from .common import (ModelSpec, ResultWriter, adversarial_grid, arch_name, attack_text, builder_kwargs, fmt_pct,
                     get_model,
                     load_data, make_attack, markdown_table, model_key, plot_bars, run_attack,
                     success_defense_rate, variants)

NAME = "001-transfer"
DESCRIPTION = "seed 001 Tables 2/3/5: transfer-attack success defense rate, sources x (standard, p-Bottom) targets"

DEFAULTS: dict[str, Any] = {
    "all": {
        "target_archs": None,  # None: the configured model.arch
        "keeps": [0.5, 0.3],
        # Source models: standard CNNs, seeds distinct from every target's (arch None: model.arch).
        "sources": [{"arch": None, "seed": 100}],
        # "all": one extra column attacking with the ensemble of every source;
        # "leave_one_out": one column per source with the ensemble of the others (Table 5).
        "ensemble": "all",
        "attacks": [{"name": "pgd", "eps255": 16, "steps": 20, "step255": 1, "random_start": False}],
        # Extra target rows trained differently (spec dicts with `train` overrides), e.g. Madry.
        "extra_targets": [],
        # Gray-box sources: for each keep here, a p-Bottom source with the p-Bottom target's
        # masks and another init seed (one column, filled for its own target).
        "graybox_keeps": [],
        # Attack only the first n test images (None: all); each PGD20 source column costs
        # 20 gradient passes per image and member model.
        "n_images": None,
    },
    "smoke": {
        "keeps": [0.1],
        "sources": [{"arch": None, "seed": 100}, {"arch": None, "seed": 101}],
        "attacks": [{"name": "fgsm", "eps255": 16},
                    {"name": "pgd", "eps255": 16, "steps": 5, "step255": 4, "random_start": False}],
        "grid_attack": {"name": "mifgsm", "eps255": 16, "steps": 3},
        "ensemble": "leave_one_out",
        "extra_targets": [{"arch": None, "seed": 0, "label": "DropBlock",
                           "dropout_layer": {"kind": "dropblock", "keep": 0.9, "block_size": 3}}],
        "graybox_keeps": [0.1],
    },
    "small": {
        "keeps": [0.5, 0.3, 0.1],
        "n_images": 500,  # the first 500 test images: keeps the run within ~20 min on 2 CPU cores
        "sources": [{"arch": None, "seed": 100}, {"arch": "lenet5", "seed": 100},
                    {"arch": "cw_mnist", "seed": 100}],
        # Table 5: each source's column is followed by the ensemble of the other sources.
        "ensemble": "leave_one_out",
        "attacks": [{"name": "fgsm", "eps255": 16},
                    {"name": "pgd", "eps255": 16, "steps": 20, "step255": 1, "random_start": False}],
        # Table 2's baselines on the configured architecture. Madry's PGD is shortened to 3 steps
        # of 3/255 (eps 8) so its training costs 4x, not 8x, a standard one; the label says so.
        "extra_targets": [
            {"arch": None, "seed": 0, "label": "SpatialDropout", "dropout_layer": {"kind": "spatial", "keep": 0.9}},
            {"arch": None, "seed": 0, "label": "DropBlock",
             "dropout_layer": {"kind": "dropblock", "keep": 0.9, "block_size": 3}},
            {"arch": None, "seed": 0, "label": "Label smoothing (ε=0.1)", "label_smoothing": 0.1},
            {"arch": None, "seed": 0, "label": "Adversarial Training (Madry, PGD-3)",
             "train": {"method": "adversarial", "adv_eps": 8 / 255, "adv_steps": 3, "adv_step_size": 3 / 255}}],
        "graybox_keeps": [0.1],
    },
    "paper": {
        # Table 2's baselines on WRN-32-4 (its architecture): SpatialDropout and DropBlock on the
        # 3rd block (keep 0.9, 3x3 blocks), label smoothing 0.1, and adversarial training
        # (Madry: PGD eps 8, 7 steps of 2, random start).
        "extra_targets": [
            {"arch": "wide_resnet", "seed": 0, "label": "SpatialDropout",
             "dropout_layer": {"kind": "spatial", "keep": 0.9}},
            {"arch": "wide_resnet", "seed": 0, "label": "DropBlock",
             "dropout_layer": {"kind": "dropblock", "keep": 0.9, "block_size": 3}},
            {"arch": "wide_resnet", "seed": 0, "label": "Label smoothing (ε=0.1)", "label_smoothing": 0.1},
            {"arch": "wide_resnet", "seed": 0, "label": "Adversarial Training (Madry)",
             "train": {"method": "adversarial", "adv_eps": 8 / 255, "adv_steps": 7, "adv_step_size": 2 / 255}}],
        "graybox_keeps": [0.3],
        "target_archs": ["resnet18", "resnet50", "densenet121", "senet18", "vgg19"],
        "sources": [{"arch": a, "seed": 100} for a in ("resnet18", "resnet50", "densenet121", "senet18", "vgg19")],
        "ensemble": "leave_one_out",
        "attacks": [{"name": "fgsm", "eps255": 8}, {"name": "pgd", "eps255": 8, "steps": 7, "step255": 2},
                    {"name": "pgd", "eps255": 16, "steps": 20, "step255": 1, "random_start": False}],
    },
}


def source_specs(cfg: Mapping[str, Any]) -> list[tuple[str, ModelSpec]]:
    """(column label, spec) of each single source model."""
    specs = [ModelSpec(s, arch=s.get("arch") or cfg["model"]["arch"]) for s in cfg["sources"]]
    out = []
    for spec in specs:
        label = spec.get("label") or arch_name(spec["arch"], builder_kwargs(spec, cfg))
        if sum(s["arch"] == spec["arch"] for s in specs) > 1:
            label += f"#{spec['seed']}"
        out.append((label, spec))
    return out


def target_specs(cfg: Mapping[str, Any]) -> list[ModelSpec]:
    """The target rows: each target arch standard and p-Bottom, then the extra (e.g. Madry) targets."""
    specs = [spec for arch in cfg["target_archs"] or [cfg["model"]["arch"]]
             for spec in variants(arch, cfg["keeps"], seed=int(cfg.get("seed", 0)), cfg=cfg)]
    # Baselines trained differently (e.g. Madry adversarial training), rows of their own.
    specs += [ModelSpec(extra, arch=extra.get("arch") or cfg["model"]["arch"]) for extra in cfg.get("extra_targets") or []]
    return specs


GRAYBOX = "gray-box (same masks, other seed)"


def graybox_specs(cfg: Mapping[str, Any]) -> list[tuple[ModelSpec, ModelSpec]]:
    """(source, target) per keep of ``graybox_keeps``: the first target architecture's p-Bottom
    target, and a source with its masks (``mask_seed``) and another weights' seed."""
    all_targets = target_specs(cfg)
    targets = {spec["defective"]["keep"]: spec for spec in all_targets
               if isinstance(spec.get("defective"), dict) and spec["arch"] == all_targets[0]["arch"]
               and spec["defective"].get("where", "bottom") == "bottom"}
    pairs = []
    for p in cfg.get("graybox_keeps") or []:
        if p not in targets:
            raise ValueError(f"graybox_keeps: {p} is not one of the keeps of the targets ({sorted(targets)})")
        t = targets[p]
        mask_seed = t.get("mask_seed", t.get("seed", 0))
        src = ModelSpec(arch=t["arch"], defective=dict(t["defective"]), seed=int(t.get("seed", 0)) + 500,
                        mask_seed=mask_seed, label=f"{t.label} gray-box source")
        pairs.append((src, t))
    return pairs


def model_specs(cfg: Mapping[str, Any], input_size: int) -> list[ModelSpec]:
    """Every model :func:`run` trains, in its order (used by ``--dry-run``)."""
    return [spec for _, spec in source_specs(cfg)] + target_specs(cfg) + [s for s, _ in graybox_specs(cfg)]


def source_models(cfg: Mapping[str, Any], data, log: list) -> dict[str, Any]:
    """label -> trained source model, plus the ensemble sources the config asks for."""
    from sparsemask.nn import Ensemble

    sources = {label: get_model(spec, cfg, data, log) for label, spec in source_specs(cfg)}
    singles = list(sources.items())
    mode = cfg.get("ensemble")
    if mode and len(singles) >= 2:
        if mode == "all":
            sources["Ensemble(all)"] = Ensemble([m for _, m in singles], combine="logits").eval()
        elif mode == "leave_one_out":
            for label, _ in singles:
                sources[f"Ensemble(-{label})"] = Ensemble([m for l, m in singles if l != label],
                                                          combine="logits").eval()
        else:
            raise ValueError(f"config 'ensemble' must be null, 'all' or 'leave_one_out', got {mode!r}")
    return sources


def run(cfg: Mapping[str, Any], out: str | Path) -> dict:
    writer = ResultWriter(out, NAME, cfg, DESCRIPTION)
    data = load_data(cfg)
    sources = source_models(cfg, data, writer.models)
    targets, clean = [], {}
    for spec in target_specs(cfg):
        targets.append((spec, get_model(spec, cfg, data, writer.models)))
        clean[model_key(spec)] = writer.models[-1]["clean_accuracy"]
    x, y = data.x_test[:cfg.get("n_images")], data.y_test[:cfg.get("n_images")]

    sdr: dict[str, dict[str, dict[str, float]]] = {}
    for params in cfg["attacks"]:
        a_label = attack_label(params)
        sdr[a_label] = {model_key(t): {} for t, _ in targets}
        for s_label, source in sources.items():
            x_adv = run_attack(make_attack(source, params, cfg), x, y, cfg, desc=f"{a_label} on {s_label}")
            for spec, target in targets:
                sdr[a_label][model_key(spec)][s_label] = success_defense_rate(target, x, x_adv, y, cfg)
    # Gray-box: each source attacks only the target whose masks it was trained with.
    gray_pairs = [(src, t, get_model(src, cfg, data, writer.models)) for src, t in graybox_specs(cfg)]
    models_by_key = {model_key(spec): m for spec, m in targets}
    for params in cfg["attacks"] if gray_pairs else []:
        a_label = attack_label(params)
        for src, t, src_model in gray_pairs:
            x_adv = run_attack(make_attack(src_model, params, cfg), x, y, cfg, desc=f"{a_label} gray-box {t.label}")
            sdr[a_label][model_key(t)][GRAYBOX] = success_defense_rate(models_by_key[model_key(t)], x, x_adv, y, cfg)
    writer.numbers.update({"success_defense_rate": sdr, "clean_accuracy": clean, "n_images": len(y),
                           "source_clean_accuracy": {e["label"]: e["clean_accuracy"]
                                                     for e in writer.models[:len(cfg["sources"])]}})
    if gray_pairs:
        writer.numbers["graybox_sources"] = {model_key(t): dict(src) for src, t, _ in gray_pairs}
    columns = list(sources) + ([GRAYBOX] if gray_pairs else [])

    for a_label, table in sdr.items():
        header = ["Architecture", *columns, "Test Accuracy"]
        rows = [[spec.label, *(fmt_pct(table[model_key(spec)].get(s)) for s in columns), fmt_pct(clean[model_key(spec)])]
                for spec, _ in targets]
        gray = (f" Column '{GRAYBOX}': examples crafted on a source with the target's own defective masks and "
                "another initialisation seed (the gray-box case, not in the seed); filled for "
                f"{', '.join(t.label for _, t, _ in gray_pairs)} only.") if gray_pairs else ""
        ens = (" Ensemble(-X): logit ensemble of every source but X (Table 5)."
               if cfg.get("ensemble") == "leave_one_out" else "")
        writer.table(f"Table 3 layout: {a_label} transfer", markdown_table(
            header, rows, f"Success defense rates of {a_label} adversarial examples of {len(y)} test images "
                          "generated on the source "
                          "models (columns) against the targets (rows); p-Bottom = defective bottom layers with "
                          f"keep probability p.{ens}{gray}"))
    for src, t, _ in gray_pairs:
        first_black = next(iter(sources))
        for a_label in sdr:
            row = sdr[a_label][model_key(t)]
            writer.note(f"{a_label}, {t.label}: success defense rate {fmt_pct(row[first_black])} against the black-box "
                        f"source {first_black}, {fmt_pct(row[GRAYBOX])} against the gray-box source (same masks, "
                        f"other seed); black-box minus gray-box: {100 * (row[first_black] - row[GRAYBOX]):+.2f} points "
                        "(positive: knowing the masks helps the attacker).")
    first = next(iter(sources))
    header = ["Model", *sdr.keys(), "Test Accuracy"]
    rows = [[spec.label, *(fmt_pct(sdr[a][model_key(spec)][first]) for a in sdr), fmt_pct(clean[model_key(spec)])]
            for spec, _ in targets]
    writer.table(f"Table 2 layout: transfer from {first}", markdown_table(header, rows))

    a_last = list(sdr)[-1]
    plot_bars(writer.figure("transfer_sdr.png", f"{a_last} success defense rate per target and source"),
              [spec.label for spec, _ in targets],
              {s: [sdr[a_last][model_key(spec)][s] for spec, _ in targets] for s in sources},
              ylabel="success defense rate", title=f"{attack_text(cfg['attacks'][-1])} transfer attack",
              xlabel="target model", legend_title="source model (#seed)", percent=True, subtitle=writer.subtitle(data))
    defective = [(spec, m) for spec, m in targets if spec.get("defective")]
    if defective:
        adversarial_grid(writer, defective[-1][1], data, cfg, title=defective[-1][0].label)
    return writer.finish(data)
