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
    ax.set(xscale="log", yscale="log", xlabel="keep probability", ylabel="speedup vs dense (fwd+bwd)",
           title=f"masked conv2d, {device}, N={data['batch']}\n{data['environment']['machine']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    dest = os.path.join(out, f"speed_{device}_layers.png")
    fig.savefig(dest, dpi=120)
    plt.close(fig)
    return dest


def plot_train_step(paths: list[str], out: str, device: str) -> str:
    """One line per (file, backend); error bars span the speedup over the interleaved rounds."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    env, batch = None, None
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
            lo = [p[1] - p[2][0] if p[2] else 0 for p in pts]
            hi = [p[2][1] - p[1] if p[2] else 0 for p in pts]
            ax.errorbar(keeps, speed, yerr=[lo, hi], fmt="o-", capsize=3, label=f"{backend} ({how})")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.axhline(1.6, color="grey", lw=0.8, ls="--")
    ax.set(xscale="log", xlabel="keep probability (bottom layers)", ylabel="training-step speedup vs dense reference",
           title=f"defective ResNet-18 training step, {device}, N={batch}\n{env.get('gpu', env['cpu'])}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    dest = os.path.join(out, f"speed_{device}_train_step.png")
    fig.savefig(dest, dpi=120)
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
