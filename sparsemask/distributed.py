"""Multi-process training helpers for ``torchrun`` (DDP over NCCL on GPUs, gloo on CPUs).

``torchrun --nproc_per_node N [--nnodes M --rdzv-endpoint HOST:PORT] script.py`` sets
RANK / WORLD_SIZE / LOCAL_RANK; :func:`init_distributed` reads them. Defective layers'
masks are generated from explicit seeds, so every rank builds the same masks; DDP is
created with ``broadcast_buffers=False`` (re-broadcasting the masks every step would bump
their version counter and force a new mask plan each forward), so :func:`check_same_across_ranks`
verifies the masks once at start, and :func:`sync_buffers` averages the BatchNorm
statistics before evaluation and checkpoints.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class DistInfo:
    """This process's place in the job: rank in [0, world_size), local_rank on its node, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when RANK and WORLD_SIZE are set (torchrun, or a launcher that sets the same variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str = "auto", backend: Optional[str] = None) -> DistInfo:
    """Join the process group torchrun describes (no-op for a single process).

    ``device``: "auto" (cuda:LOCAL_RANK when CUDA is available, else cpu), "cpu", or "cuda".
    ``backend``: default nccl for CUDA, gloo for CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def resolve_device(device, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:local_rank if available else cpu; 'cuda' -> cuda:local_rank; else torch.device(device).
    A CUDA device without CUDA is a RuntimeError here rather than at the first tensor."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = torch.device("cuda", local_rank)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} asked for, but no CUDA device is available (use 'cpu' or 'auto')")
    return device


def current() -> DistInfo:
    """The DistInfo of an already initialised process group (rank 0 of 1 when none)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                        local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def tensor_digest(t: Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (computed on the CPU)."""
    t = t.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def mask_buffers(module: nn.Module) -> Dict[str, Tensor]:
    """Every bool buffer of ``module`` (defective layers keep their masks as bool buffers)."""
    return {name: b for name, b in module.named_buffers() if b is not None and b.dtype == torch.bool}


def check_same_across_ranks(tensors: Dict[str, Tensor], what: str = "masks") -> None:
    """Raise RuntimeError naming the first tensor that differs between ranks (no-op in one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    mine = {name: tensor_digest(t) for name, t in tensors.items()}
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    ref = gathered[0]
    for rank, other in enumerate(gathered):
        if set(other) != set(ref):
            raise RuntimeError(f"{what} differ between rank 0 and rank {rank}: names "
                               f"{sorted(set(ref) ^ set(other))[:5]} exist on one rank only")
        for name in ref:
            if other[name] != ref[name]:
                raise RuntimeError(
                    f"{what} differ between rank 0 and rank {rank} at {name!r}: build defective layers with an "
                    f"explicit seed (defective=dict(..., seed=S)) so every rank draws the same masks")


@torch.no_grad()
def sync_buffers(module: nn.Module) -> None:
    """Average floating buffers (BatchNorm running stats) over ranks; broadcast integer ones from rank 0.

    Bool buffers (masks) are left alone: they are identical by construction (checked at start).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for _, b in module.named_buffers():
        if b is None or b.dtype == torch.bool:
            continue
        if b.is_floating_point():
            dist.all_reduce(b, op=dist.ReduceOp.SUM)
            b.div_(world)
        else:
            dist.broadcast(b, src=0)


def all_reduce_sum(values, device: torch.device = torch.device("cpu")):
    """Sum a list of floats over ranks (float64), returned as a list of floats."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
