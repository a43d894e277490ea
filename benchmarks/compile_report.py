"""Compile reports for sm_90 (H100/H200) on a machine with no GPU.

Three subcommands:

    compile_report.py triton [--jobs 2] [--json PATH] [--md PATH] [--expect-version 3.6.0]
        Ahead-of-time compiles every Triton kernel in sparsemask/triton/ (every ``*_kernel``
        the modules define) x every configuration in its autotune list (the full list, not
        the interpreter's single one) x each constexpr variant the launchers really use x
        each dtype, for ``GPUTarget("cuda", 90, 32)``. Records registers and spills (from
        the ``ptxas -v`` log of Triton's own ptxas run, or a rerun of Triton's ptxas on the
        PTX) and shared memory (compiled metadata). Which Triton is used is whatever
        ``import triton`` finds: run with ``PYTHONPATH=.triton36`` for the GPU machine's 3.6.
    compile_report.py cuda [--json PATH] [--md PATH]
        Compiles csrc/cuda/*.cu for sm_90 with nvcc -cubin -Xptxas -v, with the flags and
        include directories of the extension build (build/temp*/build.ninja when present,
        else rebuilt from torch.utils.cpp_extension the way setup.py does), and tables each
        kernel instance (demangled) with registers, spills, stack and static shared memory.
    compile_report.py docs REPORT.json... [--docs docs/gpu.md] [--command TEXT]
        Writes the tables of the given JSON reports into docs/gpu.md between the
        ``<!-- compile-report:begin -->`` / ``<!-- compile-report:end -->`` markers.

Every compile error is collected and reported (kernel, variant, dtype, config) and makes the
command exit with status 1. ``make compile-report`` runs all of it (CI).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SM = 90
# Largest dynamic shared memory one block may use on sm_90 (227 KiB); a config above it
# cannot launch (the autotuner would drop it at run time).
SM90_MAX_SHARED = 232448

# --------------------------------------------------------------------------------------
# Triton: what to compile

# dtype label -> (torch dtype name, ALLOW_TF32). float32 runs on TF32 tensor cores by default
# (torch.backends.cudnn.allow_tf32 is True unless a user turns it off); "float32-ieee" is the
# allow_tf32=False path.
DTYPES = {
    "float16": ("float16", False),
    "bfloat16": ("bfloat16", False),
    "float32": ("float32", True),
    "float32-ieee": ("float32", False),
    "float64": ("float64", False),
}

# Compiled with the first autotune config only by default: allow_tf32=False is the
# non-default float32 path; its branch still compiles in every kernel and variant, and CI's
# compile step stays near 6 minutes on 2 cores instead of 9 (`--first-config-only none`).
FIRST_CONFIG_ONLY = ("float32-ieee",)

# Representative layers (batch 128, stride 1, padding 1, 3x3): the integer arguments decide
# Triton's specialisations (divisibility by 16, == 1), so they are those of real layers.
LAYERS = {
    "c128": dict(n=128, c_in=128, c_out=128, h=16, w=16, k=3, stride=1, pad=1, dil=1),  # ResNet-18 layer2
    "c256": dict(n=128, c_in=256, c_out=256, h=8, w=8, k=3, stride=1, pad=1, dil=1),  # ResNet-18 layer3
    "stem": dict(n=128, c_in=3, c_out=64, h=32, w=32, k=3, stride=1, pad=1, dil=1),  # CIFAR stem
    "c128d2": dict(n=128, c_in=128, c_out=128, h=16, w=16, k=3, stride=1, pad=2, dil=2),  # dilated
}

# Per kernel: (variant name, layer, has_bias). Together they reach every constexpr branch
# the launchers take: forward TAP_LOOP (C_in >= 16) / flat k, one or several C_out ranges,
# HAS_BIAS; grad_weight ROW_TILE / TAP_LOOP (dilated) / flat k, HAS_BIAS; IS_FP64 and ALLOW_TF32 come from the
# dtype. C_RANGE=128 is the forward's widest register tile.
VARIANTS = {
    "_masked_conv2d_fwd_kernel": [
        ("tap, C_out 128", "c128", False),
        ("flat k, C_out 64, bias", "stem", True),
        ("tap, C_out 256 (2 ranges), bias", "c256", True),
    ],
    "_masked_conv2d_grad_input_kernel": [
        ("3x3", "c128", False),
    ],
    "_masked_conv2d_grad_weight_kernel": [
        ("row tile", "c128", False),
        ("tap, dilation 2", "c128d2", False),
        ("flat k, bias", "stem", True),
    ],
}


def _prepare_triton_env(cache_dir: str) -> None:
    """Before triton is imported: real JIT functions (not the interpreter's), the full
    autotune lists, a fresh cache (a cache hit would skip ptxas and its log) and the ptxas
    log on stdout."""
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ.pop("SPARSEMASK_TRITON_AUTOTUNE", None)
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"


def _kernel_modules():
    """The modules of sparsemask/triton/ (imported; each defines its kernels at top level)."""
    import importlib
    import pkgutil

    import sparsemask.triton as pkg

    mods = []
    for info in pkgutil.iter_modules(pkg.__path__):
        mods.append(importlib.import_module(f"{pkg.__name__}.{info.name}"))
    return mods


def _discover_kernels() -> dict:
    """name -> (autotuner or None, JITFunction, module) for every top-level ``*_kernel``."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    found = {}
    for mod in _kernel_modules():
        for name, obj in vars(mod).items():
            if not name.endswith("_kernel"):
                continue
            if isinstance(obj, Autotuner):
                found[name] = (obj, obj.fn, mod)
            elif isinstance(obj, JITFunction):
                found[name] = (None, obj, mod)
    return found


def _configs(autotuner) -> list:
    import triton

    if autotuner is None:
        return [triton.Config({}, num_warps=4, num_stages=3)]
    return list(autotuner.configs)


def _config_label(cfg) -> str:
    kw = " ".join(f"{k}={v}" for k, v in cfg.kwargs.items())
    return f"{kw} w{cfg.num_warps} s{cfg.num_stages}"


def _strides(shape, channels_last=True):
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, device="meta").contiguous(memory_format=fmt).stride()


