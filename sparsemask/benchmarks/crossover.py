"""CPU crossover sweep: where the sparse masked convolution stops beating dense — the table
behind backend ``auto`` on CPU (sparsemask/backends/cpu_crossover.json, read by
sparsemask/dispatch.py).

Subcommands:
  sweep     time dense (``F.conv2d(x, w, b, stride, padding) * mask`` on the input's layout,
            what a user runs), sparse (backend ``cpu``) and auto's own dense path (the C++ op
            told never to run sparse) over a grid of shape x keep x N x layout x dtype x mode,
            measuring narrow sparse wins again with more reps; writes the raw rows and the
            environment to a JSON file.
  generate  turn a raw JSON into the threshold table that ``auto`` reads (never typed by hand).
  verify    time dense vs backend ``auto`` over the same grid (or a subset): per-config
            speedup dense_ms / auto_ms and its minimum; configs below --confirm-below (0.95)
            are measured again with more reps (both passes reported); writes markdown + JSON.

Each measurement is the median of --reps wall-clock repetitions after one warmup, dense and
sparse (or auto) interleaved rep by rep so both see the same machine state. Modes: forward
(under torch.no_grad) and forward+backward (weight and bias gradients, and the input
gradient except for C_in=3, whose input is the image).

    python benchmarks/sweep_auto.py sweep                        # the full grid (hours)
    python benchmarks/sweep_auto.py generate                     # -> sparsemask/backends/cpu_crossover.json
    python benchmarks/sweep_auto.py verify --out benchmarks/results/crossover_cpu_verify
    python benchmarks/sweep_auto.py sweep --batch 8 --keeps 0.1 1.0 --reps 1 --shapes 128-128@16 \\
        --out /tmp/smoke.json                                    # a smoke run in seconds
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F

import sparsemask

from ..ops.masked_conv2d import cpp_masked_conv2d
from .masked_conv import MALLOC_MODES, SETTINGS, SHAPES, environment, set_malloc

KEEPS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
BATCHES = (1, 8, 32, 128)
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MODES = ("forward", "forward+backward")

# A sparse win counts only when sparse_ms <= bar_ms * MARGIN: a near-tie goes dense. The
# dense path is the reference (bit-for-bit what the papers run) and its time is stable across
# oneDNN versions, while one median of a few reps on a shared machine wobbles by a few
# percent; 3% keeps measurement noise from turning a tie into a threshold that loses.
MARGIN = 0.97

# The raw sweep is committed next to the scripts (benchmarks/results/ is git-ignored) so the
# table can always be regenerated from it (tests/ops/test_auto_crossover.py checks it is).
RAW_DEFAULT = "benchmarks/crossover_cpu_raw.json"
TABLE_DEFAULT = str(Path(__file__).resolve().parent.parent / "backends" / "cpu_crossover.json")


# --------------------------------------------------------------------------------------
# Timing.

def interleaved_medians(fns: Sequence[Callable[[], object]], reps: int, warmup: int = 1) -> list[float]:
    """Median wall-clock ms of each of ``fns``, run in turn rep by rep (fn0, fn1, fn0, ...),
    so a change in machine state (another job, frequency) hits all of them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, out in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return [statistics.median(t) * 1e3 for t in times]


def _dense(x, weight, bias, mask, stride, padding):
    return F.conv2d(x, weight, bias, stride, padding) * mask


def _dense_path(x, weight, bias, mask, stride, padding):
    """What ``auto`` runs on CPU above its threshold: the C++ op with max_density 0 (oneDNN's
    convolution, masked in one pass; csrc/cpu/dense_path.h)."""
    return cpp_masked_conv2d(x, weight, bias, mask, [stride] * 2, [padding] * 2, [1, 1], 0.0)


def _masked(x, weight, bias, mask, stride, padding):
    """The op on the backend :func:`measure` set (once for the run, as a user sets it: a
    ``with sparsemask.backend(...)`` per call would add its own microseconds to every call)."""
    return sparsemask.masked_conv2d(x, weight, bias, mask, stride, padding)


