"""Every experiment runs at --scale smoke and writes its JSON, markdown and PNG files; the demo
runs in --quick mode. Models are shared between experiments through one checkpoint cache."""
from __future__ import annotations

import json
import math

import pytest

from sparsemask import cli
from sparsemask.experiments import EXPERIMENTS, get_experiment, run_experiment
from sparsemask.experiments.citations import SEEDS, seed_of


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("model-cache"))


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def _canonical(spec) -> str:
    """A spec as JSON text, as results.json stores it (tuples become lists)."""
    return json.dumps(json.loads(json.dumps(dict(spec), default=str)), sort_keys=True)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_smoke(name, tmp_path, cache):
    out = tmp_path / name
    result = run_experiment(name, "smoke", out=out, overrides={"cache": cache, "data": {"n_test": 64}})
    saved = json.loads((out / "results.json").read_text())
    # Every hyperparameter is recorded: the resolved config, with the preset's training settings.
    assert saved["config"]["scale"] == "smoke"
    assert saved["config"]["train"]["epochs"] >= 1 and "lr" in saved["config"]["train"]
    assert saved["data"]["name"] == "digits" and saved["data"]["n_test"] == 64
    assert saved["environment"]["torch"]
    # Real numbers came out, all probabilities/scores finite where present.
    values = list(_numbers(saved["numbers"]))
    assert values and all(math.isfinite(v) for v in values)
    md = (out / "results.md").read_text()
    assert md.count("|---") >= 1, "results.md must hold at least one table"
    assert "{'" not in md, "results.md must not print a raw Python dict"
    seed = seed_of(name)
    assert seed is None or SEEDS[seed].title in md, "results.md cites its seed paper"
    assert result["tables"] and set(result["tables"]) == set(saved["tables"])
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs, "each experiment writes at least one PNG"
    # --dry-run trusts model_specs to list exactly the models run() trains, in order.
    declared = get_experiment(name).model_specs(saved["config"], saved["data"]["shape"][-1])
    assert [_canonical(m["spec"]) for m in saved["models"]] == [_canonical(s) for s in declared]
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_experiment_via_cli_with_config(tmp_path, cache, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"experiment: 001-gaussian\nscale: smoke\nsigmas: [8, 64]\ncache: {cache}\n"
                   "data: {n_test: 48}\n")
    out = tmp_path / "g"
    assert cli.main(["experiment", "--config", str(cfg), "--out", str(out), "--set", "draws=2"]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["sigmas"] == [8, 64] and saved["config"]["draws"] == 2
    assert saved["numbers"]["sigmas_255"] == [8.0, 64.0]
    # Noise hurts: accuracy at σ=64 is not above σ=8 for any model (on images all models got right).
    for accs in saved["numbers"]["accuracy"].values():
        assert accs[1] <= accs[0] + 1e-9
    assert "Figure 5" in capsys.readouterr().out


def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| Model | Clean acc |" in text and "0.1-Bottom" in text
    saved = json.loads((out / "results.json").read_text())
    n = saved["numbers"]
    assert set(n["clean_accuracy"]) == {"source", "standard", "defective"}
    assert n["speed_ratio_dense_over_sparse"] > 0
    assert all(0 <= v <= 1 for v in n["gaussian_accuracy"]["defective"])
    for f in ("summary.md", "gaussian_noise.png", "transfer_sdr.png", "adversarial_grid.png"):
        assert (out / f).is_file()


def test_demo_falls_back_to_digits_and_says_so(tmp_path):
    from sparsemask.experiments.demo import demo_config

    cfg = demo_config(overrides={"data": {"root": str(tmp_path / "nowhere")}})
    assert cfg["data"]["name"] == "digits"
    assert "FALLING BACK" in cfg["data_note"] and "dataset-fashion-mnist" in cfg["data_note"]
