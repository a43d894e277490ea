"""Worker for test_ddp.py, launched as ``torchrun --standalone --nproc_per_node 2 ddp_worker.py OUT``.

1. Every rank builds a model with a seeded defective layer from a *different* initial
   weight seed, trains 3 epochs with DDP over gloo and saves its final state_dict and
   history to OUT/rank<R>.pt.
2. Then a model whose masks are drawn without a seed (so they differ per rank): the rank
   saves the error train() raises to OUT/error<R>.txt.
"""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from sparsemask.data import load_dataset
from sparsemask.nn import DefectiveConv2d
from sparsemask.train import TrainConfig, train


def main(out: Path):
    run(out, "ok")
    run(out / "bad", "badmask")
    # Both ranks reach teardown before either closes its gloo pairs: a rank that destroys the
    # group while its peer still sends can abort the peer (one SIGABRT seen in a full-suite run).
    dist.barrier()
    dist.destroy_process_group()


def run(out: Path, mode: str):
    import os
    rank = int(os.environ["RANK"])
    out.mkdir(exist_ok=True)
    torch.manual_seed(100 + rank)  # different weights and (without seed) masks on every rank
    model = nn.Sequential(
        DefectiveConv2d(1, 8, 3, padding=1, keep=0.5, feature_size=8, seed=3 if mode == "ok" else None),
        nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 16, 10))
    tr, te = load_dataset("digits"), load_dataset("digits", split="test")
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05, milestones=(), progress=False, device="cpu",
                      log_path=str(out / "log.jsonl"), checkpoint=str(out / "ck.pt"))
    try:
        history = train(model, tr, te, cfg)
    except RuntimeError as e:
        (out / f"error{rank}.txt").write_text(str(e))
        return
    torch.save({"state": model.state_dict(), "history": json.dumps(history),
                "world": dist.get_world_size()}, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
