"""The roofline model (benchmarks/gpu/roofline.py): its numbers are consistent with the
tensor sizes and with each other, and the table in docs/gpu.md is the generated one."""
from __future__ import annotations

import importlib.util
import itertools
import math
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("roofline", ROOT / "benchmarks" / "gpu" / "roofline.py")
roofline = importlib.util.module_from_spec(_spec)
sys.modules["roofline"] = roofline  # dataclasses look their module up
_spec.loader.exec_module(roofline)

LAYERS = roofline.LAYERS + [roofline.Layer("odd, stride 2", 7, 3, 10, 9, k=3, stride=2, padding=0)]
CASES = list(itertools.product(LAYERS, [0.0, 0.1, 0.3, 1.0], [2, 4]))


def test_sizes_and_dense_flops_by_hand():
    L = roofline.LAYERS[0]  # ImageNet layer1: N=128, 64->64 @56, 3x3
    s = roofline.Sizes.of(L, 2)
    assert s.x == 128 * 64 * 56 * 56 * 2 and s.y == 128 * 64 * 56 * 56 * 2 and s.w == 64 * 64 * 9 * 2
    assert s.dense_flops == 2 * 128 * 64 * 56 * 56 * 64 * 9
    fb = roofline.floor_bytes(L, 2)
    assert fb["fwd"] == s.x + s.w + s.y
    assert sum(fb.values()) == 3 * (s.x + s.w + s.y)


@pytest.mark.parametrize("positions", [1, 4])
@pytest.mark.parametrize("c_out,keep,block", [(64, 0.1, 16), (64, 0.3, 16), (10, 0.5, 4), (128, 0.1, 32)])
def test_expected_blocks_matches_sampling(c_out, keep, block, positions):
    rng = random.Random(0)
    trials = 20000
    total = 0
    for _ in range(trials):
        m = max(sum(rng.random() < keep for _ in range(c_out)) for _ in range(positions))
        total += math.ceil(m / block)
    got = roofline.expected_blocks(c_out, keep, block, positions)
    assert abs(got - total / trials) < 0.03 * max(got, 1)


def test_expected_blocks_edges():
    assert roofline.expected_blocks(64, 0.0, 16) == 0
    assert roofline.expected_blocks(64, 1.0, 16, positions=3) == pytest.approx(4)
    assert roofline.expected_blocks(64, 0.5, 64) == pytest.approx(1 - 0.5 ** 64)


@pytest.mark.parametrize("L,keep,elem", CASES, ids=lambda v: getattr(v, "name", str(v)))
@pytest.mark.parametrize("design", list(roofline.DESIGNS))
def test_every_design_is_consistent(L, keep, elem, design):
    est = roofline.estimate(L, keep, elem, design)
    s = roofline.Sizes.of(L, elem)
    fb = roofline.floor_bytes(L, elem)
    for p in roofline.PASSES:
        e = est[p]
        assert e.flops_useful == pytest.approx(s.dense_flops * keep), p  # every design computes the kept outputs
        assert e.flops_issued >= e.flops_useful * (1 - 1e-9), p  # padding only adds work
        if design == "dense":
            assert e.flops_issued == s.dense_flops
        # Each pass moves at least what it must.
        assert e.hbm >= fb[p] * (1 - 1e-9), p
        assert e.l2 >= e.hbm * (1 - 1e-9), p
        assert e.time_us() >= fb[p] / roofline.H200.hbm_Bps * 1e6 * (1 - 1e-9), p
    if design in ("triton-v1", "cuda-v1"):  # one atomic per kept (position, channel) x patch element
        assert est["grad_weight"].atomics == pytest.approx(L.q * L.c_out * keep * L.kdim)


def test_issue_atomics_count():
    """The issue's ~11.6M grad_weight atomics at keep 0.1 on ImageNet layer1."""
    est = roofline.estimate(roofline.LAYERS[0], 0.1, 2, "triton-v1")
    assert est["grad_weight"].atomics == pytest.approx(11.56e6, rel=0.01)


@pytest.mark.parametrize("pass_", ["fwd", "grad_input"])
def test_row_runs_read_less_than_per_position_programs(pass_):
    for L, keep in itertools.product(roofline.LAYERS, roofline.KEEPS):
        old = roofline.estimate(L, keep, 2, "triton-v1")[pass_]
        new = roofline.estimate(L, keep, 2, "triton-v2")[pass_]
        assert new.l2 < old.l2 and new.time_us() <= old.time_us(), (L.name, keep)


def test_docs_table_is_generated(tmp_path):
    doc = (ROOT / "docs" / "gpu.md").read_text()
    assert roofline.BEGIN in doc and roofline.END in doc, "run: python benchmarks/gpu/roofline.py --docs docs/gpu.md"
    inside = doc.split(roofline.BEGIN)[1].split(roofline.END)[0]
    assert roofline.table() in inside, "docs/gpu.md's roofline table is stale: rerun the --docs command"
    # The writer replaces the block in place (idempotent), keeping what surrounds it.
    f = tmp_path / "d.md"
    f.write_text("a\n" + roofline.BEGIN + "\nold\n" + roofline.END + "\nb\n")
    roofline.write_docs(f, "T1")
    roofline.write_docs(f, "T2")
    text = f.read_text()
    assert text.startswith("a\n") and text.endswith("\nb\n") and "T2" in text and "T1" not in text and "old" not in text


def test_bench_gpu_rows_carry_the_model_with_measured_rates():
    """bench_gpu.py puts the model's estimate next to each measured row, with the measured copy
    bandwidth and matmul rate in place of the assumed ones."""
    spec = importlib.util.spec_from_file_location("bench_gpu_for_test", ROOT / "benchmarks" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    rl = bench.load_roofline()
    s = next(s for s in bench.SHAPES if s.name.startswith("imagenet"))
    L = roofline.LAYERS[0]
    assert (s.n, s.c_in, s.c_out, s.hw) == (L.n, L.c_in, L.c_out, L.hw)
    est = roofline.estimate(L, 0.1, 2, "triton-v2")
    want = sum(est[p].time_us() for p in roofline.PASSES) / 1e3
    none = {"copy_GBps": None, "bf16_matmul_TFLOPs": None, "tf32_matmul_TFLOPs": None}
    assert bench.model_ms(rl, s, 0.1, "bf16", "triton", "both", none) == pytest.approx(want)
    assert bench.model_ms(rl, s, 0.1, "bf16", "conv", "both", none) is None
    # Half the bandwidth and half the matmul rate: the dense baseline (bound by one of them) slows down.
    slow = {"copy_GBps": roofline.H200.hbm_Bps / 2e9, "bf16_matmul_TFLOPs": roofline.H200.tensor_flops / 2e12,
            "tf32_matmul_TFLOPs": None}
    assert bench.model_ms(rl, s, 0.1, "bf16", "dense", "fwd", slow) > 1.5 * bench.model_ms(rl, s, 0.1, "bf16", "dense",
                                                                                             "fwd", none)
