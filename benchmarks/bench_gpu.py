"""GPU benchmark of masked_conv2d against what a user would really run.

Baselines: cuDNN ``conv2d`` (channels_last) followed by the mask multiply ("dense", the
papers' code), and cuDNN ``conv2d`` alone ("conv"). Candidates: the sparsemask backends
``cuda`` (C++ kernels), ``triton`` and ``auto``. Passes: forward, backward (all three
gradients, given a saved forward graph) and both. Times are medians of
``triton.testing.do_bench`` (CUDA events, L2 flushed between repetitions).

Per row we report the speedup over "dense", the fraction of the 1/keep limit reached
(speedup * keep: 1.0 means the time shrank exactly with the kept work) and the fraction of
the memory-traffic floor (the fewest bytes the pass must move, each tensor read or written
once, over the device's measured copy bandwidth, divided by the measured time), and the
roofline model's estimate for the row (benchmarks/gpu/roofline.py, with the measured copy
bandwidth and matmul rate in place of its datasheet-derived ones) to compare with the
measurement.

Shapes: the CIFAR ResNet-18 bottom layers at N=256 and ImageNet ResNet layer1 at N=128.

    python benchmarks/bench_gpu.py --out gpu-results            # full sweep on a GPU
    python benchmarks/bench_gpu.py --quick --out gpu-results    # one keep, bf16, both passes
    python benchmarks/bench_gpu.py --dry-run --out /tmp/bench   # CPU: tiny shapes, checks the pipeline
    python benchmarks/bench_gpu.py --budget-s 360 --out r      # stop starting cases after 6 min

The sweep runs dtype by dtype (bf16 first) and, within a dtype, the done-when keeps (0.1,
0.3) before the others, so a budget cut (``--budget-s``; the staged GPU check's stage 4
uses it) loses the least informative cases; the report then says how many were not run.

Writes ``bench_gpu.json`` (every row + environment) and ``bench_gpu.md`` (tables, the
issue's done-when checks, and the suggested CUDA rows of the ``auto`` table in
sparsemask/dispatch.py) into ``--out``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

import sparsemask


@dataclass(frozen=True)
class Shape:
    name: str
    n: int
    c_in: int
    c_out: int
    hw: int
    kernel: int = 3
    stride: int = 1
    padding: int = 1

    @property
    def out_hw(self) -> int:
        return (self.hw + 2 * self.padding - self.kernel) // self.stride + 1

    def scaled(self, n: int, hw_div: int) -> "Shape":
        """A small copy for --dry-run (same channels and kernel, smaller batch and image)."""
        return Shape(self.name, n, self.c_in, self.c_out, max(self.hw // hw_div, self.kernel), self.kernel,
                     self.stride, self.padding)


SHAPES = [
    Shape("cifar 3->64 @32", 256, 3, 64, 32),
    Shape("cifar 64->64 @32", 256, 64, 64, 32),
    Shape("cifar 64->128 @32->16 s2", 256, 64, 128, 32, stride=2),
    Shape("cifar 128->128 @16", 256, 128, 128, 16),
    Shape("imagenet layer1 64->64 @56", 128, 64, 64, 56),
]
KEEPS = [0.05, 0.1, 0.3, 0.5, 1.0]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
PASSES = ["fwd", "bwd", "both"]
BACKENDS = ["cuda", "triton", "auto"]

# The issue's done-when targets (bf16, channels_last, forward+backward).
TARGETS = [
    ("imagenet layer1 64->64 @56", 0.1, 3.0),
    ("cifar 64->64 @32", 0.1, 2.0),
    ("cifar 128->128 @16", 0.1, 2.0),
    ("imagenet layer1 64->64 @56", 0.3, 1.3),
    ("cifar 64->64 @32", 0.3, 1.3),
    ("cifar 128->128 @16", 0.3, 1.3),
]


# ------------------------------------------------------------------------------------------
# Timing

def _timer(device: str, warmup_ms: float, rep_ms: float):
    """median milliseconds of fn(): do_bench on CUDA, a host clock on the CPU (--dry-run)."""
    if device == "cuda":
        import triton.testing

        def bench(fn):
            fn()  # compile / autotune / build the mask plan outside the measurement
            torch.cuda.synchronize()
            return triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")
        return bench

    def bench_cpu(fn):
        fn()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    return bench_cpu


def measure_ceilings(device: str, bench) -> dict:
    """Copy bandwidth (bytes read + written per second) and a large matmul's rate, measured."""
    if device != "cuda":
        return {"copy_GBps": None, "bf16_matmul_TFLOPs": None, "tf32_matmul_TFLOPs": None}
    src = torch.randn(256 * 2**20, device=device)  # 1 GiB
    dst = torch.empty_like(src)
    t = bench(lambda: dst.copy_(src))
    copy = 2 * src.numel() * src.element_size() / (t * 1e-3) / 1e9
    del src, dst
    out = {"copy_GBps": copy}
    n = 8192
    for name, dtype in (("bf16_matmul_TFLOPs", torch.bfloat16), ("tf32_matmul_TFLOPs", torch.float32)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        t = bench(lambda: a @ b)
        out[name] = 2 * n**3 / (t * 1e-3) / 1e12
    return out


# ------------------------------------------------------------------------------------------
# Work and traffic

def conv_flops(s: Shape, keep: float, pass_: str) -> float:
    """Multiply-adds x 2 of the kept outputs: forward 1 GEMM, backward 2 (input and weight)."""
    dense = 2.0 * s.n * s.c_out * s.out_hw**2 * s.c_in * s.kernel**2
    return dense * keep * {"fwd": 1, "bwd": 2, "both": 3}[pass_]


# The roofline model's design for each implementation, and its passes for each timed pass.
MODEL_DESIGNS = {"dense": "dense", "triton": "triton-v2", "cuda": "cuda-v2"}
MODEL_PASSES = {"fwd": ("fwd",), "bwd": ("grad_input", "grad_weight"), "both": ("fwd", "grad_input", "grad_weight")}


def load_roofline():
    """benchmarks/gpu/roofline.py (a script directory, not a package), loaded by path."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu", "roofline.py")
    spec = importlib.util.spec_from_file_location("sparsemask_bench_roofline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def model_ms(rl, s: Shape, keep: float, dtype_name: str, impl: str, pass_: str, ceilings: dict):
    """The roofline model's estimate (ms) of one row, or None for an implementation it does not
    model (conv, auto). The measured copy bandwidth and matmul rate replace the model's assumed
    HBM and MMA rates; its L2, atomic, issue and launch rates stay assumptions."""
    design = MODEL_DESIGNS.get(impl)
    if design is None:
        return None
    dev = rl.H200
    if ceilings.get("copy_GBps"):
        dev = replace(dev, hbm_Bps=ceilings["copy_GBps"] * 1e9)
    matmul = ceilings.get("tf32_matmul_TFLOPs" if dtype_name == "fp32" else "bf16_matmul_TFLOPs")
    if matmul:
        dev = replace(dev, tensor_flops=matmul * 1e12)
    layer = rl.Layer(s.name, s.n, s.c_in, s.c_out, s.hw, s.kernel, s.stride, s.padding)
    est = rl.estimate(layer, keep, torch.finfo(DTYPES[dtype_name]).bits // 8, design)
    return sum(est[p].time_us(dev) for p in MODEL_PASSES[pass_]) / 1e3


def traffic_bytes(s: Shape, elem: int, pass_: str) -> float:
    """Fewest bytes a pass must move: every tensor it reads or writes, once."""
    x = s.n * s.c_in * s.hw**2 * elem
    w = s.c_out * s.c_in * s.kernel**2 * elem
    y = s.n * s.c_out * s.out_hw**2 * elem
    fwd = x + w + y                # read input and weight, write the output (zeros included)
    bwd = y + x + w + x + w        # read grad_output, input, weight; write grad_input, grad_weight
    return {"fwd": fwd, "bwd": bwd, "both": fwd + bwd}[pass_]


# ------------------------------------------------------------------------------------------
# Cases

def make_case(s: Shape, keep: float, dtype: torch.dtype, device: str, seed: int):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(s.n, s.c_in, s.hw, s.hw, generator=g).to(device, dtype).contiguous(
        memory_format=torch.channels_last)
    w = (torch.randn(s.c_out, s.c_in, s.kernel, s.kernel, generator=g) / (s.c_in * s.kernel**2) ** 0.5).to(
        device, dtype).contiguous(memory_format=torch.channels_last)
    b = torch.randn(s.c_out, generator=g).to(device, dtype)
    mask = sparsemask.random_mask(s.c_out, s.out_hw, s.out_hw, keep, kind="neuron", seed=seed).to(device)
    grad = torch.randn(s.n, s.c_out, s.out_hw, s.out_hw, generator=g).to(device, dtype).contiguous(
        memory_format=torch.channels_last)
    return x, w, b, mask, grad


def make_fn(impl: str, pass_: str, s: Shape, x, w, b, mask, grad):
    """A no-argument callable running one pass of one implementation."""
    def forward():
        if impl == "conv":
            return F.conv2d(x, w, b, s.stride, s.padding)
        if impl == "dense":
            return F.conv2d(x, w, b, s.stride, s.padding) * mask
        with sparsemask.backend(impl):
            return sparsemask.masked_conv2d(x, w, b, mask, s.stride, s.padding)

    if pass_ == "fwd":
        def run():
            with torch.no_grad():
                forward()
        return run
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    xl, wl, bl = leaves

    def forward_leaves():
        if impl == "conv":
            return F.conv2d(xl, wl, bl, s.stride, s.padding)
        if impl == "dense":
            return F.conv2d(xl, wl, bl, s.stride, s.padding) * mask
        with sparsemask.backend(impl):
            return sparsemask.masked_conv2d(xl, wl, bl, mask, s.stride, s.padding)

    if pass_ == "bwd":
        out = forward_leaves()

        def run():
            torch.autograd.grad(out, leaves, grad, retain_graph=True)
        return run

    def run():
        torch.autograd.grad(forward_leaves(), leaves, grad)
    return run


def check_case(impl: str, s: Shape, x, w, b, mask, dtype) -> float:
    """Relative error of an implementation's forward vs float64 dense; NaN never passes."""
    ref = F.conv2d(x.double(), w.double(), b.double(), s.stride, s.padding) * mask
    with torch.no_grad(), sparsemask.backend(impl):
        got = sparsemask.masked_conv2d(x, w, b, mask, s.stride, s.padding).double()
    err = ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item()
    return err if err == err else float("inf")


# ------------------------------------------------------------------------------------------
# Environment

def environment(device: str) -> dict:
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "host": platform.node(),
        "device": device,
    }
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    try:
        from sparsemask import _build_info
        env["sparsemask_built_with_cuda"] = _build_info.WITH_CUDA
        env["sparsemask_cuda_arch"] = _build_info.CUDA_ARCH_LIST
    except ImportError:
        pass
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = props.name
        env["sm_count"] = props.multi_processor_count
        env["gpu_memory_GiB"] = round(props.total_memory / 2**30, 1)
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["threads"] = torch.get_num_threads()
    return env


