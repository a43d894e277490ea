"""benchmarks/isa_compare.py still runs against the benchmark module it imports (its worker
unpacks sparsemask.benchmarks.masked_conv's shapes and timers): a one-round smoke run."""
import importlib.util
import json
from pathlib import Path

import pytest

import sparsemask

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("isa_compare", ROOT / "benchmarks" / "isa_compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_one_round_of_two_levels(tmp_path, capsys):
    if sparsemask.cpu_capability() == "baseline":
        pytest.skip("this CPU (or build) has no avx2 level to force")
    out = tmp_path / "rounds.json"
    rc = _module().main([f"default={ROOT}", f"avx2={ROOT}:avx2", "--rounds", "1", "--reps", "1",
                         "--cases", "128-128@16:0.1:2", "1x1-64-128@32s2:0.3:2", "--json", str(out)])
    assert rc == 0
    table = capsys.readouterr().out
    assert "| 128-128@16 keep 0.1 N=2 forward |" in table and "avx2/default" in table
    assert json.loads(out.read_text())
