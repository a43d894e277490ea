"""Runtime ISA dispatch of the CPU kernels (csrc/cpu/isa.h): each level this CPU supports,
forced with SPARSEMASK_CPU_CAPABILITY in a subprocess, passes the float64-reference tests of
the ops that go through the per-level kernels; a level the CPU lacks, or an unknown one, is
refused at import with a clear message; the library's AVX/AVX-512 instructions are only in
the code of the levels that may use them."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sparsemask

LEVELS = ("avx512_bf16", "avx512", "avx2", "baseline")
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent.parent

# The float64 (and float32/low-precision) reference tests of the ops whose CPU kernels are
# compiled per level; their helpers and tolerances are reused as they are.
REFERENCE_TESTS = [
    "test_masked_conv2d.py::test_forward_and_gradients_match_float64_reference",
    "test_masked_conv2d.py::test_layouts",
    "test_masked_conv2d.py::test_float32_tolerance",
    "test_masked_conv2d.py::test_low_precision_error_at_most_twice_dense",
    "test_masked_conv2d.py::test_bfloat16_forward_within_rounding_of_exact_products",
    "test_defective_unit.py::test_matches_composite_float64",
    "test_defective_block.py::test_matches_composite",
    "test_defective_block.py::test_float32_and_empty_masks",
    "test_cpu_capability.py::test_forced_level_is_in_use",
]


def _env(level: str | None) -> dict:
    env = dict(os.environ)
    env.pop("SPARSEMASK_CPU_CAPABILITY", None)
    if level is not None:
        env["SPARSEMASK_CPU_CAPABILITY"] = level
    return env


def _cpuinfo_best() -> str:
    """The best level from /proc/cpuinfo's flags, independently of __builtin_cpu_supports."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), None)
    if line is None:
        pytest.skip("no x86 flags in /proc/cpuinfo")
    flags = set(line.split(":", 1)[1].split())
    avx2 = {"avx2", "fma", "bmi1", "bmi2", "popcnt"} <= flags
    avx512 = avx2 and {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags
    if avx512 and "avx512_bf16" in flags:
        return "avx512_bf16"
    return "avx512" if avx512 else "avx2" if avx2 else "baseline"


def _run(code: str, level: str | None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(level), capture_output=True, text=True,
                          timeout=300)


def _best() -> str:
    r = _run("import sparsemask; print(sparsemask.cpu_capability())", None)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_forced_level_is_in_use():
    """Run by the per-level subprocesses below: the forced level is the one in use."""
    want = os.environ.get("SPARSEMASK_CPU_CAPABILITY")
    if not want:
        pytest.skip("SPARSEMASK_CPU_CAPABILITY is not set (this test is run by test_level_matches_reference)")
    assert sparsemask.cpu_capability() == want


@pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64", reason="x86-64 Linux only")
def test_default_is_the_best_level_the_cpu_supports():
    assert _best() == _cpuinfo_best()


@pytest.mark.parametrize("level", LEVELS)
def test_level_matches_reference(level):
    best = _best()
    if LEVELS.index(level) < LEVELS.index(best):
        pytest.skip(f"this CPU does not support {level} (best: {best})")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *(str(TESTS / t) for t in REFERENCE_TESTS)],
        cwd=ROOT, env=_env(level), capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, f"level {level}:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    assert " passed" in r.stdout, r.stdout[-2000:]


def test_unknown_level_is_refused():
    r = _run("import sparsemask", "sse9")
    assert r.returncode != 0
    assert "SPARSEMASK_CPU_CAPABILITY=sse9 is not a CPU capability; use one of avx512_bf16, avx512, avx2, baseline" in r.stderr


def test_level_the_cpu_lacks_is_refused():
    best = _best()
    if best == LEVELS[0]:
        pytest.skip("this CPU supports every level")
    higher = LEVELS[LEVELS.index(best) - 1]
    r = _run("import sparsemask", higher)
    assert r.returncode != 0
    assert f"asks for {higher} kernels" in r.stderr and f"it supports: {best}" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------
# The built library: vector instructions stay inside their levels' code.

_ZMM = re.compile(r"%zmm|%k[1-7]\b")  # 512-bit registers, AVX-512 mask registers
_YMM = re.compile(r"%ymm")


def _functions_using(text: str):
    """{function name: (zmm-instruction count, ymm-instruction count)} from objdump -d -C."""
    counts: dict[str, list[int]] = {}
    name = None
    for line in text.splitlines():
        if line.endswith(">:") and "<" in line:
            name = line[line.index("<") + 1:-2]
            continue
        if name is None or "\t" not in line:
            continue
        insn = line.split("\t", 1)[1]
        z, y = bool(_ZMM.search(insn)), bool(_YMM.search(insn))
        if z or y:
            c = counts.setdefault(name, [0, 0])
            c[0] += z
            c[1] += y
    return counts


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86-64 only")
def test_wide_vector_instructions_only_in_their_levels():
    from sparsemask import _build_info, _C

    lib = _C.__file__
    r = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", lib], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    counts = _functions_using(r.stdout)
    in_avx512 = {f: c for f, c in counts.items() if "cpu::avx512::" in f}
    assert sum(c[0] for c in in_avx512.values()) > 0, "the avx512 level has no AVX-512 code"
    if getattr(_build_info, "NATIVE", False):
        pytest.skip("built with SPARSEMASK_NATIVE=1 (-march=native everywhere)")
    zmm_elsewhere = sorted(f for f, c in counts.items() if c[0] and "cpu::avx512::" not in f)
    assert not zmm_elsewhere, f"AVX-512 code outside the avx512 level: {zmm_elsewhere[:10]}"
    ymm_elsewhere = sorted(f for f, c in counts.items()
                           if c[1] and "cpu::avx512::" not in f and "cpu::avx2::" not in f)
    assert not ymm_elsewhere, f"AVX code outside the avx2/avx512 levels: {ymm_elsewhere[:10]}"
    # AVX512-BF16 only in the bfloat16 register tiles (forward, grad_weight), which run at
    # level avx512_bf16 only: the rest of the avx512 level must load and run on AVX-512 CPUs
    # without BF16.
    bf16_users, name = set(), None
    for line in r.stdout.splitlines():
        if line.endswith(">:") and "<" in line:
            name = line[line.index("<") + 1:-2]
        elif "vdpbf16ps" in line:
            bf16_users.add(name)
    assert bf16_users, "no AVX512-BF16 dot products in the library"
    tiles = ("forward_tile_bf16<", "grad_weight_tile_bf16<")
    outside = sorted(f for f in bf16_users if "cpu::avx512::" not in f or not any(t in f for t in tiles))
    assert not outside, f"AVX512-BF16 code outside the bfloat16 tiles: {outside[:10]}"
