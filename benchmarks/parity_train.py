"""Accuracy parity: the sparse path and the dense reference train the same defective model
to the same accuracy.

Trains a bottom-defective ResNet-18 (keep 0.1, Fashion-MNIST 28x28, same seed, masks,
initial weights and batch order) with the sparse kernels (backend "auto") and with the
published dense implementation (backend "dense", F.conv2d * mask and BN * mask), for
--seeds seeds, then reports each run's test accuracy and time per epoch, each backend's
mean and spread across seeds, and the paired (same-seed) differences. Falls back to scikit-learn's digits when Fashion-MNIST is not
installed (and says so).

    python benchmarks/parity_train.py --epochs 2 --seeds 3 --out benchmarks/results/parity
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

import sparsemask
from sparsemask.data import load_dataset
from sparsemask.train import TrainConfig, build_model, evaluate, train


def load(args):
    try:
        train_set = load_dataset("fashion-mnist", split="train")
        test_set = load_dataset("fashion-mnist", split="test")
        name = "fashion-mnist"
    except Exception as err:  # missing data files: say so and use the embedded set
        print(f"Fashion-MNIST unavailable ({err}); using scikit-learn digits", file=sys.stderr)
        train_set, test_set, name = load_dataset("digits", split="train"), load_dataset("digits", split="test"), "digits"
    return name, train_set.subset(args.train_subset), test_set.subset(args.test_subset)


def run(backend, seed, args, data):
    name, train_set, test_set = data
    c, h = train_set[0][0].shape[0], train_set[0][0].shape[-1]
    torch.manual_seed(seed)
    model = build_model("resnet18", num_classes=10, in_channels=c, input_size=h,
                        defective=dict(keep=args.keep, where="bottom", seed=seed))
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=0.05, schedule="cosine", seed=seed,
                      device="cpu", progress=args.progress, amp=False, channels_last=True)
    t0 = time.perf_counter()
    with sparsemask.backend(backend):
        train(model, train_set, None, cfg)
        seconds = time.perf_counter() - t0
        acc = evaluate(model, test_set, batch_size=256, device="cpu", amp=False)
    acc = acc["acc"]
    print(f"{backend:6s} seed {seed}: test accuracy {acc:.4f}  ({seconds / args.epochs:.1f} s/epoch)", flush=True)
    return {"backend": backend, "seed": seed, "accuracy": acc, "seconds_per_epoch": seconds / args.epochs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--keep", type=float, default=0.1)
    parser.add_argument("--train-subset", type=int, default=6000)
    parser.add_argument("--test-subset", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=1,
                        help="seeds 0..K-1, each trained with both backends (paired runs)")
    parser.add_argument("--noise-seeds", type=int, default=0,
                        help="extra dense-only seeds (after --seeds) to widen the dense run-to-run estimate")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/parity")
    args = parser.parse_args(argv)
    data = load(args)
    rows = []
    for seed in range(args.seeds):
        rows += [run("auto", seed, args, data), run("dense", seed, args, data)]
    rows += [run("dense", s, args, data) for s in range(args.seeds, args.seeds + args.noise_seeds)]
    acc = {b: [r["accuracy"] for r in rows if r["backend"] == b] for b in ("auto", "dense")}
    paired = [a - d for a, d in zip(acc["auto"], acc["dense"])]
    summary = {"dataset": data[0], "args": vars(args), "rows": rows, "torch": torch.__version__,
               "mean": {b: statistics.fmean(v) for b, v in acc.items()},
               "spread": {b: max(v) - min(v) for b, v in acc.items()},
               "sparse_minus_dense_same_seed": paired, "mean_paired_difference": statistics.fmean(paired)}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    lines = [f"Accuracy parity, defective ResNet-18 (bottom keep {args.keep}), {data[0]}, {args.epochs} epoch(s) on "
             f"{args.train_subset} training images, N={args.batch}, CPU float32", "",
             "| backend | seed | test accuracy | s/epoch |", "|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['seed']} | {r['accuracy']:.4f} | {r['seconds_per_epoch']:.1f} |" for r in rows]
    lines += ["", "| backend | runs | mean accuracy | spread (max - min) |", "|---|---|---|---|"]
    lines += [f"| {b} | {len(v)} | {summary['mean'][b]:.4f} | {summary['spread'][b]:.4f} |" for b, v in acc.items()]
    lines += ["", "sparse - dense, same seed: " + ", ".join(f"{d:+.4f}" for d in paired) +
              f" (mean {summary['mean_paired_difference']:+.4f})"]
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
