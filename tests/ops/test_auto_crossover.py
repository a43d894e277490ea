"""auto on CPU: the generated crossover table (sparsemask/backends/cpu_crossover.json) and how
sparsemask.dispatch reads it. No timing: synthetic raw rows and tables only."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import sparsemask
from sparsemask import dispatch
from sparsemask.benchmarks import crossover

ROOT = Path(__file__).resolve().parents[2]


def _raw_rows(shape, batch, wins_at, dtype="float32", layout="nchw", mode="forward"):
    """Raw sweep rows for one (shape, N) where sparse wins (0.5x dense) exactly at ``wins_at``."""
    return [{"dtype": dtype, "layout": layout, "mode": mode, "shape": shape, "batch": batch, "keep": k,
             "dense_ms": 10.0, "cpu_ms": 5.0 if k in wins_at else 20.0} for k in crossover.KEEPS]


def _table(rows_by_key):
    """A table as generate writes it: rows_by_key {(dtype, layout, mode, shape, N): threshold}."""
    shapes = sorted({k[3] for k in rows_by_key})
    return {"shapes": {s: crossover.shape_features(s) for s in shapes},
            "rows": [{"dtype": d, "layout": l, "mode": m, "shape": s, "batch": n, "threshold": t}
                     for (d, l, m, s, n), t in rows_by_key.items()]}


@pytest.fixture
def use_table(monkeypatch):
    """Install a table (a dict as in the JSON file) as the one dispatch has loaded."""
    def install(data):
        monkeypatch.setitem(dispatch._cpu_table_cache, "table", dispatch._parse_table(data, Path("test.json")))
    return install


# ---- generate: the monotone threshold rule ------------------------------------------------

def test_threshold_is_the_largest_keep_of_an_unbroken_run_of_wins():
    points = [(0.05, 10, 5), (0.1, 10, 6), (0.2, 10, 12), (0.3, 10, 5), (0.5, 10, 5)]
    assert crossover.threshold(points) == 0.1          # the wins above the loss at 0.2 do not count
    assert crossover.threshold(list(reversed(points))) == 0.1  # order of the rows does not matter
    assert crossover.threshold([(0.05, 10, 11), (0.1, 10, 5)]) == 0.0  # loses at the smallest keep
    assert crossover.threshold([(0.05, 10, 5), (1.0, 10, 1)]) == 1.0


def test_threshold_near_tie_goes_dense():
    assert crossover.MARGIN < 1.0
    tie = 10 * (crossover.MARGIN + 1) / 2  # between dense * MARGIN and dense
    assert crossover.threshold([(0.05, 10, 5), (0.1, 10, tie)]) == 0.05
    assert crossover.threshold([(0.05, 10, 5), (0.1, 10, tie)], margin=1.0) == 0.1


def test_generate_table_groups_rows_and_keeps_provenance():
    raw = {"environment": {"date": "d", "machine": "m", "threads": 2, "torch": "t", "cpu_capability": "avx2",
                           "command": "python benchmarks/sweep_auto.py sweep"},
           "reps": 5,
           "rows": _raw_rows("64-64@32", 8, {0.05, 0.1, 0.2}) + _raw_rows("64-64@32", 32, {0.05, 0.3})
                   + _raw_rows("3-64@32", 8, set(), mode="forward+backward")}
    table = crossover.generate_table(raw, "raw.json")
    got = {(r["shape"], r["batch"], r["mode"]): r["threshold"] for r in table["rows"]}
    assert got == {("64-64@32", 8, "forward"): 0.2, ("64-64@32", 32, "forward"): 0.05,
                   ("3-64@32", 8, "forward+backward"): 0.0}
    assert table["provenance"]["raw"] == "raw.json" and table["provenance"]["margin"] == crossover.MARGIN
    assert table["provenance"]["command"] == raw["environment"]["command"]
    assert table["shapes"]["3-64@32"] == {"c_in": 3, "c_out": 64, "kernel_area": 9, "stride": 1,
                                          "out_positions": 1024}
    dispatch._parse_table(table, Path("generated.json"))  # what generate writes, dispatch reads


def test_sweep_measures_again_only_narrow_sparse_wins():
    row = lambda cpu_ms: {"dense_ms": 10.0, "cpu_ms": cpu_ms}  # noqa: E731
    assert [crossover.narrow_win(row(ms)) for ms in (5.0, 8.4, 8.6, 9.7, 9.8, 12.0)] == \
        [False, False, True, True, False, False]
    # against auto's dense path when that is the faster dense
    assert crossover.narrow_win({"dense_ms": 10.0, "dense_path_ms": 6.0, "cpu_ms": 5.5})
    assert not crossover.narrow_win({"dense_ms": 10.0, "dense_path_ms": 6.0, "cpu_ms": 8.6})


def test_sparse_must_beat_autos_dense_path_too():
    """The bar is the faster dense: a sparse time between auto's dense path and the reference
    is a loss (auto would have been faster dense); rows without dense_path_ms (older sweeps)
    compare with the reference alone."""
    rows = [{"dtype": "bfloat16", "layout": "channels_last", "mode": "forward+backward", "shape": "64-64@32",
             "batch": 8, "keep": k, "dense_ms": 10.0, "dense_path_ms": 5.0, "cpu_ms": ms}
            for k, ms in ((0.05, 3.0), (0.1, 7.0), (0.2, 2.0))]
    table = crossover.generate_table({"environment": {}, "rows": rows}, "raw.json")
    assert [r["threshold"] for r in table["rows"]] == [0.05]
    assert crossover.bar_ms(rows[1]) == 5.0
    assert crossover.bar_ms({"dense_ms": 10.0, "dense_path_ms": 12.0}) == 10.0
    assert crossover.bar_ms({"dense_ms": 10.0}) == 10.0


def test_sweep_point_times_the_dense_path_as_auto_runs_it():
    """measure_point (one real, tiny measurement) returns the three times of the sweep, and
    the dense path it times is the C++ op's: the masked output equals the reference."""
    point = ("float32", "nchw", "1x1-64-128@32s2", 1, "forward", 0.3)
    times = crossover.measure_point(point, "cpu", 1)
    assert set(times) == {"dense_ms", "cpu_ms", "dense_path_ms"} and all(t > 0 for t in times.values())
    assert set(crossover.measure_point(point, "auto", 1)) == {"dense_ms", "auto_ms"}
    x, w, b, mask, _ = crossover.make_case("1x1-64-128@32s2", 0.3, 2, "nchw", "float32")
    torch.testing.assert_close(crossover._dense_path(x, w, b, mask, 2, 0), crossover._dense(x, w, b, mask, 2, 0))


