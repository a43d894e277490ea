"""A robustness report in one call: a standard attack suite over a list of ε.

:func:`evaluate_robustness` runs clean accuracy, FGSM, PGD, APGD-CE, APGD-DLR, Square, a
transfer attack (from ``source_model``) and random noise at every ε, and reports per attack
and ε the accuracy, plus the **robust accuracy**: the fraction of examples classified
correctly on the clean input *and* under every attack of the suite (AutoAttack's worst case
per example). Gradient attacks use EOT when ``eot`` is set (randomized defenses); whether the
model is randomized is measured (two forward passes differ) and stated in the report.
``sparsemask robustness`` is the command-line front end.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from . import eval as ev
from .attacks import make_attack
from .attacks._common import check_norm, flat_norm

__all__ = ["evaluate_robustness", "is_randomized", "SUITE", "DEFAULT_SUITE"]

#: every entry the suite knows, in report order
SUITE = ("clean", "fgsm", "pgd", "apgd_ce", "apgd_dlr", "apgd_t", "square", "transfer", "noise")
#: the default: all but APGD-T (9 targeted runs: AutoAttack's standard version uses it in place
#: of APGD-DLR); ``transfer`` runs only when a ``source_model`` is given
DEFAULT_SUITE = tuple(s for s in SUITE if s != "apgd_t")

LABELS = {"clean": "clean", "fgsm": "FGSM", "pgd": "PGD", "apgd_ce": "APGD-CE", "apgd_dlr": "APGD-DLR",
          "apgd_t": "APGD-T", "square": "Square", "transfer": "transfer PGD", "noise": "random noise"}
GRADIENT = ("fgsm", "pgd", "apgd_ce", "apgd_dlr", "apgd_t")  # the entries EOT applies to


@torch.no_grad()
def is_randomized(model: Callable[[Tensor], Tensor], x: Tensor) -> bool:
    """Whether two forward passes of ``model`` on x [n, ...] differ, in the model's current mode
    (a randomized defense: MAD, Random Spiking, resize-and-pad, MC dropout …)."""
    device = ev.model_device(model, default=x.device)
    xb = x.to(device)
    return not torch.equal(model(xb), model(xb))


def _noise(x: Tensor, eps: float, norm: str, seed: int) -> Tensor:
    """Random noise on the surface of the ε-ball (a random vertex for L∞, a random direction
    of length ε for L2), clipped to [0, 1]: the non-adversarial baseline at the same budget."""
    g = torch.Generator().manual_seed(seed)
    if norm == "inf":
        d = torch.where(torch.rand(x.shape, generator=g) < 0.5, -1.0, 1.0)
    else:
        d = torch.randn(x.shape, generator=g)
        d = d / flat_norm(d, norm).clamp_min(1e-12)
    return (x + eps * d.to(x.device, x.dtype)).clamp(0, 1)


def evaluate_robustness(model, x: Tensor, y: Tensor, *, eps255: Optional[Sequence[float]] = (2, 8, 16),
                        eps: Optional[Sequence[float]] = None, norm="inf", suite: Sequence[str] = DEFAULT_SUITE,
                        eot: Optional[int] = None, source_model=None, pgd_steps: int = 20, apgd_steps: int = 100,
                        square_queries: int = 5000, batch_size: int = 256, seed: int = 0,
                        out: Optional[str | Path] = None, progress: bool = False,
                        device: Optional[torch.device] = None) -> dict[str, Any]:
    """Run the attack suite on ``model`` at every ε; return (and with ``out``, write) the report.

    Args:
        model: callable [N, ...] -> logits [N, K] (any defense wrapper), in the mode it is
            deployed in (its mode is not changed).
        x, y: test inputs [N, ...] in [0, 1] and int64 labels [N].
        eps255: budgets on the 0-255 scale (L∞ convention); ignored when ``eps`` is given.
        eps: budgets on the [0, 1] scale (needed for L2, where budgets are not in 0-255 units).
        norm: ``"inf"`` or ``"2"``.
        suite: entries of :data:`SUITE` (default :data:`DEFAULT_SUITE`); ``transfer`` needs
            ``source_model`` (skipped otherwise).
        eot: average every gradient over this many forward passes (for randomized models).
        source_model: surrogate whose PGD examples are transferred to ``model``.
        pgd_steps / apgd_steps / square_queries: attack budgets (AutoAttack: 100 / 5000).
        batch_size: examples per attack call. seed: seeds every attack and the noise.
        out: directory for ``report.md``, ``report.json`` and ``robust_accuracy.png``.
        progress: tqdm bars.
    Returns: a dict with ``eps`` (list), ``accuracy`` {entry: [acc per ε]} (``clean`` repeated),
    ``robust_accuracy`` [per ε], ``randomized``, ``eot``, ``seconds`` {entry: total},
    ``attacks`` {entry: the attack's parameters}, ``notes``.
    """
    norm = check_norm(norm, ("inf", "2"))
    unknown = [s for s in suite if s not in SUITE]
    if unknown or not suite:
        raise ValueError(f"suite must be a non-empty list of {SUITE}, got {list(suite)!r}")
    if eps is None:
        if eps255 is None:
            raise ValueError("give eps255 (0-255 scale) or eps ([0, 1] scale)")
        if norm != "inf":
            raise ValueError("eps255 is the L-inf 0-255 convention; for norm='2' give eps= on the [0, 1] scale")
        eps_list = [float(e) / 255.0 for e in eps255]
    else:
        eps_list = [float(e) for e in eps]
    if not eps_list or any(not e > 0 for e in eps_list):
        raise ValueError(f"eps / eps255 must be a non-empty list of budgets > 0, got {eps_list}")
    if eot is not None and (isinstance(eot, bool) or not isinstance(eot, int) or eot < 1):
        raise ValueError(f"eot must be None or an int >= 1, got {eot!r}")
    ev.check_labels(x, y)

    notes: list[str] = []
    randomized = is_randomized(model, x[:min(len(x), 16)])
    if randomized and not eot:
        notes.append("the model is randomized but no EOT was used: gradient attacks follow single draws "
                     "(pass eot=N / --eot N for an adaptive evaluation)")
    entries = [s for s in suite if s != "clean"]
    if "transfer" in entries and source_model is None:
        entries.remove("transfer")
        notes.append("transfer skipped: no source model given")
    if "square" in entries and x.dim() != 4:
        entries.remove("square")
        notes.append("square skipped: it needs images [N, C, H, W]")

    correct_clean = ev.predict(model, x, batch_size, device=device, progress=progress, desc="clean") == y
    accuracy: dict[str, list[float]] = {"clean": [float(correct_clean.double().mean())] * len(eps_list)}
    robust: list[float] = []
    seconds: dict[str, float] = {}
    params_of: dict[str, dict] = {}
    for i, e in enumerate(eps_list):
        robust_rows = correct_clean.clone()
        for entry in entries:
            t0 = time.perf_counter()
            if entry == "noise":
                x_adv = _noise(x, e, norm, seed + i)
                params_of[entry] = {"kind": "uniform sign" if norm == "inf" else "gaussian direction", "norm": norm}
            else:
                params = _params(entry, norm, pgd_steps, apgd_steps, square_queries)
                if eot and entry in GRADIENT:
                    params["eot"] = eot
                params_of[entry] = dict(params)
                attacked = source_model if entry == "transfer" else model
                attack = make_attack(attacked, {**params, "eps": e}, seed=seed, progress=False)
                x_adv = ev.run_attack(attack, x, y, batch_size=batch_size, device=device, progress=progress,
                                      desc=f"{LABELS[entry]} eps={e:.4g}")
            correct = ev.predict(model, x_adv, batch_size, device=device, progress=progress,
                                 desc=f"score {LABELS[entry]}") == y
            robust_rows &= correct
            accuracy.setdefault(entry, []).append(float(correct.double().mean()))
            seconds[entry] = seconds.get(entry, 0.0) + time.perf_counter() - t0
        robust.append(float(robust_rows.double().mean()))

    report = {"n": int(len(y)), "norm": norm, "eps": eps_list,
              "eps255": [e * 255 for e in eps_list] if norm == "inf" else None,
              "suite": ["clean", *entries] if "clean" in suite else entries, "accuracy": accuracy,
              "robust_accuracy": robust, "randomized": randomized, "eot": eot, "attacks": params_of,
              "seconds": seconds, "seed": seed, "notes": notes}
    if out is not None:
        write_report(report, out)
    return report


def _params(entry: str, norm: str, pgd_steps: int, apgd_steps: int, square_queries: int) -> dict:
    """The registry entry (see :func:`sparsemask.attacks.make_attack`) for one suite entry."""
    if entry == "fgsm":
        return {"name": "fgsm", "norm": norm}
    if entry in ("pgd", "transfer"):
        return {"name": "pgd", "norm": norm, "steps": pgd_steps}
    if entry in ("apgd_ce", "apgd_dlr", "apgd_t"):
        return {"name": entry, "norm": norm, "steps": apgd_steps}
    if entry == "square":
        return {"name": "square", "norm": norm, "queries": square_queries}
    raise ValueError(f"unknown suite entry {entry!r}")


def _eps_label(report: dict, e: float) -> str:
    return f"{e * 255:g}/255" if report["norm"] == "inf" else f"{e:g}"


def write_report(report: dict, out: str | Path) -> Path:
    """Write ``report.json``, ``report.md`` and ``robust_accuracy.png`` into directory ``out``."""
    from .experiments.report import fmt_pct, markdown_table

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    eps_labels = [_eps_label(report, e) for e in report["eps"]]
    rows = [[LABELS[k], *[fmt_pct(v) for v in vals]] for k, vals in report["accuracy"].items()]
    rows.append(["**robust (worst case)**", *[f"**{fmt_pct(v)}**" for v in report["robust_accuracy"]]])
    mode = "randomized (two forward passes differ)" if report["randomized"] else "deterministic"
    eot = f"EOT over {report['eot']} draws for gradient attacks" if report["eot"] else "no EOT"
    md = [f"# Robustness report ({'L∞' if report['norm'] == 'inf' else 'L2'})", "",
          f"{report['n']} test examples; the model is {mode}; {eot}; seed {report['seed']}.", "",
          markdown_table(["attack", *[f"ε = {s}" for s in eps_labels]], rows,
                         "Accuracy under each attack; robust = correct on the clean input and under every attack "
                         "(per example, AutoAttack's definition)."), "## Attacks", ""]
    md += [f"* {LABELS[k]}: `{v}` ({report['seconds'].get(k, 0):.1f} s)" for k, v in report["attacks"].items()]
    if report["notes"]:
        md += ["", "## Notes", "", *[f"* {n}" for n in report["notes"]]]
    (out / "report.md").write_text("\n".join(md) + "\n")
    _plot(report, out / "robust_accuracy.png")
    return out


def _plot(report: dict, path: Path) -> None:
    """Accuracy (%) vs ε, one line per attack, the worst case thick and black; the legend sits
    outside the axes so it never covers a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [e * 255 for e in report["eps"]] if report["norm"] == "inf" else report["eps"]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for k, vals in report["accuracy"].items():
        ax.plot(xs, [100 * v for v in vals], marker="o", label=LABELS[k], linestyle="--" if k == "clean" else "-")
    ax.plot(xs, [100 * v for v in report["robust_accuracy"]], marker="s", color="black", linewidth=2.5,
            label="robust (worst case)")
    ax.set_xticks(xs)
    ax.set_xlabel("ε (0-255 scale)" if report["norm"] == "inf" else "ε (L2, [0, 1] scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Accuracy under each attack vs ε ({'L∞' if report['norm'] == 'inf' else 'L2'}, "
                 f"{report['n']} test examples)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
