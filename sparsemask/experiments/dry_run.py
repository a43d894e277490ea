"""``sparsemask experiment [NAME] --scale paper --dry-run``: check that a scale is ready to run,
and what it will cost, without its data.

For each experiment (all of them when no name is given) the configuration is resolved as for a
real run, and the experiment's ``model_specs(cfg, input_size)`` lists every model its ``run``
would train. Each *distinct* model (same checkpoint-cache key as a real run would use, so a
model shared between experiments through ``cfg["cache"]`` is counted once) is then

1. built with :func:`~sparsemask.experiments.common.model_from_spec`,
2. trained for one step on ``batch`` (default 2) random images of the dataset's shape (CIFAR-10: 3x32x32, 10
   classes) through :func:`~sparsemask.experiments.common.fit` — the real training path, with
   the config's optimizer, schedule, augmentation, method (Madry PGD training included) and
   MAD grid masking — and checked for a finite loss,
3. run once in eval mode (finite logits of the right shape),
4. costed: forward FLOPs per image are counted with ``torch.utils.flop_counter`` under the
   ``dense`` backend (defective layers counted as the dense convolution the papers' code runs,
   so an upper bound for defective models); a training image costs 3x a forward (forward +
   backward), times (1 + ``adv_steps``) for adversarial training; the estimated GPU-hours are
   ``epochs * n_train * train FLOPs per image / EFFECTIVE_TFLOPS``.

The estimate is an assumption, not a measurement: :data:`EFFECTIVE_TFLOPS` is the sustained
throughput assumed for one H200 on these small-image CNNs (see its comment). Attack and
evaluation costs are not included (clean-accuracy evaluation is below 0.1% of training; attack
costs vary by orders of magnitude between experiments and are left out of the number).
No dataset is read and nothing is downloaded.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

from . import EXPERIMENTS, get_experiment
from .common import (Data, arch_name, builder_kwargs, cache_key, fit, markdown_table, model_from_spec,
                     resolve_config, train_config)

__all__ = ["DATASET_SHAPES", "EFFECTIVE_TFLOPS", "DatasetShape", "dry_run", "format_report"]

# Sustained training throughput assumed for one H200 (bf16 autocast, channels_last, batch 128,
# 32x32 images). Its dense bf16 peak is ~989 TFLOP/s, but CIFAR-sized CNNs at batch 128 keep
# it far from peak (small kernels, launch- and memory-bound layers, BN, the optimizer step):
# 10% of peak is the assumption. Not measured (no GPU where this was written): calibrate with
# the ``images_per_s`` a real epoch records in its training history, against
# 1e12 * EFFECTIVE_TFLOPS / train FLOPs per image, and scale the hours by the ratio.
EFFECTIVE_TFLOPS = 100.0


@dataclass(frozen=True)
class DatasetShape:
    """What a dry run needs to know about a dataset it does not read."""
    channels: int
    size: int
    classes: int
    n_train: int
    n_test: int


# The full split sizes of the datasets the scales use (the readers in sparsemask.data).
DATASET_SHAPES: dict[str, DatasetShape] = {
    "cifar10": DatasetShape(3, 32, 10, 50_000, 10_000),
    "svhn": DatasetShape(3, 32, 10, 73_257, 26_032),
    "fashion-mnist": DatasetShape(1, 28, 10, 60_000, 10_000),
    "mnist": DatasetShape(1, 28, 10, 60_000, 10_000),
    "digits": DatasetShape(1, 8, 10, 1_437, 360),
}


class _RandomData(Data):
    """Random images of a dataset's shape whose ``info()`` is the real subset's, so
    :func:`cache_key` gives the key a real run would."""

    def __init__(self, name: str, shape: DatasetShape, n_train: int, n_test: int, batch: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(batch, shape.channels, shape.size, shape.size, generator=g)
        y = torch.randint(0, shape.classes, (batch,), generator=g)
        super().__init__(name, x, y, x, y, shape.classes, note="")
        self.n_train, self.n_test = n_train, n_test

    def info(self) -> dict[str, Any]:
        return {**super().info(), "n_train": self.n_train, "n_test": self.n_test}


def random_data(cfg: Mapping[str, Any], batch: int) -> _RandomData:
    """Random tensors shaped like ``cfg["data"]``'s dataset, reporting its configured subset sizes."""
    from sparsemask.data import canonical_name

    d = cfg["data"]
    name = canonical_name(d["name"])
    if name not in DATASET_SHAPES:
        raise ValueError(f"--dry-run: data.name {d['name']!r} has no known shape; known: {', '.join(DATASET_SHAPES)}")
    shape = DATASET_SHAPES[name]
    n_train = shape.n_train if d.get("n_train") is None else min(int(d["n_train"]), shape.n_train)
    n_test = shape.n_test if d.get("n_test") is None else min(int(d["n_test"]), shape.n_test)
    return _RandomData(d["name"], shape, n_train, n_test, batch, seed=int(d.get("seed", 0)))