def test_remeasure_replaces_doubtful_rows_and_keeps_the_first_pass():
    """A real (tiny) second measurement: the doubtful row holds it, with the first pass kept;
    the other row is untouched."""
    base = {"dtype": "float32", "layout": "nchw", "mode": "forward", "shape": "1x1-64-128@32s2", "batch": 1}
    rows = [dict(base, keep=0.1, dense_ms=1.0, auto_ms=9.0), dict(base, keep=1.0, dense_ms=1.0, auto_ms=1.0)]
    out = crossover.remeasure(rows, "auto", 1, lambda r: crossover._speedup(r) < 0.95)
    assert out[0]["first_dense_ms"] == 1.0 and out[0]["first_auto_ms"] == 9.0
    assert out[0]["dense_ms"] > 0 and out[0]["auto_ms"] > 0 and out[0]["auto_ms"] != 9.0
    assert out[1] == dict(base, keep=1.0, dense_ms=1.0, auto_ms=1.0)
    env = {"command": "c", "date": "d", "machine": "m", "threads": 2, "torch": "t", "cpu_capability": "x",
           "confirm_below": 0.95, "confirm_reps": 1}
    md = crossover.verify_markdown([dict(out[0], dense_ms=2.0, auto_ms=1.0), out[1]], env)
    assert "First pass: all (2 configs): minimum auto speedup (dense_ms / auto_ms) **0.11x**" in md
    assert "The 1 configs below 0.95x were measured again" in md
    assert "| 2.00 | 1.00 | 2.00x | 0.11x |" in md


def test_sweep_shapes_include_the_stem_and_the_shortcut():
    stem, shortcut = crossover.SHAPES["stem7x7-3-64@64s2"], crossover.SHAPES["1x1-64-128@32s2"]
    assert (stem.kernel, stem.stride, stem.padding, stem.h_out) == (7, 2, 3, 32)
    assert (shortcut.kernel, shortcut.stride, shortcut.padding, shortcut.h_out) == (1, 2, 0, 16)


# ---- dispatch: which row a call reads ----------------------------------------------------

def _call(features, batch, dtype="float32", layout="nchw", mode="forward"):
    return dispatch.ConvCall(dtype, layout, mode, features, batch)


