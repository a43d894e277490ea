"""Per-run logs of train(): JSON lines, a CSV of the epochs, TensorBoard scalars when installed."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from sparsemask import train as train_mod
from sparsemask.train import TrainConfig, log_paths, tensorboard_available, train


def _data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3))


def _config(tmp_path, epochs, **kw):
    return TrainConfig(epochs=epochs, batch_size=16, lr=0.05, schedule="constant", progress=False,
                       log_path=str(tmp_path / "run.jsonl"), checkpoint=str(tmp_path / "run.pt"), **kw)


def test_log_paths_sit_next_to_the_jsonl(tmp_path):
    assert log_paths(tmp_path / "m.jsonl") == {"jsonl": tmp_path / "m.jsonl", "csv": tmp_path / "m.csv",
                                               "tensorboard": tmp_path / "m.tb"}
    assert log_paths("log")["csv"].name == "log.csv"


def test_csv_has_one_row_per_epoch_and_a_resumed_run_appends(tmp_path):
    history = train(_model(), _data(), _data(24, 1), _config(tmp_path, 2))
    train(_model(), _data(), _data(24, 1), _config(tmp_path, 3))  # resumes: epoch 3 only
    with open(tmp_path / "run.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert set(history[0]) - {"event"} == set(rows[0])  # every metric is a column, the event tag is not
    for row, record in zip(rows, history):
        assert float(row["train_loss"]) == pytest.approx(record["train_loss"])
        assert float(row["test_acc"]) == pytest.approx(record["test_acc"])
    events = [json.loads(s)["event"] for s in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert events == ["start", "epoch", "epoch", "resume", "epoch"]


def test_tensorboard_scalars_per_epoch(tmp_path, monkeypatch):
    """With a stand-in SummaryWriter: every numeric metric, stepped by epoch (runs without tensorboard)."""
    calls = []

    class Writer:
        def __init__(self, log_dir):
            calls.append(("dir", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, step))

        def flush(self):
            pass

        def close(self):
            calls.append(("close", None))

    monkeypatch.setattr(train_mod, "_summary_writer", lambda log_dir: Writer(str(log_dir)))
    train(_model(), _data(), None, _config(tmp_path, 2))
    assert calls[0] == ("dir", str(tmp_path / "run.tb")) and calls[-1] == ("close", None)
    assert ("train_loss", 1) in calls and ("train_loss", 2) in calls and ("lr", 2) in calls


@pytest.mark.skipif(not tensorboard_available(), reason="the optional tensorboard package is not installed")
def test_tensorboard_event_files_when_installed(tmp_path):
    train(_model(), _data(), None, _config(tmp_path, 1))
    assert list((tmp_path / "run.tb").glob("events.out.tfevents.*"))


@pytest.mark.skipif(tensorboard_available(), reason="tensorboard is installed")
def test_no_tensorboard_directory_without_the_package(tmp_path):
    train(_model(), _data(), None, _config(tmp_path, 1))
    assert (tmp_path / "run.csv").is_file() and not (tmp_path / "run.tb").exists()
