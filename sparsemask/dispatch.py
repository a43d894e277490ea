"""Which implementation runs each masked convolution — the one place that decides.

This module owns the backend switch, the backend registry, the measured thresholds of
``auto`` and the rule for the fused CPU ops. Everything that asks "should this run
sparse, and on what?" asks here: :mod:`sparsemask.ops` (the functional ops) and
:mod:`sparsemask.nn.defective` (the modules). The C++ kernels receive the threshold as
``max_density`` and only compare it with the mask's kept count (csrc/plan.cpp,
csrc/dense_fallback.h): that count is data, so comparing it in C++ keeps ``torch.compile``
graphs whole; the threshold itself is decided here.

Backends (see :func:`backend_names`; each registers itself from one file in
:mod:`sparsemask.backends`):
  ``auto``    per call, the registered sparse backend with the highest measured threshold
              for the tensor's device and dtype, where the mask's kept fraction is at most
              that threshold; else the dense reference. On CPU the C++ kernel's threshold
              comes from the generated crossover table (sparsemask/backends/cpu_crossover.json,
              :func:`cpu_table_threshold`): per dtype, layout, mode, nearest swept shape and
              batch size.
  ``cpu``     the C++ sparse kernel (CPU tensors only), always.
  ``cuda``    the CUDA C++ sparse kernel (CUDA tensors only), always.
  ``triton``  the Triton sparse kernels (CUDA tensors; CPU tensors under TRITON_INTERPRET=1).
  ``dense``   ``F.conv2d(...) * mask``: the reference, and what the papers' code runs.

The setting is process-global (a plain module global, so ``torch.compile`` reads it at
trace time and guards on it); ``with sparsemask.backend("dense"): ...`` changes it for a
block. A new backend is one file calling :func:`register_backend` (docs/architecture.md).
"""
from __future__ import annotations

import contextlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence

import torch
from torch import Tensor

from .ops.common import conv_dtype, fused_math_dtype

# The built-in names, in registration order (kept for compatibility; the live list is
# backend_names(), which includes backends registered later).
BACKENDS = ("auto", "cpu", "cuda", "triton", "dense")

# --------------------------------------------------------------------------------------
# The measured policy.

# Largest kept fraction at which a sparse backend beats the dense baseline (forward +
# backward), by (backend, device type, dtype). Above it `auto` runs dense; a missing row
# (or 0.0) means auto never picks that backend there. Measured with
# benchmarks/bench_masked_conv.py; see benchmarks/RESULTS.md for the numbers behind each.
#
# CUDA rows are 0.0 (auto = always dense, cuDNN conv + mask) until the GPU kernels are
# measured. How they get filled: `make gpu-check` runs benchmarks/bench_gpu.py, whose
# $OUT/bench_gpu.md ends with "Suggested max-density rows": per backend and dtype, the
# largest keep at which that sparse kernel beats the dense baseline (forward + backward,
# bf16/fp32, channels_last) on *every* benchmarked shape. Copy the values here (a
# ("triton", "cuda", dtype) row makes auto consider Triton too), add the run to
# benchmarks/RESULTS.md, and rerun gpu-check: its "auto never slower than dense" line must
# stay True. float64 stays 0.0 on CUDA (never a training dtype; the kernels exist for
# gradcheck).
# CPU rows: on CPU, auto reads the generated crossover table instead (see "auto on CPU" below);
# these hand rows are only its fallback when the table file is absent (with a warning), and
# what other callers of max_density without a ConvCall get.
# CPU float32 (benchmarks/RESULTS.md, 2026-11-22): at keep 0.5 the sparse kernel still wins
# forward+backward on every ResNet-18 bottom shape (1.20-1.22x) and forward alone (1.05-1.56x);
# at keep 1.0 it loses (0.59-0.73x). float64 follows the same code; bfloat16/float16 are
# converted to float32 around the kernel, which costs extra passes, hence the lower values
# (bf16: the fused ops' measured bf16-autocast crossover, see _FUSED_MAX_DENSITY; the lone
# conv is not yet measured — issue 16's sweep).
_MAX_DENSITY: dict[tuple[str, str, torch.dtype], float] = {
    ("cpu", "cpu", torch.float32): 0.5,
    ("cpu", "cpu", torch.float64): 0.5,
    ("cpu", "cpu", torch.bfloat16): 0.2,   # follows the fused ops' bf16-autocast crossover (below)
    ("cpu", "cpu", torch.float16): 0.3,
    ("cuda", "cuda", torch.float32): 0.0,   # unmeasured (needs a GPU run)
    ("cuda", "cuda", torch.float64): 0.0,
    ("cuda", "cuda", torch.bfloat16): 0.0,  # unmeasured (needs a GPU run)
    ("cuda", "cuda", torch.float16): 0.0,   # unmeasured (needs a GPU run)
}
# The sparse kernel pads C_in to whole vectors; with very few input channels (the RGB
# stem) it does several times the useful work, so the hand rows are stricter there (the
# table measures the C_in=3 shapes directly and needs no such rule): for 3->64@32 the
# sparse kernel wins forward+backward at keep 0.3 (1.43x) but loses forward at 0.5 (0.88x).
_MAX_DENSITY_FEW_CHANNELS = 0.3
_FEW_CHANNELS = 8

