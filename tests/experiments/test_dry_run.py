"""`sparsemask experiment --dry-run`: every experiment's models are built, stepped once on random
data and costed; models shared through the checkpoint cache are counted once. The paper scale's
architectures are exercised through one experiment that uses all of them (001-transfer), with a
two-image step to stay fast."""
from __future__ import annotations

import json
import math
import sys
import types

import pytest

from sparsemask import cli
from sparsemask.experiments import EXPERIMENTS, register_experiment, unregister_experiment
from sparsemask.experiments.dry_run import dry_run


def _check_rows(result, names):
    rows = result["rows"]
    for name in names:
        assert any(r["experiment"] == name for r in rows), f"{name}: no model row"
    for r in rows:
        assert math.isfinite(r["loss"]) and r["params"] > 0 and r["fwd_gflops"] > 0
        if r["shared_with"] is None:
            assert r["gpu_hours"] > 0
        else:  # shared: counted once, under the row it points to
            assert r["gpu_hours"] == 0 and any(f"{o['experiment']}/{o['label']}" == r["shared_with"] and
                                               o["shared_with"] is None for o in rows)
    s = result["summary"]
    assert s["models"] == len(rows) and s["distinct_models"] == sum(r["shared_with"] is None for r in rows)
    assert s["gpu_hours"] == pytest.approx(sum(r["gpu_hours"] for r in rows)) and s["gpu_hours"] > 0


def test_dry_run_every_experiment_via_cli(tmp_path, capsys):
    # Smoke scale (tiny ResNet-8 on digits-shaped data) with a cache, so sharing is counted.
    out = tmp_path / "dry"
    assert cli.main(["experiment", "--dry-run", "--scale", "smoke", "--out", str(out),
                     "--set", f"cache={tmp_path / 'cache'}"]) == 0
    result = json.loads((out / "dry_run.json").read_text())
    _check_rows(result, EXPERIMENTS)
    assert result["summary"]["distinct_models"] < result["summary"]["models"], "no model was shared"
    assert not (tmp_path / "cache").exists(), "a dry run must not write checkpoints"
    text = capsys.readouterr().out
    assert "distinct trainings" in text and "GPU-hours" in text


def test_dry_run_without_cache_shares_nothing():
    result = dry_run(["002-mad"], "smoke", batch=2)
    # Table 2's rate-3/4 model is Table 4's middle column: one training with a cache, two without.
    assert result["summary"]["distinct_models"] == result["summary"]["models"] >= 2


def test_dry_run_paper_architectures():
    # Every paper architecture, standard and 0.3-Bottom, and the Madry baseline; the source
    # columns (the same architectures again) are left out to keep the test short.
    result = dry_run(["001-transfer"], "paper", overrides={"keeps": [0.3], "sources": []}, batch=2)
    _check_rows(result, ["001-transfer"])
    archs = {r["arch"] for r in result["rows"]}
    assert {"ResNet-18", "ResNet-50", "DenseNet-121", "SENet-18", "VGG-19", "WRN-32-4"} <= archs
    by_label = {(r["arch"], r["label"]): r for r in result["rows"]}
    # Madry training costs (1 + 7 PGD steps) x a standard step of the same FLOPs.
    madry = by_label["WRN-32-4", "Adversarial Training (Madry)"]
    assert madry["method"] == "adversarial"
    assert madry["gpu_hours"] == pytest.approx(8 * 350 * 50_000 * 3 * madry["fwd_gflops"] * 1e9
                                               / (result["effective_tflops"] * 1e12) / 3600)
    # Defective layers are costed dense (the papers' code), so p-Bottom matches its standard model.
    assert by_label["ResNet-18", "0.3-Bottom"]["fwd_gflops"] == pytest.approx(
        by_label["ResNet-18", "ResNet-18"]["fwd_gflops"], rel=1e-3)


def test_dry_run_errors(monkeypatch):
    with pytest.raises(ValueError, match="batch"):
        dry_run(["001-boundary"], "smoke", batch=1)
    with pytest.raises(ValueError, match="data.name"):
        dry_run(["001-boundary"], "smoke", overrides={"data": {"name": "imagefolder"}}, batch=2)
    toy = types.ModuleType("toy_dry.no_specs")
    toy.NAME, toy.DESCRIPTION, toy.DEFAULTS = "toy-no-specs", "no model_specs", {}
    toy.run = lambda cfg, out: {}
    monkeypatch.setitem(sys.modules, "toy_dry.no_specs", toy)
    register_experiment("toy-no-specs", "toy_dry.no_specs")
    try:
        with pytest.raises(ValueError, match="'toy-no-specs'.*model_specs"):
            dry_run(["toy-no-specs"], "smoke", batch=2)
    finally:
        unregister_experiment("toy-no-specs")


def test_experiment_refuses_torchrun(monkeypatch, tmp_path):
    # Under torchrun every rank would repeat the attacks and write the same files.
    from sparsemask.experiments import run_experiment

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="'001-boundary'.*torchrun.*CUDA_VISIBLE_DEVICES"):
        run_experiment("001-boundary", "smoke", out=tmp_path)
    assert not any(tmp_path.iterdir()), "nothing may run before the refusal"
