"""The Python parts of the staged GPU check (benchmarks/gpu/stage*.sh, docs/gpu.md).

    python benchmarks/gpu/gpu_check.py matrix   --out DIR   # correctness matrix, NaN-poisoned outputs
    python benchmarks/gpu/gpu_check.py timing   --out DIR   # 3 shapes, do_bench + CUDA-graph replay
    python benchmarks/gpu/gpu_check.py autocast --out DIR   # defective ResNet-18 under bf16 autocast
    python benchmarks/gpu/gpu_check.py sanitize             # tiny fwd+bwd of both GPU backends

Every command takes ``--dry-run``: the same code on the CPU at tiny shapes (backends ``cpu``
and ``triton`` under ``TRITON_INTERPRET=1``), so CI exercises the harness — the comparison,
the poisoning, the budget, the reports — without a GPU. ``--budget-s`` (default: the
``STEP_BUDGET_S`` the stage script sets from its deadline) makes a long part stop starting
new cases and still write its report; cases it did not reach are listed as not run.

Exit status: 0 all passed, 1 something failed, 2 nothing failed but the budget cut it short.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

# torch/sparsemask are imported by _setup() after the arguments are read: TRITON_INTERPRET
# must be set before anything imports triton.
torch = None
F = None
sparsemask = None

HERE = os.path.dirname(os.path.abspath(__file__))

# Relative-error floor per dtype: about two units of roundoff of the result's dtype, for
# tensors that dense PyTorch happens to get (nearly) exact. Above it the flash-attention
# rule applies: the kernel's error vs float64 must be <= 2x dense PyTorch's in that dtype.
FLOOR = {"fp16": 1e-3, "bf16": 4e-3, "fp32": 1e-5, "tf32": 2e-3, "fp64": 1e-12}
# fp32 runs with TF32 off (exact float32 products, both sides); "tf32" is float32 with TF32
# on for cuDNN and Triton alike, the PyTorch default for convolutions.
TF32 = {"tf32": True}


def _setup(dry_run: bool) -> None:
    """Import torch and sparsemask; under --dry-run with Triton's interpreter on."""
    global torch, F, sparsemask
    if dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
    import torch as _torch
    import torch.nn.functional as _F

    import sparsemask as _sm
    torch, F, sparsemask = _torch, _F, _sm


def _short(err: Exception) -> str:
    """An exception as one short line."""
    return f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"


def _dtype(name: str):
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "tf32": torch.float32,
            "fp64": torch.float64}[name]


# ------------------------------------------------------------------------------------------
# Cases

