"""Generate docs/reproduction.md: every claim of seeds 000-004 judged on our committed results.

    python -m sparsemask.experiments.reproduction [--results docs/results] [--out docs/reproduction.md]
                                                  [--suffix small]

Reads ``<results>/<experiment>-<suffix>/results.json`` for every registered experiment that has
one, evaluates every claim of :data:`sparsemask.experiments.claims.CLAIMS` on them and writes one
table per seed (claim, where, the seed's number, ours, verdict, reason), a count of verdicts,
the keys each claim reads, and links to each results directory and its plots. The scale (data
set, model, training) is read from the results' ``config``, never typed. An experiment without
results gives "not run" rows; nothing here raises for a missing or malformed results file.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from . import EXPERIMENTS
from .claims import ADAPTIVE_VERDICTS, CLAIMS, VERDICTS, Outcome, claims_for, evaluate, experiments_of

__all__ = ["load_results", "render", "write", "main", "SEED_TITLES"]

SEED_TITLES = {
    "000": "Random Mask (defective neurons, first version)",
    "001": "Defective Convolutional Layers Learn Robust CNNs",
    "002": "MAD: a mask-based adversarial defense",
    "003": "Random Spiking and an evaluation framework",
    "004": "Mitigating adversarial effects through randomization (Xie et al.)",
}


def load_results(results_dir: str | os.PathLike, suffix: str = "small",
                 names: Optional[Sequence[str]] = None) -> tuple[dict[str, dict], dict[str, str]]:
    """(experiment -> results dict, experiment -> why it is absent) for ``<dir>/<name>-<suffix>``."""
    found, absent = {}, {}
    for name in names if names is not None else list(EXPERIMENTS):
        path = Path(results_dir) / f"{name}-{suffix}" / "results.json"
        if not path.is_file():
            absent[name] = f"no {path.as_posix()}"
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            absent[name] = f"{path.as_posix()} unreadable ({type(e).__name__})"
            continue
        if not isinstance(data, dict):
            absent[name] = f"{path.as_posix()} is not a JSON object"
            continue
        found[name] = data
    return found, absent


def _cell(text: Any) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _model_name(cfg: Mapping[str, Any]) -> str:
    model = dict(cfg.get("model") or {})
    arch = cfg.get("arch") or model.get("arch") or "?"
    try:
        from .specs import arch_name, builder_kwargs

        return arch_name(arch, builder_kwargs({"arch": arch}, cfg))
    except Exception:  # a config from another version: show what it says
        return f"{arch} {({k: v for k, v in model.items() if k != 'arch' and v is not None})}"


def _setting(res: Mapping[str, Any]) -> str:
    """``fashion-mnist 6000/1000, ResNet-18 (width 0.25), 4 epochs, scale small`` from a results file."""
    cfg = res.get("config") or {}
    data = res.get("data") or cfg.get("data") or {}
    train = cfg.get("train") or {}
    parts = [f"{data.get('name', '?')} {data.get('n_train', '?')}/{data.get('n_test', '?')}", _model_name(cfg)]
    if train.get("epochs") is not None:
        parts.append(f"{train['epochs']} epochs")
    parts.append(f"scale {cfg.get('scale', '?')}")
    return ", ".join(str(p) for p in parts)


def _rel(target: Path, out: Path) -> str:
    return Path(os.path.relpath(target, out.parent)).as_posix()


def _verdict_cell(o: Outcome) -> str:
    return f"**{o.verdict}**"


def _ours_cell(o: Outcome, results: Mapping[str, dict]) -> str:
    names = experiments_of(o.claim)
    if not names:
        return "—"
    where = "; ".join(f"`{n}`" for n in names)
    if not o.summary:
        return f"{where}: —"
    settings = sorted({_setting(results[n]) for n in names if n in results})
    return f"{where} ({'; '.join(settings)}): {o.summary}"


def _plot_overview(results: Mapping[str, dict], out: Path) -> list[tuple[str, str]]:
    """Overview plots from curves the results hold; [(filename, caption)]. Skips what is missing."""
    figures = []
    try:
        from .claims import bottom_keys, standard_key
        from .report import plot_curves
    except Exception:  # matplotlib missing: the document still renders
        return figures
    g = results.get("001-gaussian")
    try:
        numbers = g["numbers"]
        sig, acc = numbers["sigmas_255"], numbers["accuracy"]
        std = standard_key(acc)
        series = {std.split("/", 1)[-1]: acc[std]}
        series.update({k.split("/", 1)[-1]: acc[k] for _, k in sorted(bottom_keys(acc).items())})
        name = "reproduction_gaussian.png"
        plot_curves(out.parent / name, sig, series, xlabel="σ (0-255 scale)", ylabel="accuracy",
                    title="Seed 000 Fig. 4 / 001 Fig. 5: additive Gaussian noise (ours)")
        figures.append((name, f"Accuracy under additive Gaussian noise ({_setting(g)}); from "
                              "`001-gaussian` results"))
    except Exception:
        pass
    s = results.get("003-stability")
    try:
        numbers = s["numbers"]
        name = "reproduction_jpeg.png"
        plot_curves(out.parent / name, numbers["jpeg_qualities"], numbers["jpeg_stability"], xlabel="JPEG quality",
                    ylabel="prediction stability", title="Seed 003 Fig. 2: stability vs JPEG quality (ours)")
        figures.append((name, f"Prediction stability under JPEG compression ({_setting(s)}); from "
                              "`003-stability` results"))
    except Exception:
        pass
    return figures


def render(results: Mapping[str, dict], absent: Mapping[str, str], out: Path, results_dir: Path,
           suffix: str = "small", plots: bool = True) -> tuple[str, list[Outcome]]:
    """The markdown text of docs/reproduction.md and every claim's outcome."""
    outcomes = [evaluate(c, results) for c in CLAIMS]
    by_id = {o.claim.id: o for o in outcomes}
    lines = ["# Reproduction of the seed papers' claims", "",
             "<!-- Generated by `python -m sparsemask.experiments.reproduction`; do not edit by hand. -->", "",
             "Every claim of seeds 000-004 that this project can test, quoted from the seed, with the seed's own "
             "number, ours, and a verdict by *direction and rough size* (our scale cannot match the seeds' "
             "absolute numbers, so no rule compares them). Every number under *Ours* is read from a committed "
             f"`{_rel(results_dir, out)}/<experiment>-{suffix}/results.json`; the claims and their rules live in "
             "`sparsemask/experiments/claims.py`.", "",
             "Verdicts: **reproduced** (same direction, rough size as the rule asks), **partly** (same direction, "
             "smaller, or only part of the claim), **not reproduced** (opposite or no effect), **not run** (the "
             "experiment or the key the claim reads is missing from the results), **not tested here** (no "
             "experiment measures it; the reason says where it is measured, if anywhere). Rows marked *adaptive* "
             "test an attack the seed did not run; their verdict says whether the claimed robustness **holds** "
             "or **vanishes under adaptive attack**.", ""]

    # Scale, from the results themselves.
    lines += ["## Our scale", ""]
    if results:
        settings: dict[str, list[str]] = {}
        for name, res in results.items():
            settings.setdefault(_setting(res), []).append(name)
        for setting, names in settings.items():
            lines.append(f"- {setting}: {', '.join(f'`{n}`' for n in names)}")
        torch_v = {str((r.get("environment") or {}).get("torch")) for r in results.values()}
        lines += ["", f"torch {', '.join(sorted(torch_v))}. Hyperparameters: each results.json's `config`.", ""]
    else:
        lines += ["No results found: every claim below is *not run*.", ""]
    if absent:
        lines += ["Experiments without results (their claims are *not run*): "
                  + ", ".join(f"`{n}` ({why})" for n, why in absent.items()), ""]

    # Summary counts.
    verdicts = [*VERDICTS[:3], *ADAPTIVE_VERDICTS, *VERDICTS[3:]]
    lines += ["## Summary", "", "| Seed | " + " | ".join(verdicts) + " | claims |",
              "|---|" + "---|" * (len(verdicts) + 1)]
    for seed in SEED_TITLES:
        row = [o for o in outcomes if o.claim.seed == seed]
        lines.append(f"| {seed} | " + " | ".join(str(sum(o.verdict == v for o in row)) for v in verdicts)
                     + f" | {len(row)} |")
    lines.append("| all | " + " | ".join(str(sum(o.verdict == v for o in outcomes)) for v in verdicts)
                 + f" | {len(outcomes)} |")
    lines.append("")

    # One table per seed.
    for seed, title in SEED_TITLES.items():
        lines += [f"## Seed {seed}: {title}", "",
                  "| Claim | Where | Seed's number | Ours | Verdict | Reason |", "|---|---|---|---|---|---|"]
        for c in claims_for(seed):
            o = by_id[c.id]
            tag = " *(adaptive)*" if c.adaptive else ""
            lines.append("| " + " | ".join(_cell(x) for x in (
                f"`{c.id}`{tag}: \u201c{c.quote}\u201d", c.where, c.seed_number, _ours_cell(o, results),
                _verdict_cell(o), o.reason)) + " |")
        lines.append("")

    # Plots.
    figures = _plot_overview(results, out) if plots else []
    if figures:
        lines += ["## Overview plots", ""]
        for name, caption in figures:
            lines += [f"![{caption}]({name})", "", caption, ""]

    # Links.
    lines += ["## Results and plots", "", "| Experiment | Results | Plots |", "|---|---|---|"]
    for name in EXPERIMENTS:
        d = results_dir / f"{name}-{suffix}"
        if name in results:
            figs = results[name].get("figures") or []
            plots_md = ", ".join(f"[{f}]({_rel(d / f, out)})" for f in figs) or "—"
            lines.append(f"| `{name}` | [results.md]({_rel(d / 'results.md', out)}), "
                         f"[results.json]({_rel(d / 'results.json', out)}) | {plots_md} |")
        else:
            lines.append(f"| `{name}` | not run ({_cell(absent.get(name, 'no results'))}) | — |")
    lines.append("")

    # Keys and rules, for whoever changes an experiment's numbers.
    lines += ["## Keys read and rules", "",
              "What each claim reads from its experiment's `numbers` and the rule that gives its verdict.", "",
              "| Claim | Experiment | Keys read | Rule |", "|---|---|---|---|"]
    for c in CLAIMS:
        if c.experiment is None:
            continue
        lines.append("| " + " | ".join(_cell(x) for x in (
            f"`{c.id}`", ", ".join(f"`{n}`" for n in experiments_of(c)), "; ".join(f"`{k}`" for k in c.keys),
            c.rule)) + " |")
    lines.append("")
    return "\n".join(lines), outcomes


def write(results_dir: str | os.PathLike = "docs/results", out: str | os.PathLike = "docs/reproduction.md",
          suffix: str = "small", plots: bool = True) -> list[Outcome]:
    """Load, evaluate, write ``out`` (and its overview PNGs next to it); returns the outcomes."""
    results_dir, out = Path(results_dir), Path(out)
    results, absent = load_results(results_dir, suffix)
    out.parent.mkdir(parents=True, exist_ok=True)
    text, outcomes = render(results, absent, out, results_dir, suffix, plots)
    out.write_text(text)
    return outcomes


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sparsemask.experiments.reproduction", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results", default="docs/results", help="directory holding <experiment>-<suffix>/results.json")
    p.add_argument("--out", default="docs/reproduction.md", help="markdown file to write")
    p.add_argument("--suffix", default="small", help="results directory suffix (the scale)")
    p.add_argument("--no-plots", action="store_true", help="skip the overview PNGs")
    args = p.parse_args(argv)
    outcomes = write(args.results, args.out, args.suffix, plots=not args.no_plots)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.verdict] = counts.get(o.verdict, 0) + 1
    print(f"wrote {args.out}: {len(outcomes)} claims; " + ", ".join(f"{v}: {n}" for v, n in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
