"""Seed 003 Figures 3 and 4: multi-surrogate transfer attack with validation, by L2 bucket.

``t`` standard surrogates (different seeds) generate adversarial examples together (the
attack runs on their logit ensemble); ``v`` further surrogates validate them: an example is
kept when it fools at least ``k`` validators. The kept examples are tested on each target
family (standard, RS-1, defective: models never seen by the attacker), and the transfer
rate is reported per bucket of perturbation L2 norm (distortion vs transferability).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .common import (ModelSpec, ResultWriter, attack_text, fmt_pct, get_model, load_data, make_attack, markdown_table,
                     plot_bars, predict, save_adversarial_grid)
from .seed003_common import family_specs

NAME = "003-multi-surrogate"
DESCRIPTION = "seed 003 Figures 3/4: multi-surrogate (t generate, v validate, k pass) transfer rate by L2 bucket"

DEFAULTS: dict[str, Any] = {
    "all": {"arch": None, "keep": 0.1, "spiking_p": 0.8, "t": 8, "v": 8, "k": 5, "n_images": 500,
            "attacks": [{"name": "pgd", "norm": "2", "eps": e, "steps": 20} for e in (0.5, 1.0, 2.0, 3.0)],
            "buckets": [0, 0.5, 1.0, 1.5, 2.0, 3.0, 100.0]},
    "smoke": {"t": 2, "v": 3, "k": 1, "n_images": 48,
              "attacks": [{"name": "pgd", "norm": "2", "eps": e, "steps": 3} for e in (0.5, 2.0)],
              "buckets": [0, 1.0, 100.0]},
    "small": {"t": 4, "v": 4, "k": 2},
}


def surrogate_specs(cfg: Mapping[str, Any]) -> tuple[list[ModelSpec], list[ModelSpec]]:
    """The ``t`` generating and ``v`` validating standard surrogates (seeds apart from every target's)."""
    arch = cfg.get("arch") or cfg["model"]["arch"]

    def surrogate(seed: int) -> ModelSpec:
        return ModelSpec(arch=arch, defective=None, seed=seed, label=f"surrogate#{seed}")

    return [surrogate(200 + i) for i in range(cfg["t"])], [surrogate(300 + i) for i in range(cfg["v"])]


def model_specs(cfg: Mapping[str, Any], input_size: int) -> list[ModelSpec]:
    """Every model :func:`run` trains: surrogates, then the target families (used by ``--dry-run``)."""
    gens, vals = surrogate_specs(cfg)
    return gens + vals + family_specs(cfg)


def run(cfg: Mapping[str, Any], out: str | Path) -> dict:
    from sparsemask.attacks import MultiSurrogate, fooled
    from sparsemask.experiments.common import make_attack as _make

    writer = ResultWriter(out, NAME, cfg, DESCRIPTION)
    data = load_data(cfg)
    gen_specs, val_specs = surrogate_specs(cfg)
    gens = [get_model(s, cfg, data, writer.models) for s in gen_specs]
    vals = [get_model(s, cfg, data, writer.models) for s in val_specs]
    targets = [(f, get_model(f, cfg, data, writer.models)) for f in family_specs(cfg)]
    x, y = data.x_test[:cfg["n_images"]], data.y_test[:cfg["n_images"]]

    xs, l2s, passed = [], [], []
    for params in cfg["attacks"]:
        ms = MultiSurrogate(lambda m, p=params: _make(m, p, cfg), gens, vals, k=cfg["k"])
        x_adv = ms(x, y).detach()
        xs.append(x_adv)
        l2s.append((x_adv - x).flatten(1).norm(dim=1))
        passed.append(fooled(vals, x_adv, y).sum(0) >= cfg["k"])
    x_all, l2, ok = torch.cat(xs), torch.cat(l2s), torch.cat(passed)
    y_all = y.repeat(len(cfg["attacks"]))
    edges = cfg["buckets"]
    rates, counts, overall = {}, [], {}
    for fam, model in targets:
        correct = (predict(model, x, cfg) == y).repeat(len(cfg["attacks"]))
        fool = predict(model, x_all, cfg) != y_all
        use = ok & correct
        overall[fam.label] = float(fool[use].float().mean()) if use.any() else float("nan")
        rates[fam.label] = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            b = use & (l2 >= lo) & (l2 < hi)
            rates[fam.label].append(float(fool[b].float().mean()) if b.any() else float("nan"))
    for lo, hi in zip(edges[:-1], edges[1:]):
        counts.append(int((ok & (l2 >= lo) & (l2 < hi)).sum()))
    labels = [f"[{lo:g}, {hi:g})" for lo, hi in zip(edges[:-1], edges[1:])]
    writer.table("Figure 3/4 data: transfer rate by L2 bucket", markdown_table(
        ["Target", *labels, "All"], [[k, *map(fmt_pct, v), fmt_pct(overall[k])] for k, v in rates.items()] +
        [["(validated examples)", *map(str, counts), str(int(ok.sum()))]],
        f"Fraction of validated examples (fooling >= {cfg['k']} of {cfg['v']} validators; generated on "
        f"{cfg['t']} surrogates) that fool each target, among images the target classifies correctly."))
    plot_bars(writer.figure("transfer_by_l2.png", "Transfer rate vs perturbation L2"),
              [f"{lab}\n{c} examples" for lab, c in zip(labels, counts)], rates, "transfer rate (fooled / validated)",
              "Validated multi-surrogate examples: transfer rate by L2", xlabel="perturbation L2 bucket (pixels in [0, 1])",
              subtitle=writer.subtitle(data), legend_title="target model", percent=True)
    defective = targets[-1][1]
    save_adversarial_grid(writer.figure("adversarial_grid.png", "validated multi-surrogate examples"), x, xs[-1], y,
                          predict(defective, x, cfg), predict(defective, xs[-1], cfg), classes=data.classes,
                          title=f"Multi-surrogate {attack_text(cfg['attacks'][-1])} examples (validated or not), "
                                f"predictions of {targets[-1][0].label}\n{writer.subtitle(data)}")
    writer.numbers.update({"transfer_rate_by_bucket": rates, "bucket_edges": edges, "bucket_counts": counts,
                           "transfer_rate": overall, "validated": int(ok.sum()), "generated": int(len(ok))})
    return writer.finish(data)
