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

from .citations import cite, seed_of
from .config import environment
from .specs import Data

__all__ = ["markdown_table", "plot_curves", "plot_bars", "save_adversarial_grid", "image_grid", "legend_outside",
           "ResultWriter", "fmt_pct"]

# --------------------------------------------------------------------------- writers

def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    """A GitHub markdown table; ``caption`` goes below it, as in the seeds."""
    header = [str(h) for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_md_text(c) for c in row) + " |")
    if caption:
        lines += ["", caption]
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(ax, title: str, subtitle: str) -> None:
    """``title`` in the plot's font, ``subtitle`` (the setting: dataset, scale …) smaller below it."""
    if title or subtitle:
        ax.set_title(title + (f"\n{subtitle}" if title and subtitle else subtitle), fontsize=10)


def legend_outside(ax, title: Optional[str] = None):
    """A legend to the right of the axes, so it never covers a bar or a curve; save the figure
    with ``bbox_inches="tight"`` (:func:`_save`) so it is not cut off."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False,
                     fontsize=8, title=title, title_fontsize=8, alignment="left")


def _save(fig, path) -> None:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _plt().close(fig)


def _percent_axis(ax, upper: float = 1.0) -> None:
    """Fractions shown as 0-100 % on the y axis, always from 0: a difference of a few points
    then looks as large as it is."""
    from matplotlib.ticker import PercentFormatter

    ax.set_ylim(0, upper * 1.04)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))


def plot_curves(path: str | os.PathLike, x: Sequence[float], series: Mapping[str, Sequence[float]],
                xlabel: str, ylabel: str, title: str = "", *, subtitle: str = "", legend_title: Optional[str] = None,
                percent: bool = False):
    """One line per series (e.g. accuracy vs σ per model) to a PNG; legend right of the axes.

    ``percent``: the values are fractions in [0, 1], shown as 0-100 %. Returns the (closed)
    matplotlib Figure."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, ys in series.items():
        ax.plot(list(x), [float("nan") if v is None else v for v in ys], marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(x) and len(x) <= 12:
        ax.set_xticks(list(x))
    if percent:
        _percent_axis(ax)
    _title(ax, title, subtitle)
    ax.grid(alpha=0.3)
    legend_outside(ax, legend_title)
    _save(fig, path)
    return fig


def plot_bars(path: str | os.PathLike, groups: Sequence[str], series: Mapping[str, Sequence[float]],
              ylabel: str, title: str = "", *, xlabel: str = "", subtitle: str = "",
              legend_title: Optional[str] = None, percent: bool = False):
    """Grouped bar chart (one group per entry of ``groups``, one bar per series), legend right of
    the axes; ``percent``: values are fractions in [0, 1], shown as 0-100 % and printed on the bars.
    Returns the (closed) matplotlib Figure."""
    plt = _plt()
    n_series = max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(5.5, 0.45 * len(groups) * n_series + 2), 4))
    width = 0.8 / n_series
    for k, (label, ys) in enumerate(series.items()):
        ys = [float("nan") if v is None else float(v) for v in ys]
        bars = ax.bar([i + k * width for i in range(len(groups))], ys, width=width, label=label)
        if percent and len(groups) * n_series <= 24:
            ax.bar_label(bars, labels=["" if v != v else f"{100 * v:.0f}" for v in ys], fontsize=7, padding=1)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
    long_labels = max((len(str(g)) for g in groups), default=0) * len(groups) > 60
    ax.set_xticklabels(groups, rotation=25 if long_labels else 0, ha="right" if long_labels else "center")
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if percent:
        _percent_axis(ax)
    _title(ax, title, subtitle)
    ax.grid(alpha=0.3, axis="y")
    ax.set_axisbelow(True)
    legend_outside(ax, legend_title)
    _save(fig, path)
    return fig


def _class_name(classes: Optional[Sequence[str]], label: int) -> str:
    if classes is not None and 0 <= label < len(classes):
        return str(classes[label])
    return str(label)


