"""Whole training step of a defective ResNet-18: sparse kernels vs the dense reference.

One step = forward, cross-entropy, backward, SGD (momentum 0.9, weight decay 5e-4) on a
bottom-defective ResNet-18 (CIFAR stem, 32x32 inputs, 10 classes), images/s as the
median over steps. Backends:
  dense  the published implementation: F.conv2d(...) * mask, BN(...) * mask (sparsemask's
         "dense" backend; the same model and masks);
  auto   sparse kernels where they pay, dense elsewhere (the default);
  cpu    the sparse CPU kernels always (on CUDA: "cuda").
Each (backend, keep) runs in a fresh subprocess so its peak memory (max RSS on CPU,
torch.cuda.max_memory_allocated on GPU) is its own. With --rounds R the whole sweep runs R
times, configurations interleaved, and each row reports the least-disturbed round (the
lowest of its R medians) plus the speedup's range over the rounds: on a shared machine a
neighbour's burst slows one round, not all of them.

    python benchmarks/bench_train_step.py                       # CPU, N=64, float32
    python benchmarks/bench_train_step.py --device cuda --batch 256   # GPU, bf16 autocast
    python benchmarks/bench_train_step.py --quick               # smoke run
    python benchmarks/bench_train_step.py --threads 1 --clock thread   # shared machine: CPU time
    python benchmarks/bench_train_step.py --amps off bf16       # CPU float32 and bf16 autocast, interleaved
Writes <out>.json and <out>.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


def run_one(args) -> dict:
    """Time one (backend, keep) configuration in this process; returns a result dict."""
    import torch

    import sparsemask
    from sparsemask.models import resnet18
    from sparsemask.train import autocast_for

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = resnet18(num_classes=10, in_channels=3, input_size=32,
                     defective=dict(keep=args.keep, where="bottom", seed=0) if args.keep < 1.0 else None)
    model = model.to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(args.batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast_for(args.amp, device):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    times = []
    with sparsemask.backend(args.backend):
        for _ in range(args.warmup):
            step()
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.steps):
            t0 = clock()
            step()
            sync()
            times.append(clock() - t0)
    median = statistics.median(times)
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"backend": args.backend, "keep": args.keep, "batch": args.batch, "device": args.device,
            "step_ms": median * 1e3, "images_per_s": args.batch / median, "peak_mb": peak_mb,
            "steps": args.steps, "threads": torch.get_num_threads(), "clock": args.clock,
            "dtype": _dtype_label(args.amp, args.device)}


def _dtype_label(amp: str, device: str) -> str:
    return "bf16 autocast" if amp == "bf16" or (amp == "auto" and device == "cuda") else "float32"


def environment(device: str) -> dict:
    import torch

    import sparsemask

    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    env = {"date": dt.datetime.now().isoformat(timespec="seconds"), "cpu": f"{cpu}, {os.cpu_count()} cores",
           "torch": torch.__version__, "sparsemask": sparsemask.__version__, "threads": torch.get_num_threads(),
           "cpu_capability": sparsemask.cpu_capability()}
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=None, help="N (default 64 on CPU, 256 on CUDA)")
    parser.add_argument("--keeps", nargs="+", type=float, default=[0.05, 0.1, 0.3, 0.5])
    parser.add_argument("--backends", nargs="+", default=None, help="default: dense auto cpu|cuda")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "thread"], default="wall",
                        help="wall (default) or the main thread's CPU time (with --threads 1: robust to other "
                             "jobs on a shared machine, CPU only)")
    parser.add_argument("--amps", nargs="+", choices=["auto", "bf16", "off"], default=["auto"],
                        help="autocast modes to sweep (interleaved), as TrainConfig.amp: auto = bf16 on CUDA, "
                             "float32 on CPU; bf16 = bf16 autocast on either device; off = float32")
    parser.add_argument("--amp", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the sweep, interleaved; keep the best round")
    parser.add_argument("--quick", action="store_true", help="N=8, keep 0.1, 2 steps: a smoke run")
    parser.add_argument("--out", default="benchmarks/results/train_step_cpu", help="output prefix (.json/.md)")
    # internal: run a single configuration and print its JSON
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=float, default=0.1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch is None:
        args.batch = 256 if args.device == "cuda" else 64
    if args.clock == "thread" and (args.device != "cpu" or args.threads != 1):
        parser.error("--clock thread measures one thread's CPU time: use it with --device cpu --threads 1")
    if args.quick:
        args.batch, args.keeps, args.steps, args.warmup = 8, [0.1], 2, 1
    if args.one:
        print(json.dumps(run_one(args)))
        return 0
    backends = args.backends or ["dense", "auto", "cuda" if args.device == "cuda" else "cpu"]
    runs: dict = {}
    configs = [(amp, keep, backend) for amp in args.amps for keep in args.keeps for backend in backends]
    for rnd in range(args.rounds):
        for amp, keep, backend in configs:
            cmd = [sys.executable, "-m", "sparsemask.benchmarks.train_step", "--one", "--device", args.device, "--batch",
                   str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup), "--backend",
                   backend, "--keep", str(keep), "--clock", args.clock, "--amp", amp]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            result = json.loads(out.splitlines()[-1])
            runs.setdefault((amp, keep, backend), []).append(result)
            print(f"round {rnd + 1}/{args.rounds} {result['dtype']:13s} keep {keep:<5} {backend:6s} "
                  f"{result['step_ms']:8.1f} ms/step"
                  f"  {result['images_per_s']:8.1f} img/s  peak {result['peak_mb']:7.0f} MB", flush=True)
    rows = []
    for (_amp, keep, backend), results in runs.items():
        best = min(results, key=lambda r: r["step_ms"])
        rows.append(dict(best, rounds_ms=[r["step_ms"] for r in results]))
    dense = {(r["dtype"], r["keep"]): r for r in rows if r["backend"] == "dense"}
    for r in rows:
        d = dense.get((r["dtype"], r["keep"]))
        r["speedup_vs_dense"] = d["step_ms"] / r["step_ms"] if d else None
        per_round = [a / b for a, b in zip(d["rounds_ms"], r["rounds_ms"])] if d else []
        r["speedup_range"] = [min(per_round), max(per_round)] if per_round else None
    env = environment(args.device)
    if args.threads:
        env["threads"] = args.threads
    table = [f"Defective ResNet-18 (bottom), CIFAR 32x32, training step, N={args.batch}, {args.device}"
             f", channels_last — "
             f"{env.get('gpu', env['cpu'])}, {env['threads']} threads, torch {env['torch']}, {env['date']}", "",
             f"best of {args.rounds} interleaved round(s) of {args.steps} timed steps (median per round), "
             f"{'wall clock' if args.clock == 'wall' else 'thread CPU time'}", "",
             "| dtype | keep | backend | ms/step | images/s | speedup vs dense (same dtype) | per-round speedup "
             "| peak memory MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = f"{r['speedup_vs_dense']:.2f}x" if r["speedup_vs_dense"] else "-"
        rng = f"{r['speedup_range'][0]:.2f}-{r['speedup_range'][1]:.2f}x" if r["speedup_range"] else "-"
        table.append(f"| {r['dtype']} | {r['keep']} | {r['backend']} | {r['step_ms']:.1f} | {r['images_per_s']:.1f} | {sp} | {rng} | "
                     f"{r['peak_mb']:.0f} |")
    text = "\n".join(table) + "\n"
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"environment": env, "rows": rows}, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
