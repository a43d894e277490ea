"""CPU benchmark: sparse masked convolution vs the dense baseline a user would really run.

For each ResNet-18 bottom-layer shape at CIFAR size and each keep probability, times the
forward, the backward and both, for
  * dense:  F.conv2d (oneDNN) followed by the mask multiply, in NCHW and channels_last;
            the faster layout is the baseline ("best of the two layouts");
  * sparse: sparsemask.masked_conv2d with backend "cpu" (always the sparse kernel, on the
            layout the baseline was fastest in) and backend "auto" (falls back to dense).
Reports medians, speedup = dense / sparse, and the fraction of the ideal 1/keep speedup.
Writes <out>.json, <out>.csv and <out>.md (markdown table with machine, versions, date).

Input gradients are computed except for the 3-channel stem, whose input (the image) needs
none in training.

    python benchmarks/bench_masked_conv.py --out benchmarks/results/cpu
    python benchmarks/bench_masked_conv.py --quick          # a smoke run in seconds
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

import sparsemask

class ConvShape(NamedTuple):
    """One benchmarked convolution: input [N, c_in, h, h], weight [c_out, c_in, kernel, kernel]."""
    c_in: int
    c_out: int
    h: int
    stride: int
    kernel: int = 3
    padding: int = 1

    @property
    def h_out(self) -> int:
        return (self.h + 2 * self.padding - self.kernel) // self.stride + 1


# The benchmarked shapes (this file's default: the first four, the ResNet-18 bottom layers at
# CIFAR size, 3x3 pad 1; sparsemask/benchmarks/crossover.py sweeps them all). The ImageNet
# stem (7x7 stride 2 pad 3, 3->64 on 64x64) and a 1x1 stride-2 shortcut widen auto's table.
SHAPES = {
    "3-64@32": ConvShape(3, 64, 32, 1),
    "64-64@32": ConvShape(64, 64, 32, 1),
    "64-128@32s2": ConvShape(64, 128, 32, 2),
    "128-128@16": ConvShape(128, 128, 16, 1),
    "stem7x7-3-64@64s2": ConvShape(3, 64, 64, 2, kernel=7, padding=3),
    "1x1-64-128@32s2": ConvShape(64, 128, 32, 2, kernel=1, padding=0),
}
RESNET_BOTTOM = ("3-64@32", "64-64@32", "64-128@32s2", "128-128@16")
KEEPS = (0.05, 0.1, 0.3, 0.5, 1.0)
MODES = ("forward", "backward", "forward+backward")


@dataclass
class Row:
    shape: str
    keep: float
    mode: str
    dense_nchw_ms: float
    dense_cl_ms: float
    dense_ms: float       # best of the two layouts
    sparse_ms: float      # backend "cpu"
    auto_ms: float        # backend "auto"
    speedup: float        # dense_ms / sparse_ms
    auto_speedup: float   # dense_ms / auto_ms
    ideal_fraction: float  # speedup / (1 / keep)


# How a measurement is timed and summarised; set from the command line. "wall" is what a
# user waits for. "thread" is the calling thread's CPU time (use with --threads 1): on a
# machine shared with other jobs it excludes the time other processes hold the core.
CLOCK = {"wall": time.perf_counter, "thread": time.thread_time}
SETTINGS = {"clock": "wall", "stat": "median", "dtype": "float32", "malloc": "default"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# How large tensors get their memory. glibc (PyTorch's CPU allocator on Linux) mmaps an
# allocation above its dynamic threshold (at most 32 MiB) and unmaps it on free, so such a
# dense output faults its pages in on every call; below the threshold whether pages come
# back warm depends on the heap's history (trimming, fragmentation). Measured: the same
# dense 1x1 forward took 28.6 ms in one run and 5.7 ms in another. The sparse kernels' outputs
# come from sparsemask's own pool (always warm), so that history would decide comparisons.
#   default  glibc as the process finds it (what a user's training loop gets);
#   warm     mallopt(M_MMAP_MAX=0, M_TRIM_THRESHOLD=INT_MAX): every allocation from the heap,
#            never returned — dense at its best, sparse unchanged (the conservative baseline).
MALLOC_MODES = ("default", "warm")


def set_malloc(mode: str) -> str:
    """Apply ``mode`` (MALLOC_MODES) to this process; returns what was applied ("default"
    where glibc's mallopt is not available)."""
    if mode == "default":
        return "default"
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "default"
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's <malloc.h>
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    return "warm" if ok else "default"


def median_ms(fn, reps: int, warmup: int = 1) -> float:
    clock = CLOCK[SETTINGS["clock"]]
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    summary = statistics.median if SETTINGS["stat"] == "median" else min
    return summary(times) * 1e3


def make_timers(conv, x, weight, bias, mask, stride, padding, grad, need_input_grad):
    """Callables for forward, backward (graph built outside the timing) and both."""
    leaves = [weight, bias] + ([x] if need_input_grad else [])

    def forward():
        with torch.no_grad():
            conv(x, weight, bias, mask, stride, padding)

    def both():
        out = conv(x, weight, bias, mask, stride, padding)
        torch.autograd.grad(out, leaves, grad)

    state = {}

    def backward_setup():
        state["out"] = conv(x, weight, bias, mask, stride, padding)

    def backward():
        torch.autograd.grad(state["out"], leaves, grad, retain_graph=True)

    return forward, backward_setup, backward, both


def dense_conv(x, weight, bias, mask, stride, padding):
    return F.conv2d(x, weight, bias, stride, padding) * mask


def sparse_conv_on(name):
    def conv(x, weight, bias, mask, stride, padding):
        with sparsemask.backend(name):
            return sparsemask.masked_conv2d(x, weight, bias, mask, stride, padding)
    return conv


def time_modes(conv, tensors, stride, padding, need_input_grad, reps):
    x, weight, bias, mask, grad = tensors
    forward, backward_setup, backward, both = make_timers(conv, x, weight, bias, mask, stride, padding, grad,
                                                          need_input_grad)
    backward_setup()
    return {"forward": median_ms(forward, reps), "backward": median_ms(backward, reps),
            "forward+backward": median_ms(both, reps)}


def bench_shape(name, keep, n, reps, seed=0):
    shape = SHAPES[name]
    c_in, c_out, h, stride, kernel, padding = shape
    g = torch.Generator().manual_seed(seed)
    ho = shape.h_out
    need_input_grad = c_in != 3
    x = torch.rand(n, c_in, h, h, generator=g)
    weight = torch.randn(c_out, c_in, kernel, kernel, generator=g) * 0.1
    bias = torch.randn(c_out, generator=g)
    mask = torch.rand(c_out, ho, ho, generator=g) < keep
    grad = torch.randn(n, c_out, ho, ho, generator=g)
    # Every operand in the benchmark's dtype: bfloat16 is compared with oneDNN's bfloat16
    # convolution (not with float32), the baseline a bfloat16 user has.
    x, weight, bias, grad = (t.to(DTYPES[SETTINGS["dtype"]]) for t in (x, weight, bias, grad))
    results = {}
    for layout, fmt in (("nchw", torch.contiguous_format), ("cl", torch.channels_last)):
        xl = x.contiguous(memory_format=fmt).requires_grad_(need_input_grad)
        wl = weight.contiguous(memory_format=fmt).requires_grad_()
        tensors = (xl, wl, bias.clone().requires_grad_(), mask, grad.contiguous(memory_format=fmt))
        results[layout] = {"dense": time_modes(dense_conv, tensors, stride, padding, need_input_grad, reps)}
        results[layout]["tensors"] = tensors
    rows = []
    best_layout = min(("nchw", "cl"), key=lambda k: results[k]["dense"]["forward+backward"])
    tensors = results[best_layout]["tensors"]
    sparse = time_modes(sparse_conv_on("cpu"), tensors, stride, padding, need_input_grad, reps)
    auto = time_modes(sparse_conv_on("auto"), tensors, stride, padding, need_input_grad, reps)
    for mode in MODES:
        d_nchw, d_cl = results["nchw"]["dense"][mode], results["cl"]["dense"][mode]
        dense = min(d_nchw, d_cl)
        speedup = dense / sparse[mode]
        rows.append(Row(name, keep, mode, d_nchw, d_cl, dense, sparse[mode], auto[mode], speedup,
                        dense / auto[mode], speedup * keep))
    return rows


def environment() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{cpu}, {os.cpu_count()} cores",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": sparsemask.cpu_capability(),
        "python": sys.version.split()[0],
        "sparsemask": sparsemask.__version__,
        "dtype": SETTINGS["dtype"],
        "clock": SETTINGS["clock"],
        "malloc": SETTINGS["malloc"],
        "stat": SETTINGS["stat"],
    }