# The fused ops (sparsemask::defective_unit / defective_block, CPU float32/float64) save
# whole passes over memory besides the skipped neurons, so they pay up to denser masks than
# the lone convolution — but inside them a dense-conv fallback costs extra gathers and
# scatters, so `auto` runs them sparse (max_density 1.0) and only where the kept fraction
# is at most this; above it the unfused modules run (dense convolution + mask).
# Measured (benchmarks/RESULTS.md, 2026-11-22, whole ResNet-18 training step, one thread,
# CPU time, fused ops forced): 1.23x the dense reference at keep 0.5, 1.01x at 0.7, 0.80x
# at 0.9.
#
# Under CPU autocast the fused ops still compute in float32 (csrc/autocast/), while the
# dense alternative runs oneDNN's bf16 convolution (AVX512-BF16 here): the crossover drops.
# Measured (benchmarks/RESULTS.md, 2026-12-02, same step, N=32, one thread, CPU time, bf16
# autocast, fused ops forced): 1.23x at keep 0.1, 1.09x at 0.2 (one
# round 0.96x: borderline), 0.96x at 0.3, 0.78x at 0.5.
# float16: PyTorch's float16 convolution on CPU is a slow reference path (its backward alone
# is 5-50x the float32 step; tests/models/test_autocast.py), so the fused float32 ops beat it
# wherever they beat float32 dense.
_FUSED_MAX_DENSITY = {("cpu", torch.float32): 0.6, ("cpu", torch.float64): 0.6,
                      ("cpu", torch.bfloat16): 0.2, ("cpu", torch.float16): 0.6}


# --------------------------------------------------------------------------------------
# The registry.

ConvKernel = Callable[..., Tensor]


@dataclass(frozen=True)
class Backend:
    """A registered implementation of the masked convolution.

    ``conv(input, weight, bias, mask, stride, padding, dilation, max_density) -> Tensor``
    computes ``F.conv2d(input, weight, bias, stride, padding, dilation) * mask`` for
    validated arguments (stride/padding/dilation are 2-lists of ints), differentiably; it
    may run the dense path when the mask's kept fraction exceeds ``max_density`` (1.0 when
    the backend is forced: always sparse). ``devices`` are the device types it runs;
    ``runs_on`` overrides that test where it depends on more (Triton's interpreter).
    ``fused``: forcing this backend also forces the fused C++ defective-unit/block ops.
    """

    name: str
    conv: ConvKernel
    devices: tuple[str, ...]
    description: str = ""
    runs_on: Optional[Callable[[str], bool]] = None
    fused: bool = False
    requirement: str = field(default="")

    def can_run(self, device_type: str) -> bool:
        return self.runs_on(device_type) if self.runs_on is not None else device_type in self.devices