def test_lookup_picks_the_nearest_shape_in_log_space():
    table = dispatch._parse_table(_table({("float32", "nchw", "forward", "3-64@32", 8): 0.3,
                                          ("float32", "nchw", "forward", "64-64@32", 8): 0.5,
                                          ("float32", "nchw", "forward", "128-128@16", 8): 0.7}), Path("t"))
    assert dispatch.cpu_table_threshold(table, _call((4, 64, 9, 1, 1024), 8)) == 0.3      # an RGBA stem
    assert dispatch.cpu_table_threshold(table, _call((64, 64, 9, 1, 1024), 8)) == 0.5
    assert dispatch.cpu_table_threshold(table, _call((100, 128, 9, 1, 200), 8)) == 0.7
    assert dispatch.cpu_table_threshold(table, _call((256, 256, 9, 1, 64), 8)) == 0.7      # beyond: the nearest
    # no rows for this dtype/layout/mode: None (the caller falls back to the hand rows)
    assert dispatch.cpu_table_threshold(table, _call((64, 64, 9, 1, 1024), 8, layout="channels_last")) is None
    assert dispatch.cpu_table_threshold(table, _call((64, 64, 9, 1, 1024), 8, dtype=None)) is None


def test_lookup_takes_the_smaller_threshold_of_the_bracketing_batches():
    table = dispatch._parse_table(_table({("float32", "nchw", "forward", "64-64@32", n): t
                                          for n, t in ((1, 0.2), (8, 0.5), (32, 0.3), (128, 0.7))}), Path("t"))
    feats = (64, 64, 9, 1, 1024)
    lookup = {n: dispatch.cpu_table_threshold(table, _call(feats, n)) for n in (1, 4, 8, 16, 32, 64, 128, 1000)}
    assert lookup == {1: 0.2, 4: 0.2, 8: 0.5, 16: 0.3, 32: 0.3, 64: 0.3, 128: 0.7, 1000: 0.7}


def test_conv_call_mode_layout_dtype():
    x, w = torch.randn(2, 8, 10, 10), torch.randn(16, 8, 3, 3)
    mask = torch.ones(16, 5, 5, dtype=torch.bool)
    call = dispatch.conv_call(x, w, mask, [2, 2])
    assert (call.dtype, call.layout, call.mode, call.batch) == ("float32", "nchw", "forward", 2)
    assert call.features == (8, 16, 9, 2.0, 25)
    assert dispatch.conv_call(x, w.requires_grad_(), mask, [2, 2]).mode == "forward+backward"
    assert dispatch.conv_call(x.requires_grad_(), w.detach(), mask, [2, 2]).mode == "forward+backward"
    with torch.no_grad():
        assert dispatch.conv_call(x, w, mask, [2, 2]).mode == "forward"
    cl = x.detach().contiguous(memory_format=torch.channels_last)
    assert dispatch.conv_call(cl, w, mask, [1, 1]).layout == "channels_last"
    assert dispatch.conv_call(x.double(), w.double(), mask, [1, 1]).dtype == "float32"
    assert dispatch.conv_call(x.half(), w.half(), mask, [1, 1]).dtype == "bfloat16"
    assert dispatch.conv_call(x.bfloat16(), w.bfloat16(), mask, [1, 1]).dtype == "bfloat16"
    with torch.autocast("cpu", dtype=torch.bfloat16):  # runs in the autocast dtype
        assert dispatch.conv_call(x, w, mask, [1, 1]).dtype == "bfloat16"


def test_auto_passes_the_table_threshold_to_the_cpu_kernel(use_table):
    use_table(_table({("float32", "nchw", "forward", "64-64@32", 8): 0.7,
                      ("float32", "nchw", "forward+backward", "64-64@32", 8): 0.2,
                      ("bfloat16", "channels_last", "forward", "64-64@32", 8): 0.1}))
    x, w = torch.randn(8, 64, 8, 8), torch.randn(64, 64, 3, 3)
    mask = torch.ones(64, 8, 8, dtype=torch.bool)
    with torch.no_grad():
        assert dispatch.conv_backend(x, w, mask, [1, 1]) == (dispatch.get_backend_impl("cpu"), 0.7)
        assert dispatch.conv_backend(x.double(), w.double(), mask, [1, 1])[1] == 0.7
        cl = x.bfloat16().contiguous(memory_format=torch.channels_last)
        assert dispatch.conv_backend(cl, w.bfloat16(), mask, [1, 1])[1] == 0.1
        # no rows for bf16 nchw: the hand row
        assert dispatch.conv_backend(x.bfloat16(), w.bfloat16(), mask, [1, 1])[1] == \
            dispatch._MAX_DENSITY[("cpu", "cpu", torch.bfloat16)]
    assert dispatch.conv_backend(x, w.requires_grad_(), mask, [1, 1])[1] == 0.2
    with sparsemask.backend("cpu"):  # forced: always sparse, the table is not asked
        assert dispatch.conv_backend(x, w, mask, [1, 1])[1] == 1.0