def image_grid(path: str | os.PathLike, rows: Sequence[tuple[str, Tensor, Sequence[str], Sequence[bool]]],
               title: str = "", footer: str = "") -> None:
    """Images in a grid: one entry of ``rows`` per row, ``(row name, images [n, C, H, W] in
    [0, 1], caption per image, whether each caption is a wrong prediction (drawn red))``."""
    plt = _plt()
    n = max((len(r[1]) for r in rows), default=0)
    n_lines = max((c.count("\n") + 1 for r in rows for c in r[2]), default=1)
    # constrained layout leaves each caption its own space above its image (tight_layout let
    # the captions of one row run into the images of the row above)
    fig, axes = plt.subplots(len(rows), max(n, 1), figsize=(1.45 * max(n, 1) + 0.4, (1.5 + 0.17 * n_lines) * len(rows)),
                             squeeze=False, layout="constrained")
    for r, (name, images, captions, wrong) in enumerate(rows):
        for i in range(axes.shape[1]):
            ax = axes[r, i]
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(images):
                ax.axis("off")
                continue
            img = images[i].detach().cpu().float()
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            if i < len(captions):
                ax.set_title(captions[i], fontsize=7, color="tab:red" if i < len(wrong) and wrong[i] else "black")
        axes[r, 0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    if footer:
        fig.supxlabel(footer, fontsize=7)
    _save(fig, path)


def save_adversarial_grid(path: str | os.PathLike, x: Tensor, x_adv: Tensor, y: Tensor,
                          pred_clean: Tensor, pred_adv: Tensor, n: int = 8, title: str = "", *,
                          classes: Optional[Sequence[str]] = None, row_names: Sequence[str] = ("clean", "adversarial"),
                          difference: Optional[str] = "perturbation", targets: Optional[Tensor] = None) -> None:
    """Rows: clean images (true class and prediction), adversarial images (prediction, red when
    wrong) and, unless ``difference`` is None, the perturbation x_adv - x, each rescaled to the
    full grey range (mid-grey = 0) with its size underneath: L∞ on the 0-255 scale, L2 with
    pixels in [0, 1].
    x, x_adv [N, C, H, W] in [0, 1]; y, pred_* [N] labels; ``classes``: names by label
    (e.g. ``data.classes``; default: the label numbers). ``row_names`` name the first two rows
    (e.g. ``("original", "4x4 patch-shuffled")`` for a grid that shows no attack); ``targets``
    [N]: a targeted attack's target classes, shown above each adversarial image."""
    n = min(n, len(x))
    label = [int(v) for v in y[:n]]
    pc, pa = [int(v) for v in pred_clean[:n]], [int(v) for v in pred_adv[:n]]
    name = lambda k: _class_name(classes, k)  # noqa: E731
    rows = [(row_names[0], x[:n], [f"true: {name(t)}\npred: {name(p)}" for t, p in zip(label, pc)],
             [p != t for t, p in zip(label, pc)]),
            (row_names[1], x_adv[:n], [f"pred: {name(p)}" for p in pa], [p != t for t, p in zip(label, pa)])]
    if targets is not None:
        rows[1] = (rows[1][0], rows[1][1], [f"target: {name(int(t))}\n{c}" for t, c in zip(targets[:n], rows[1][2])],
                   rows[1][3])
    if difference:
        deltas, captions = [], []
        for i in range(n):
            delta = (x_adv[i] - x[i]).detach().cpu().float()
            scale = float(delta.abs().max()) or 1.0
            deltas.append((delta / (2 * scale) + 0.5).clamp(0, 1))
            captions.append(f"L∞ {255 * float(delta.abs().max()):.0f}/255, L2 {float(delta.norm()):.2f}")
        rows.append((difference, deltas, captions, [False] * n))
    _footer = "captions: true class and the model's prediction; red = wrong prediction"
    if difference:
        _footer += (f"\n{difference} row: each image rescaled to the full grey range, mid-grey = 0 "
                    "(L∞ on the 0-255 scale, L2 with pixels in [0, 1])")
    image_grid(path, rows, title=title, footer=_footer)


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

    def subtitle(self, data: Optional[Data] = None, *extra: str) -> str:
        """The setting a figure shows, for its subtitle: ``digits, smoke scale`` (+ ``extra``)."""
        parts = [data.name] if data is not None else []
        if self.cfg.get("scale"):
            parts.append(f"{self.cfg['scale']} scale")
        return ", ".join([*parts, *(e for e in extra if e)])

    def finish(self, data: Optional[Data] = None) -> dict[str, Any]:
        result = {
            "experiment": self.name, "description": self.description, "config": self.cfg,
            "data": data.info() if data is not None else None, "environment": environment(),
            "models": self.models, "numbers": self.numbers, "notes": self.notes,
            "tables": {t: md for t, md in self.tables}, "figures": [f for f, _ in self.figures],
            "seconds": time.perf_counter() - self.t0,
        }
        (self.out / "results.json").write_text(json.dumps(_finite(result), indent=2, default=_json_default) + "\n")
        md = [f"# {self.name}", "", self.description, ""]
        seed = seed_of(self.name)
        if seed is not None:
            md += [f"Reproduces seed {seed}: {cite(seed)}", ""]
        md += [f"Scale `{self.cfg.get('scale')}`; data: {describe_data(data.info()) if data is not None else '-'}.", ""]
        for title, table in self.tables:
            md += [f"## {title}", "", table]
        for filename, caption in self.figures:
            md += [f"![{caption or filename}]({filename})", "", caption, ""]
        if self.notes:
            md += ["## Notes", ""] + [f"- {_md_text(n)}" for n in self.notes] + [""]
        md += ["## Configuration", "", "<details><summary>every hyperparameter of this run (also in "
               "<code>results.json</code>, <code>config</code>)</summary>", "", "```json",
               json.dumps(_finite(self.cfg), indent=2, default=_json_default), "```", "", "</details>", "",
               f"Ran in {result['seconds']:.1f} s.", ""]
        (self.out / "results.md").write_text("\n".join(md))
        return result


def describe_data(info: Mapping[str, Any]) -> str:
    """A dataset's ``info()`` as a phrase: ``digits, 1x8x8 images, 10 classes, 1200 train / 128
    test images`` (results.md never shows a Python dict)."""
    parts = [str(info.get("name", "?"))]
    if info.get("shape"):
        parts.append("x".join(str(v) for v in info["shape"]) + " images")
    if info.get("num_classes") is not None:
        parts.append(f"{info['num_classes']} classes")
    if info.get("n_train") is not None or info.get("n_test") is not None:
        parts.append(f"{info.get('n_train', '?')} train / {info.get('n_test', '?')} test images")
    known = {"name", "shape", "num_classes", "n_train", "n_test", "note"}
    parts += [f"{k} {_md_text(v)}" for k, v in info.items() if k not in known and v not in (None, "")]
    if info.get("note"):
        parts.append(str(info["note"]))
    return ", ".join(parts)


def _md_text(value: Any) -> str:
    """A value for running markdown text: dicts as ``k=v, …``, sequences comma-separated."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_md_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_md_text(v) for v in value)
    return str(value)


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
