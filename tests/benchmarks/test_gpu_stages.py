"""The staged GPU check (benchmarks/gpu/) on a CPU machine: every stage's dry mode, the file
layout the device tool returns (at most 8 files from $OUT), and the correctness harness's
comparison and poisoning, so the check cannot rot between the rare runs on a GPU."""
from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
GPU = REPO / "benchmarks" / "gpu"
STAGES = (1, 2, 3, 4)
MAX_FILES = 8
# What each stage returns besides its summary and logs tarball.
EXPECTED = {1: ["stage1-results.md"], 2: ["stage2-results.md", "stage2-junit.xml"], 3: ["stage3-results.md"],
            4: ["stage4-bench_gpu.md", "stage4-bench_gpu.json"]}


def _env(out: Path) -> dict:
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, DRY_RUN="1")
    env.pop("STEP_BUDGET_S", None)
    # Stage 2's dry run collects one GPU test file, not the whole suite: the command is what is checked.
    env["PYTEST_PATHS"] = "tests/ops/test_cuda_ops.py"
    return env


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """All four stages' dry runs, started together (they are mostly interpreter start-up)."""
    base = tmp_path_factory.mktemp("gpu-stages")
    procs = {}
    for n in STAGES:
        out = base / f"stage{n}"
        procs[n] = (out, subprocess.Popen(["bash", str(GPU / f"stage{n}.sh"), "--dry-run"], cwd=REPO, env=_env(out),
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    runs = {}
    for n, (out, proc) in procs.items():
        try:
            text, _ = proc.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            proc.kill()
            text, _ = proc.communicate()
        runs[n] = (proc.returncode, text, out)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_dry_run_passes(dry_runs, stage):
    rc, text, _ = dry_runs[stage]
    assert rc == 0, text[-4000:]
    assert "stage passed" in text


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_returns_at_most_8_files_that_can_come_back(dry_runs, stage):
    _, text, out = dry_runs[stage]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(files) <= MAX_FILES, f"stage {stage} would return {len(files)} files: {files}"
    names = {p.name for p in files}
    assert {f"stage{stage}-summary.md", f"stage{stage}-logs.tgz", *EXPECTED[stage]} <= names
    for p in files:
        assert p.stat().st_size < 16 * 2**20
        assert all(c.isalnum() or c in "._-" for c in p.name), p.name
    assert "OUT-CHECK" not in text


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_logs_tarball_holds_each_step_log(dry_runs, stage):
    _, _, out = dry_runs[stage]
    with tarfile.open(out / f"stage{stage}-logs.tgz") as tar:
        names = set(tar.getnames())
    summary = (out / f"stage{stage}-summary.md").read_text()
    assert f"stage{stage}/env.txt" in names
    for line in summary.splitlines():  # every step the summary names has its log in the tarball
        if ", log " in line:
            log = line.rsplit(", log ", 1)[1].rstrip(")")
            assert f"stage{stage}/{log}" in names, line


@pytest.mark.slow
def test_stage_reports(dry_runs):
    results1 = (dry_runs[1][2] / "stage1-results.md").read_text()
    assert "## Correctness matrix" in results1 and "0 fail" in results1
    assert "## Timing" in results1 and "## Autocast smoke" in results1
    assert "memcheck: not run (dry run)" in (dry_runs[3][2] / "stage3-summary.md").read_text()
    bench = (dry_runs[4][2] / "stage4-bench_gpu.md").read_text()
    assert "Suggested max-density rows" in bench


def _bash(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"source {GPU / 'lib.sh'}; {script}"], cwd=tmp_path, text=True,
                          capture_output=True, timeout=60)


def test_check_out_counts_what_the_device_returns(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for i in range(MAX_FILES):
        (out / f"f{i}.md").write_text("x")
    assert _bash(f"OUT={out}; check_out", tmp_path).returncode == 0
    (out / "one-too-many.md").write_text("x")
    r = _bash(f"OUT={out}; check_out", tmp_path)
    assert r.returncode != 0 and "at most 8" in r.stdout


@pytest.mark.parametrize("path", ["bad name.md", "a/b/c/deep.md"])
def test_check_out_flags_files_that_cannot_come_back(tmp_path, path):
    out = tmp_path / "out"
    (out / path).parent.mkdir(parents=True, exist_ok=True)
    (out / path).write_text("x")
    r = _bash(f"OUT={out}; check_out", tmp_path)
    assert r.returncode != 0 and "cannot come back" in r.stdout


def test_unknown_argument_is_rejected():
    r = subprocess.run(["bash", str(GPU / "stage1.sh"), "--bogus"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 64 and "unknown argument" in r.stderr


# ------------------------------------------------------------------------------------------
# gpu_check.py in-process: the harness must catch what it exists to catch

@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", GPU / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    mod._setup(dry_run=False)  # imports only; never switch the interpreter on for this process
    return mod


def _four(shape=(2, 3, 4, 4)):
    g = torch.Generator().manual_seed(1)
    out = torch.randn(*shape, generator=g, dtype=torch.float64)
    mask = torch.rand(*shape[1:], generator=g) < 0.5
    out = out * mask
    return [out, torch.randn(5, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64),
            torch.randn(3, generator=g, dtype=torch.float64)], mask


def test_judge_passes_exact_and_flags_nan_wrong_and_unmasked(gc):
    ref, mask = _four()
    assert gc.judge([t.clone() for t in ref], ref, ref, "fp64", mask)["ok"]
    nan = [t.clone() for t in ref]
    nan[1][2] = math.nan
    res = gc.judge(nan, ref, ref, "fp64", mask)
    assert not res["ok"] and "unwritten" in " ".join(res["problems"])
    wrong = [t.clone() for t in ref]
    wrong[2] *= 1.01
    assert not gc.judge(wrong, ref, ref, "fp64", mask)["ok"]
    leak = [t.clone() for t in ref]
    leak[0][:, ~mask] = 1e-30  # tiny, but a masked output must be exactly 0
    res = gc.judge(leak, ref, ref, "fp64", mask)
    assert not res["ok"] and "masked outputs" in " ".join(res["problems"])


def test_judge_applies_the_2x_dense_rule(gc):
    ref, mask = _four()
    low = [t * (1 + 1e-2) for t in ref]   # dense in-dtype error 1e-2
    ok = [t * (1 + 1.9e-2) for t in ref]  # kernel 1.9e-2 <= 2 x 1e-2
    bad = [t * (1 + 2.1e-2) for t in ref]
    assert gc.judge(ok, ref, low, "bf16", mask)["ok"]
    assert not gc.judge(bad, ref, low, "bf16", mask)["ok"]


def test_keep_zero_needs_exact_zeros(gc):
    assert gc.rel_error(torch.zeros(3), torch.zeros(3, dtype=torch.float64)) == 0.0
    assert gc.rel_error(torch.tensor([0.0, 1e-30, 0.0]), torch.zeros(3, dtype=torch.float64)) == math.inf


def test_poison_fill_reaches_empty_and_restores_flags(gc):
    det = torch.are_deterministic_algorithms_enabled()
    with gc.poison_fill():
        assert torch.isnan(torch.empty(64)).all()
    assert torch.are_deterministic_algorithms_enabled() == det


def test_matrix_case_catches_an_unwritten_output(gc, monkeypatch):
    """A 'kernel' whose output has an element nothing wrote: the poisoned row fails with NaN."""
    def lazy_kernel(backend, mask, conv):
        dense = gc.dense_fn(mask, conv)

        def fn(x, w, b):
            y = dense(x, w, b)
            holes = torch.empty(y.shape, dtype=y.dtype)  # as a kernel allocates its output
            holes.view(-1)[1:] = 0                      # ... and forgets element 0
            return y + holes
        return fn
    monkeypatch.setattr(gc, "sparse_fn", lazy_kernel)
    g = gc.DRY_SHAPES[0]
    row = gc.run_case("fp32", g, 0.5, "cpu", "cpu", seed=3, poison="fill")
    assert not row["ok"] and "NaN" in " ".join(row["problems"]), row


def test_matrix_case_passes_the_cpu_backend(gc):
    for g in gc.DRY_SHAPES:
        row = gc.run_case("fp64", g, 0.5, "cpu", "cpu", seed=4, poison="fill")
        assert row["ok"], row


def test_matrix_budget_cut_reports_cases_not_run(gc, tmp_path):
    args = gc.parse_args(["matrix", "--dry-run", "--out", str(tmp_path), "--budget-s", "0", "--backends", "cuda"])
    assert gc.cmd_matrix(args) == 2  # nothing failed, nothing ran
    assert "not run (budget)" in (tmp_path / "matrix.md").read_text()


def test_gpu_matrix_covers_the_required_cases(gc):
    """Both GPU backends x 4 dtypes x odd shapes incl. batch 1, stride 2, dilation 2, 1x1/3x3/7x7,
    C_in 3, and keep 0/0.05/0.5/1 (DESIGN.md's test shapes)."""
    args = gc.parse_args(["matrix"])
    cases = gc.matrix_cases(args)
    assert {c[3] for c in cases} == {"cuda", "triton"}
    assert {"fp16", "bf16", "fp32", "fp64"} <= {c[0] for c in cases}
    assert {c[2] for c in cases} == {0.0, 0.05, 0.5, 1.0}
    shapes = gc.GPU_SHAPES
    assert any(s.n == 1 for s in shapes) and any(s.stride == 2 for s in shapes) and any(s.dilation == 2 for s in shapes)
    assert {s.k for s in shapes} >= {1, 3, 7} and any(s.c_in == 3 for s in shapes)
    assert any(s.c_out > 128 for s in shapes) and any(not s.channels_last for s in shapes) and any(not s.bias for s in shapes)
