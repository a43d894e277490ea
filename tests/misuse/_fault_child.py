"""Child process of test_faults.py: trains a tiny defective model on scikit-learn's digits.

    python _fault_child.py CHECKPOINT EPOCHS MODE MARKER

MODE ``run``: train (resuming from CHECKPOINT when it exists) and exit.
``hang-in-epoch:K``: after epoch K's checkpoint, block inside the 3rd training step of the
next epoch (weights already changed in memory) and write MARKER, for the parent to SIGKILL.
``hang-in-write:K``: during epoch K's checkpoint write, after half of the bytes are on disk
(fsynced), write the temporary file's name to MARKER and block, for the parent to SIGKILL.
``full-disk``: CHECKPOINT is on a small tmpfs; train 1 epoch, fill the disk, train a 2nd
epoch and print a JSON line with what the failed write raised.
Blocking (instead of a timed sleep) makes where the kill lands deterministic.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

import sparsemask.train as smt
from sparsemask.data import load_dataset
from sparsemask.nn import DefectiveConv2d


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(DefectiveConv2d(1, 8, 3, padding=1, keep=0.5, feature_size=8, seed=1), nn.BatchNorm2d(8),
                         nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 16, 10))


def config(checkpoint: str, epochs: int) -> smt.TrainConfig:
    return smt.TrainConfig(epochs=epochs, batch_size=64, lr=0.05, schedule="cosine", augment="crop_flip",
                           augment_pad=1, device="cpu", amp="off", progress=False, checkpoint=checkpoint,
                           max_steps_per_epoch=6)


def block(marker: str, text: str = "") -> None:
    Path(marker).write_text(text)
    while True:  # until SIGKILL
        time.sleep(1)


def hang_in_epoch(model: nn.Module, after: int, marker: str):
    state = {"armed": False, "steps": 0}

    def pre_hook(_module, _inputs):
        if state["armed"] and model.training:
            state["steps"] += 1
            if state["steps"] == 3:
                block(marker)

    model.register_forward_pre_hook(pre_hook)

    def callback(epoch, _record):
        state["armed"] = epoch == after

    return callback


def hang_in_write(epoch: int, marker: str) -> None:
    real_save = torch.save

    def half_then_block(obj, f, *args, **kwargs):
        if not (isinstance(obj, dict) and obj.get("epoch") == epoch):
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        target = getattr(f, "f", f)  # the real file under save_checkpoint's wrapper
        target.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        target.flush()
        os.fsync(target.fileno())
        block(marker, target.name)

    torch.save = half_then_block


def full_disk(checkpoint: str) -> None:
    data = load_dataset("digits")
    model = tiny_model()
    smt.train(model, data, None, config(checkpoint, 1))
    filler = Path(checkpoint).with_name("filler")
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    result = {"epoch_before": torch.load(checkpoint, weights_only=True)["epoch"]}
    try:
        smt.train(model, data, None, config(checkpoint, 2))
        result["error"] = None
    except Exception as e:  # reported to the parent, which asserts on it
        result.update(error=type(e).__name__, errno=getattr(e, "errno", None), message=str(e))
    filler.unlink()
    result["epoch_after"] = smt.load_checkpoint(checkpoint, tiny_model())["epoch"]
    result["left"] = sorted(p.name for p in Path(checkpoint).parent.iterdir())
    print(json.dumps(result))


def main(checkpoint: str, epochs: str, mode: str, marker: str) -> None:
    torch.set_num_threads(1)  # the same reduction order in every process, for bit-identical resume
    if mode == "full-disk":
        return full_disk(checkpoint)
    model, callback = tiny_model(), None
    if mode.startswith("hang-in-epoch:"):
        callback = hang_in_epoch(model, int(mode.split(":")[1]), marker)
    elif mode.startswith("hang-in-write:"):
        hang_in_write(int(mode.split(":")[1]), marker)
    elif mode != "run":
        raise SystemExit(f"unknown mode {mode!r}")
    smt.train(model, load_dataset("digits"), None, config(checkpoint, int(epochs)), callback=callback)


if __name__ == "__main__":
    main(*sys.argv[1:5])
