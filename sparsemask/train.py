"""Training: SGD with the seeds' schedule, three training methods, checkpoints, resume, DDP.

    config = TrainConfig.preset("cifar")                 # seed 001's CIFAR-10 recipe
    history = train(model, train_data, test_data, config)  # list of per-epoch metric dicts

Methods (``TrainConfig.method``), the training-time baselines of seeds 001/003:

* ``"standard"``: cross-entropy of ``logits / temperature`` with optional label smoothing
  (seed 001's baseline uses eps = 0.1).
* ``"adversarial"``: Madry et al. PGD adversarial training, the model trained on
  :class:`sparsemask.attacks.PGD` examples only (L-inf eps 8/255, 7 steps of 2/255, random
  start, last iterate). Examples are generated with the model in eval mode, so BatchNorm
  statistics are not updated by the attack's forward passes.
* ``"distillation"``: defensive distillation (Papernot et al., seed 003's baseline): the
  student is trained on the teacher's soft labels ``softmax(teacher(x) / T)`` with its own
  ``softmax(student(x) / T)``; the teacher must have been trained at the same T
  (:func:`defensive_distillation` does both). Deploy at T = 1 (plain logits).

Data: an :class:`sparsemask.data.ImageDataset`, a ``(images, labels)`` tensor pair, a
``TensorDataset`` or any map-style Dataset of ``(image, label)``. Batches are drawn from a
permutation seeded by (seed, epoch) and augmentation is reseeded by (seed, epoch, rank), so
a run resumed from an epoch checkpoint replays exactly what an uninterrupted run would.

Checkpoints (``TrainConfig.checkpoint``) are written atomically (temporary file +
``os.replace``; a temporary file left by a killed run is removed when the next run starts)
after every ``checkpoint_every`` epochs and hold the model's build config
(name + kwargs, when known), its state_dict (defective masks included: they are buffers),
optimizer, scheduler, epoch, RNG states, the TrainConfig, the history and the caller's
``metadata`` (the CLI records the dataset there). They are read
only with ``torch.load(weights_only=True)``.

Multi-GPU / multi-node: launch the same script with ``torchrun``; :func:`train` joins the
process group (NCCL on GPUs, gloo on CPUs), wraps the model in DDP, shards batches with
``DistributedSampler`` (``batch_size`` is the global batch, split over ranks), checks that
every rank holds the same masks and averages BatchNorm statistics before evaluating.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, DistributedSampler, TensorDataset
from torch.utils.data._utils.collate import default_collate

from . import distributed as sdist
from .models import MODEL_CONFIG_ATTR, MODEL_METADATA_ATTR, build as build_model  # noqa: F401 - build_model: the name the docs use
# The checkpoint reader lives with the builders (build(weights=) needs it there); these names
# stay importable from train, where they were defined before.
from .models.weights import (CHECKPOINT_FORMAT, CheckpointMismatchError, check_plain,  # noqa: F401
                             load_state, model_config_of, read_checkpoint)

METHODS = ("standard", "adversarial", "distillation")
SCHEDULES = ("multistep", "cosine", "constant")
AUGMENTS = ("none", "flip", "crop_flip")
TEMP_INFIX = ".tmp-"  # save_checkpoint writes <checkpoint>.tmp-<pid> first

__all__ = ["TrainConfig", "train", "evaluate", "defensive_distillation", "build_model", "save_checkpoint",
           "load_checkpoint", "checkpoint_metadata", "log_paths", "tensorboard_available", "remove_stale_temp_files",
           "load_model", "CheckpointMismatchError", "PRESETS", "METHODS"]


AMP_MODES = ("auto", "bf16", "off")


def check_amp(amp: Union[str, bool], name: str = "amp") -> str:
    """``amp`` as one of :data:`AMP_MODES` (True means ``auto``, False ``off``)."""
    if isinstance(amp, bool):
        return "auto" if amp else "off"
    if amp not in AMP_MODES:
        raise ValueError(f"{name} must be one of {', '.join(AMP_MODES)} (or True/False), got {amp!r}")
    return amp


def autocast_for(amp: Union[str, bool], device: torch.device) -> torch.autocast:
    """The autocast context of mode ``amp`` on ``device``: bf16 on CUDA under ``auto``, bf16
    everywhere under ``bf16`` (CPU too: the sparsemask ops have Autocast kernels), none under
    ``off``. bf16 needs no loss scaling (float32's exponent range)."""
    mode = check_amp(amp)
    on = mode == "bf16" or (mode == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=on)


@dataclass
class TrainConfig:
    """Every hyperparameter of a training run (recorded in the log and the checkpoint).

    Optimiser: SGD(lr, momentum, weight_decay, nesterov). Schedule, stepped once per epoch:
    ``multistep`` (lr * gamma at each epoch of ``milestones``), ``cosine`` (to 0 at
    ``epochs``) or ``constant``. ``batch_size`` is the global batch (split over DDP ranks).
    ``augment``: ``none`` | ``flip`` | ``crop_flip`` (pad ``augment_pad`` + random crop + flip).
    ``device``: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``; ``amp``: ``auto`` (bf16 autocast on CUDA, off on CPU) |
    ``bf16`` (bf16 autocast on any device, CPU included) | ``off`` (True/False mean auto/off);
    ``channels_last``: None = on for CUDA. ``log_path``: JSON-lines metrics (appended), with a
    CSV of the epochs and TensorBoard scalars (when installed) next to it (:func:`log_paths`);
    ``checkpoint``: file path, resumed from when it exists and ``resume`` is True.
    ``max_steps_per_epoch``: cap for smoke runs. Adversarial training: ``adv_*``
    (L-inf eps and step in [0, 1] units). ``temperature``: softmax temperature of the
    training loss (defensive distillation's T for teacher and student); with
    ``temperature_loss_scale`` the loss is multiplied by T, which makes the gradient w.r.t.
    the logits that of T = 1, so T = 100 trains in a normal number of epochs (Papernot et
    al. did not scale and trained longer; set it False for their exact loss).
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "multistep"
    milestones: Tuple[int, ...] = (150, 250)
    gamma: float = 0.1
    label_smoothing: float = 0.0
    method: str = "standard"
    temperature: float = 1.0
    temperature_loss_scale: bool = True
    adv_eps: float = 8 / 255
    adv_steps: int = 7
    adv_step_size: float = 2 / 255
    adv_norm: str = "inf"
    augment: str = "none"
    augment_pad: int = 4
    seed: int = 0
    device: str = "auto"
    amp: Union[str, bool] = "auto"
    channels_last: Optional[bool] = None
    progress: bool = True
    log_path: Optional[str] = None
    checkpoint: Optional[str] = None
    checkpoint_every: int = 1
    resume: bool = True
    eval_batch_size: int = 512
    max_steps_per_epoch: Optional[int] = None

    def __post_init__(self):
        self.milestones = tuple(int(m) for m in self.milestones)
        for name in ("epochs", "batch_size", "checkpoint_every", "eval_batch_size", "adv_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name in ("epochs", "adv_steps") else 1):
                raise ValueError(f"TrainConfig.{name} must be an int >= {0 if name in ('epochs', 'adv_steps') else 1}, "
                                 f"got {v!r}")
        for name, allowed in (("method", METHODS), ("schedule", SCHEDULES), ("augment", AUGMENTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("lr", "momentum", "weight_decay", "gamma", "label_smoothing", "temperature", "adv_eps",
                     "adv_step_size"):
            v = getattr(self, name)
            # NaN passes every comparison below and would train to NaN weights with exit code 0.
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"TrainConfig.{name} must be a finite number, got {v!r}")
        for name in ("momentum", "weight_decay", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"TrainConfig.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.temperature <= 0:
            raise ValueError(f"TrainConfig.temperature must be > 0, got {self.temperature}")
        if self.adv_eps < 0 or self.adv_step_size < 0:
            raise ValueError(f"TrainConfig.adv_eps and adv_step_size must be >= 0, got {self.adv_eps}, "
                             f"{self.adv_step_size}")
        self.amp = check_amp(self.amp, "TrainConfig.amp")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f"TrainConfig.max_steps_per_epoch must be None or >= 1, got {self.max_steps_per_epoch}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        """A named recipe (see :data:`PRESETS`) with ``overrides`` applied."""
        if name not in PRESETS:
            raise ValueError(f"unknown TrainConfig preset {name!r}; expected one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {sorted(unknown)}")
        return cls(**d)


PRESETS: Dict[str, Dict[str, Any]] = {
    # Seed 001, appendix: CIFAR-10, SGD momentum 0.9, wd 5e-4, batch 128, 350 epochs, lr 0.1 /10 at 150 and
    # 250; per-pixel mean subtraction (put PixelMeanNormalize in the model), pad 4 + random crop + flip.
    "cifar": dict(epochs=350, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="multistep",
                  milestones=(150, 250), gamma=0.1, augment="crop_flip", augment_pad=4),
    # Seed 001, appendix: MNIST, same optimiser, 50 epochs, /10 at 20 and 40, random horizontal flip only.
    "mnist": dict(epochs=50, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="multistep",
                  milestones=(20, 40), gamma=0.1, augment="flip"),
    # Madry et al. PGD adversarial training on the CIFAR recipe (seed 001's baseline).
    "madry": dict(epochs=350, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="multistep",
                  milestones=(150, 250), gamma=0.1, augment="crop_flip", augment_pad=4, method="adversarial",
                  adv_eps=8 / 255, adv_steps=7, adv_step_size=2 / 255),
}


# ---------------------------------------------------------------------------------------------
# data

class _Source:
    """Uniform batch access ``get(indices [B]) -> (x float [B, C, H, W], y int64 [B])`` over the accepted inputs."""

    def __init__(self, data, name: str):
        self.data = data
        if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
            x, y = data
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"{name}: images and labels differ in length ({x.shape[0]} vs {y.shape[0]})")
            self.kind, self.n = "tensors", x.shape[0]
        elif hasattr(data, "batch") and hasattr(data, "__len__"):
            self.kind, self.n = "batch", len(data)
        elif isinstance(data, TensorDataset):
            self.kind, self.n = "tensordataset", len(data)
        elif isinstance(data, Dataset) and hasattr(data, "__len__"):
            self.kind, self.n = "dataset", len(data)
        else:
            raise TypeError(f"{name} must be an ImageDataset, an (images, labels) tensor pair or a map-style "
                            f"Dataset with __len__, got {type(data).__name__}")
        if self.n == 0:
            raise ValueError(f"{name} is empty")

    def __len__(self) -> int:
        return self.n

    def get(self, idx: Tensor) -> Tuple[Tensor, Tensor]:
        if self.kind == "tensors":
            x, y = self.data[0][idx], self.data[1][idx]
        elif self.kind == "batch":
            x, y = self.data.batch(idx)
        elif self.kind == "tensordataset":
            x, y = self.data.tensors[0][idx], self.data.tensors[1][idx]
        else:
            x, y = default_collate([self.data[int(i)] for i in idx])
        return x.float(), y.long()

    def reseed_transform(self, seed: int) -> None:
        t = getattr(self.data, "transform", None)
        if t is not None and hasattr(t, "reseed"):
            t.reseed(seed)


def _epoch_indices(n: int, epoch: int, cfg: TrainConfig, info: sdist.DistInfo) -> Tensor:
    if info.distributed:
        sampler = DistributedSampler(range(n), num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=False)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.int64)
    g = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
    return torch.randperm(n, generator=g)


def _augmenter(cfg: TrainConfig):
    from .data import RandomCropFlip

    if cfg.augment == "none":
        return None
    return RandomCropFlip(pad=cfg.augment_pad if cfg.augment == "crop_flip" else 0, flip=True, seed=cfg.seed)


# ---------------------------------------------------------------------------------------------
# optimisation

def lr_factor(epoch: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` during epoch ``epoch`` (0-based)."""
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(cfg.epochs, 1)))
    return 1.0