@dataclass(frozen=True)
class Geometry:
    """One convolution: input [n, c_in, h, w], weight [c_out, c_in, k, k]."""
    name: str
    n: int
    c_in: int
    c_out: int
    h: int
    w: int
    k: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    bias: bool = True
    channels_last: bool = True

    def out_hw(self) -> tuple[int, int]:
        span = self.dilation * (self.k - 1) + 1
        return ((self.h + 2 * self.padding - span) // self.stride + 1,
                (self.w + 2 * self.padding - span) // self.stride + 1)


# Odd sizes, never powers of two; together they reach every kernel variant: C_in < 16 (flat
# patch loop) and >= 16 (tap loop), C_out <= 128 (whole rows written in one store) and > 128
# (two C_out ranges per forward program), batch 1 and batch > one image tile, NCHW and channels_last, no bias.
GPU_SHAPES = [
    Geometry("b1 rgb 3x3 p1", 1, 3, 17, 13, 11, 3, 1, 1),
    Geometry("rgb stem 7x7 s2 p3", 5, 3, 24, 23, 21, 7, 2, 3),
    Geometry("1x1 p0 nchw", 7, 37, 45, 9, 10, 1, 1, 0, channels_last=False),
    Geometry("3x3 s2 p0 no-bias", 6, 19, 40, 15, 13, 3, 2, 0, bias=False),
    Geometry("3x3 d2 p2", 3, 21, 29, 15, 14, 3, 1, 2, 2),
    Geometry("7x7 p3 nchw", 2, 16, 33, 12, 12, 7, 1, 3, channels_last=False),
    Geometry("c_out 150 (2 ranges)", 4, 24, 150, 9, 9, 3, 1, 1),
    Geometry("67x64->64 @17x15", 67, 64, 64, 17, 15, 3, 1, 1),
]
# fp16 shares bf16's code paths and tf32 is one constexpr of the fp32 kernels: a few shapes
# each keep the number of Triton compiles (the matrix's main cost) down.
GPU_DTYPE_SHAPES = {"fp16": {"b1 rgb 3x3 p1", "3x3 d2 p2", "c_out 150 (2 ranges)", "67x64->64 @17x15"},
                    "tf32": {"rgb stem 7x7 s2 p3", "3x3 s2 p0 no-bias", "67x64->64 @17x15"}}
DRY_SHAPES = [
    Geometry("b1 rgb 3x3 p1", 1, 3, 5, 6, 5, 3, 1, 1),
    Geometry("s2 d2 p0 no-bias nchw", 2, 4, 6, 9, 8, 3, 2, 0, 2, bias=False, channels_last=False),
    Geometry("1x1", 2, 5, 3, 4, 5, 1),
]
KEEPS = [0.5, 0.05, 1.0, 0.0]  # most informative first: a budget cut loses the edge cases last
DTYPE_ORDER = ["bf16", "fp64", "fp32", "fp16", "tf32"]


def make_inputs(g: Geometry, keep: float, dtype, device: str, seed: int) -> dict:
    """Fresh random tensors for one case (drawn in float64 on the CPU, then cast): x, w, b, mask, go."""
    gen = torch.Generator().manual_seed(seed)
    ho, wo = g.out_hw()
    fmt = torch.channels_last if g.channels_last else torch.contiguous_format
    x = torch.randn(g.n, g.c_in, g.h, g.w, generator=gen, dtype=torch.float64)
    w = torch.randn(g.c_out, g.c_in, g.k, g.k, generator=gen, dtype=torch.float64) / math.sqrt(g.c_in * g.k * g.k)
    b = torch.randn(g.c_out, generator=gen, dtype=torch.float64) if g.bias else None
    mask = torch.rand(g.c_out, ho, wo, generator=gen) < keep
    go = torch.randn(g.n, g.c_out, ho, wo, generator=gen, dtype=torch.float64)

    def dev(t):
        if t is None:
            return None
        t = t.to(device, dtype)
        return t.contiguous(memory_format=fmt) if t.dim() == 4 else t
    return dict(x=dev(x), w=dev(w), b=dev(b), mask=mask.to(device), go=dev(go),
                conv=([g.stride] * 2, [g.padding] * 2, [g.dilation] * 2))


def forward_backward(fn: Callable, x, w, b, go) -> list:
    """[out, grad_input, grad_weight, grad_bias] of out = fn(x, w, b) with incoming gradient go."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b) if t is not None]
    out = fn(*leaves, None) if b is None else fn(*leaves)
    grads = torch.autograd.grad(out, leaves, go)
    return [out.detach(), *grads] + ([None] if b is None else [])


def sparse_fn(backend: str, mask, conv) -> Callable:
    def fn(x, w, b):
        with sparsemask.backend(backend):
            return sparsemask.masked_conv2d(x, w, b, mask, *conv)
    return fn


def dense_fn(mask, conv) -> Callable:
    """The contract's right-hand side: F.conv2d(...) * mask."""
    def fn(x, w, b):
        return F.conv2d(x, w, b, *conv) * mask
    return fn


# ------------------------------------------------------------------------------------------
# Comparison

def rel_error(got, ref, norm: str = "2") -> float:
    """||got - ref|| / ||ref|| in float64 (norm "2", or "max": the worst element over the largest);
    inf for any NaN/inf; where ref is all zero, 0 only if got is too."""
    got = got.double()
    if not bool(torch.isfinite(got).all()):
        return math.inf
    size = (lambda t: t.norm()) if norm == "2" else (lambda t: t.abs().max())
    scale = size(ref).item() if ref.numel() else 0.0
    if scale == 0.0:
        return 0.0 if bool((got == 0).all()) else math.inf
    return size(got - ref).item() / scale


def judge(got: list, ref: list, low: list, dtype_name: str, mask) -> dict:
    """Per tensor: the kernel's error, dense PyTorch's error in the same dtype, the bound, pass/fail.

    ``got``/``ref``/``low``: [out, gx, gw, gb] of the kernel, the float64 reference and dense
    PyTorch in the case's dtype. NaN anywhere fails (an unwritten element of a poisoned
    output); masked outputs must be exactly 0.
    """
    res = {"ok": True, "problems": []}
    for name, a, r, lo in zip(("out", "gx", "gw", "gb"), got, ref, low):
        if r is None:
            continue
        if a is None or tuple(a.shape) != tuple(r.shape) or a.dtype != lo.dtype:
            res["ok"] = False
            res["problems"].append(f"{name}: shape/dtype {None if a is None else (tuple(a.shape), a.dtype)}")
            continue
        # The 2-norm sees errors spread over the tensor; the max norm sees a few wrong elements
        # (a bad index) that a large tensor's 2-norm would average away.
        for norm, key in (("2", name), ("max", name + "_max")):
            err, err_dense = rel_error(a, r, norm), rel_error(lo, r, norm)
            bound = max(2.0 * err_dense, FLOOR[dtype_name]) if math.isfinite(err_dense) else FLOOR[dtype_name]
            res[key], res[key + "_dense"] = err, err_dense
            if not err <= bound:
                res["ok"] = False
                nan = int(torch.isnan(a).sum())
                res["problems"].append(f"{name}: {norm}-norm err {err:.2e} > bound {bound:.2e}"
                                       + (f" ({nan} NaN: unwritten?)" if nan else ""))
                break
    out = got[0]
    if out is not None and out.shape[1:] == mask.shape and bool((out[:, ~mask] != 0).any()):
        res["ok"] = False
        res["problems"].append("out: masked outputs not exactly 0")
    return res


# ------------------------------------------------------------------------------------------
# Poisoning: make every element a kernel fails to write come out as NaN

@contextlib.contextmanager
def poison_fill() -> Iterator[None]:
    """torch.empty / at::empty return NaN-filled memory (PyTorch's deterministic-mode fill).

    Reaches every output the kernels allocate through ATen (Triton's torch.empty, the CUDA
    op's at::empty_like), on CPU and CUDA alike. It also switches deterministic algorithms
    on (warn-only), so the `recycle` pass below checks the default configuration too.
    """
    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def _output_nbytes(g: Geometry, elem: int) -> list[int]:
    """Sizes of the buffers the sparse ops allocate for their results (and float32 accumulators)."""
    ho, wo = g.out_hw()
    acc = 8 if elem == 8 else 4
    sizes = [g.n * g.c_out * ho * wo * elem, g.n * g.c_in * g.h * g.w * elem,
             g.c_out * g.c_in * g.k * g.k * elem, g.c_out * g.c_in * g.k * g.k * acc, g.c_out * acc, g.c_out * elem]
    return sorted({s for s in sizes if s > 0})


@contextlib.contextmanager
def poison_recycle(g: Geometry, elem: int, device: str) -> Iterator[None]:
    """Hand the kernels NaN memory through the caching allocator, with no mode switched on.

    After empty_cache(), blocks of exactly the outputs' sizes are filled with 0xFF bytes (NaN
    in every float dtype) and freed, so the allocator's best fit gives them back to the op.
    Live spacers of the same pool sit between the blocks: free neighbours would coalesce
    into one block that splits differently. No-op on the CPU (no caching allocator).
    """
    if device != "cuda":
        yield
        return
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    blocks, spacers = [], []
    for nbytes in _output_nbytes(g, elem):
        for _ in range(2):
            blocks.append(torch.full((nbytes,), 255, dtype=torch.uint8, device=device))
            # same pool as the block: <= 1 MiB small pool, above it the large pool
            spacers.append(torch.empty(512 if nbytes <= 2**20 else 2**20 + 512, dtype=torch.uint8, device=device))
    del blocks
    try:
        yield
    finally:
        del spacers


# ------------------------------------------------------------------------------------------
# matrix

def matrix_cases(args) -> list[tuple]:
    """(dtype, geometry, keep, backend) in priority order (a budget cut loses the tail)."""
    shapes = DRY_SHAPES if args.dry_run else GPU_SHAPES
    if args.shapes:
        shapes = [s for s in shapes if args.shapes in s.name]
    backends = args.backends.split(",")
    dtypes = [d for d in DTYPE_ORDER if d in args.dtypes.split(",")]
    keeps = [float(k) for k in args.keeps.split(",")]
    cases = []
    for dt in dtypes:
        for g in shapes:
            if not args.dry_run and dt in GPU_DTYPE_SHAPES and g.name not in GPU_DTYPE_SHAPES[dt]:
                continue
            for keep in keeps:
                for be in backends:
                    if args.dry_run and be == "triton" and (dt != "fp64" or g is not shapes[0] or keep != 0.5):
                        continue  # the interpreter takes ~1 s a case: one case shows the harness drives it
                    cases.append((dt, g, keep, be))
    return cases


@contextlib.contextmanager
def tf32(on: bool) -> Iterator[None]:
    prev = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev


def run_case(dt: str, g: Geometry, keep: float, backend: str, device: str, seed: int, poison: str,
             ref_device: Optional[str] = None) -> dict:
    """One matrix row: the sparse backend's forward+backward against float64 and dense in-dtype.

    ``poison``: ``fill``, ``recycle`` or ``none``. ``ref_device``: where the two dense
    references run (default: the case's device; ``cpu`` keeps cuDNN out of a sanitizer run).
    """
    row = dict(backend=backend, dtype=dt, shape=g.name, keep=keep, poison=poison)
    t0 = time.perf_counter()
    try:
        dtype = _dtype(dt)
        c = make_inputs(g, keep, dtype, device, seed)
        rd = ref_device or device
        on_ref = [None if t is None else t.to(rd) for t in (c["x"], c["w"], c["b"], c["go"])]
        mask_ref = c["mask"].to(rd)
        with tf32(TF32.get(dt, False)):
            ref = forward_backward(dense_fn(mask_ref, c["conv"]), *[None if t is None else t.double() for t in on_ref])
            low = ref if dt == "fp64" else forward_backward(dense_fn(mask_ref, c["conv"]), *on_ref)
            ctx = {"fill": poison_fill, "none": contextlib.nullcontext}.get(poison)
            ctx = ctx() if ctx else poison_recycle(g, torch.finfo(dtype).bits // 8, device)
            with ctx:
                got = forward_backward(sparse_fn(backend, c["mask"], c["conv"]), c["x"], c["w"], c["b"], c["go"])
        if device == "cuda":
            torch.cuda.synchronize()
        got = [None if t is None else t.to(rd) for t in got]
        row.update(judge(got, ref, low, dt, mask_ref))
    except Exception as err:  # one line per failure, then the next case
        row.update(ok=False, problems=[f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"])
    row["s"] = round(time.perf_counter() - t0, 3)
    return row


def matrix_runs(args) -> list[tuple]:
    """((dtype, geometry, keep, backend), poison) for every run of the matrix, in priority order."""
    cases = matrix_cases(args)
    runs = [(c, "fill") for c in cases]
    if "recycle" in args.poison:
        # The default (non-deterministic) configuration, NaN memory handed back by the allocator.
        runs += [(c, "recycle") for c in cases if c[0] in ("bf16", "fp32", "fp64") and c[2] == 0.5
                 and not (args.dry_run and c[3] == "triton")]  # (recycle is a no-op on the CPU)
    if "fill" not in args.poison:
        runs = [r for r in runs if r[1] != "fill"]
    return runs


def shard_of(run: tuple, jobs: int, groups: dict) -> int:
    """Runs of one (dtype, shape) share their Triton kernels: a group goes to one shard."""
    (dt, g, _, _), _ = run
    return groups.setdefault((dt, g.name), len(groups)) % jobs


def cmd_matrix(args) -> int:
    if args.dry_run:
        args.backends = ",".join("cpu" if b == "cuda" else b for b in args.backends.split(","))
    runs = matrix_runs(args)
    if args.jobs > 1 and args.shard is None:
        rows = matrix_in_parallel(args)
    else:
        rows = matrix_shard(args, runs)
    done = {r["i"] for r in rows}
    skipped = [dict(backend=be, dtype=dt, shape=g.name, keep=keep, poison=poison)
               for i, ((dt, g, keep, be), poison) in enumerate(runs) if i not in done]
    if args.shard is not None:  # a child: its rows go to the parent through a file
        with open(os.path.join(args.out, f"{report_name(args)}.shard{args.shard}.json"), "w") as f:
            json.dump(rows, f, default=str)
        return 0
    return report_matrix(args, sorted(rows, key=lambda r: r["i"]), skipped)


def matrix_shard(args, runs: list[tuple]) -> list[dict]:
    """Run this process's share of the matrix (all of it without --shard) until the budget."""
    device = "cpu" if args.dry_run else "cuda"
    deadline = time.monotonic() + args.budget_s
    rows, groups = [], {}
    for i, run in enumerate(runs):
        if args.shard is not None and shard_of(run, args.jobs, groups) != args.shard:
            continue
        if time.monotonic() > deadline:
            continue
        (dt, g, keep, be), poison = run
        row = dict(i=i, **run_case(dt, g, keep, be, device, seed=args.seed + i, poison=poison))
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
    return rows


def matrix_in_parallel(args) -> list[dict]:
    """The matrix in ``--jobs`` child processes, one shard each, and their rows gathered.

    Triton compiles one kernel at a time per process and compiling is most of the matrix's
    time on a GPU (each (dtype, shape) is a new specialization); the GPU itself idles. A
    child that overruns is killed; its missing rows are reported as not run.
    """
    os.makedirs(args.out, exist_ok=True)
    # Children stop starting cases 10 s before the parent's budget; the parent stops waiting at
    # its budget, so its report is written before the stage's timeout for this step.
    common = ["--out", args.out, "--budget-s", str(max(1.0, args.budget_s - 10)), "--backends", args.backends,
              "--dtypes", args.dtypes, "--keeps", args.keeps, "--shapes", args.shapes, "--poison", args.poison,
              "--tag", args.tag, "--seed", str(args.seed), "--jobs", str(args.jobs)] + (["--dry-run"] if args.dry_run else [])
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "matrix", "--shard", str(k), *common])
             for k in range(args.jobs)]
    end = time.monotonic() + args.budget_s
    rows = []
    for k, proc in enumerate(procs):
        try:
            proc.wait(timeout=max(1.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            print(f"MATRIX shard {k} overran its budget and was killed", flush=True)
        path = os.path.join(args.out, f"{report_name(args)}.shard{k}.json")
        if os.path.exists(path):
            with open(path) as f:
                rows += json.load(f)
            os.remove(path)
    return rows


def report_name(args) -> str:
    return f"matrix-{args.tag}" if args.tag else "matrix"


def report_matrix(args, rows: list[dict], skipped: list[dict]) -> int:
    """Write matrix-<tag>.json and .md; print one summary line per (backend, dtype)."""
    tag = report_name(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{tag}.json"), "w") as f:
        json.dump({"rows": rows, "not_run": skipped}, f, indent=0, default=str)
    bad = [r for r in rows if not r["ok"]]
    lines = [f"## Correctness matrix `{tag}`", "",
             f"{len(rows) - len(bad)}/{len(rows)} cases pass; {len(bad)} fail; {len(skipped)} not run (budget).",
             "Each case: forward + all gradients vs float64 `F.conv2d(...) * mask`, error <= max(2x dense "
             "PyTorch's error in that dtype, floor); outputs NaN-poisoned; masked outputs exactly 0.", "",
             "| backend | dtype | pass | fail | worst out err | worst grad err |", "|---|---|---:|---:|---:|---:|"]
    groups = sorted({(r["backend"], r["dtype"]) for r in rows})
    for be, dt in groups:
        rs = [r for r in rows if (r["backend"], r["dtype"]) == (be, dt)]
        n_bad = sum(not r["ok"] for r in rs)
        worst_out = max((r.get("out", 0.0) for r in rs), default=0.0)
        worst_grad = max((r.get(k, 0.0) for r in rs for k in ("gx", "gw", "gb")), default=0.0)
        lines.append(f"| {be} | {dt} | {len(rs) - n_bad} | {n_bad} | {worst_out:.1e} | {worst_grad:.1e} |")
        print(f"MATRIX {tag} {be:6s} {dt:4s} {len(rs) - n_bad}/{len(rs)} ok, worst out {worst_out:.1e} grad {worst_grad:.1e}")
    if bad:
        lines += ["", "Failures (first 40):", ""]
        lines += [f"- {r['backend']}/{r['dtype']}/{r['shape']}/keep {r['keep']}/{r['poison']}: "
                  f"{'; '.join(r['problems'])}" for r in bad[:40]]
    with open(os.path.join(args.out, f"{tag}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"MATRIX {tag}: {len(rows) - len(bad)}/{len(rows)} ok, {len(bad)} failed, {len(skipped)} not run")
    for r in bad[:20]:
        print(f"  FAIL {r['backend']}/{r['dtype']}/{r['shape']}/keep {r['keep']}/{r['poison']}: {'; '.join(r['problems'])}")
    return 1 if bad else (2 if skipped else 0)


# ------------------------------------------------------------------------------------------
# timing

def _bench_gpu():
    """benchmarks/bench_gpu.py as a module (shapes, cases, timers, ceilings are shared)."""
    sys.path.insert(0, os.path.dirname(HERE))
    import bench_gpu
    return bench_gpu


TIMING_SHAPES = ["imagenet layer1 64->64 @56", "cifar 64->64 @32", "cifar 128->128 @16"]  # the done-when shapes


def graph_timer(fn: Callable, bench: Callable) -> Optional[float]:
    """Median ms of a CUDA-graph replay of fn (launch and dispatch overhead removed)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture stream, as the CUDA-graph docs ask
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return bench(graph.replay)


def warm_triton(args, bg, shapes: list) -> None:
    """Compile every autotune config the timing will try, one shape per child process.

    Autotuning compiles each config of 3 kernels per shape, one at a time; children doing it
    in parallel leave the kernels in Triton's on-disk cache (TRITON_CACHE_DIR), where the
    timing's own autotuning then finds them. Best effort: a child that fails or overruns only
    costs the timing its compile time back.
    """
    if args.warm_shard is not None:  # a child: one forward+backward of its shape
        s = shapes[args.warm_shard]
        x, w, b, mask, grad = bg.make_case(s, 0.1, torch.bfloat16, "cuda", args.seed)
        bg.make_fn("triton", "both", s, x, w, b, mask, grad)()
        torch.cuda.synchronize()
        return
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "timing", "--warm-shard", str(k)])
             for k in range(len(shapes))]
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, min(90.0, args.budget_s / 2) - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(f"WARM Triton kernels compiled in {len(procs)} processes in {time.monotonic() - t0:.0f} s; "
          f"exit codes {[p.returncode for p in procs]}", flush=True)


def cmd_timing(args) -> int:
    bg = _bench_gpu()
    device = "cpu" if args.dry_run else "cuda"
    deadline = time.monotonic() + args.budget_s
    shapes = [s for s in bg.SHAPES if s.name in TIMING_SHAPES]
    impls = ["dense", "cpu"] if args.dry_run else ["dense", "cuda", "triton"]
    if args.dry_run:  # one small shape: the CPU timings mean nothing, the pipeline is what is checked
        shapes = [s.scaled(n=2, hw_div=4) for s in shapes if s.name == "cifar 128->128 @16"]
    else:
        warm_triton(args, bg, shapes)
        if args.warm_shard is not None:
            return 0
    bench = bg._timer(device, warmup_ms=args.warmup, rep_ms=args.rep)
    ceilings = bg.measure_ceilings(device, bench)
    print(f"CEILINGS {json.dumps(ceilings)}", flush=True)
    rows, status = [], 0
    for s in shapes:
        for keep in [float(k) for k in args.keeps.split(",")]:
            x, w, b, mask, grad = bg.make_case(s, keep, torch.bfloat16, device, args.seed)
            for pass_ in ("fwd", "both"):
                for impl in impls:
                    if time.monotonic() > deadline:
                        status = 2
                        continue
                    row = dict(shape=s.name, keep=keep, pass_=pass_, impl=impl)
                    try:
                        fn = bg.make_fn(impl, pass_, s, x, w, b, mask, grad)
                        row["ms"] = bench(fn)
                    except Exception as err:  # reported in the table, the other rows still run
                        row["error"] = _short(err)
                        status = 1
                    if device == "cuda" and "error" not in row:
                        try:  # an op that cannot be captured is a finding, not a failed timing
                            row["graph_ms"] = graph_timer(fn, bench)
                        except Exception as err:
                            row["graph_error"] = _short(err)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    report_timing(args, bg.environment(device), ceilings, rows, impls)
    return status


def report_timing(args, env: dict, ceilings: dict, rows: list[dict], impls: list[str]) -> None:
    """timing.json + timing.md: ms per impl, eager and graph, with speedup over dense."""
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "timing.json"), "w") as f:
        json.dump({"environment": env, "ceilings": ceilings, "rows": rows}, f, indent=1)
    by = {(r["shape"], r["keep"], r["pass_"], r["impl"]): r for r in rows}

    def cell(key, field):
        r, d = by.get(key), by.get(key[:3] + ("dense",))
        if r is None or r.get(field) is None:
            failed = r is not None and ("error" in r or (field == "graph_ms" and "graph_error" in r))
            return "error" if failed else "—"
        if key[3] == "dense" or d is None or not d.get(field):
            return f"{r[field]:.3f}"
        return f"{r[field]:.3f} ({d[field] / r[field]:.2f}x)"
    head = " | ".join(f"{i} ms" for i in impls)
    lines = ["## Timing (bf16, channels_last; median ms, (speedup over dense = cuDNN conv2d * mask))", "",
             f"- {env.get('gpu', env.get('cpu'))}, torch {env['torch']}, triton {env.get('triton')}, "
             f"driver {env.get('driver')}, {env['date']}",
             f"- measured ceilings: {json.dumps({k: None if v is None else round(v, 1) for k, v in ceilings.items()})}",
             "", f"| shape | keep | pass | timer | {head} |", "|---|---:|---|---|" + "---:|" * len(impls)]
    timers = [("ms", "do_bench" if env["device"] == "cuda" else "host clock")]
    if any(r.get("graph_ms") is not None for r in rows):
        timers.append(("graph_ms", "graph"))
    for s, k, p in sorted({(r["shape"], r["keep"], r["pass_"]) for r in rows}, key=lambda t: (t[0], t[1], t[2])):
        for field, label in timers:
            lines.append(f"| {s} | {k} | {p} | {label} | " + " | ".join(cell((s, k, p, i), field) for i in impls) + " |")
    lines += [""] + [f"- {kind} {r['shape']} keep {r['keep']} {r['pass_']} {r['impl']}: {r[kind]}"
                     for r in rows for kind in ("error", "graph_error") if kind in r]
    with open(os.path.join(args.out, "timing.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


# ------------------------------------------------------------------------------------------
# autocast

def cmd_autocast(args) -> int:
    """A bottom-defective ResNet-18, forward + backward under autocast; finite loss and gradients."""
    device = "cpu" if args.dry_run else "cuda"
    backends = ["cpu"] if args.dry_run else ["cuda", "triton"]
    rows, status = [], 0
    for dt in args.dtypes.split(","):
        for be in backends:
            row = dict(device=device, dtype=dt, backend=be)
            try:
                torch.manual_seed(args.seed)
                size = 16 if args.dry_run else 32
                model = sparsemask.models.resnet18(num_classes=10, input_size=size,
                                                   defective=dict(keep=0.1, where="bottom", seed=0))
                model = model.to(device).to(memory_format=torch.channels_last).train()
                x = torch.randn(2 if args.dry_run else 16, 3, size, size, device=device).contiguous(
                    memory_format=torch.channels_last)
                y = torch.randint(0, 10, (x.shape[0],), device=device)
                with sparsemask.backend(be), torch.autocast(device, dtype=_dtype(dt)):
                    logits = model(x)
                    loss = F.cross_entropy(logits, y)
                loss.backward()
                bad = [n for n, p in model.named_parameters() if p.grad is None or not bool(torch.isfinite(p.grad).all())]
                row.update(ok=bool(torch.isfinite(loss)) and not bad, loss=loss.item(), logits_dtype=str(logits.dtype),
                           bad_grads=bad[:5])
            except Exception as err:
                row.update(ok=False, error=f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}")
            status |= 0 if row["ok"] else 1
            rows.append(row)
            print(f"AUTOCAST {'ok  ' if row['ok'] else 'FAIL'} {json.dumps(row)}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "autocast.json"), "w") as f:
        json.dump(rows, f, indent=1)
    return status


# ------------------------------------------------------------------------------------------
# sanitize

SANITIZE_SHAPES = [
    Geometry("c_in 7 (flat loop)", 5, 7, 19, 9, 9, 3, 1, 1),
    Geometry("c_in 40 (tap loop) s2", 3, 40, 24, 8, 7, 3, 2, 1),
    Geometry("c_out 150 (2 ranges) d2", 2, 16, 150, 7, 7, 3, 1, 2, 2),
]


def cmd_sanitize(args) -> int:
    """Tiny forward+backward of every kernel variant, for compute-sanitizer; checks the results too."""
    device = "cpu" if args.dry_run else "cuda"
    backends = ["cpu", "triton"] if args.dry_run else ["cuda", "triton"]
    shapes = SANITIZE_SHAPES[:1] if args.dry_run else SANITIZE_SHAPES
    status = 0
    for dt in args.dtypes.split(","):
        for g in shapes:
            for be in backends:
                if args.dry_run and be == "triton" and dt != "fp32":
                    continue
                # No poisoning (the allocator is off under the sanitizer anyway); references on
                # the CPU, so the sanitizer sees only sparsemask's kernels and their copies.
                row = run_case(dt, g, 0.3, be, device, seed=args.seed, poison="none", ref_device="cpu")
                status |= 0 if row["ok"] else 1
                print(f"SANITIZE {'ok  ' if row['ok'] else 'FAIL'} {be} {dt} {g.name} {row['problems']}", flush=True)
    if device == "cuda":
        torch.cuda.synchronize()
    print("sanitize case done", flush=True)
    return status


# ------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["matrix", "timing", "autocast", "sanitize"])
    p.add_argument("--dry-run", action="store_true", help="no GPU: the same code on the CPU at tiny shapes")
    p.add_argument("--out", default=os.environ.get("OUT", "gpu-results"), help="directory for the reports")
    p.add_argument("--budget-s", type=float, default=float(os.environ.get("STEP_BUDGET_S", 3600)),
                   help="stop starting new cases after this many seconds (default: $STEP_BUDGET_S)")
    p.add_argument("--backends", default="cuda,triton", help="matrix: comma list (cuda means cpu in --dry-run)")
    p.add_argument("--dtypes", default=None, help="comma list of fp16,bf16,fp32,tf32,fp64")
    p.add_argument("--keeps", default=None, help="comma list of kept fractions")
    p.add_argument("--shapes", default="", help="matrix: substring filter on shape names")
    p.add_argument("--poison", default="fill,recycle", help="matrix: fill (deterministic NaN fill), recycle (allocator)")
    p.add_argument("--tag", default="", help="matrix: report name (matrix-<tag>.md)")
    p.add_argument("--jobs", type=int, default=1,
                   help="matrix: child processes, one shard each (Triton compiles in parallel)")
    p.add_argument("--shard", type=int, default=None, help=argparse.SUPPRESS)  # set by --jobs for its children
    p.add_argument("--warm-shard", type=int, default=None, help=argparse.SUPPRESS)  # timing's compile children
    p.add_argument("--warmup", type=float, default=25.0, help="timing: do_bench warm-up, ms")
    p.add_argument("--rep", type=float, default=100.0, help="timing: do_bench repetitions, ms")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    defaults = {"matrix": ("bf16,fp64,fp32,fp16,tf32", "0.5,0.05,1,0"), "timing": ("bf16", "0.1,0.3"),
                "autocast": ("bf16", ""), "sanitize": ("fp32,bf16", "")}[args.command]
    if args.dry_run:  # CPU: fewer cases, same code
        defaults = {"matrix": ("fp64,bf16", "0.5,0"), "timing": ("bf16", "0.1")}.get(args.command, defaults)
    if args.dtypes is None:
        args.dtypes = defaults[0]
    if args.keeps is None:
        args.keeps = defaults[1]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    _setup(args.dry_run)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --dry-run on a CPU machine)", file=sys.stderr)
        return 1
    return {"matrix": cmd_matrix, "timing": cmd_timing, "autocast": cmd_autocast, "sanitize": cmd_sanitize}[
        args.command](args)


if __name__ == "__main__":
    sys.exit(main())