def markdown(rows: list[Row], env: dict, n: int) -> str:
    lines = [
        f"CPU masked conv2d, N={n}, {env['dtype']}, 3x3 pad 1 unless the shape says — {env['machine']}, {env['threads']} threads, "
        f"torch {env['torch']}, CPU kernels {env['cpu_capability']}, {env['date']}; {env['stat']} of {env['clock']}-clock times; "
        f"malloc {env['malloc']}",
        "",
        "| shape | keep | mode | dense NCHW ms | dense CL ms | sparse ms | auto ms | speedup | auto speedup | of ideal 1/keep |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.shape} | {r.keep} | {r.mode} | {r.dense_nchw_ms:.1f} | {r.dense_cl_ms:.1f} | "
                     f"{r.sparse_ms:.1f} | {r.auto_ms:.1f} | {r.speedup:.2f}x | {r.auto_speedup:.2f}x | "
                     f"{100 * r.ideal_fraction:.0f}% |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(RESNET_BOTTOM), choices=list(SHAPES))
    parser.add_argument("--keeps", nargs="+", type=float, default=list(KEEPS))
    parser.add_argument("--batch", type=int, default=128, help="N (default 128)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--clock", choices=list(CLOCK), default="wall",
                        help="wall (default) or thread CPU time (with --threads 1, for shared machines)")
    parser.add_argument("--stat", choices=["median", "min"], default="median", help="summary of the repetitions")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32",
                        help="operands' dtype (bfloat16: vs oneDNN's bfloat16 convolution)")
    parser.add_argument("--malloc", choices=MALLOC_MODES, default="default",
                        help="default: glibc as found (what users get); warm: no mmap/trim, dense at its best")
    parser.add_argument("--quick", action="store_true", help="N=8, 2 keeps, 1 rep: a smoke run in seconds")
    parser.add_argument("--out", default="benchmarks/results/cpu", help="output path prefix (.json/.csv/.md)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    SETTINGS.update(clock=args.clock, stat=args.stat, dtype=args.dtype, malloc=set_malloc(args.malloc))
    if args.quick:
        args.batch, args.keeps, args.reps = 8, [0.1, 1.0], 1
    env = environment()
    rows = []
    for name in args.shapes:
        for keep in args.keeps:
            for row in bench_shape(name, keep, args.batch, args.reps):
                rows.append(row)
                print(f"{row.shape:12s} keep {row.keep:<5} {row.mode:17s} dense {row.dense_ms:7.1f} ms  "
                      f"sparse {row.sparse_ms:7.1f} ms ({row.speedup:5.2f}x)  auto {row.auto_ms:7.1f} ms "
                      f"({row.auto_speedup:5.2f}x)", flush=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"environment": env, "batch": args.batch, "rows": [asdict(r) for r in rows]}, f, indent=1)
    with open(args.out + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    table = markdown(rows, env, args.batch)
    with open(args.out + ".md", "w") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