def make_optimizer(model: nn.Module, cfg: TrainConfig):
    """SGD over the trainable parameters, and a per-epoch LambdaLR implementing ``cfg.schedule``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(e, cfg))
    return opt, sched


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Mean over the batch of -sum_k p_k log softmax(logits)_k; logits, target_probs [N, K]."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(1).mean()


# ---------------------------------------------------------------------------------------------
# evaluation

@torch.no_grad()
def evaluate(model: nn.Module, data, *, batch_size: int = 512, device=None, amp: Union[str, bool] = "auto",
             channels_last: Optional[bool] = None) -> Dict[str, float]:
    """Clean accuracy and mean cross-entropy of ``model`` (eval mode) on ``data``.

    Under an initialised process group each rank scores a 1/world shard and the sums are
    all-reduced, so every rank returns the full-set numbers. Returns {'loss', 'acc', 'n'}.
    """
    source = _Source(data, "data")
    info = sdist.current()
    dev = sdist.resolve_device(device) if device is not None else next(model.parameters()).device
    cl = (dev.type == "cuda") if channels_last is None else channels_last
    was_training = model.training
    model.eval()
    idx = torch.arange(len(source))[info.rank::info.world_size]
    loss_sum, correct = 0.0, 0.0
    for chunk in idx.split(batch_size):
        x, y = source.get(chunk)
        x, y = _to_device(x, dev, cl), y.to(dev)
        with autocast_for(amp, dev):
            logits = model(x)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += float((logits.argmax(1) == y).sum())
    loss_sum, correct, n = sdist.all_reduce_sum([loss_sum, correct, float(len(idx))], dev)
    model.train(was_training)
    return {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1), "n": int(n)}


def _to_device(x: Tensor, dev: torch.device, channels_last: bool) -> Tensor:
    x = x.to(dev, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


# ---------------------------------------------------------------------------------------------
# checkpoints

def _rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain_num, np_state[2:])]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain_num(v):
    return float(v) if isinstance(v, float) else int(v)


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuple(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _to_tuple(v):
    return tuple(_to_tuple(x) for x in v) if isinstance(v, (list, tuple)) else v


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# TrainConfig fields a resumed run may change: how and where it runs, and how long (more
# epochs extend a finished run). Every other field defines what is trained.
RESUME_MAY_CHANGE = frozenset({"epochs", "device", "amp", "channels_last", "progress", "log_path", "checkpoint",
                               "checkpoint_every", "resume", "eval_batch_size"})


def check_resumable(saved: Optional[Dict[str, Any]], cfg: "TrainConfig", path) -> None:
    """Refuse to resume the checkpoint at ``path`` (written with config ``saved``) under a
    config that trains something else: silently continuing a run with another lr or method
    would mix two experiments in one model. :class:`CheckpointMismatchError` lists the
    differing fields and the ways out."""
    if saved is None:
        return
    def norm(v):
        return tuple(v) if isinstance(v, list) else v
    mine = cfg.to_dict()
    diffs = [f"{k}: checkpoint {saved[k]!r}, now {mine[k]!r}" for k in sorted(mine)
             if k not in RESUME_MAY_CHANGE and k in saved and norm(saved[k]) != norm(mine[k])]
    if diffs:
        raise CheckpointMismatchError(
            f"checkpoint {path} was trained with other settings ({'; '.join(diffs)}); resuming it would mix two "
            f"runs. Use the same settings to continue it, another checkpoint path, or resume=False "
            f"(CLI: --force) to start over and overwrite it")


def save_checkpoint(path: Union[str, os.PathLike], model: nn.Module, *, optimizer=None, scheduler=None,
                    epoch: int = 0, config: Optional[TrainConfig] = None, history: Optional[List[dict]] = None,
                    model_config: Optional[Dict[str, Any]] = None,
                    metadata: Optional[Dict[str, Any]] = None) -> Path:
    """Write a checkpoint atomically: to ``path.tmp-<pid>`` first, fsync, then ``os.replace``.

    ``metadata``: plain values stored alongside (e.g. ``{"data": {"name": "digits"}}``: the CLI
    records the dataset, which ``evaluate``/``attack`` then default to).

    A crash while writing leaves the previous checkpoint intact. Contents: see the module
    docstring. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = _unwrap(model)
    state = {
        "format": CHECKPOINT_FORMAT,
        "model_config": model_config_of(model, model_config),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "config": config.to_dict() if config is not None else None,
        "history": list(history or []),
        "rng": _rng_state(),
        "torch_version": str(torch.__version__),
        "metadata": dict(metadata or {}),
    }
    check_plain(state["history"], "history")
    check_plain(state["metadata"], "metadata")
    tmp = path.with_name(f"{path.name}{TEMP_INFIX}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            _save_keeping_os_errors(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a quota, a read-only folder: say which file and that the old one is safe
        raise OSError(e.errno, f"cannot write checkpoint {path} ({e.strerror or e}); the previous checkpoint, "
                               f"if any, is unchanged") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return path



class _OSErrorKeepingWriter:
    """A file wrapper that remembers the OSError a ``write`` raised."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self):
        return self.f.flush()


def _save_keeping_os_errors(obj, f) -> None:
    # torch.save's C++ zip writer turns a failed write (ENOSPC on a full disk) into
    # "RuntimeError: [enforce fail at inline_container.cc] unexpected pos 704 vs 598".
    writer = _OSErrorKeepingWriter(f)
    try:
        torch.save(obj, writer)
    except RuntimeError as e:
        if writer.error is None:
            raise
        raise writer.error from e


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_stale_temp_files(path: Union[str, os.PathLike]) -> List[Path]:
    """Delete ``<path>.tmp-<pid>`` files that a killed :func:`save_checkpoint` left behind.

    Only files whose writer is gone (no live process ``pid``) or is this process are removed:
    a live writer (another run on the same checkpoint) keeps its file. A pid reused by an
    unrelated process keeps a stale file until that process ends. Returns the removed paths.
    """
    path = Path(path)
    removed = []
    prefix = path.name + TEMP_INFIX
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.iterdir():
        pid = tmp.name[len(prefix):] if tmp.name.startswith(prefix) else ""
        if not (pid.isdigit() and tmp.is_file()):
            continue
        if int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue
        try:
            tmp.unlink()
        except FileNotFoundError:  # another starting run removed it first
            continue
        removed.append(tmp)
    return removed


def load_checkpoint(path: Union[str, os.PathLike], model: Optional[nn.Module] = None, *, optimizer=None,
                    scheduler=None, map_location="cpu", check_config: bool = True) -> Dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and load it into ``model`` etc.

    Raises FileNotFoundError when missing, ValueError for a file that is not a sparsemask
    checkpoint, and :class:`CheckpointMismatchError` naming the differences when ``model``
    is another architecture (missing / unexpected keys, shape mismatches, or a different
    recorded build config when ``check_config``). Returns the checkpoint dict.
    """
    path = Path(path)
    ckpt = read_checkpoint(path, map_location=map_location)
    if model is not None:
        load_state(path, ckpt, _unwrap(model), check_config)
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt


def checkpoint_metadata(path_or_model) -> Dict[str, Any]:
    """The ``metadata`` dict a checkpoint was saved with ({} for none or older checkpoints):
    from a checkpoint path, or from a model returned by :func:`load_model` / ``build(weights=)``
    (no second read)."""
    if isinstance(path_or_model, nn.Module):
        return dict(getattr(path_or_model, MODEL_METADATA_ATTR, None) or {})
    return dict(load_checkpoint(path_or_model).get("metadata") or {})


def load_model(path: Union[str, os.PathLike], map_location: Union[str, torch.device] = "cpu") -> nn.Module:
    """Rebuild the model a checkpoint was trained from and load it: ``sparsemask.models.build(weights=path)``.

    Needs the build config, recorded when the model came from :func:`build_model` or
    ``train(..., model_config=...)``. The model is returned in eval mode, on the device
    ``map_location`` (a device or its name; the tensors are read on the CPU first, so
    ``torch.load``'s dict/callable forms have no use here), with the checkpoint's metadata
    readable by :func:`checkpoint_metadata` (model).
    """
    if not isinstance(map_location, (str, torch.device)):
        raise TypeError(f"load_model: map_location must be a device or a device name such as 'cpu' or "
                        f"'cuda:0', got {type(map_location).__name__}")
    return build_model(weights=path).to(torch.device(map_location))


# ---------------------------------------------------------------------------------------------
# the loop

def log_paths(log_path: Union[str, os.PathLike]) -> Dict[str, Path]:
    """Where a run logging to ``log_path`` writes: ``jsonl`` (every event, one JSON object a
    line), ``csv`` (one row per epoch) and ``tensorboard`` (an event-file directory, written
    only when the ``tensorboard`` package is installed), side by side:
    ``runs/m.jsonl`` -> ``runs/m.csv``, ``runs/m.tb/``."""
    path = Path(log_path)
    stem = path.with_suffix("") if path.suffix == ".jsonl" else path
    return {"jsonl": path, "csv": stem.with_name(stem.name + ".csv"), "tensorboard": stem.with_name(stem.name + ".tb")}


def tensorboard_available() -> bool:
    """Whether ``torch.utils.tensorboard`` can be used (the optional ``tensorboard`` package)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _summary_writer(log_dir: Path):
    """A ``SummaryWriter`` for ``log_dir``, or None without the optional ``tensorboard`` package."""
    if not tensorboard_available():
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))


class _Logger:
    """The per-run logs of :func:`train` (main rank only): every event to the JSON-lines file,
    each epoch's metrics as a CSV row and as TensorBoard scalars (see :func:`log_paths`)."""

    def __init__(self, path: Optional[str], enabled: bool):
        self.paths = log_paths(path) if (path and enabled) else None
        self._tb = None
        if self.paths is not None:
            self.paths["jsonl"].parent.mkdir(parents=True, exist_ok=True)
            self._tb = _summary_writer(self.paths["tensorboard"])

    def write(self, record: Dict[str, Any]) -> None:
        if self.paths is None:
            return
        with open(self.paths["jsonl"], "a") as f:
            f.write(json.dumps(record) + "\n")
        if record.get("event") == "epoch":
            self._write_csv(record)
            if self._tb is not None:
                for key, value in record.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                        self._tb.add_scalar(key, value, record["epoch"])
                self._tb.flush()

    def _write_csv(self, record: Dict[str, Any]) -> None:
        import csv

        path = self.paths["csv"]
        # A resumed run appends under the header already there (keys it lacks stay empty).
        header = path.read_text().splitlines()[0].split(",") if path.is_file() and path.stat().st_size else None
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header or [k for k in record if k != "event"], extrasaction="ignore")
            if header is None:
                writer.writeheader()
            writer.writerow(record)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _make_attack(model: nn.Module, cfg: TrainConfig, rank: int):
    from .attacks import PGD

    return PGD(model, eps=cfg.adv_eps, norm=cfg.adv_norm, steps=cfg.adv_steps, step_size=cfg.adv_step_size,
               random_start=True, keep_best=False, seed=cfg.seed * 1000 + rank, progress=False)


