"""DDP training with 2 CPU processes over gloo, launched by torchrun --standalone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    return out, launch(out)


def launch(out: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_ddp_two_processes_gloo(ddp_run):
    tmp_path, proc = ddp_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    # Different initial weights per rank, yet identical after training: DDP broadcast + averaged grads.
    for (k, a), b in zip(r0["state"].items(), r1["state"].values()):
        assert torch.equal(a, b), k
    h0, h1 = json.loads(r0["history"]), json.loads(r1["history"])
    assert h0 == [dict(r, time_s=h0[i]["time_s"], images_per_s=h0[i]["images_per_s"]) for i, r in enumerate(h1)]
    assert [r["images"] for r in h0] == [1400] * 3  # each rank saw half, the sums cover the set
    assert h0[-1]["train_loss"] < 0.6 * h0[0]["train_loss"] and h0[-1]["test_acc"] > 0.8
    # Only rank 0 writes the log and the checkpoint.
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["world_size"] == 2
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert torch.equal(ck["model"]["0.mask"], r0["state"]["0.mask"]) and ck["epoch"] == 3


def test_ddp_refuses_different_masks(ddp_run):
    tmp_path, proc = ddp_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in (0, 1):
        msg = (tmp_path / "bad" / f"error{r}.txt").read_text()
        assert "masks differ between rank 0 and rank 1 at '0.mask'" in msg and "seed" in msg