def _launch_args(kernel: str, mod, layer: dict, has_bias: bool, dtype_label: str):
    """(positional args, constexpr kwargs) as the launcher in ``mod`` passes them for this
    layer: channels_last input, weight and output (the fast layout); tiny CPU tensors stand
    in for the pointers (only their dtype and alignment matter to the compiler)."""
    import torch
    import triton

    tname, tf32 = DTYPES[dtype_label]
    dt = getattr(torch, tname)
    acc_dt = torch.float64 if dt == torch.float64 else torch.float32
    L = layer
    n, c_in, c_out, h, w, k = L["n"], L["c_in"], L["c_out"], L["h"], L["w"], L["k"]
    ho = (h + 2 * L["pad"] - L["dil"] * (k - 1) - 1) // L["stride"] + 1
    wo = (w + 2 * L["pad"] - L["dil"] * (k - 1) - 1) // L["stride"] + 1
    conv = (L["stride"], L["stride"], L["pad"], L["pad"], L["dil"], L["dil"])
    t = lambda d: torch.empty(64, dtype=d)  # noqa: E731
    idx = torch.empty(64, dtype=torch.int32)
    xs = _strides((n, c_in, h, w))
    ws = _strides((c_out, c_in, k, k))
    os_ = _strides((n, c_out, ho, wo))
    sizes = (n, c_in, h, w, c_out, ho, wo)
    flags = dict(IS_FP64=dt == torch.float64, ALLOW_TF32=tf32)
    # The launchers' rules (sparsemask/triton/masked_conv2d.py), read from the module so a
    # change there is followed here.
    tap_loop = mod._tap_loop(c_in) if hasattr(mod, "_tap_loop") else c_in >= 16
    if kernel == "_masked_conv2d_fwd_kernel":
        mask = torch.empty(64, dtype=torch.uint8)
        args = (t(dt), t(dt), t(dt), t(dt), mask, idx, *sizes, *xs, *ws, *os_, *conv)
        return args, dict(KH=k, KW=k, TAP_LOOP=tap_loop, C_RANGE=mod._c_range(c_out), HAS_BIAS=has_bias, **flags)
    if kernel == "_masked_conv2d_grad_input_kernel":
        args = (t(dt), t(dt), t(dt), idx, idx, *sizes, *os_, *ws, *xs, *conv)
        return args, dict(KH=k, KW=k, **flags)
    if kernel == "_masked_conv2d_grad_weight_kernel":
        args = (t(dt), t(dt), t(acc_dt), t(acc_dt), idx, idx, *sizes, *os_, *xs, *conv)
        x_cl = torch.empty((n, c_in, h, w), device="meta").contiguous(memory_format=torch.channels_last)
        return args, dict(KH=k, KW=k, ROW_TILE=mod._grad_weight_row_tile(x_cl, L["dil"]), TAP_LOOP=tap_loop,
                          NEED_WEIGHT=True, HAS_BIAS=has_bias, **flags)
    raise KeyError(kernel)