def train(model: nn.Module, train_data, test_data=None, config: Optional[TrainConfig] = None, *,
          teacher: Optional[nn.Module] = None, model_config: Optional[Dict[str, Any]] = None,
          callback: Optional[Callable[[int, Dict[str, Any]], None]] = None,
          metadata: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """Train ``model`` in place and return the history (one metrics dict per epoch, resumed ones included).

    Args:
        model: any nn.Module mapping images [B, C, H, W] in [0, 1] to logits [B, K].
        train_data / test_data: see the module docstring; test_data may be None.
        config: a :class:`TrainConfig` (default ``TrainConfig()``).
        teacher: the trained teacher, required for ``method="distillation"``.
        model_config: ``(name, kwargs)`` the model was built with, stored in checkpoints
            (taken from the model when it came from :func:`build_model`).
        metadata: plain values stored in every checkpoint (see :func:`save_checkpoint`).
        callback: ``callback(epoch, metrics)`` after each epoch's checkpoint (rank 0 and
            others alike); an exception there stops training with the checkpoint on disk.
    The model is left on the configured device, in eval mode.
    """
    cfg = config or TrainConfig()
    if cfg.method == "distillation" and teacher is None:
        raise ValueError("method='distillation' needs teacher=<trained model> (see defensive_distillation)")
    info = sdist.init_distributed(cfg.device) if sdist.launched_by_torchrun() else \
        sdist.DistInfo(device=sdist.resolve_device(cfg.device))
    dev = info.device
    if info.distributed and cfg.batch_size % info.world_size:
        raise ValueError(f"TrainConfig.batch_size ({cfg.batch_size}) must be divisible by the number of processes "
                         f"({info.world_size}): it is the global batch")
    per_rank_batch = cfg.batch_size // info.world_size
    channels_last = (dev.type == "cuda") if cfg.channels_last is None else cfg.channels_last
    amp = cfg.amp
    model_cfg = model_config_of(model, model_config)

    train_src = _Source(train_data, "train_data")
    torch.manual_seed(cfg.seed)
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if teacher is not None:
        teacher.to(dev).eval()
    optimizer, scheduler = make_optimizer(model, cfg)

    start_epoch, history = 0, []
    if cfg.checkpoint and info.is_main:
        remove_stale_temp_files(cfg.checkpoint)  # left by a run killed while writing
    if cfg.checkpoint and cfg.resume and Path(cfg.checkpoint).is_file():
        ckpt = load_checkpoint(cfg.checkpoint, model, optimizer=optimizer, scheduler=scheduler, map_location=dev)
        check_resumable(ckpt.get("config"), cfg, cfg.checkpoint)
        start_epoch, history = int(ckpt["epoch"]), list(ckpt.get("history", []))
        _set_rng_state(ckpt["rng"])
        # The saved lr is the old schedule's (0 at the end of a finished cosine run); a run
        # extended to more epochs continues on this config's schedule from start_epoch.
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * lr_factor(start_epoch, cfg)
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]

    sdist.check_same_across_ranks(sdist.mask_buffers(model), "defective-layer masks")
    net = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                  broadcast_buffers=False)
    attack = _make_attack(model, cfg, info.rank) if cfg.method == "adversarial" else None
    augment = _augmenter(cfg)
    logger = _Logger(cfg.log_path, info.is_main)
    if start_epoch == 0:
        logger.write({"event": "start", "config": cfg.to_dict(), "model_config": model_cfg,
                      "world_size": info.world_size, "device": str(dev), "torch": str(torch.__version__)})
    elif start_epoch < cfg.epochs:
        logger.write({"event": "resume", "epoch": start_epoch, "checkpoint": cfg.checkpoint})

    for epoch in range(start_epoch, cfg.epochs):
        epoch_seed = (cfg.seed * 1_000_003 + epoch) * 1009 + info.rank
        if augment is not None:
            augment.reseed(epoch_seed)
        train_src.reseed_transform(epoch_seed + 7)
        stats = _train_epoch(net, model, train_src, epoch, cfg, info, optimizer, per_rank_batch, channels_last, amp,
                             augment, attack, teacher)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        sdist.sync_buffers(model)
        record = {"event": "epoch", "epoch": epoch + 1, "lr": lr, **stats}
        if test_data is not None:
            ev = evaluate(model, test_data, batch_size=cfg.eval_batch_size, device=dev, amp=cfg.amp,
                          channels_last=channels_last)
            record.update(test_loss=ev["loss"], test_acc=ev["acc"])
        history.append(record)
        logger.write(record)
        if cfg.checkpoint and ((epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs):
            if info.is_main:
                save_checkpoint(cfg.checkpoint, model, optimizer=optimizer, scheduler=scheduler, epoch=epoch + 1,
                                config=cfg, history=history, model_config=model_cfg, metadata=metadata)
            sdist.barrier()
        if callback is not None:
            callback(epoch + 1, record)
    logger.close()
    model.eval()
    return history


def _train_epoch(net, model, source: _Source, epoch: int, cfg: TrainConfig, info: sdist.DistInfo, optimizer,
                 batch_size: int, channels_last: bool, amp: str, augment, attack, teacher) -> Dict[str, float]:
    from tqdm.auto import tqdm

    idx = _epoch_indices(len(source), epoch, cfg, info)
    batches = list(idx.split(batch_size))
    if cfg.max_steps_per_epoch is not None:
        batches = batches[:cfg.max_steps_per_epoch]
    dev = info.device
    loss_sum = correct = seen = 0.0
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=not (cfg.progress and info.is_main))
    for b in bar:
        x, y = source.get(b)
        if augment is not None:
            x = augment(x)
        x, y = _to_device(x, dev, channels_last), y.to(dev, non_blocking=True)
        if attack is not None:
            model.eval()  # attack passes must not update BatchNorm statistics
            with autocast_for(amp, dev):
                x = attack(x, y)
            model.train()
        with autocast_for(amp, dev):
            logits = net(x)
        logits = logits.float()
        if cfg.method == "distillation":
            with torch.no_grad(), autocast_for(amp, dev):
                soft = F.softmax(teacher(x).float() / cfg.temperature, dim=1)
            loss = soft_cross_entropy(logits / cfg.temperature, soft)
        else:
            loss = F.cross_entropy(logits / cfg.temperature, y, label_smoothing=cfg.label_smoothing)
        if cfg.temperature_loss_scale and cfg.temperature != 1.0:
            # d CE(z / T) / dz = (p - y) / T: at T = 100 SGD barely moves. Scaling the loss by T restores the
            # logit gradient of T = 1 (the optimum is unchanged); T^2 (Hinton et al.) diverges here.
            loss = loss * cfg.temperature
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = y.shape[0]
        loss_sum += float(loss.detach()) * n
        correct += float((logits.detach().argmax(1) == y).sum())
        seen += n
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
    bar.close()
    elapsed = time.perf_counter() - t0
    loss_sum, correct, seen = sdist.all_reduce_sum([loss_sum, correct, seen], dev)
    return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1), "images": int(seen),
            "time_s": elapsed, "images_per_s": seen / max(elapsed, 1e-9)}


