"""evaluate_robustness: the worst case over the suite, the files it writes, randomized defense
wrappers (detected, EOT), transfer, errors, and the `sparsemask robustness` command."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from sparsemask import nn as snn
from sparsemask.robustness import evaluate_robustness, is_randomized

FAST = dict(pgd_steps=5, apgd_steps=10, square_queries=40, batch_size=32, seed=0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread avoids oversubscription on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(digits_data):
    _, _, x, y = digits_data
    return x[:64], y[:64]


def test_worst_case_and_report_files(digits_model, data, tmp_path):
    x, y = data
    r = evaluate_robustness(digits_model, x, y, eps255=(8, 30), out=tmp_path, **FAST)
    assert r["eps"] == pytest.approx([8 / 255, 30 / 255]) and not r["randomized"]
    assert set(r["accuracy"]) == {"clean", "fgsm", "pgd", "apgd_ce", "apgd_dlr", "square", "noise"}
    assert any("transfer skipped" in n for n in r["notes"])
    clean = r["accuracy"]["clean"][0]
    for i in range(2):
        attacked = [v[i] for k, v in r["accuracy"].items() if k != "clean"]
        # worst case per example: no better than the best attack, no worse than the union bound
        assert r["robust_accuracy"][i] <= min(attacked) + 1e-12
        assert r["robust_accuracy"][i] >= clean - sum(clean - a for a in attacked) - 1e-12
    assert r["robust_accuracy"][1] < r["robust_accuracy"][0] < clean
    assert r["accuracy"]["noise"][0] > r["accuracy"]["apgd_ce"][0]  # random noise is far weaker
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["robust_accuracy"] == r["robust_accuracy"]
    md = (tmp_path / "report.md").read_text()
    assert "APGD-DLR" in md and "deterministic" in md and "ε = 30/255" in md
    assert (tmp_path / "robust_accuracy.png").stat().st_size > 1000




def _wrappers(model):
    spiking = snn.insert_after_first_conv(copy.deepcopy(model), snn.RandomSpiking(p=0.8, mode="mc", n=2, seed=0))
    resize = torch.nn.Sequential(snn.RandomResizePad(10, 8, seed=0), torch.nn.AdaptiveAvgPool2d(8), model)
    return {"mad": (snn.MADClassifier(model, grid=2, rate=0.3, n=2, combine="probs", seed=0), True),
            "spiking": (spiking.eval(), True),
            "resize_pad": (resize.eval(), True),
            "ensemble": (snn.Ensemble([model, copy.deepcopy(model)]).eval(), False)}


@pytest.mark.parametrize("name", ["mad", "spiking", "resize_pad", "ensemble"])
def test_defense_wrappers(digits_model, data, name, tmp_path):
    model, randomized = _wrappers(digits_model)[name]
    x, y = data[0][:24], data[1][:24]
    assert is_randomized(model, x) == randomized
    r = evaluate_robustness(model, x, y, eps255=(16,), eot=2, source_model=digits_model,
                            suite=("clean", "pgd", "apgd_dlr", "square", "transfer"), out=tmp_path, **FAST)
    assert r["randomized"] == randomized and r["eot"] == 2
    assert r["attacks"]["apgd_dlr"]["eot"] == 2 and "eot" not in r["attacks"]["square"]
    assert set(r["accuracy"]) == {"clean", "pgd", "apgd_dlr", "square", "transfer"}
    assert 0 <= r["robust_accuracy"][0] <= min(v[0] for v in r["accuracy"].values())
    md = (tmp_path / "report.md").read_text()
    assert ("randomized (two forward passes differ)" in md) == randomized and "EOT over 2 draws" in md


def test_randomized_without_eot_is_noted(digits_model, data):
    x, y = data
    randomized_model = torch.nn.Sequential(torch.nn.Dropout(0.3), copy.deepcopy(digits_model)).train()
    r = evaluate_robustness(randomized_model, x[:16], y[:16], eps255=(8,), suite=("clean", "fgsm"), **FAST)
    assert r["randomized"] and any("no EOT" in n for n in r["notes"])
    assert randomized_model.training  # the mode is left alone


def test_l2_eps_list(digits_model, data):
    x, y = data
    r = evaluate_robustness(digits_model, x[:16], y[:16], eps=(0.5, 1.0), eps255=None, norm="2",
                            suite=("clean", "pgd", "apgd_ce", "apgd_t", "square", "noise"), **FAST)
    assert r["eps255"] is None and len(r["robust_accuracy"]) == 2
    assert r["robust_accuracy"][1] <= r["accuracy"]["apgd_t"][1] <= r["accuracy"]["noise"][1]


def test_errors(digits_model, data):
    x, y = data
    with pytest.raises(ValueError, match="suite"):
        evaluate_robustness(digits_model, x, y, suite=("pgd", "autoattack"))
    with pytest.raises(ValueError, match="eps255"):
        evaluate_robustness(digits_model, x, y, norm="2")
    with pytest.raises(ValueError, match="eot"):
        evaluate_robustness(digits_model, x, y, eot=0)
    with pytest.raises(ValueError, match="eps"):
        evaluate_robustness(digits_model, x, y, eps255=(0,))
    with pytest.raises(ValueError, match="norm"):
        evaluate_robustness(digits_model, x, y, eps=(0.5,), norm="1")


def test_cli_robustness(tmp_path, capsys):
    from sparsemask.cli import main

    ck = tmp_path / "m.pt"
    assert main(["train", "--arch", "wide_resnet", "--depth", "8", "--width", "1", "--dataset", "digits",
                 "--n-train", "64", "--epochs", "1",
                 "--train-batch-size", "32", "--no-progress", "--out", str(ck)]) == 0
    out = tmp_path / "rob"
    assert main(["robustness", str(ck), "--n-test", "16", "--eps255", "4", "16", "--apgd-steps", "5",
                 "--square-queries", "20", "--pgd-steps", "3", "--suite", "clean", "pgd", "apgd_ce", "square",
                 "--out", str(out), "--no-progress"]) == 0
    assert "robust (worst case)" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 16 and len(report["robust_accuracy"]) == 2


@pytest.mark.cuda
def test_on_cuda(digits_model, data):
    x, y = data
    gpu_model = copy.deepcopy(digits_model).cuda()
    r = evaluate_robustness(gpu_model, x, y, eps255=(8,), device=torch.device("cuda"), **FAST)
    cpu = evaluate_robustness(digits_model, x, y, eps255=(8,), **FAST)
    assert abs(r["robust_accuracy"][0] - cpu["robust_accuracy"][0]) <= 0.1