def forward_flops(model: torch.nn.Module, data: Data, memo: Optional[dict] = None) -> int:
    """FLOPs of one eval-mode forward of one image, defective layers counted dense.

    ``memo``: counts by (parameter shapes, image shape). Counted dense, a p-Bottom model costs
    what its standard model does, and the counter's Python dispatch is slow: count each once.
    """
    import sparsemask
    from torch.utils.flop_counter import FlopCounterMode

    key = (tuple(tuple(p.shape) for p in model.parameters()), tuple(data.x_train.shape[1:]))
    if memo is not None and key in memo:
        return memo[key]
    counter = FlopCounterMode(display=False)
    # The dense backend runs aten convolutions the counter knows; the sparse kernels are custom ops.
    with sparsemask.backend("dense"), counter, torch.no_grad():
        model.eval()(data.x_train[:1])
    if memo is not None:
        memo[key] = int(counter.get_total_flops())
    return int(counter.get_total_flops())


def train_flops_per_image(fwd: int, tc: Mapping[str, Any]) -> int:
    """Forward + backward (3x forward); Madry training adds ``adv_steps`` attack passes of the same cost."""
    passes = 1 + (int(tc.get("adv_steps", 7)) if tc.get("method") == "adversarial" else 0)
    return 3 * fwd * passes