def make_case(shape_name: str, keep: float, n: int, layout: str, dtype: str, seed: int = 0):
    """Tensors of one grid point: x [n, C_in, h, h], weight [C_out, C_in, k, k], bias [C_out],
    mask bool [C_out, h_out, h_out] (kept fraction ~keep), grad [n, C_out, h_out, h_out]; x,
    weight and grad in ``layout``, all floating tensors in ``dtype``."""
    s = SHAPES[shape_name]
    g = torch.Generator().manual_seed(seed)
    fmt, dt = LAYOUTS[layout], DTYPES[dtype]
    x = torch.rand(n, s.c_in, s.h, s.h, generator=g).to(dt).contiguous(memory_format=fmt)
    weight = (torch.randn(s.c_out, s.c_in, s.kernel, s.kernel, generator=g) * 0.1).to(dt)
    weight = weight.contiguous(memory_format=fmt)
    bias = torch.randn(s.c_out, generator=g).to(dt)
    mask = torch.rand(s.c_out, s.h_out, s.h_out, generator=g) < keep
    grad = torch.randn(n, s.c_out, s.h_out, s.h_out, generator=g).to(dt).contiguous(memory_format=fmt)
    return x, weight, bias, mask, grad


def timer(conv, case, shape_name: str, mode: str) -> Callable[[], object]:
    """A callable running ``conv`` once on ``case`` in ``mode`` (see the module docstring)."""
    s = SHAPES[shape_name]
    x, weight, bias, mask, grad = case
    if mode == "forward":
        def forward():
            with torch.no_grad():
                conv(x, weight, bias, mask, s.stride, s.padding)
        return forward
    need_input_grad = s.c_in != 3  # the stem's input is the image
    x = x.detach().requires_grad_(need_input_grad)
    weight, bias = weight.detach().requires_grad_(), bias.detach().requires_grad_()
    leaves = [weight, bias] + ([x] if need_input_grad else [])

    def both():
        out = conv(x, weight, bias, mask, s.stride, s.padding)
        torch.autograd.grad(out, leaves, grad)
    return both


def grid(args) -> Iterable[tuple[str, str, str, int, str, float]]:
    """The grid points (dtype, layout, shape, N, mode, keep), keep innermost so that a
    progress line's neighbours are one threshold's measurements."""
    return itertools.product(args.dtypes, args.layouts, args.shapes, args.batch, args.modes, args.keeps)


def measure_point(point: tuple, second: str, reps: int) -> dict:
    """Times in ms of one grid point (dtype, layout, shape, N, mode, keep): ``dense_ms`` and
    ``<second>_ms``, and for the sweep (second == "cpu") also ``dense_path_ms``, auto's dense
    path — the alternative auto really has to sparse, so the threshold must beat it too."""
    dtype, layout, shape, n, mode, keep = point
    case = make_case(shape, keep, n, layout, dtype)
    convs = {"dense_ms": _dense, f"{second}_ms": _masked}
    if second == "cpu":
        convs["dense_path_ms"] = _dense_path
    with sparsemask.backend(second):
        times = interleaved_medians([timer(conv, case, shape, mode) for conv in convs.values()], reps)
    return {key: round(ms, 4) for key, ms in zip(convs, times)}


# How long the first grid point runs, untimed, before any measurement: a fresh process's first
# calls are slower for a while (oneDNN primitive creation, the thread pool's first forks, cold
# caches and page faults), and the first grid points measured in that state gave the dense
# reference 0.13 ms where it takes 0.05 (3-64@32 N=1 forward) — a sparse "win" auto then lost.
WARMUP_S = 2.0


def warm_up(point: tuple, second: str, seconds: Optional[float] = None) -> None:
    """Run ``point``'s dense and ``second`` calls, untimed, for ``seconds`` (WARMUP_S)."""
    t_end = time.perf_counter() + (WARMUP_S if seconds is None else seconds)
    while time.perf_counter() < t_end:
        measure_point(point, second, 1)