def _triton_jobs(kernels: dict, only: str | None, dtypes: list[str], variants=None, config_ids=None,
                 first_config_only=()) -> list[tuple]:
    missing = sorted(set(kernels) - set(VARIANTS))
    if missing:
        raise SystemExit(f"compile_report: no variants for Triton kernel(s) {missing}: add them to VARIANTS "
                         "and _launch_args in benchmarks/compile_report.py")
    jobs = []
    for name in sorted(kernels):
        if only and only not in name:
            continue
        autotuner, _, _ = kernels[name]
        configs = _configs(autotuner)
        if autotuner is not None and len(configs) < 2:
            raise SystemExit(f"compile_report: {name} has {len(configs)} autotune config(s): the reduced list "
                             "(TRITON_INTERPRET=1 or SPARSEMASK_TRITON_AUTOTUNE=0 at import), not the full one")
        for vi, _ in enumerate(VARIANTS[name]):
            if variants is not None and vi not in variants:
                continue
            for dt in dtypes:
                for ci in range(len(configs)):
                    if ci > 0 and dt in first_config_only:
                        continue
                    if config_ids is None or ci in config_ids:
                        jobs.append((name, vi, dt, ci))
    return jobs


_PTXAS_FUNC = re.compile(r"Function properties for (\S+)\s*\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, "
                         r"(\d+) bytes spill loads")
_PTXAS_USED = re.compile(r"Compiling entry function '([^']+)'.*?Used (\d+) registers", re.S)


def _parse_ptxas(log: str) -> dict:
    """{function: dict(regs, stack, spill_stores, spill_loads, smem)} from a ptxas -v log."""
    out: dict = {}
    for m in _PTXAS_FUNC.finditer(log):
        out.setdefault(m.group(1), {}).update(stack=int(m.group(2)), spill_stores=int(m.group(3)),
                                              spill_loads=int(m.group(4)))
    # "Compiling entry function 'f' for 'sm_90'" ... "Used R registers, ..., S bytes smem"
    blocks = re.split(r"(?=ptxas info\s*: Compiling entry function)", log)
    for b in blocks:
        m = re.search(r"Compiling entry function '([^']+)'", b)
        if not m:
            continue
        d = out.setdefault(m.group(1), {})
        r = re.search(r"Used (\d+) registers", b)
        if r:
            d["regs"] = int(r.group(1))
        s = re.search(r"(\d+) bytes smem", b)
        d["smem"] = int(s.group(1)) if s else 0
        d.setdefault("stack", 0)
        d.setdefault("spill_stores", 0)
        d.setdefault("spill_loads", 0)
    return out


def _rerun_ptxas(ptx: str) -> str:
    """ptxas -v on the kernel's PTX with Triton's own ptxas (when Triton's log was not seen)."""
    from triton.backends.nvidia import compiler as nv

    ptxas = nv.get_ptxas(SM).path if hasattr(nv, "get_ptxas") else nv._path_to_binary("ptxas")[0]
    arch = nv.sm_arch_from_capability(SM)
    with tempfile.TemporaryDirectory() as d:
        src = Path(d, "k.ptx")
        src.write_text(ptx)
        res = subprocess.run([ptxas, "-v", "-lineinfo", f"--gpu-name={arch}", str(src), "-o", str(src) + ".o"],
                             capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"ptxas failed: {res.stderr[-2000:]}")
    return res.stderr + res.stdout


