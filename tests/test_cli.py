"""The CLI's train -> evaluate -> attack path on the embedded digits: the checkpoint remembers
its dataset, a rerun under other settings is refused, --force starts over."""
from __future__ import annotations

import json

import pytest

from sparsemask import train
from sparsemask.cli import main

TRAIN = ["train", "--arch", "wide_resnet", "--depth", "8", "--width", "1", "--dataset", "digits", "--n-train", "64",
         "--epochs", "1", "--train-batch-size", "32", "--no-progress"]


def test_train_evaluate_attack_roundtrip(tmp_path, capsys):
    ck = tmp_path / "m.pt"
    assert main([*TRAIN, "--out", str(ck)]) == 0
    assert train.checkpoint_metadata(ck)["data"]["name"] == "digits"
    assert train.checkpoint_metadata(train.load_model(ck)) == train.checkpoint_metadata(ck)  # one read suffices
    assert [json.loads(line)["event"] for line in (tmp_path / "m.jsonl").read_text().splitlines()][:2] == \
        ["start", "epoch"]
    assert (tmp_path / "m.csv").read_text().splitlines()[0].startswith("epoch,lr,")  # the CSV log next to it
    assert "logs: " in capsys.readouterr().out
    # evaluate / attack default to the checkpoint's dataset (digits, 8x8), not Fashion-MNIST (28x28)
    assert main(["evaluate", str(ck), "--n-test", "32", "--json", str(tmp_path / "e.json"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["data"]["name"] == "digits"
    assert main(["attack", str(ck), "--n-test", "16", "--attack", "fgsm", "--eps255", "8", "--no-progress"]) == 0
    assert "FGSM8 white-box" in capsys.readouterr().out
    # other hyperparameters into the same --out: refused (exit 1, one line), unless --force
    assert main([*TRAIN, "--lr", "0.2", "--out", str(ck)]) == 1
    assert "trained with other settings (lr: checkpoint 0.05, now 0.2)" in capsys.readouterr().err
    assert main([*TRAIN, "--lr", "0.2", "--out", str(ck), "--force"]) == 0
    assert train.load_checkpoint(ck)["config"]["lr"] == pytest.approx(0.2)


def test_attack_eps_list_and_defenses(tmp_path, capsys):
    """--eps255 with several values: one row each; --defense wraps the checkpoint for attack,
    evaluate and robustness; phases say what they do on stderr unless --no-progress."""
    ck = tmp_path / "m.pt"
    assert main([*TRAIN, "--keep", "0.5", "--out", str(ck)]) == 0
    capsys.readouterr()
    common = ["--n-test", "16", "--no-progress"]
    out = tmp_path / "a.json"
    assert main(["attack", str(ck), "--attack", "fgsm", "--eps255", "2", "8", "16", "--json", str(out), *common]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "white-box" in ln]
    assert [ln.split()[0] for ln in lines] == ["FGSM2", "FGSM8", "FGSM16"]
    results = json.loads(out.read_text())["results"]
    assert [r["eps255"] for r in results] == [2, 8, 16] and [r["label"] for r in results] == ["FGSM2", "FGSM8", "FGSM16"]
    assert len({r["clean_accuracy"] for r in results}) == 1  # one clean prediction for every ε
    for defense, options in (("mad", ["--mad-votes", "3"]), ("resize-pad", ["--resize-draws", "2"]),
                             ("spiking", ["--spiking-runs", "2"])):
        assert main(["attack", str(ck), "--attack", "pgd", "--steps", "2", "--eps255", "8", "--eot", "2",
                     "--defense", defense, *options, "--json", str(out), *common]) == 0
        assert f"behind {defense}" in capsys.readouterr().out
        saved = json.loads(out.read_text())
        assert saved["defense"]["name"] == defense and saved["attack"]["eot"] == 2
    assert main(["attack", str(ck), "--attack", "fgsm", "--defense", "mad", *common]) == 0
    assert "no --eot" in capsys.readouterr().err  # randomized defense, plain gradients: said so
    assert main(["evaluate", str(ck), "--defense", "mad", "--mad-votes", "3", "--json", str(out), *common]) == 0
    assert json.loads(out.read_text())["defense"] == {"name": "mad", "mad_votes": 3, "mad_grid": None,
                                                      "mad_rate": 0.75}
    rob = tmp_path / "rob"
    assert main(["robustness", str(ck), "--defense", "resize-pad", "--eps255", "8", "--suite", "clean", "fgsm",
                 "--out", str(rob), *common]) == 0
    assert json.loads((rob / "report.json").read_text())["randomized"]
    capsys.readouterr()
    # progress: a status line for data loading and a bar for the clean accuracy, on stderr only
    assert main(["evaluate", str(ck), "--n-test", "16"]) == 0
    err = capsys.readouterr().err
    assert "loading digits ... done in" in err and "clean accuracy" in err