def measure(args, second: str) -> list[dict]:
    """Rows {dtype, layout, mode, shape, batch, keep, dense_ms, <second>_ms[, dense_path_ms]}
    over the grid, dense vs backend ``second`` ("cpu" for the sweep, "auto" for verify)."""
    points = list(grid(args))
    warm_up(points[0], second)
    rows, t_start = [], time.perf_counter()
    for i, point in enumerate(points, 1):
        dtype, layout, shape, n, mode, keep = point
        times = measure_point(point, second, args.reps)
        dense_ms, other_ms = times["dense_ms"], times[f"{second}_ms"]
        rows.append({"dtype": dtype, "layout": layout, "mode": mode, "shape": shape, "batch": n, "keep": keep,
                     **times})
        elapsed = time.perf_counter() - t_start
        print(f"[{i}/{len(points)} {elapsed:6.0f}s, ~{elapsed / i * (len(points) - i):6.0f}s left] {dtype:8s} "
              f"{layout:13s} {mode:16s} {shape:18s} N={n:<3d} keep {keep:<4} dense {dense_ms:8.2f} ms  "
              f"{second} {other_ms:8.2f} ms ({dense_ms / other_ms:5.2f}x)", flush=True)
    return rows


def remeasure(rows: list[dict], second: str, reps: int, doubtful: Callable[[dict], bool]) -> list[dict]:
    """Measure again, with ``reps`` repetitions, every row that ``doubtful`` picks; the row
    then holds the re-measurement and keeps the first pass's times as ``first_<key>``.
    Why: a median of a few reps on a shared 2-core machine wobbles by several percent (a
    dense baseline of 0.20 ms read 0.28 ms once), so among ~1300 configs some land on the
    wrong side of any bar by noise alone; a second, longer measurement of just those rows
    settles them at little cost. Both passes are kept (JSON) and reported (markdown)."""
    key = f"{second}_ms"
    for r in rows:
        if not doubtful(r):
            continue
        point = (r["dtype"], r["layout"], r["shape"], r["batch"], r["mode"], r["keep"])
        times = measure_point(point, second, reps)
        r.update({f"first_{k}": r[k] for k in times if k in r})
        r.update(times)
        print(f"again {point}: first {r['first_dense_ms'] / r[f'first_{key}']:.2f}x, "
              f"now ({reps} reps) {r['dense_ms'] / r[key]:.2f}x", flush=True)
    return rows


# The sweep measures again every narrow sparse win (sparse_ms between NARROW_WIN and MARGIN
# times the bar, bar_ms): a false win is the costly error (auto would then run sparse where it
# loses), a false loss only leaves some speed unused.
NARROW_WIN = 0.85


def bar_ms(r: dict) -> float:
    """What sparse must beat at a sweep row: the faster of the dense reference and auto's dense
    path. Beating only the reference is not enough — where auto's dense path is faster still
    (bfloat16 channels_last 7x7 stem, N=8: 0.70 vs 1.45 ms), running sparse would make auto
    slower than it need be, and a near-tie with the reference a loss to it. Rows of older
    sweeps, without dense_path_ms, compare with the reference alone."""
    return min(r["dense_ms"], r.get("dense_path_ms", r["dense_ms"]))


def narrow_win(r: dict) -> bool:
    return bar_ms(r) * NARROW_WIN < r["cpu_ms"] <= bar_ms(r) * MARGIN


def _environment(command: str) -> dict:
    env = environment()
    env.pop("dtype", None)  # masked_conv.py's single dtype; here each row has its own
    env.update(clock="wall", stat="median", command=command)
    return env


def _write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")


# --------------------------------------------------------------------------------------
# generate: raw rows -> the table auto reads.

def threshold(points: Iterable[tuple[float, float, float]], margin: float = MARGIN) -> float:
    """The largest measured keep k such that the sparse kernel wins (sparse_ms <= bar_ms *
    margin) at k and at every measured keep below k; 0.0 if it loses at the smallest.
    ``points``: (keep, bar_ms, sparse_ms), bar_ms from :func:`bar_ms`. A win above a loss does
    not count: auto's rule is one threshold (sparse at or below it), so it must hold all the
    way down."""
    best = 0.0
    for keep, bar, sparse_ms in sorted(points):
        if sparse_ms > bar * margin:
            break
        best = keep
    return best