_REGISTRY: dict[str, Backend] = {}
_current = "auto"
# conv_backend's memo of auto's decisions (cleared whenever the registry or thresholds change).
_decisions: dict[tuple, tuple[tuple["Backend", float], object]] = {}
# The dtypes the C++ CPU op computes (its dense path included).
_CPU_OP_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def register_backend(name: str, conv: ConvKernel, *, devices: Sequence[str], description: str = "",
                     runs_on: Optional[Callable[[str], bool]] = None, fused: bool = False,
                     max_density: Optional[Mapping[tuple[str, torch.dtype], float]] = None,
                     requirement: str = "", replace: bool = False) -> Backend:
    """Register backend ``name`` (see :class:`Backend` for ``conv``'s contract).

    ``max_density``: ``{(device_type, dtype): largest kept fraction where this backend
    beats dense}`` — the rows that let ``auto`` choose it (measure them with
    benchmarks/bench_masked_conv.py; without rows, only ``backend(name)`` reaches it).
    ``requirement``: said in the error when a tensor is on a device it cannot run.
    ``replace``: allow re-registering an existing name (else ValueError).
    """
    if not isinstance(name, str) or not name.isidentifier() or name == "auto":
        raise ValueError(f"register_backend: name must be an identifier other than 'auto', got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"register_backend: backend {name!r} is already registered (pass replace=True)")
    if not callable(conv):
        raise TypeError(f"register_backend: conv must be callable, got {type(conv).__name__}")
    entry = Backend(name, conv, tuple(devices), description, runs_on, fused, requirement)
    _REGISTRY[name] = entry
    _decisions.clear()
    for (device_type, dtype), limit in (max_density or {}).items():
        if not 0.0 <= float(limit) <= 1.0:
            raise ValueError(f"register_backend: max_density values must be in [0, 1], got {limit!r}")
        _MAX_DENSITY[(name, device_type, dtype)] = float(limit)
    return entry


def unregister_backend(name: str) -> None:
    """Remove a backend registered with :func:`register_backend` (and its auto rows)."""
    if name not in _REGISTRY:
        raise ValueError(f"unregister_backend: no backend {name!r}")
    if _current == name:
        raise RuntimeError(f"unregister_backend: backend {name!r} is the current backend")
    del _REGISTRY[name]
    _decisions.clear()
    for key in [k for k in _MAX_DENSITY if k[0] == name]:
        del _MAX_DENSITY[key]


def backend_names() -> tuple[str, ...]:
    """Every name :func:`set_backend` accepts: ``auto`` and the registered backends."""
    return ("auto", *_REGISTRY)


def get_backend_impl(name: str) -> Backend:
    """The registered :class:`Backend` called ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown sparsemask backend {name!r}; expected one of {', '.join(backend_names())}")
    return _REGISTRY[name]


# --------------------------------------------------------------------------------------
# The switch.

def _check_name(name: str) -> str:
    if name != "auto":
        get_backend_impl(name)
    return name


def set_backend(name: str) -> None:
    """Set the process-wide backend (one of :func:`backend_names`)."""
    global _current
    _current = _check_name(name)


def get_backend() -> str:
    """The current backend name."""
    return _current


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Context manager: run the enclosed masked convolutions on backend ``name``.

    >>> with sparsemask.backend("dense"):
    ...     y = sparsemask.masked_conv2d(x, w, None, mask, padding=1)
    """
    global _current
    previous = _current
    _current = _check_name(name)
    try:
        yield
    finally:
        _current = previous


# --------------------------------------------------------------------------------------
# auto on CPU: the measured crossover table.
#
# sparsemask/backends/cpu_crossover.json is generated (`python benchmarks/sweep_auto.py
# generate`, sparsemask/benchmarks/crossover.py) from a sweep that times dense vs the C++
# sparse kernel per (dtype, layout, mode, shape, N, keep); each row holds the largest keep
# where sparse wins there and at every smaller keep. A call is matched to the row of
# * its dtype: float32 and float64 read the float32 rows (same kernel, float64 is not
#   swept); bfloat16 and float16 the bfloat16 rows: float16 computes through float32
#   (bfloat16's forward is native), but dense float16 on CPU is a slow reference path,
#   so the bfloat16 thresholds are conservative for float16;
# * its layout: channels_last when the input is channels_last-contiguous (the format the op
#   returns), else nchw;
# * its mode: forward when autograd will not record it (grad mode off, or neither input nor
#   weight requires grad), else forward+backward;
# * the nearest swept shape: smallest Euclidean distance between the log of (C_in, C_out,
#   kernel area, stride, H_out*W_out) — log space, because cost ratios, not differences,
#   decide a crossover (64 vs 128 channels is as far as 3 vs 6);
# * the batch: the thresholds at the two swept N that bracket it, the smaller one (not
#   measured in between, so the cautious one); beyond the grid, the nearest end's.
# Only shapes, dtypes and flags are read (no tensor data), so torch.compile traces the
# lookup into guards. Not covered: shapes far from every swept one (dilation, groups,
# huge images) get their nearest row anyway; thread counts other than the sweep's.

_CPU_TABLE_PATH = Path(__file__).resolve().parent / "backends" / "cpu_crossover.json"
_TABLE_DTYPES = {torch.float32: "float32", torch.float64: "float32",
                 torch.bfloat16: "bfloat16", torch.float16: "bfloat16"}
_FEATURES = ("c_in", "c_out", "kernel_area", "stride", "out_positions")


@dataclass(frozen=True)
class ConvCall:
    """What auto's CPU table is keyed on, for one ``masked_conv2d`` call (no tensor data).

    ``dtype``/``layout``/``mode``: the table's names ("float32" | "bfloat16", "nchw" |
    "channels_last", "forward" | "forward+backward"); ``features``: (C_in, C_out, kernel
    area, stride, H_out*W_out) as in the table's ``shapes``; ``batch``: N (may be a SymInt
    under torch.compile: only compared, never converted).
    """

    dtype: Optional[str]
    layout: str
    mode: str
    features: tuple[float, ...]
    batch: object


@dataclass(frozen=True)
class CrossoverTable:
    """The parsed cpu_crossover.json: ``shapes`` {name: features}, ``rows`` {(dtype, layout,
    mode): {shape name: ((N, threshold), ... ascending N)}}."""

    shapes: dict[str, tuple[int, ...]]
    rows: dict[tuple[str, str, str], dict[str, tuple[tuple[int, float], ...]]]


def _is_channels_last(input: Tensor) -> bool:
    """channels_last-contiguous and not also NCHW-contiguous (C == 1 or H*W == 1): the two
    stride checks are C++ calls, where torch._prims_common.suggest_memory_format costs ~10 us
    of Python per call."""
    return input.is_contiguous(memory_format=torch.channels_last) and not input.is_contiguous()


def conv_call(input: Tensor, weight: Tensor, mask: Tensor, stride: Sequence[int]) -> ConvCall:
    """The :class:`ConvCall` of ``masked_conv2d(input [N, C_in, H, W], weight [C_out, C_in,
    kh, kw], mask [C_out, H_out, W_out], stride)``; only the mask's shape is read."""
    training = torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad)
    layout = "channels_last" if _is_channels_last(input) else "nchw"
    # a non-square stride counts as its geometric mean (the table's strides are square)
    features = (int(weight.shape[1]), int(weight.shape[0]), int(weight.shape[2] * weight.shape[3]),
                math.sqrt(stride[0] * stride[1]), int(mask.shape[1] * mask.shape[2]))
    return ConvCall(_TABLE_DTYPES.get(conv_dtype(input)), layout, "forward+backward" if training else "forward",
                    features, input.shape[0])


