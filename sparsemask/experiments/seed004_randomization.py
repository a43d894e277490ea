"""Seed 004 Tables 2-6 (Xie et al., randomization at inference) plus the EOT attack it lacked.

A standard model is put behind a random resize + random zero padding layer (inference only,
no retraining). Scenarios (columns of the seed's tables, here rows of one table per defense):

  * vanilla: examples crafted on the plain model (attacker unaware of the layer);
  * single-pattern: crafted on the model behind one fixed pattern (no resize, centred);
  * ensemble-pattern: crafted on the average over the seed's 21 patterns;
  * EOT (not in the seed; Athalye et al. broke the defense this way): crafted on the
    randomized model itself with gradients averaged over ``eot`` random patterns.

Defenses: the seed's resize [s, s*331/299) + pad (Tables 2-4), one-pixel padding (Table 5:
pad s -> s+1, no resize) and one-pixel resizing (Table 6: resize s -> s+1, no padding).
Numbers are top-1 accuracy of the randomized model on the adversarial examples (one random
draw per image, as the seed), next to the plain model's accuracy on vanilla examples.
Each table ends with the EOT drop: the strongest of the seed's scenarios minus EOT, per
attack; results.md's notes say, from the numbers, where the randomized model under EOT is
no better than the plain model under the same white-box attack (its robustness vanishes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import nn

from ..attacks import attack_label
from .adaptive import VANISH_MARGIN, adaptive_verdict
from .common import (ModelSpec, ResultWriter, accuracy, attack_text, fmt_pct, get_model, load_data, make_attack,
                     markdown_table, predict, run_attack, save_adversarial_grid)

NAME = "004-randomization"
DESCRIPTION = "seed 004 Tables 2-6: random resize+pad under vanilla / single / ensemble-pattern attacks, plus EOT"

DEFAULTS: dict[str, Any] = {
    "all": {
        "arch": None,
        "defenses": ["resize_pad", "one_pixel_pad", "one_pixel_resize"],
        "scenarios": ["vanilla", "single", "ensemble", "eot"],
        "attacks": [{"name": "fgsm", "eps255": e} for e in (2, 5, 10)] +
                   [{"name": "deepfool", "steps": 50}, {"name": "cw", "kappa": 0, "steps": 100, "binary_steps": 5}],
        "eot": 30,
        "n_images": 1000,
    },
    "smoke": {"defenses": ["resize_pad", "one_pixel_resize"],
              "attacks": [{"name": "fgsm", "eps255": 10}, {"name": "deepfool", "steps": 3}], "eot": 2,
              "n_images": 32},
    # small: C&W dropped and DeepFool cut to 5 steps — under the 21-pattern ensemble and EOT
    # scenarios every step costs 21x / 10x, and the full set ran > 20 min on 2 CPU cores.
    "small": {"eot": 10, "n_images": 200,
              "attacks": [{"name": "fgsm", "eps255": e} for e in (2, 5, 10)] + [{"name": "deepfool", "steps": 5}]},
}


def defense_layer(kind: str, size: int, seed: int):
    """The randomization layer of one defense for images of side ``size``."""
    from sparsemask.nn import RandomResizePad

    if kind == "resize_pad":  # the seed's 299 -> [299, 331) -> pad 331, scaled to this image size
        out = max(size + 2, int(round(size * 331 / 299)))
        return RandomResizePad(out, size, seed=seed)
    if kind == "one_pixel_pad":  # Table 5: no resize, pad to size + 1 at a random corner
        return RandomResizePad(size + 1, size, seed=seed)
    if kind == "one_pixel_resize":  # Table 6: resize to size + 1, no padding
        layer = RandomResizePad(size + 1, size, seed=seed)
        return layer.fix_pattern((size + 1, 0, 0))
    raise ValueError(f"unknown defense {kind!r}; expected resize_pad, one_pixel_pad or one_pixel_resize")


def attacked_model(scenario: str, model: nn.Module, layer, defended: nn.Module) -> nn.Module:
    """What the attacker differentiates in each scenario."""
    import copy

    from sparsemask.nn import PatternEnsemble

    if scenario == "vanilla":
        return model
    if scenario == "single":
        fixed = copy.deepcopy(layer).fix_pattern(layer.single_pattern() if layer.fixed_pattern is None
                                                 else layer.fixed_pattern)
        return nn.Sequential(fixed, model)
    if scenario == "ensemble":
        if layer.fixed_pattern is not None:
            return nn.Sequential(layer, model)
        return PatternEnsemble(model, layer)
    if scenario == "eot":
        return defended
    raise ValueError(f"unknown scenario {scenario!r}")


def model_specs(cfg: Mapping[str, Any], input_size: int) -> list[ModelSpec]:
    """The one standard model the defenses wrap (no retraining; used by ``--dry-run``)."""
    return [ModelSpec(arch=cfg["arch"] or cfg["model"]["arch"], defective=None, seed=0)]


def run(cfg: Mapping[str, Any], out: str | Path) -> dict:
    writer = ResultWriter(out, NAME, cfg, DESCRIPTION)
    data = load_data(cfg)
    model = get_model(model_specs(cfg, data.input_size)[0], cfg, data, writer.models)
    x, y = data.x_test[:cfg["n_images"]], data.y_test[:cfg["n_images"]]
    seed = int(cfg.get("seed", 0))
    acc: dict[str, Any] = {"plain_clean": accuracy(model, x, y, cfg)}
    for d_i, kind in enumerate(cfg["defenses"]):
        layer = defense_layer(kind, data.input_size, seed + d_i)
        defended = nn.Sequential(layer, model).eval()
        res = {"clean": accuracy(defended, x, y, cfg), "plain_model_vanilla": {}}
        for scenario in cfg["scenarios"]:
            res[scenario] = {}
            for params in cfg["attacks"]:
                a = attack_label(params)
                p = dict(params, eot=cfg["eot"]) if scenario == "eot" else params
                target = attacked_model(scenario, model, layer, defended)
                x_adv = run_attack(make_attack(target, p, cfg), x, y, cfg, desc=f"{kind} {scenario} {a}")
                res[scenario][a] = accuracy(defended, x_adv, y, cfg)
                if scenario == "vanilla":
                    res["plain_model_vanilla"][a] = accuracy(model, x_adv, y, cfg)
                if scenario == "eot" and d_i == 0 and params is cfg["attacks"][0]:
                    save_adversarial_grid(writer.figure("adversarial_grid.png", f"EOT {a} vs {kind}"), x, x_adv, y,
                                          predict(defended, x, cfg), predict(defended, x_adv, cfg), classes=data.classes,
                                          title=f"EOT {attack_text(params, a)} adversarial examples vs the {kind} defense (predictions: "
                                                f"defended model)\n{writer.subtitle(data)}")
        acc[kind] = res
        attacks = [attack_label(p) for p in cfg["attacks"]]
        rows = [["plain model, vanilla", *(fmt_pct(res["plain_model_vanilla"][a]) for a in attacks), fmt_pct(acc["plain_clean"])]]
        rows += [[f"randomized, {s}" + (f" (n={cfg['eot']})" if s == "eot" else ""),
                  *(fmt_pct(res[s][a]) for a in attacks), fmt_pct(res["clean"])] for s in cfg["scenarios"]]
        seed_scenarios = [s for s in cfg["scenarios"] if s != "eot"]
        caption_extra = ""
        if "eot" in cfg["scenarios"] and seed_scenarios:
            res["eot_verdict"] = {}
            drops = []
            for a in attacks:
                worst = min(seed_scenarios, key=lambda sc: res[sc][a])
                text, nums = adaptive_verdict(
                    f"{kind}, {a}", f"the seed's strongest scenario ({worst})", res[worst][a],
                    f"EOT (n={cfg['eot']})", res["eot"][a], reference=res["plain_model_vanilla"][a],
                    reference_label="the plain model under the same white-box attack")
                res["eot_verdict"][a] = {**nums, "non_adaptive_scenario": worst}
                drops.append(nums["drop"])
                writer.note(text)
            rows.append(["drop: seed's strongest scenario - eot (points)",
                         *("-" if d is None else f"{100 * d:+.2f}" for d in drops), "-"])
            rows.append(["eot: lead over plain model vanishes",
                         *({True: "yes", False: "no", None: "-"}[res["eot_verdict"][a]["vanishes"]] for a in attacks),
                         "-"])
            caption_extra = (f" 'Vanishes': under EOT the randomized model leads the plain model under the same "
                             f"white-box attack by at most {100 * VANISH_MARGIN:g} points.")
        table_no = {"resize_pad": "Tables 2-4", "one_pixel_pad": "Table 5", "one_pixel_resize": "Table 6"}[kind]
        writer.table(f"{table_no} layout: {kind}", markdown_table(
            ["Target / scenario", *attacks, "Clean"], rows,
            f"Top-1 accuracy on adversarial examples of the first {len(y)} test images; defense {layer!r}. 'eot' is "
            f"the adaptive attack the seed did not run.{caption_extra}"))
    writer.numbers.update({"accuracy": acc, "n_images": len(y)})
    return writer.finish(data)