def shape_features(name: str) -> dict:
    """What dispatch's nearest-shape lookup compares (see dispatch._nearest_shape)."""
    s = SHAPES[name]
    return {"c_in": s.c_in, "c_out": s.c_out, "kernel_area": s.kernel * s.kernel, "stride": s.stride,
            "out_positions": s.h_out * s.h_out}


def generate_table(raw: dict, raw_path: str, margin: float = MARGIN) -> dict:
    """The table of sparsemask/backends/cpu_crossover.json from a sweep's raw JSON: one
    threshold per (dtype, layout, mode, shape, batch), with the shapes' features and the
    sweep's provenance."""
    groups: dict[tuple, list[tuple[float, float, float]]] = {}
    for r in raw["rows"]:
        key = (r["dtype"], r["layout"], r["mode"], r["shape"], r["batch"])
        groups.setdefault(key, []).append((r["keep"], bar_ms(r), r["cpu_ms"]))
    env = raw["environment"]
    return {
        "about": "Generated by `python benchmarks/sweep_auto.py generate` from a measured sweep; do not edit. "
                 "threshold = largest kept fraction where sparse_ms <= min(dense_ms, dense_path_ms) * margin "
                 "at it and every measured keep below it (sparsemask/benchmarks/crossover.py).",
        "provenance": {"raw": raw_path, "date": env.get("date"), "machine": env.get("machine"),
                       "threads": env.get("threads"), "torch": env.get("torch"),
                       "cpu_capability": env.get("cpu_capability"), "command": env.get("command"),
                       "margin": margin, "reps": raw.get("reps"), "malloc": env.get("malloc", "default")},
        "shapes": {name: shape_features(name) for name in sorted({k[3] for k in groups}, key=list(SHAPES).index)},
        "rows": [{"dtype": d, "layout": l, "mode": m, "shape": s, "batch": n, "threshold": threshold(points, margin)}
                 for (d, l, m, s, n), points in sorted(groups.items(), key=lambda kv: (
                     kv[0][0], kv[0][1], kv[0][2], list(SHAPES).index(kv[0][3]), kv[0][4]))],
    }


# --------------------------------------------------------------------------------------
# verify: markdown of auto vs dense.

# Calls whose dense time is below this are dominated by fixed per-call costs (the op's
# Python layer: argument checks and the backend lookup, ~7 us; the dispatcher and autograd
# in C++), not by the kernels; verify reports their minimum separately.
SMALL_CALL_MS = 1.0


def _speedup(r: dict) -> float:
    return r["dense_ms"] / r["auto_ms"]


def _worst_line(rows: list[dict], what: str) -> str:
    if not rows:
        return f"{what}: none."
    worst = min(rows, key=_speedup)
    below = sum(_speedup(r) < 0.95 for r in rows)
    return (f"{what} ({len(rows)} configs): minimum auto speedup (dense_ms / auto_ms) **{_speedup(worst):.2f}x** "
            f"({worst['dtype']} {worst['layout']} {worst['mode']} {worst['shape']} N={worst['batch']} "
            f"keep {worst['keep']}); {below} below 0.95x.")