def _malformed(path: Path, why: str) -> ValueError:
    return ValueError(f"sparsemask: the CPU crossover table {path} is malformed ({why}); regenerate it "
                      f"with `python benchmarks/sweep_auto.py generate` or delete it to use the hand rows")


def _parse_table(data: object, path: Path) -> CrossoverTable:
    """Check and index a loaded cpu_crossover.json; ValueError naming ``path`` if malformed."""
    def bad(why: str) -> ValueError:  # noqa: E306 (one line per check below)
        return _malformed(path, why)
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), dict) or not isinstance(data.get("rows"), list):
        raise bad("expected an object with 'shapes' and 'rows'")
    shapes = {}
    for name, feats in data["shapes"].items():
        if not isinstance(feats, dict) or any(not isinstance(feats.get(k), int) or feats[k] < 1 for k in _FEATURES):
            raise bad(f"shape {name!r} needs positive ints {', '.join(_FEATURES)}")
        shapes[name] = tuple(feats[k] for k in _FEATURES)
    rows: dict[tuple[str, str, str], dict[str, list[tuple[int, float]]]] = {}
    for row in data["rows"]:
        try:
            key, shape, n, limit = (row["dtype"], row["layout"], row["mode"]), row["shape"], row["batch"], row["threshold"]
        except (TypeError, KeyError) as e:
            raise bad(f"row {row!r} lacks {e}") from None
        if shape not in shapes:
            raise bad(f"row {row!r} names an unknown shape")
        if not isinstance(n, int) or n < 1 or not isinstance(limit, (int, float)) or not 0.0 <= limit <= 1.0:
            raise bad(f"row {row!r}: batch must be an int >= 1 and threshold in [0, 1]")
        rows.setdefault(key, {}).setdefault(shape, []).append((n, float(limit)))
    return CrossoverTable(shapes, {k: {s: tuple(sorted(v)) for s, v in by_shape.items()} for k, by_shape in rows.items()})


