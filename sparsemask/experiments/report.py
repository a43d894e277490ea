"""Reporting: markdown tables, PNG plots and adversarial-example grids, and the
:class:`ResultWriter` that writes results.json / results.md."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from torch import Tensor

from .config import environment
from .specs import Data

__all__ = ["markdown_table", "plot_curves", "plot_bars", "save_adversarial_grid", "ResultWriter", "fmt_pct"]

# --------------------------------------------------------------------------- writers

def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    """A GitHub markdown table; ``caption`` goes below it, as in the seeds."""
    header = [str(h) for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    if caption:
        lines += ["", caption]
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(path: str | os.PathLike, x: Sequence[float], series: Mapping[str, Sequence[float]],
                xlabel: str, ylabel: str, title: str = "") -> None:
    """One line per series (e.g. accuracy vs σ per model) to a PNG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, ys in series.items():
        ax.plot(list(x), list(ys), marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bars(path: str | os.PathLike, groups: Sequence[str], series: Mapping[str, Sequence[float]],
              ylabel: str, title: str = "") -> None:
    """Grouped bar chart (one group per entry of ``groups``, one bar per series)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.5, 0.9 * len(groups) * max(1, len(series)) / 2), 4))
    width = 0.8 / max(1, len(series))
    for k, (label, ys) in enumerate(series.items()):
        ax.bar([i + k * width for i in range(len(groups))], list(ys), width=width, label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
    ax.set_xticklabels(groups, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_adversarial_grid(path: str | os.PathLike, x: Tensor, x_adv: Tensor, y: Tensor,
                          pred_clean: Tensor, pred_adv: Tensor, n: int = 8, title: str = "") -> None:
    """Rows: clean images, adversarial images, perturbation (rescaled to the full grey range);
    titles show label -> prediction. x, x_adv [N, C, H, W] in [0, 1]."""
    plt = _plt()
    n = min(n, len(x))
    fig, axes = plt.subplots(3, max(n, 1), figsize=(1.3 * max(n, 1), 4.2), squeeze=False)

    def show(ax, img):
        img = img.detach().cpu().float()
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_xticks([])
        ax.set_yticks([])

    for i in range(n):
        delta = x_adv[i] - x[i]
        scale = float(delta.abs().max()) or 1.0
        show(axes[0, i], x[i])
        axes[0, i].set_title(f"{int(y[i])}->{int(pred_clean[i])}", fontsize=8)
        show(axes[1, i], x_adv[i])
        axes[1, i].set_title(f"adv->{int(pred_adv[i])}", fontsize=8)
        show(axes[2, i], (delta / (2 * scale) + 0.5).clamp(0, 1))
    axes[0, 0].set_ylabel("clean")
    axes[1, 0].set_ylabel("adversarial")
    axes[2, 0].set_ylabel("perturbation")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class ResultWriter:
    """Collects an experiment's numbers, tables and figures and writes them to ``out``:

    ``results.json`` (config, environment, models, every number), ``results.md`` (the tables
    laid out like the seed's, plus figure links) and the PNG files.
    """

    def __init__(self, out: str | os.PathLike, name: str, cfg: Mapping[str, Any], description: str = ""):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.name, self.cfg, self.description = name, dict(cfg), description
        self.numbers: dict[str, Any] = {}
        self.tables: list[tuple[str, str]] = []
        self.figures: list[tuple[str, str]] = []
        self.models: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.t0 = time.perf_counter()

    def table(self, title: str, markdown: str) -> None:
        self.tables.append((title, markdown))

    def figure(self, filename: str, caption: str = "") -> Path:
        """Reserve ``filename`` under ``out`` for a figure; returns its path."""
        self.figures.append((filename, caption))
        return self.out / filename

    def note(self, text: str) -> None:
        self.notes.append(text)

    def finish(self, data: Optional[Data] = None) -> dict[str, Any]:
        result = {
            "experiment": self.name, "description": self.description, "config": self.cfg,
            "data": data.info() if data is not None else None, "environment": environment(),
            "models": self.models, "numbers": self.numbers, "notes": self.notes,
            "tables": {t: md for t, md in self.tables}, "figures": [f for f, _ in self.figures],
            "seconds": time.perf_counter() - self.t0,
        }
        (self.out / "results.json").write_text(json.dumps(_finite(result), indent=2, default=_json_default) + "\n")
        md = [f"# {self.name}", "", self.description, "",
              f"Scale `{self.cfg.get('scale')}`; data: {data.info() if data is not None else '-'}.", ""]
        for title, table in self.tables:
            md += [f"## {title}", "", table]
        for filename, caption in self.figures:
            md += [f"![{caption or filename}]({filename})", "", caption, ""]
        if self.notes:
            md += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        md += [f"Every hyperparameter is in `results.json` (`config`). Ran in {result['seconds']:.1f} s.", ""]
        (self.out / "results.md").write_text("\n".join(md))
        return result


def _finite(obj):
    """NaN/inf -> None, recursively (strict JSON has no NaN; a missing number reads as null)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj):
    if isinstance(obj, Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return str(obj)


def fmt_pct(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}%"