def _priority(keeps: list[float]) -> list[float]:
    """The done-when keeps (0.1, 0.3) first, then the rest in the given order."""
    first = [k for k in (0.1, 0.3) if k in keeps]
    return first + [k for k in keeps if k not in first]


# ------------------------------------------------------------------------------------------
# Report

def _fmt(v, spec=".3f"):
    return "—" if v is None else format(v, spec)


def summarize(rows: list[dict], backends: list[str], shapes: list[str] | None = None,
              dtypes: list[str] | None = None) -> dict:
    """Done-when checks and the suggested auto thresholds, from the measured rows.

    ``shapes``/``dtypes``: what the sweep meant to cover (default: what the rows hold). A case
    the sweep did not reach (a budget cut) then counts as a loss, so a partial sweep never
    suggests a threshold that a shape it skipped could contradict.
    """
    by = {(r["shape"], r["dtype"], r["keep"], r["pass"], r["impl"]): r for r in rows}
    checks = []
    for shape, keep, target in TARGETS:
        dense = by.get((shape, "bf16", keep, "both", "dense"))
        if dense is None:
            continue
        candidates = [(by[k]["speedup"], k[4]) for k in by if k[:4] == (shape, "bf16", keep, "both")
                      and k[4] in ("cuda", "triton") and by[k]["speedup"] is not None]
        best = max(candidates) if candidates else (None, None)
        checks.append({"shape": shape, "keep": keep, "target": target, "best_speedup": best[0],
                       "best_backend": best[1], "met": best[0] is not None and best[0] >= target})
    auto_ok = [r for r in rows if r["impl"] == "auto" and r["speedup"] is not None]
    auto_slower = [r for r in auto_ok if r["speedup"] < 0.95]  # 5%: the run-to-run spread of do_bench
    # Suggested CUDA rows of dispatch._MAX_DENSITY: per dtype and C++/Triton backend, the largest
    # keep at which that backend beats dense (both passes) on every shape measured.
    suggest = {}
    dtypes = dtypes or sorted({r["dtype"] for r in rows})
    keeps = sorted({r["keep"] for r in rows})
    shapes = shapes or sorted({r["shape"] for r in rows})
    for backend in [b for b in backends if b in ("cuda", "triton", "cpu")]:
        for dt in dtypes:
            best = 0.0
            for keep in keeps:
                rs = [by.get((sh, dt, keep, "both", backend)) for sh in shapes]
                if all(r is not None and r["speedup"] is not None and r["speedup"] > 1.0 for r in rs):
                    best = keep
                else:
                    break
            suggest[f"{backend}/{dt}"] = best
    return {"targets": checks, "auto_never_slower": not auto_slower,
            "auto_slower_rows": [(r["shape"], r["dtype"], r["keep"], r["pass"], r["speedup"]) for r in auto_slower],
            "suggested_max_density": suggest}


