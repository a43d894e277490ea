"""Speed plots from the benchmark JSON files: speedup vs keep probability.

    python benchmarks/plot_speed.py --layers benchmarks/results/cpu.json \
        --train-step benchmarks/results/train_step_cpu.json benchmarks/results/train_step_cpu_thread.json --out docs

Writes <out>/speed_<device>_layers.png (one line per layer shape, forward+backward, sparse
kernel vs the dense baseline, with the ideal 1/keep) and <out>/speed_<device>_train_step.png
(whole training step of the defective ResNet-18, sparse and auto vs the dense reference;
error bars: the range over interleaved rounds; dashed: the 1.6x target of issue 8).
"""
from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402


def _keep_axis(ax, keeps) -> None:
    """Log keep axis ticked at the measured keeps, written as plain numbers (0.05, 0.1 …)
    rather than matplotlib's 6x10^-2 minor labels."""
    ax.xaxis.set_major_locator(FixedLocator(sorted(keeps)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())


def _times_axis(ax) -> None:
    """Speedup ticks as 0.5x, 1x, 2x … on a log axis."""
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}x" if f"{v:.0e}"[0] in "25" else ""))


def _legend_outside(ax, title=None) -> None:
    """Right of the axes, so it covers no curve (saved with bbox_inches="tight")."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False, fontsize=8,
              title=title, title_fontsize=8, alignment="left")


def plot_layers(path: str, out: str, device: str) -> str:
    with open(path) as f:
        data = json.load(f)
    rows = [r for r in data["rows"] if r["mode"] == "forward+backward"]
    fig, ax = plt.subplots(figsize=(6, 4))
    keeps = sorted({r["keep"] for r in rows})
    ax.plot(keeps, [1 / k for k in keeps], "k:", label="ideal 1/keep")
    for shape in dict.fromkeys(r["shape"] for r in rows):
        pts = sorted((r["keep"], r["speedup"]) for r in rows if r["shape"] == shape)
        ax.plot(*zip(*pts), "o-", label=shape)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="keep probability (log scale)",
           ylabel="speedup vs dense conv2d * mask (log scale)",
           title=f"masked conv2d forward+backward, {device}, batch {data['batch']}\n{data['environment']['machine']}")
    _keep_axis(ax, keeps)
    _times_axis(ax)
    ax.grid(alpha=0.3, which="both")
    _legend_outside(ax, "layer: C_in-C_out@H\n(s2 = stride 2)")
    fig.tight_layout()
    dest = os.path.join(out, f"speed_{device}_layers.png")
    fig.savefig(dest, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return dest


def plot_train_step(paths: list[str], out: str, device: str) -> str:
    """One line per (file, backend); error bars span the speedup over the interleaved rounds."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    env, batch, all_keeps = None, None, set()
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        env = data["environment"]
        rows = [r for r in data["rows"] if r["backend"] != "dense"]
        batch = rows[0]["batch"]
        clock = rows[0].get("clock", "wall")
        how = f"{rows[0]['threads']} thr, {'CPU time' if clock == 'thread' else 'wall'}"
        for backend in dict.fromkeys(r["backend"] for r in rows):
            pts = sorted((r["keep"], r["speedup_vs_dense"], r.get("speedup_range")) for r in rows
                         if r["backend"] == backend)
            keeps, speed = [p[0] for p in pts], [p[1] for p in pts]
            all_keeps.update(keeps)
            lo = [p[1] - p[2][0] if p[2] else 0 for p in pts]
            hi = [p[2][1] - p[1] if p[2] else 0 for p in pts]
            ax.errorbar(keeps, speed, yerr=[lo, hi], fmt="o-", capsize=3, label=f"{backend} ({how})")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.axhline(1.6, color="grey", lw=0.8, ls="--", label="1.6x target (issue 8)")
    ax.set(xscale="log", xlabel="keep probability of the bottom layers (log scale)",
           ylabel="training-step speedup vs dense reference",
           title=f"defective ResNet-18 training step, {device}, batch {batch}\n{env.get('gpu', env['cpu'])}")
    _keep_axis(ax, all_keeps)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.grid(alpha=0.3)
    _legend_outside(ax, "backend (threads, clock)")
    fig.tight_layout()
    dest = os.path.join(out, f"speed_{device}_train_step.png")
    fig.savefig(dest, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return dest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", help="JSON from bench_masked_conv.py")
    parser.add_argument("--train-step", nargs="+", help="JSON file(s) from bench_train_step.py (one plot)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="docs")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.layers:
        print(plot_layers(args.layers, args.out, args.device))
    if args.train_step:
        print(plot_train_step(args.train_step, args.out, args.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