class _Compiler:
    """One per worker process: the discovered kernels and a CUDA sm_90 backend."""

    def __init__(self):
        import triton
        from triton.compiler.compiler import make_backend

        try:
            from triton.backends.compiler import GPUTarget
        except ImportError:  # older layouts
            from triton.compiler import GPUTarget
        self.triton = triton
        self.target = GPUTarget("cuda", SM, 32)
        self.backend = make_backend(self.target)
        self.kernels = _discover_kernels()
        self.binders: dict = {}

    def _specialise(self, fn, args, kwargs):
        """(signature, constexprs, attrs, options) exactly as ``fn.run`` would for a launch
        with these arguments (Triton 3.3-3.8 internals), else built by hand."""
        from triton.runtime import jit as J

        if hasattr(J, "create_function_from_signature") and hasattr(fn, "_pack_args"):
            binder = self.binders.get(fn)
            if binder is None:
                binder = self.binders[fn] = J.create_function_from_signature(fn.signature, fn.params, self.backend)
            bound, spec, opts = binder(*args, **kwargs)
            options, signature, constexprs, attrs = fn._pack_args(self.backend, kwargs, bound, spec, opts)
            return signature, constexprs, attrs, options
        return self._specialise_by_hand(fn, args, kwargs)

    def _specialise_by_hand(self, fn, args, kwargs):
        import torch

        names = fn.arg_names
        values = dict(zip(names, args))
        values.update(kwargs)
        signature, constexprs, attrs = {}, {}, {}
        tmap = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32", torch.float64: "*fp64",
                torch.int32: "*i32", torch.int64: "*i64"}
        for i, name in enumerate(names):
            v = values[name]
            attrs[(i,)] = []
            if isinstance(v, torch.Tensor):
                signature[name] = tmap[v.dtype]
                attrs[(i,)] = [["tt.divisibility", 16]] if v.data_ptr() % 16 == 0 else []
            elif i in fn.constexprs or name in kwargs or (isinstance(v, int) and v == 1):
                signature[name] = "constexpr"
                constexprs[(i,)] = v
            else:
                signature[name] = "i32" if -2**31 <= v < 2**31 else "i64"
                attrs[(i,)] = [["tt.divisibility", 16]] if v % 16 == 0 else []
        opts = {k: v for k, v in kwargs.items() if k in ("num_warps", "num_stages", "num_ctas", "maxnreg")}
        return signature, constexprs, attrs, self.backend.parse_options(opts)

    def compile(self, job: tuple) -> dict:
        import contextlib
        import io

        from triton.compiler import ASTSource

        name, vi, dtype, ci = job
        autotuner, fn, mod = self.kernels[name]
        variant, layer, has_bias = VARIANTS[name][vi]
        cfg = _configs(autotuner)[ci]
        row = dict(kernel=name, variant=variant, variant_index=vi, layer=layer, dtype=dtype, config=_config_label(cfg), config_index=ci,
                   num_warps=cfg.num_warps, num_stages=cfg.num_stages, triton=self.triton.__version__)
        t0, c0 = time.perf_counter(), _cpu_s()
        try:
            args, constexprs = _launch_args(name, mod, LAYERS[layer], has_bias, dtype)
            kwargs = {**constexprs, **cfg.all_kwargs(), "debug": False}
            signature, consts, attrs, options = self._specialise(fn, args, kwargs)
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                kern = self.triton.compile(ASTSource(fn, signature, consts, attrs), target=self.target,
                                           options=options.__dict__)
            stats = _parse_ptxas(buf.getvalue())
            if not stats:
                stats = _parse_ptxas(_rerun_ptxas(kern.asm["ptx"]))
            if len(stats) != 1:
                raise RuntimeError(f"expected one entry function in the ptxas log, got {sorted(stats)}")
            (s,) = stats.values()
            row.update(regs=s["regs"], spill_stores=s["spill_stores"], spill_loads=s["spill_loads"], stack=s["stack"],
                       shared=int(kern.metadata.shared), error=None)
        except Exception as err:  # every failure is reported, with its job
            msg = f"{type(err).__name__}: {err}"
            row.update(error=msg[-4000:])
        row["compile_s"] = round(time.perf_counter() - t0, 2)
        row["cpu_s"] = round(_cpu_s() - c0, 2)
        return row


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (ptxas)."""
    import resource

    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


_WORKER: _Compiler | None = None


def _worker_init():
    global _WORKER
    _WORKER = _Compiler()


def _worker_compile(job):
    return _WORKER.compile(job)


def cmd_triton(ns) -> int:
    cache = tempfile.mkdtemp(prefix="sparsemask-triton-cache-")
    _prepare_triton_env(cache)
    sys.path.insert(0, str(ROOT))
    t0 = time.perf_counter()
    try:
        import triton

        if ns.expect_version and triton.__version__ != ns.expect_version:
            print(f"compile_report: expected triton {ns.expect_version}, imported {triton.__version__} "
                  f"from {triton.__file__}", file=sys.stderr)
            return 2
        kernels = _discover_kernels()
        first_only = [d for d in ns.first_config_only if d != "none"]
        jobs = _triton_jobs(kernels, ns.only, ns.dtypes, ns.variants, ns.configs, first_only)
        if not jobs:
            print("compile_report: nothing selected", file=sys.stderr)
            return 2
        print(f"triton {triton.__version__} ({Path(triton.__file__).parent}): {len(kernels)} kernels, {len(jobs)} "
              f"compiles for sm_{SM}, {ns.jobs} process(es)", flush=True)
        rows = []
        if ns.jobs <= 1:
            _worker_init()
            for j in jobs:
                rows.append(_worker_compile(j))
                _progress(rows[-1], len(rows), len(jobs))
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            # spawn: each worker imports torch/triton itself (no fork of an initialised MLIR/torch)
            with ProcessPoolExecutor(ns.jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init) as ex:
                for row in ex.map(_worker_compile, jobs, chunksize=1):
                    rows.append(row)
                    _progress(row, len(rows), len(jobs))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    report = dict(kind="triton", triton=triton.__version__, label=ns.label, target=f"cuda sm_{SM}", date=_now(),
                  first_config_only=first_only,
                  wall_s=round(time.perf_counter() - t0, 1), jobs=ns.jobs, layers=LAYERS, rows=rows)
    return _finish(report, ns)


def _progress(row, i, n):
    if row.get("error"):
        print(f"[{i}/{n}] FAILED {row['kernel']} / {row['variant']} / {row['dtype']} / {row['config']}:\n"
              f"    {row['error']}", flush=True)
    elif os.environ.get("COMPILE_REPORT_VERBOSE"):
        print(f"[{i}/{n}] {row['kernel']} {row['dtype']} {row['config']}: {row['regs']} regs, spill "
              f"{row['spill_stores']}/{row['spill_loads']}, smem {row['shared']} ({row['compile_s']} s)", flush=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _finish(report: dict, ns) -> int:
    errors = [r for r in report["rows"] if r.get("error")]
    md = render(report)
    if ns.json:
        Path(ns.json).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.json).write_text(json.dumps(report, indent=1) + "\n")
    if ns.md:
        Path(ns.md).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.md).write_text(md + "\n")
    if not ns.json and not ns.md:
        print(md)
    print(f"{report['kind']}: {len(report['rows'])} compiled, {len(errors)} failed, {report['wall_s']} s", flush=True)
    if errors:
        print("compile errors:", file=sys.stderr)
        for r in errors:
            where = (f"{r['kernel']} / {r['variant']} / {r['dtype']} / {r['config']}" if report["kind"] == "triton"
                     else r.get("kernel", "?"))
            print(f"  {where}: {r['error'].splitlines()[0] if r['error'] else ''}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------
# CUDA: nvcc -Xptxas -v with the extension build's flags


def _ninja_flags() -> tuple[str, list[str], str] | None:
    """(nvcc, flags, source description) from the last extension build, if there is one."""
    files = sorted(ROOT.glob("build/temp*/build.ninja"), key=lambda p: p.stat().st_mtime)
    if not files:
        return None
    text = files[-1].read_text()
    var = {}
    for key in ("nvcc", "cuda_cflags", "cuda_post_cflags"):
        m = re.search(rf"^{key} = (.*)$", text, re.M)
        if not m:
            return None
        var[key] = m.group(1)
    flags = shlex.split(var["cuda_cflags"]) + shlex.split(var["cuda_post_cflags"])
    return var["nvcc"], flags, str(files[-1].relative_to(ROOT))


def _rebuilt_flags() -> tuple[str, list[str], str]:
    """The flags setup.py + torch.utils.cpp_extension give nvcc (when there is no build.ninja)."""
    import glob
    import sysconfig

    # as setup.py: /usr/local/cuda when CUDA_HOME is unset (read when cpp_extension is imported)
    if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
    from torch.utils import cpp_extension as ce

    cuda_home = os.environ.get("CUDA_HOME") or ce.CUDA_HOME or "/usr/local/cuda"
    site = sysconfig.get_paths()["purelib"]
    inc = [str(ROOT / "csrc"), *sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include")))]
    inc += ce.include_paths(device_type="cuda") if "device_type" in ce.include_paths.__code__.co_varnames \
        else ce.include_paths(cuda=True)
    inc += [os.path.join(sys.prefix, "include"), sysconfig.get_paths()["include"]]  # as setuptools does
    flags = [f"-I{p}" for p in inc] + list(ce.COMMON_NVCC_FLAGS)
    # setup.py's nvcc flags and the extension defines
    flags += ["-O3", "-DSPARSEMASK_WITH_CUDA", "--expt-relaxed-constexpr", "-lineinfo",
              "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C", "-std=c++20"]
    return os.path.join(cuda_home, "bin", "nvcc"), flags, "torch.utils.cpp_extension + setup.py flags"


def _nvcc_cmd(nvcc: str, flags: list[str], src: Path, out: Path) -> list[str]:
    keep = []
    skip = False
    for f in flags:
        if skip:
            skip = False
            continue
        if f in ("-c",) or f.startswith(("-gencode", "--generate-code", "-arch", "--gpu-architecture", "-MD", "-MF")):
            continue
        if f in ("--compiler-options", "-Xcompiler"):
            skip = True  # host-only (-fPIC); -cubin compiles device code only
            continue
        keep.append(f)
    # -cubin: the device pass only (no host compile of the torch headers); one arch.
    return [nvcc, *keep, f"-arch=sm_{SM}", "-cubin", "-Xptxas", "-v", str(src), "-o", str(out)]


def _demangle(names: list[str]) -> dict:
    if not names:
        return {}
    tool = shutil.which("c++filt") or shutil.which("llvm-cxxfilt")
    if tool is None:
        return {n: n for n in names}
    res = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, check=True)
    return dict(zip(names, res.stdout.splitlines()))


def _short_name(demangled: str) -> str:
    """'forward_kernel<c10::Half, float>': no namespaces, no parameter list."""
    name = demangled.replace("(anonymous namespace)::", "").replace("sparsemask::", "")
    depth = 0
    for i, ch in enumerate(name):  # cut at the '(' of the parameter list (template depth 0)
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            name = name[:i]
            break
    return re.sub(r"^void ", "", name)


def cmd_cuda(ns) -> int:
    t0 = time.perf_counter()
    got = _ninja_flags()
    nvcc, flags, origin = got if got else _rebuilt_flags()
    sources = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
    rows, version = [], ""
    try:
        version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    except OSError as err:
        rows.append(dict(kernel="nvcc", source="", error=f"nvcc not runnable: {err}"))
    cmds = []
    with tempfile.TemporaryDirectory() as d:
        for src in sources if not rows else []:
            cmd = _nvcc_cmd(nvcc, flags, src, Path(d) / (src.stem + ".cubin"))
            cmds.append(" ".join(shlex.quote(c) for c in cmd))
            print(f"nvcc {src.relative_to(ROOT)} for sm_{SM} (flags from {origin})", flush=True)
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            log = res.stdout + res.stderr
            if res.returncode != 0:
                rows.append(dict(kernel=str(src.relative_to(ROOT)), source=str(src.relative_to(ROOT)),
                                 error=f"nvcc exit {res.returncode}:\n{log[-4000:]}"))
                continue
            stats = _parse_ptxas(log)
            names = _demangle(sorted(stats))
            for mangled, s in stats.items():
                full = names.get(mangled, mangled)
                rows.append(dict(kernel=_short_name(full), signature=full, mangled=mangled, source=str(src.relative_to(ROOT)),
                                 error=None, **s))
    rows.sort(key=lambda r: (r.get("source", ""), r["kernel"]))
    report = dict(kind="cuda", nvcc=version, target=f"sm_{SM}", flags_from=origin, commands=cmds, date=_now(),
                  wall_s=round(time.perf_counter() - t0, 1), rows=rows)
    return _finish(report, ns)


# --------------------------------------------------------------------------------------
# Markdown


def _kib(b: int) -> str:
    return f"{b / 1024:.0f}K" if b >= 1024 else str(b)


def _cell(r: dict) -> str:
    if r.get("error"):
        return "**FAILED**"
    text = f"{r['regs']} / {_kib(r['shared'])}"
    if r["spill_stores"] or r["spill_loads"]:
        text = f"**{text} / spill {r['spill_stores']}:{r['spill_loads']}**"
    if r["shared"] > SM90_MAX_SHARED:
        text += " (smem > 227K)"
    return text


def render(report: dict) -> str:
    rows = report["rows"]
    lines = []
    if report["kind"] == "triton":
        dtypes = [d for d in DTYPES if any(r["dtype"] == d for r in rows)]
        cpu = sum(r.get("cpu_s", 0) for r in rows)
        lines.append(f"Triton {report['triton']}, target {report['target']}, {len(rows)} compiles in "
                     f"{report['wall_s']:.0f} s wall, {cpu:.0f} s CPU ({report['jobs']} processes). Cell: registers / "
                     "shared memory; **bold** with `spill stores:loads` (bytes) where ptxas spills.")
        if report.get("first_config_only"):
            lines.append(f"{', '.join(report['first_config_only'])}: first config only (`-` = not compiled; "
                         "`--first-config-only none` compiles every config).")
        lines.append("")
        lines.append("| kernel | variant | config | " + " | ".join(dtypes) + " |")
        lines.append("|---|---|---|" + "---|" * len(dtypes))
        keyed: dict = {}
        for r in rows:
            keyed.setdefault((r["kernel"], r["variant"], r["config_index"], r["config"]), {})[r["dtype"]] = r
        order = {k: i for i, k in enumerate(VARIANTS)}

        def key(item):
            (kernel, variant, ci, _), by_dt = item
            r = next(iter(by_dt.values()))
            names = [v[0] for v in VARIANTS.get(kernel, [])]
            vi = r.get("variant_index", names.index(variant) if variant in names else 0)
            return order.get(kernel, len(order)), kernel, vi, ci

        for (kernel, variant, ci, cfg), by_dt in sorted(keyed.items(), key=key):
            short = _short_kernel(kernel)
            cells = [_cell(by_dt[d]) if d in by_dt else "-" for d in dtypes]
            lines.append(f"| {short} | {variant} | `{cfg}` | " + " | ".join(cells) + " |")
    else:
        lines.append(f"nvcc: {report['nvcc']}; target {report['target']}; flags from {report['flags_from']}. "
                     "Shared memory is static (`__shared__`); **bold** where ptxas spills.")
        lines.append("")
        lines.append("| source | kernel | regs | spill stores:loads (bytes) | stack (bytes) | static smem |")
        lines.append("|---|---|---|---|---|---|")
        for r in rows:
            if r.get("error"):
                lines.append(f"| {r.get('source', '')} | {r['kernel']} | **FAILED** | | | |")
                continue
            spill = f"{r['spill_stores']}:{r['spill_loads']}"
            if r["spill_stores"] or r["spill_loads"]:
                spill = f"**{spill}**"
            src = Path(r["source"]).name
            lines.append(f"| {src} | `{r['kernel']}` | {r['regs']} | {spill} | {r['stack']} | {_kib(r['smem'])} |")
    return "\n".join(lines)


def summary(report: dict) -> list[str]:
    """Facts for the docs: what spills, register and shared memory maxima."""
    rows = [r for r in report["rows"] if not r.get("error")]
    failed = len(report["rows"]) - len(rows)
    if not rows:
        return [f"- nothing compiled ({failed} failures)"]
    spills = lambda r: r["spill_stores"] or r["spill_loads"]  # noqa: E731
    spilling = [r for r in rows if spills(r)]
    top = max(rows, key=lambda r: r["regs"])
    if report["kind"] == "cuda":
        lines = [f"- CUDA ({report['nvcc']}): {len(rows)} kernel instances, {failed} failed, {len(spilling)} spill; "
                 f"max {top['regs']} registers (`{top['kernel']}`)."]
        if spilling:
            lines.append("  - spill stores:loads (bytes): " + ", ".join(
                f"`{r['kernel']}` {r['spill_stores']}:{r['spill_loads']}" for r in spilling))
        return lines
    cpu = sum(r.get("cpu_s", 0) for r in report["rows"])
    label = f" ({report['label']})" if report.get("label") else ""
    lines = [f"- Triton {report['triton']}{label}: {len(rows)} compiled, {failed} failed, {len(spilling)} spill; max "
             f"{top['regs']} registers, max shared memory {_kib(max(r['shared'] for r in rows))}; "
             f"{report['wall_s']:.0f} s wall, {cpu:.0f} s CPU."]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["kernel"], r["variant"]), []).append(r)
    for (kernel, variant), rs in groups.items():
        bad = [r for r in rs if spills(r)]
        if not bad:
            continue
        by_dt = {}
        for r in bad:
            by_dt[r["dtype"]] = by_dt.get(r["dtype"], 0) + 1
        n_cfg = len({r["config_index"] for r in rs})
        detail = ", ".join(f"{d} {n}/{n_cfg}" for d, n in by_dt.items())
        lines.append(f"  - {_short_kernel(kernel)} / {variant}: {len(bad)} of {len(rs)} spill ({detail} configs; "
                     f"up to {max(r['spill_stores'] for r in bad)} B stored)")
    big = [r for r in rows if r["shared"] > SM90_MAX_SHARED]
    if big:
        lines.append(f"  - {len(big)} compiles need more than 227 KiB shared memory (cannot launch on sm_90)")
    return lines


def _short_kernel(name: str) -> str:
    return name.replace("_masked_conv2d_", "").replace("_kernel", "")


BEGIN = "<!-- compile-report:begin -->"
END = "<!-- compile-report:end -->"


def cmd_docs(ns) -> int:
    reports = [json.loads(Path(p).read_text()) for p in ns.reports]
    parts = [BEGIN, "", f"Generated {_now()} by `{ns.command}`.", ""]
    for r in reports:
        parts += summary(r)
    for r in reports:
        title = f"Triton {r['triton']}" if r["kind"] == "triton" else "CUDA (csrc/cuda, nvcc -Xptxas -v)"
        if r.get("label"):
            title += f" ({r['label']})"
        parts += ["", f"### {title}", "", render(r)]
    parts += ["", END]
    block = "\n".join(parts)
    path = Path(ns.docs)
    text = path.read_text()
    if BEGIN not in text or END not in text:
        print(f"compile_report: {path} has no {BEGIN} ... {END} block", file=sys.stderr)
        return 1
    a, b = text.index(BEGIN), text.index(END) + len(END)
    path.write_text(text[:a] + block + text[b:])
    print(f"wrote {len(reports)} report(s) into {path}")
    failed = sum(1 for r in reports for row in r["rows"] if row.get("error"))
    return 1 if failed else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("triton", help="AOT-compile every Triton kernel x config x variant x dtype for sm_90")
    t.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default 2)")
    t.add_argument("--only", help="only kernels whose name contains this")
    t.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    t.add_argument("--first-config-only", nargs="+", default=list(FIRST_CONFIG_ONLY), metavar="DTYPE",
                   choices=[*DTYPES, "none"],
                   help=f"dtypes compiled with each kernel's first autotune config only, to keep CI short "
                        f"(default: {' '.join(FIRST_CONFIG_ONLY) or 'none'}; 'none': every config for every dtype)")
    t.add_argument("--variants", type=int, nargs="+", help="only these variant indices (VARIANTS)")
    t.add_argument("--configs", type=int, nargs="+", help="only these autotune config indices")
    t.add_argument("--label", help="a few words naming this Triton in the docs, e.g. \"the GPU machine's\"")
    t.add_argument("--expect-version", help="fail unless `import triton` finds this version")
    c = sub.add_parser("cuda", help="nvcc -Xptxas -v report of csrc/cuda/*.cu for sm_90")
    for s in (t, c):
        s.add_argument("--json", help="write the report as JSON here")
        s.add_argument("--md", help="write the markdown table here")
    d = sub.add_parser("docs", help="write JSON reports into docs/gpu.md")
    d.add_argument("reports", nargs="+")
    d.add_argument("--docs", default=str(ROOT / "docs" / "gpu.md"))
    d.add_argument("--command", default="make compile-report", help="the command named in the docs")
    ns = p.parse_args(argv)
    return {"triton": cmd_triton, "cuda": cmd_cuda, "docs": cmd_docs}[ns.cmd](ns)


if __name__ == "__main__":
    sys.exit(main())