def write_report(out_dir: str, env: dict, ceilings: dict, rows: list[dict], summary: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench_gpu.json"), "w") as f:
        json.dump({"environment": env, "ceilings": ceilings, "rows": rows, "summary": summary}, f, indent=1)
    lines = ["# masked_conv2d GPU benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in env.items()]
    lines += [f"- measured {k}: {_fmt(v, '.1f')}" for k, v in ceilings.items()]
    lines += ["", "Times are medians (ms). speedup = dense / impl, where dense = cuDNN conv2d "
              "(channels_last) * mask; 1/keep = speedup * keep (fraction of the ideal keep-proportional "
              "speedup); mem floor = fewest bytes / measured copy bandwidth / time; model ms = the roofline "
              "model's estimate (benchmarks/gpu/roofline.py) with the measured copy and matmul rates.", ""]
    groups = sorted({(r["dtype"], r["pass"]) for r in rows})
    for dt, pass_ in groups:
        lines += [f"## {dt}, {pass_}", "",
                  "| shape | keep | impl | ms | speedup | 1/keep frac | mem floor frac | model ms | rel err |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
        order = {name: i for i, name in enumerate(dict.fromkeys(r["shape"] for r in rows))}
        for r in sorted(rows, key=lambda r: (order[r["shape"]], r["keep"])):  # stable: impl order kept
            if (r["dtype"], r["pass"]) != (dt, pass_):
                continue
            lines.append(f"| {r['shape']} | {r['keep']} | {r['impl']} | {_fmt(r['ms'])} | {_fmt(r['speedup'], '.2f')} "
                         f"| {_fmt(r['limit_frac'], '.2f')} | {_fmt(r['mem_floor_frac'], '.2f')} "
                         f"| {_fmt(r.get('model_ms'))} | {_fmt(r['rel_err'], '.1e')} |")
        lines.append("")
    lines += ["## Done-when checks (bf16, channels_last, forward+backward)", "",
              "| shape | keep | target | best speedup | backend | met |", "|---|---:|---:|---:|---|---|"]
    for c in summary["targets"]:
        lines.append(f"| {c['shape']} | {c['keep']} | {c['target']}x | {_fmt(c['best_speedup'], '.2f')} "
                     f"| {c['best_backend']} | {'yes' if c['met'] else 'NO'} |")
    if summary.get("cases_not_run"):
        lines += ["", f"**Partial sweep**: the time budget left {summary['cases_not_run']} (shape, dtype, keep) "
                  "cases not run; the suggestions below count a missing case as a loss (conservative)."]
    lines += ["", f"auto never slower than dense (5% tolerance): {summary['auto_never_slower']}"]
    for row in summary["auto_slower_rows"]:
        lines.append(f"- auto slower: {row}")
    lines += ["", "Suggested max-density rows for sparsemask/dispatch.py `_MAX_DENSITY` "
              "(largest keep where the backend beats dense on every shape, both passes):", ""]
    lines += [f"- {k}: {v}" for k, v in summary["suggested_max_density"].items()]
    with open(os.path.join(out_dir, "bench_gpu.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------

def sanitize_case() -> None:
    """One small forward+backward per sparse CUDA path, for compute-sanitizer (memcheck, racecheck)."""
    s = Shape("sanitize", 5, 7, 19, 9)
    for dtype in (torch.float32, torch.bfloat16):
        x, w, b, mask, grad = make_case(s, 0.3, dtype, "cuda", seed=0)
        for impl in ("cuda", "triton"):
            if impl == "triton" and "triton" in os.environ.get("SANITIZE_SKIP", ""):
                continue
            leaves = [t.detach().requires_grad_() for t in (x, w, b)]
            with sparsemask.backend(impl):
                out = sparsemask.masked_conv2d(*leaves[:2], leaves[2], mask, s.stride, s.padding)
            torch.autograd.grad(out, leaves, grad)
    torch.cuda.synchronize()
    print("sanitize case done")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "gpu-results"), help="directory for bench_gpu.{json,md}")
    p.add_argument("--dtypes", default="bf16,fp32", help="comma list of bf16,fp32,fp16")
    p.add_argument("--keeps", default=",".join(map(str, KEEPS)), help="comma list of kept fractions")
    p.add_argument("--passes", default=",".join(PASSES), help="comma list of fwd,bwd,both")
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma list of cuda,triton,auto (cpu in --dry-run)")
    p.add_argument("--shapes", default="", help="substring filter on shape names")
    p.add_argument("--warmup", type=float, default=25.0, help="do_bench warm-up, ms")
    p.add_argument("--rep", type=float, default=100.0, help="do_bench repetitions, ms")
    p.add_argument("--quick", action="store_true", help="bf16, keep 0.1 and 0.3, both passes only")
    p.add_argument("--dry-run", action="store_true",
                   help="no GPU: run the whole pipeline on the CPU at tiny shapes (backends cpu, auto)")
    p.add_argument("--sanitize-case", action="store_true", help="run one small case for compute-sanitizer and exit")
    p.add_argument("--budget-s", type=float, default=float("inf"),
                   help="stop starting new (shape, dtype, keep) cases after this many seconds; the report "
                        "covers what ran")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.sanitize_case:
        sanitize_case()
        return 0
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device (use --dry-run to check the pipeline on the CPU)", file=sys.stderr)
        return 2
    dtypes = ["bf16"] if args.quick else args.dtypes.split(",")
    keeps = [0.1, 0.3] if args.quick else [float(k) for k in args.keeps.split(",")]
    passes = ["both"] if args.quick else args.passes.split(",")
    backends = args.backends.split(",")
    shapes = [s for s in SHAPES if args.shapes in s.name]
    if device == "cpu":
        shapes = [s.scaled(n=2, hw_div=4) for s in shapes]
        backends = [b if b != "cuda" else "cpu" for b in backends if b != "triton"]
    for name in dtypes:
        if name not in DTYPES:
            raise SystemExit(f"bench_gpu: unknown dtype {name!r}; expected one of {', '.join(DTYPES)}")
    bench = _timer(device, args.warmup, args.rep)
    env = environment(device)
    ceilings = measure_ceilings(device, bench)
    print(f"environment: {env}\nceilings: {ceilings}", flush=True)
    rows = []
    rl = load_roofline()
    impls = ["dense", "conv"] + backends
    deadline = time.monotonic() + args.budget_s
    cases = [(s, dt_name, keep) for dt_name in dtypes for keep in _priority(keeps) for s in shapes]
    not_run = 0
    for s, dt_name, keep in cases:
        if time.monotonic() > deadline:
            not_run += 1
            continue
        dtype = DTYPES[dt_name]
        elem = torch.finfo(dtype).bits // 8
        x, w, b, mask, grad = make_case(s, keep, dtype, device, args.seed)
        errs = {impl: check_case(impl, s, x, w, b, mask, dtype) for impl in backends}
        for pass_ in passes:
            times = {}
            for impl in impls:
                try:
                    times[impl] = bench(make_fn(impl, pass_, s, x, w, b, mask, grad))
                except Exception as err:  # a backend that cannot run this case is reported, not fatal
                    print(f"  {s.name} {dt_name} keep={keep} {pass_} {impl}: FAILED {err!r}", flush=True)
                    times[impl] = None
            floor_ms = (traffic_bytes(s, elem, pass_) / (ceilings["copy_GBps"] * 1e9) * 1e3
                        if ceilings["copy_GBps"] else None)
            for impl, ms in times.items():
                speedup = times["dense"] / ms if ms and times["dense"] else None
                rows.append({
                    "shape": s.name, "shape_args": asdict(s), "dtype": dt_name, "keep": keep,
                    "pass": pass_, "impl": impl, "ms": ms, "speedup": speedup,
                    "limit_frac": speedup * keep if speedup is not None else None,
                    "mem_floor_frac": floor_ms / ms if floor_ms and ms else None,
                    "gflop": conv_flops(s, keep if impl not in ("dense", "conv") else 1.0, pass_) / 1e9,
                    "model_ms": model_ms(rl, s, keep, dt_name, impl, pass_, ceilings),
                    "rel_err": errs.get(impl),
                })
            line = "  ".join(f"{k}={_fmt(v, '.3f')}" for k, v in times.items())
            print(f"{s.name:28s} {dt_name} keep={keep:<4} {pass_:4s} {line}", flush=True)
    summary = summarize(rows, backends, shapes=[s.name for s in shapes], dtypes=dtypes)
    summary["cases_not_run"] = not_run
    if not_run:
        print(f"budget of {args.budget_s:.0f} s reached: {not_run} of {len(cases)} cases not run", flush=True)
    write_report(args.out, env, ceilings, rows, summary)
    short = {k: v for k, v in summary.items() if k != "auto_slower_rows"}
    short["auto_slower_rows"] = len(summary["auto_slower_rows"])
    print(json.dumps(short, indent=1))
    print(f"wrote {os.path.join(args.out, 'bench_gpu.md')} and bench_gpu.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
