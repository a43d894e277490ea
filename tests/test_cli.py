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