def one_step(model: torch.nn.Module, data: Data, tc: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """One real training step (via :func:`fit`) and one eval forward; raises if anything is not finite."""
    step_tc = {**tc, "epochs": 1, "batch_size": len(data.y_train), "max_steps_per_epoch": 1,
               "checkpoint": None, "log_path": None}
    t0 = time.perf_counter()
    history = fit(model, data, step_tc, cfg)
    step_s = time.perf_counter() - t0
    loss = float(history[-1]["train_loss"])
    with torch.no_grad():
        logits = model.eval()(data.x_test.to(next(model.parameters()).device))
    if not math.isfinite(loss):
        raise RuntimeError(f"--dry-run: training loss is {loss}")
    if logits.shape != (len(data.y_test), data.num_classes) or not torch.isfinite(logits).all():
        raise RuntimeError(f"--dry-run: eval logits of shape {tuple(logits.shape)} are not finite "
                           f"[{len(data.y_test)}, {data.num_classes}] values")
    return {"loss": loss, "step_s": step_s}


def _specs_of(name: str, module, cfg: Mapping[str, Any], input_size: int) -> list:
    if not callable(getattr(module, "model_specs", None)):
        raise ValueError(f"--dry-run: experiment {name!r} ({module.__name__}) has no model_specs(cfg, input_size) "
                         "listing the models its run() trains (docs/architecture.md, 'Adding an experiment')")
    specs = module.model_specs(cfg, input_size)
    if not specs:
        raise ValueError(f"--dry-run: experiment {name!r}: model_specs returned no models")
    return specs


def _model_row(name: str, spec, cfg: Mapping[str, Any], data: Data, key: str, device: str,
               tflops: float, memo: dict) -> dict[str, Any]:
    """Build, step and cost one distinct model."""
    tc = train_config(spec, cfg)
    model = model_from_spec(spec, cfg, data)
    fwd = forward_flops(model, data, memo)
    row = {"experiment": name, "label": spec.label, "seed": spec.get("seed", 0), "arch": arch_name(spec["arch"], builder_kwargs(spec, cfg)),
           "key": key, "params": sum(p.numel() for p in model.parameters()), "fwd_gflops": fwd / 1e9,
           "method": ("mad" if tc.get("mad") else tc.get("method", "standard")), "epochs": int(tc["epochs"]),
           "n_train": data.info()["n_train"], "shared_with": None}
    row.update(one_step(model, data, tc, {**cfg, "device": device, "progress": False}))
    total = row["epochs"] * row["n_train"] * train_flops_per_image(fwd, tc)
    row["gpu_hours"] = total / (tflops * 1e12) / 3600
    return row


def dry_run(names: Optional[Sequence[str]] = None, scale: str = "paper", config: Optional[Mapping[str, Any]] = None,
            overrides: Optional[Mapping[str, Any]] = None, *, batch: int = 2, device: Optional[str] = None,
            tflops: float = EFFECTIVE_TFLOPS) -> dict[str, Any]:
    """Dry-run experiments ``names`` (default: all) at ``scale``; returns ``{"rows", "summary", ...}``.

    ``batch``: images of the one training step (>= 2: BatchNorm needs two values per channel
    after the last pooling; the estimate does not depend on it, so the default is the cheapest). ``device``: where to run it (default: cuda if available, else cpu).
    """
    if not isinstance(batch, int) or batch < 2:
        raise ValueError(f"--dry-run: batch must be an int >= 2, got {batch!r}")
    if not tflops > 0:
        raise ValueError(f"--dry-run: tflops must be > 0, got {tflops!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    names = list(names) if names else list(EXPERIMENTS)
    rows, seen, memo = [], {}, {}
    for name in names:
        module = get_experiment(name)
        cfg = resolve_config(scale, getattr(module, "DEFAULTS", {}), config, overrides)
        data = random_data(cfg, batch)
        for i, spec in enumerate(_specs_of(name, module, cfg, data.input_size)):
            key = cache_key(spec, cfg, data)
            # Models are shared only through a checkpoint cache (get_model); without one every
            # request trains anew.
            share = (cfg["cache"], key) if cfg.get("cache") else (name, i)
            if share in seen:  # trained once, then read from the cache by every later run
                first = seen[share]
                rows.append({**first, "experiment": name, "label": spec.label, "seed": spec.get("seed", 0),
                             "shared_with": f"{first['experiment']}/{first['label']}", "gpu_hours": 0.0})
                continue
            seen[share] = _model_row(name, spec, cfg, data, key, device, tflops, memo)
            rows.append(seen[share])
    return {"scale": scale, "device": device, "batch": batch, "effective_tflops": tflops,
            "rows": rows, "summary": summarize(rows)}


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per experiment: models used, new distinct trainings, their GPU-hours; and the totals."""
    per: dict[str, dict[str, Any]] = {}
    for r in rows:
        s = per.setdefault(r["experiment"], {"models": 0, "distinct": 0, "gpu_hours": 0.0})
        s["models"] += 1
        s["distinct"] += r["shared_with"] is None
        s["gpu_hours"] += r["gpu_hours"]
    return {"experiments": per, "models": len(rows), "distinct_models": sum(s["distinct"] for s in per.values()),
            "gpu_hours": sum(s["gpu_hours"] for s in per.values())}


def format_report(result: Mapping[str, Any]) -> str:
    """The model table, the per-experiment summary and the totals as markdown."""
    table = markdown_table(
        ["Experiment", "Model", "Seed", "Arch", "Params (M)", "Fwd GFLOPs/img", "Training", "Epochs", "Step loss",
         "Step s", "Est. GPU-h"],
        [[r["experiment"], r["label"], r["seed"], r["arch"], f"{r['params'] / 1e6:.2f}", f"{r['fwd_gflops']:.3f}",
          r["method"], r["epochs"], f"{r['loss']:.3f}", f"{r['step_s']:.2f}",
          f"{r['gpu_hours']:.3g}" if r["shared_with"] is None else f"shared ({r['shared_with']})"]
         for r in result["rows"]])
    s = result["summary"]
    per = markdown_table(["Experiment", "Models", "New distinct trainings", "Est. GPU-h"],
                         [[n, v["models"], v["distinct"], f"{v['gpu_hours']:.3g}"] for n, v in s["experiments"].items()])
    return (f"{table}\n{per}\n"
            f"scale {result['scale']}: {s['models']} models, {s['distinct_models']} distinct trainings "
            f"(shared ones counted once), estimated {s['gpu_hours']:.3g} GPU-hours of training\n"
            f"estimate = epochs x n_train x 3 x forward FLOPs (x (1 + adv_steps) for adversarial training) / "
            f"{result['effective_tflops']:g} TFLOP/s assumed sustained on one H200; attacks not included; "
            f"one step of {result['batch']} random images ran on {result['device']}\n")


def run_cli(names: Optional[Sequence[str]], scale: str, config: Mapping[str, Any], overrides: Mapping[str, Any],
            out: Optional[str]) -> int:
    """What ``sparsemask experiment --dry-run`` does: run, print the report, write ``dry_run.json``."""
    result = dry_run(names, scale, config, overrides)
    print(format_report(result))
    path = Path(out or f"runs/dry-run-{scale}") / "dry_run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {path}")
    return 0