def defensive_distillation(make_model: Callable[[], nn.Module], train_data, test_data=None,
                           config: Optional[TrainConfig] = None, *, temperature: float = 100.0,
                           teacher_config: Optional[TrainConfig] = None):
    """Papernot et al.'s defensive distillation: teacher and student of the same architecture, both at T.

    1. ``teacher = make_model()`` trained with cross-entropy of ``logits / T`` (``method="standard"``);
    2. ``student = make_model()`` trained on ``softmax(teacher(x) / T)`` with ``softmax(student(x) / T)``;
    3. the student is deployed at T = 1 (its plain logits).

    ``config`` is used for both (with ``temperature=T``), ``teacher_config`` overrides it for
    the teacher. Checkpoint/log paths get ``.teacher`` / ``.student`` suffixes. Returns
    ``(teacher, student, {"teacher": history, "student": history})``.
    """
    cfg = config or TrainConfig()

    def suffixed(c: TrainConfig, tag: str) -> TrainConfig:
        return dataclasses.replace(c, temperature=temperature,
                                   checkpoint=f"{c.checkpoint}.{tag}" if c.checkpoint else None,
                                   log_path=f"{c.log_path}.{tag}" if c.log_path else None)

    tcfg = suffixed(dataclasses.replace(teacher_config or cfg, method="standard"), "teacher")
    scfg = suffixed(dataclasses.replace(cfg, method="distillation"), "student")
    teacher = make_model()
    h_teacher = train(teacher, train_data, test_data, tcfg)
    student = make_model()
    h_student = train(student, train_data, test_data, scfg, teacher=teacher)
    return teacher, student, {"teacher": h_teacher, "student": h_student}
