"""TrainConfig rejects non-finite numbers; a finished cosine run extended to more epochs
resumes at the new schedule's lr; float masks in a checkpoint are refused (issue 15,
items 4-6)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import sparsemask
from sparsemask.train import TrainConfig, load_checkpoint, save_checkpoint, train

FLOAT_FIELDS = ["lr", "momentum", "weight_decay", "gamma", "label_smoothing", "temperature", "adv_eps",
                "adv_step_size"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_train_config_rejects_non_finite(field, value):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}.*finite"):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("field", ["momentum", "weight_decay", "gamma"])
def test_train_config_rejects_negative(field):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}"):
        TrainConfig(**{field: -0.5})


def test_cli_rejects_nan_lr(tmp_path, capsys):
    from sparsemask.cli import main

    # A user error: one line on stderr and exit status 1 (test_cli_errors.py), no traceback.
    assert main(["train", "--dataset", "digits", "--lr", "nan", "--epochs", "1", "--out", str(tmp_path / "m.pt")]) == 1
    # The config is checked before the data loads: the error is the only line.
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("sparsemask: error:") and "lr" in lines[0] and "finite" in lines[0]
    assert not (tmp_path / "m.pt").exists()


def _data(n=32):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))


def test_extending_a_finished_cosine_run_resumes_at_the_new_schedule(tmp_path):
    ck = str(tmp_path / "ck.pt")
    base = dict(batch_size=16, lr=0.1, schedule="cosine", progress=False, device="cpu", checkpoint=ck)
    train(_model(), _data(), None, TrainConfig(epochs=2, **base))
    hist = train(_model(), _data(), None, TrainConfig(epochs=4, **base))
    assert len(hist) == 4
    assert hist[2]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 2 / 4)))
    assert hist[3]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 3 / 4)))


def test_checkpoint_with_float_masks_is_refused(tmp_path):
    model = sparsemask.nn.DefectiveConv2d(1, 3, 3, keep=0.3, feature_size=(6, 6), seed=0)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model)
    ck = torch.load(path, weights_only=True)
    ck["model"]["mask"] = ck["model"]["mask"].float() * 0.5  # all non-zero: would load as all-kept
    torch.save(ck, path)
    fresh = sparsemask.nn.DefectiveConv2d(1, 3, 3, keep=0.3, feature_size=(6, 6), seed=1)
    before = fresh.mask.clone()
    with pytest.raises(Exception, match=r"mask.*bool"):
        load_checkpoint(path, fresh)
    assert torch.equal(fresh.mask, before)


def test_checkpoint_path_is_a_directory(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        load_checkpoint(tmp_path, _model())


def test_checkpoint_without_model_state(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, _model())
    ck = torch.load(path, weights_only=True)
    del ck["model"]
    torch.save(ck, path)
    with pytest.raises(ValueError, match="'model'"):
        load_checkpoint(path, _model())