def load_cpu_table(path: Path = _CPU_TABLE_PATH) -> Optional[CrossoverTable]:
    """The CPU crossover table at ``path``, or None if the file is absent."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise _malformed(path, f"not JSON: {e}") from None
    return _parse_table(data, path)


# Read once, when this module is imported: file I/O cannot be traced by torch.compile, so a
# lazy first read inside a compiled model would break its graph (fullgraph=True fails). The
# file is a few KB; a malformed one raises here, naming the file and the fix.
_cpu_table_cache: dict[str, object] = {"table": load_cpu_table(), "warned": False}


def cpu_table() -> Optional[CrossoverTable]:
    """The CPU crossover table, or None if the file is absent (warns once, at the first
    eager use: a warning cannot be traced by torch.compile either)."""
    table = _cpu_table_cache["table"]
    if table is None and not _cpu_table_cache["warned"] and not torch.compiler.is_compiling():
        _cpu_table_cache["warned"] = True
        warnings.warn(f"sparsemask: {_CPU_TABLE_PATH} is absent; backend 'auto' uses the hand-typed CPU "
                      f"thresholds (dispatch._MAX_DENSITY). Run the sweep (docs/ops.md) to generate it.",
                      stacklevel=2)
    return table


def _nearest_shape(shapes: Mapping[str, tuple[int, ...]], features: tuple[float, ...]) -> str:
    """The name in ``shapes`` closest to ``features`` in log space (first one on a tie)."""
    def distance(name: str) -> float:
        return sum((math.log(a) - math.log(b)) ** 2 for a, b in zip(shapes[name], features))
    return min(shapes, key=distance)


def _batch_threshold(points: tuple[tuple[int, float], ...], batch) -> float:
    """Threshold for ``batch`` from ``points`` ((N, threshold), ascending N): the smaller of
    the two swept N bracketing it; the end value beyond the grid. Only compares ``batch``."""
    below = [limit for n, limit in points if n <= batch]
    above = [limit for n, limit in points if n >= batch]
    if not below:
        return above[0]
    if not above:
        return below[-1]
    return min(below[-1], above[0])


def cpu_table_threshold(table: CrossoverTable, call: ConvCall) -> Optional[float]:
    """The C++ CPU kernel's ``auto`` threshold for ``call`` from ``table`` (the rule is in the
    comment above), or None when the table has no rows for its dtype/layout/mode."""
    by_shape = table.rows.get((call.dtype, call.layout, call.mode)) if call.dtype else None
    if not by_shape:
        return None
    shape = _nearest_shape({name: table.shapes[name] for name in by_shape}, call.features)
    return _batch_threshold(by_shape[shape], call.batch)


# --------------------------------------------------------------------------------------
# The decisions.

def max_density(device_type: str, dtype: torch.dtype, in_channels: int, backend_name: Optional[str] = None,
                call: Optional[ConvCall] = None) -> float:
    """The ``auto`` threshold of ``backend_name`` (default: the device's C++ backend): the
    sparse kernel runs when the mask's kept fraction is at most this; 0 means never.

    For the C++ CPU kernel with a ``call`` (:func:`conv_call`), the crossover table's value
    (:func:`cpu_table_threshold`); without the table, or without rows for the call's
    dtype/layout/mode, the hand rows of ``_MAX_DENSITY`` (capped for few input channels).
    """
    name = backend_name or device_type
    if call is not None and name == "cpu" and device_type == "cpu":
        table = cpu_table()
        limit = cpu_table_threshold(table, call) if table is not None else None
        if limit is not None:
            return limit
    limit = _MAX_DENSITY.get((name, device_type, dtype), 0.0)
    if in_channels < _FEW_CHANNELS:
        limit = min(limit, _MAX_DENSITY_FEW_CHANNELS)
    return limit


def fused_max_density(device_type: str, dtype: torch.dtype) -> float:
    """The ``auto`` threshold of the fused defective-unit/block ops (0: never fused).
    ``dtype``: what the dense alternative runs in (the autocast dtype under autocast)."""
    return _FUSED_MAX_DENSITY.get((device_type, dtype), 0.0)


def conv_backend(input: Tensor, weight: Tensor, mask: Tensor, stride: Sequence[int]) -> tuple[Backend, float]:
    """The backend that runs ``masked_conv2d(input [N, C_in, H, W], weight [C_out, C_in, kh,
    kw], mask [C_out, H_out, W_out], stride)`` now, and the ``max_density`` to pass it (1.0:
    always sparse; under ``auto`` the measured threshold, above which the backend runs
    dense). Reads shapes, dtypes, layouts and autograd flags only, never tensor data.

    ``auto`` picks, among registered sparse backends that run on the input's device, the
    one with the highest threshold for the dtype the convolution runs in (under autocast
    the autocast dtype) — on CPU, for the C++ kernel, the crossover table's threshold for
    this call's shape, batch, layout and mode; none above 0 means the dense reference.
    """
    device = input.device.type
    if _current != "auto":
        impl = _REGISTRY[_current]
        if not impl.can_run(device):
            need = impl.requirement or f"use backend 'auto', 'dense' or {device!r}"
            raise RuntimeError(f"masked_conv2d: backend {impl.name!r} cannot run {device} tensors; {need}")
        return impl, 1.0
    dtype = conv_dtype(input)
    # The decision depends only on shapes, dtype, layout and whether autograd records (what
    # conv_call reads), so eager calls memoise it: a model calls each layer with the same
    # shapes every step, and the lookup would be a tenth of a small layer's time. Not under
    # torch.compile, which traces the lookup once into guards anyway (shapes may be symbolic).
    # Only decisions read from the crossover table are memoised (keyed on the table object,
    # which a test or a reload may replace); the hand rows are a dict lookup anyway.
    key, table = None, _cpu_table_cache["table"] if device == "cpu" else None
    if table is not None and not torch.compiler.is_compiling():
        training = torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad)
        key = (dtype, training, _is_channels_last(input), input.shape, weight.shape, mask.shape, tuple(stride))
        hit = _decisions.get(key)
        if hit is not None and hit[1] is table:
            return hit[0]
    call = conv_call(input, weight, mask, stride) if device == "cpu" else None
    best, best_limit = _REGISTRY["dense"], 0.0
    for impl in _REGISTRY.values():
        if impl.name == "dense" or not impl.can_run(device):
            continue
        limit = max_density(device, dtype, input.shape[1], impl.name, call)
        if limit > best_limit:
            best, best_limit = impl, limit
    if best.name == "dense" and device == "cpu" and "cpu" in _REGISTRY and dtype in _CPU_OP_DTYPES:
        # Dense on CPU still goes through the C++ op, told never to run sparse (max_density 0):
        # its dense path masks the convolution in one pass with the plan's byte masks (none at
        # all for a mask that keeps everything; csrc/cpu/dense_path.h), so it is faster than
        # F.conv2d(...) * mask — which keeps `auto` at or above dense where sparse loses. The
        # crossover table's thresholds are where sparse beats this path too (crossover.py).
        best, best_limit = _REGISTRY["cpu"], 0.0
    decision = best, (best_limit if best.name != "dense" else 1.0)
    if key is not None:
        _decisions[key] = (decision, table)
    return decision


def fused_bn(input: Tensor) -> bool:
    """Whether the fused masked-BN kernel (csrc/cpu/masked_batch_norm.cpp) runs for
    ``input`` [N, C, H, W]: wherever it supports the device and dtype, except under the
    ``dense`` reference backend."""
    return _current != "dense" and fused_math_dtype(input) is not None


def fused_unit(input: Tensor, masks: Sequence[Tensor], keep: Optional[float] = None) -> bool:
    """Whether a fused defective-unit/block op runs (sparse) for ``input``, or its composite.

    A backend registered with ``fused=True`` (``cpu``) forces the fused ops where their
    kernels support the input (CPU float32/float64, or inside CPU autocast); ``auto`` runs
    them where the masks' kept fraction is at most :func:`fused_max_density` — from
    ``keep`` when the caller knows it (modules: no data-dependent branch under
    torch.compile), else counted from the masks (a cheap CPU reduction; a graph break under
    torch.compile, so compiled code should come through the modules).
    """
    if fused_math_dtype(input) is None:
        return False
    if _current != "auto":
        return _REGISTRY[_current].fused
    # The alternative to the fused op is the dense composite, which runs in conv_dtype(input):
    # under autocast that is bf16/fp16, not the float32 the fused kernels compute in.
    limit = fused_max_density(input.device.type, conv_dtype(input))
    if keep is not None:
        return keep <= limit
    return all(float(m.count_nonzero()) <= limit * m.numel() for m in masks)