def verify_markdown(rows: list[dict], env: dict) -> str:
    large = [r for r in rows if r["dense_ms"] >= SMALL_CALL_MS]
    small = [r for r in rows if r["dense_ms"] < SMALL_CALL_MS]
    redone = [r for r in rows if "first_auto_ms" in r]
    first = [dict(r, dense_ms=r.get("first_dense_ms", r["dense_ms"]), auto_ms=r.get("first_auto_ms", r["auto_ms"]))
             for r in rows]
    confirm_line = (f"First pass: {_worst_line(first, 'all')} The {len(redone)} configs below "
                    f"{env['confirm_below']:g}x were measured again with {env['confirm_reps']} reps; the lines "
                    f"above and the table hold that second measurement (the first in the JSON)."
                    if env.get("confirm_below") else "No second pass (--confirm-below 0).")
    lines = [f"`{env['command']}` — {env['date']}, {env['machine']}, {env['threads']} threads, torch {env['torch']}, "
             f"CPU kernels {env['cpu_capability']}, malloc {env.get('malloc', 'default')}; median of wall-clock reps, "
             f"dense and auto interleaved.",
             "",
             _worst_line(rows, "All"),
             _worst_line(large, f"Calls with dense >= {SMALL_CALL_MS:g} ms"),
             _worst_line(small, f"Calls with dense < {SMALL_CALL_MS:g} ms"),
             "",
             confirm_line,
             "",
             "| dtype | layout | mode | shape | N | keep | dense ms | auto ms | auto speedup | first pass |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        again = f"{r['first_dense_ms'] / r['first_auto_ms']:.2f}x" if "first_auto_ms" in r else ""
        lines.append(f"| {r['dtype']} | {r['layout']} | {r['mode']} | {r['shape']} | {r['batch']} | {r['keep']} | "
                     f"{r['dense_ms']:.2f} | {r['auto_ms']:.2f} | {r['dense_ms'] / r['auto_ms']:.2f}x | {again} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# The command line.

def _grid_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--keeps", nargs="+", type=float, default=list(KEEPS))
    p.add_argument("--batch", nargs="+", type=int, default=list(BATCHES), help="batch sizes N")
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per measurement (median)")
    p.add_argument("--again-reps", type=int, default=21,
                   help="repetitions when a doubtful config is measured again (sweep: narrow sparse wins; "
                        "verify: auto speedups below --confirm-below)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    # warm by default: a threshold must not depend on whether the dense baseline's outputs
    # happened to fault (masked_conv.py, MALLOC_MODES); dense at its best is the cautious side.
    p.add_argument("--malloc", choices=MALLOC_MODES, default="warm",
                   help="warm (default): heap only, no trim — dense at its best; default: glibc as found")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sweep", help="time dense vs sparse over the grid, write the raw JSON")
    _grid_args(p)
    p.add_argument("--out", default=RAW_DEFAULT, help="raw JSON to write")
    p = sub.add_parser("generate", help="raw JSON -> the threshold table auto reads")
    p.add_argument("--raw", default=RAW_DEFAULT, help="raw JSON written by sweep")
    p.add_argument("--out", default=TABLE_DEFAULT, help="table to write")
    p.add_argument("--margin", type=float, default=MARGIN, help="a win needs sparse_ms <= min(dense_ms, dense_path_ms) * margin")
    p = sub.add_parser("verify", help="time dense vs auto over the grid, write markdown + JSON")
    _grid_args(p)
    p.add_argument("--out", default="benchmarks/results/crossover_cpu_verify", help="output prefix (.json/.md)")
    p.add_argument("--confirm-below", type=float, default=0.95,
                   help="measure again the configs whose auto speedup is below this (0: no second pass)")

    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    # how it was run, for the provenance: the script, or `sparsemask bench` (which passes argv)
    prefix = "python benchmarks/sweep_auto.py" if argv is None else "sparsemask bench --what crossover --"
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "generate":
        with open(args.raw) as f:
            raw = json.load(f)
        _write_json(args.out, generate_table(raw, args.raw, args.margin))
        print(f"wrote {args.out}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    SETTINGS["malloc"] = set_malloc(args.malloc)
    env = _environment(" ".join([prefix, *argv]))
    if args.command == "sweep":
        rows = remeasure(measure(args, "cpu"), "cpu", args.again_reps, narrow_win)
        env.update(again_reps=args.again_reps, narrow_win=NARROW_WIN)
        _write_json(args.out, {"environment": env, "reps": args.reps, "rows": rows})
        print(f"wrote {args.out}")
        return 0
    rows = measure(args, "auto")
    if args.confirm_below > 0:
        rows = remeasure(rows, "auto", args.again_reps, lambda r: _speedup(r) < args.confirm_below)
        env.update(confirm_below=args.confirm_below, confirm_reps=args.again_reps)
    _write_json(args.out + ".json", {"environment": env, "reps": args.reps, "rows": rows})
    table = verify_markdown(rows, env)
    with open(args.out + ".md", "w") as f:
        f.write(table)
    print(table.split("\n\n")[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