@pytest.mark.parametrize("present", [True, False])
def test_torch_compile_traces_the_lookup(use_table, monkeypatch, present):
    if present:
        use_table(_table({("float32", "nchw", "forward", "64-64@32", 8): 0.5}))
    else:  # absent: the hand rows, and the warning is not traced either
        monkeypatch.setitem(dispatch._cpu_table_cache, "table", None)
        monkeypatch.setitem(dispatch._cpu_table_cache, "warned", False)
    torch.manual_seed(0)
    x, w = torch.randn(2, 8, 6, 6), torch.randn(4, 8, 3, 3)
    mask = torch.rand(4, 6, 6) < 0.3
    f = torch.compile(lambda a: sparsemask.masked_conv2d(a, w, None, mask, 1, 1), fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(f(x), torch.nn.functional.conv2d(x, w, None, 1, 1) * mask)


# ---- the file: absent, malformed, generated ----------------------------------------------

def test_absent_table_warns_once_and_uses_the_hand_rows(monkeypatch, tmp_path):
    monkeypatch.setattr(dispatch, "_CPU_TABLE_PATH", tmp_path / "none.json")
    monkeypatch.setitem(dispatch._cpu_table_cache, "table", dispatch.load_cpu_table(tmp_path / "none.json"))
    monkeypatch.setitem(dispatch._cpu_table_cache, "warned", False)
    call = _call((64, 64, 9, 1, 1024), 8)
    with pytest.warns(UserWarning, match="absent"):
        limit = dispatch.max_density("cpu", torch.float32, 64, call=call)
    assert limit == dispatch._MAX_DENSITY[("cpu", "cpu", torch.float32)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dispatch.max_density("cpu", torch.float32, 64, call=call)  # once


@pytest.mark.parametrize("text, why", [
    ("{not json", "not JSON"),
    ('{"rows": []}', "'shapes' and 'rows'"),
    ('{"shapes": {"a": {"c_in": 3}}, "rows": []}', "positive ints"),
    ('{"shapes": {}, "rows": [{"dtype": "float32"}]}', "lacks"),
    ('{"shapes": {}, "rows": [{"dtype": "float32", "layout": "nchw", "mode": "forward", "shape": "x", '
     '"batch": 1, "threshold": 0.5}]}', "unknown shape"),
])
def test_malformed_table_is_a_clear_error(tmp_path, text, why):
    path = tmp_path / "cpu_crossover.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{path}.*malformed.*{why}.*sweep_auto.py generate"):
        dispatch.load_cpu_table(path)


def test_malformed_threshold_is_a_clear_error(tmp_path):
    data = _table({("float32", "nchw", "forward", "64-64@32", 8): 0.5})
    data["rows"][0]["threshold"] = 2.0
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="threshold in \\[0, 1\\]"):
        dispatch.load_cpu_table(path)


def test_committed_table_is_generated_from_the_committed_raw_sweep():
    table_path, raw_path = dispatch._CPU_TABLE_PATH, ROOT / crossover.RAW_DEFAULT
    if not table_path.exists() or not raw_path.exists():
        pytest.skip(f"no committed sweep yet ({table_path.name} and {crossover.RAW_DEFAULT} both needed): "
                    f"auto on CPU uses the hand rows; run the sweep in docs/ops.md to create them")
    committed = json.loads(table_path.read_text())
    regenerated = crossover.generate_table(json.loads(raw_path.read_text()), crossover.RAW_DEFAULT,
                                           committed["provenance"]["margin"])
    assert regenerated == committed, "cpu_crossover.json differs from `sweep_auto.py generate` of the raw sweep"
    assert dispatch.load_cpu_table(table_path) is not None


def test_sweep_warms_the_process_up_before_the_first_measurement(monkeypatch):
    """measure() runs its first grid point, untimed, before timing anything (a fresh process's
    first calls are slow and once made a sparse "win" out of a slow dense reference)."""
    calls = []
    monkeypatch.setattr(crossover, "measure_point",
                        lambda point, second, reps: calls.append((point, reps)) or {"dense_ms": 1.0, f"{second}_ms": 1.0})
    monkeypatch.setattr(crossover, "WARMUP_S", 0.01)
    args = crossover.build_parser().parse_args(["sweep", "--shapes", "3-64@32", "--keeps", "0.1", "0.5", "--batch", "1",
                                                "--layouts", "nchw", "--dtypes", "float32", "--modes", "forward"])
    rows = crossover.measure(args, "cpu")
    first = ("float32", "nchw", "3-64@32", 1, "forward", 0.1)
    warmups = [c for c in calls[:-2] if c == (first, 1)]
    assert len(warmups) >= 1 and len(calls) == len(warmups) + 2 and len(rows) == 2
