"""benchmarks/compile_report.py: Triton's ahead-of-time compile for sm_90 with no GPU.

`make compile-report` compiles every kernel x config x dtype with two Triton versions; this
test compiles ONE forward kernel configuration (float64: the one-hot and MMA ``tl.dot`` with
a float64 accumulator) with the installed Triton, so a broken compile path also fails
`make test`. It runs in a subprocess: the test session sets TRITON_INTERPRET=1, under which
``triton.jit`` makes interpreter functions that cannot be compiled.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "compile_report.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("compile_report", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _aot_unavailable() -> str | None:
    """Why Triton cannot compile for a CUDA target here, or None."""
    spec = importlib.util.find_spec("triton")
    if spec is None:
        return "triton is not installed"
    root = Path(spec.origin).parent
    if not (root / "backends" / "nvidia").is_dir():
        return f"this triton ({root}) has no NVIDIA backend"
    if not (root / "backends" / "nvidia" / "bin" / "ptxas").exists() and not os.environ.get("TRITON_PTXAS_PATH"):
        return f"this triton ({root}) ships no ptxas and TRITON_PTXAS_PATH is not set"
    return None


@pytest.mark.slow  # ~10 s; CI's `make compile-report` compiles every kernel and config as well
def test_one_forward_config_compiles_for_sm90(tmp_path):
    reason = _aot_unavailable()
    if reason:
        pytest.skip(f"no ahead-of-time compile for sm_90 here: {reason}")
    out = tmp_path / "one.json"
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SPARSEMASK_TRITON_AUTOTUNE")}
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "triton", "--only", "fwd", "--variants", "0", "--configs", "0",
         "--dtypes", "float64", "--jobs", "1", "--json", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )
    assert res.returncode == 0, f"compile_report failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["kernel"] == "_masked_conv2d_fwd_kernel" and row["dtype"] == "float64"
    assert row["error"] is None
    assert 0 < row["regs"] <= 255
    assert row["shared"] >= 0 and row["spill_stores"] >= 0


def test_every_kernel_has_variants():
    """A new *_kernel in sparsemask/triton/ without VARIANTS would make the CI step fail;
    catch it here without compiling (names read from the source)."""
    import re

    cr = _load_script()
    names = set()
    for path in (ROOT / "sparsemask" / "triton").glob("*.py"):
        names |= set(re.findall(r"^def (\w+_kernel)\(", path.read_text(), re.M))
    assert names and names <= set(cr.VARIANTS), f"kernels without VARIANTS: {sorted(names - set(cr.VARIANTS))}"


def test_ptxas_log_parsing():
    cr = _load_script()
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN10sparsemask12_GLOBAL__N_114forward_kernelIffEEvPKT_' for 'sm_90'
ptxas info    : Function properties for _ZN10sparsemask12_GLOBAL__N_114forward_kernelIffEEvPKT_
    24 bytes stack frame, 24 bytes spill stores, 32 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 8448 bytes smem, 560 bytes cmem[0]
ptxas info    : Compiling entry function 'k2' for 'sm_90a'
ptxas info    : Function properties for k2
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers
"""
    stats = cr._parse_ptxas(log)
    f = stats["_ZN10sparsemask12_GLOBAL__N_114forward_kernelIffEEvPKT_"]
    assert (f["regs"], f["spill_stores"], f["spill_loads"], f["stack"], f["smem"]) == (64, 24, 32, 24, 8448)
    assert stats["k2"]["regs"] == 255 and stats["k2"]["smem"] == 0
    assert cr._short_name("void sparsemask::(anonymous namespace)::forward_kernel<c10::Half, float>"
                          "(c10::Half const*, int const*, sparsemask::(anonymous namespace)::Geometry)") \
        == "forward_kernel<c10::Half, float>"
