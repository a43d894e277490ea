"""Shared machinery of the experiments: scale presets, configs, data, models, attacks, writers.

Every experiment module (``seed001_transfer`` …) defines ``NAME``, ``DESCRIPTION``,
``DEFAULTS`` (per-scale overrides of :data:`SCALES`) and ``run(cfg, out) -> dict``. The
runner (:func:`sparsemask.experiments.run_experiment`) resolves the configuration as

    SCALES[scale]  <-  module.DEFAULTS["all"]  <-  module.DEFAULTS[scale]  <-  config file  <-  --set

and hands it to ``run``; everything in the resolved configuration is written to the output
JSON, so a result file alone says how it was made.

Scales:
  ``smoke``  scikit-learn's shipped 8x8 digits, tiny models, 1-2 epochs: seconds (CI).
  ``small``  Fashion-MNIST (28x28, from /usr/share/datasets/fashion-mnist) on CPU: minutes.
  ``paper``  the seed's settings: CIFAR-10 from ``data.root`` (the user's copy), GPU, full
             training schedule. Hours to days.

ε and σ in configs are on the seeds' 0-255 pixel scale (``eps255``); they are divided by 255
exactly once, in :func:`make_attack` / the corruption helpers.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "SCALES", "deep_merge", "load_config_file", "parse_overrides", "resolve_config",
    "Data", "load_data", "ModelSpec", "variant_label", "model_from_spec", "get_model",
    "predict", "accuracy", "make_attack", "run_attack", "success_defense_rate",
    "ResultWriter", "markdown_table", "plot_curves", "plot_bars", "save_adversarial_grid",
    "fmt_pct", "progress", "environment",
]

# --------------------------------------------------------------------------- presets

def deep_merge(base: Mapping[str, Any], override: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """A copy of ``base`` with ``override`` merged in (nested dicts merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


_SMOKE: dict[str, Any] = {
    "scale": "smoke",
    "device": "cpu",
    "seed": 0,
    "progress": False,
    "cache": None,  # directory for trained-model checkpoints shared between experiments
    "data": {"name": "digits", "root": None, "n_train": 1200, "n_test": 128, "seed": 0},
    # A ResNet-8 (pre-activation WRN-8-1: 16/32/64 channels) keeps CPU runs short; the
    # seed's architectures are the paper scale's.
    "model": {"arch": "wide_resnet", "depth": 8, "width": 1},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
              "schedule": "cosine", "milestones": [], "augment": "none", "label_smoothing": 0.0},
    "eval": {"batch_size": 256},
}

SCALES: dict[str, dict[str, Any]] = {
    "smoke": _SMOKE,
    # smoke's recipe on real Fashion-MNIST, longer.
    "small": deep_merge(_SMOKE, {
        "scale": "small", "progress": True, "cache": "runs/cache",
        "data": {"name": "fashion-mnist", "root": "/usr/share/datasets/fashion-mnist", "n_train": 6000,
                 "n_test": 1000},
        "train": {"epochs": 3, "batch_size": 128},
        "eval": {"batch_size": 500},
    }),
    # The seeds' CIFAR-10 protocol; data.root must point at the user's cifar-10-batches-py.
    "paper": deep_merge(_SMOKE, {
        "scale": "paper", "device": "cuda", "progress": True, "cache": "runs/cache",
        "data": {"name": "cifar10", "n_train": None, "n_test": 5000},
        "model": {"arch": "resnet18", "depth": None, "width": None},
        "train": {"epochs": 350, "batch_size": 128, "lr": 0.1, "schedule": "multistep", "milestones": [150, 250],
                  "augment": "crop_flip"},
        "eval": {"batch_size": 500},
    }),
}


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) experiment config into a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    if path.suffix not in (".yaml", ".yml", ".toml"):  # before reading: a binary file is not UTF-8
        raise ValueError(f"config file {str(path)!r}: expected a .yaml, .yml or .toml file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"config file {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    elif path.suffix == ".toml":
        import tomllib

        data = tomllib.loads(text)
    else:
        raise ValueError(f"config file {str(path)!r}: expected a .yaml, .yml or .toml file")
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping at top level, got {type(data).__name__}")
    return data


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["train.epochs=3", "data.name=mnist"]`` -> nested dict; values are parsed as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected KEY=VALUE with a dotted key, e.g. train.epochs=3")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def _check_known(base: Mapping[str, Any], overrides: Mapping[str, Any], prefix: str) -> None:
    """Overrides (``--set``) may only change settings that exist: a misspelled key would be
    kept and silently ignored."""
    for key, value in overrides.items():
        if key not in base:
            known = ", ".join(sorted(f"{prefix}{k}" for k in base))
            raise ValueError(f"unknown setting {prefix}{key!r} in the overrides (--set); known here: {known}")
        if isinstance(value, Mapping) and isinstance(base[key], Mapping):
            _check_known(base[key], value, f"{prefix}{key}.")


def resolve_config(scale: str, defaults: Optional[Mapping[str, Any]] = None,
                   config: Optional[Mapping[str, Any]] = None,
                   overrides: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The full configuration of one run (see the module docstring for the merge order).

    A config file may itself carry ``scale:``; an explicit ``scale`` argument wins.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    defaults = defaults or {}
    cfg = deep_merge(SCALES[scale], defaults.get("all"))
    cfg = deep_merge(cfg, defaults.get(scale))
    cfg = deep_merge(cfg, config)
    _check_known(cfg, overrides or {}, "")
    cfg = deep_merge(cfg, overrides)
    cfg["scale"] = scale
    return cfg


def progress(iterable, cfg: Mapping[str, Any], **kw):
    """tqdm over ``iterable`` unless ``cfg["progress"]`` is false."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not cfg.get("progress", False), leave=False, **kw)


def environment() -> dict[str, Any]:
    """Versions and device, recorded in every result file."""
    import sparsemask

    env = {"python": platform.python_version(), "torch": torch.__version__, "sparsemask": sparsemask.__version__,
           "platform": platform.platform(), "backend": sparsemask.get_backend(),
           "threads": torch.get_num_threads(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def resolve_device(cfg: Mapping[str, Any]) -> torch.device:
    """The config's ``device`` (:func:`sparsemask.distributed.resolve_device`)."""
    from sparsemask.distributed import resolve_device as resolve

    return resolve(cfg.get("device", "cpu"))


# --------------------------------------------------------------------------- data

class Data:
    """Tensors of one dataset split pair, all in memory.

    x_train [N, C, H, W] float32 in [0, 1], y_train [N] int64; same for test.
    """

    def __init__(self, name: str, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
                 num_classes: int, note: str = ""):
        self.name, self.note = name, note
        self.x_train, self.y_train, self.x_test, self.y_test = x_train, y_train, x_test, y_test
        self.num_classes = num_classes

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def input_size(self) -> int:
        return self.x_train.shape[-1]

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "n_train": len(self.y_train), "n_test": len(self.y_test),
                "shape": list(self.x_train.shape[1:]), "num_classes": self.num_classes, "note": self.note}


def _take(ds, n: Optional[int], seed: int) -> tuple[Tensor, Tensor]:
    """(x float32 [n, C, H, W] in [0, 1], y int64 [n]): a seeded random subset of an ImageDataset."""
    total = len(ds)
    if n is None or n >= total:
        idx = torch.arange(total)
    else:
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
    x, y = ds.batch(idx, transform=False)
    return x.float().contiguous(), y.long()


def load_data(cfg: Mapping[str, Any]) -> Data:
    """The dataset named by ``cfg["data"]`` (:func:`sparsemask.data.load_dataset`) as tensors,
    subsampled to ``n_train`` / ``n_test`` images with the data seed."""
    from sparsemask import data as smdata

    d = cfg["data"]
    options = {k: v for k, v in d.items() if k not in ("name", "root", "n_train", "n_test", "seed")}
    train = smdata.load_dataset(d["name"], root=d.get("root"), split="train", **options)
    test = smdata.load_dataset(d["name"], root=d.get("root"), split="test", **options)
    seed = int(d.get("seed", 0))
    x_tr, y_tr = _take(train, d.get("n_train"), seed)
    x_te, y_te = _take(test, d.get("n_test"), seed + 1)
    num_classes = len(train.classes) if getattr(train, "classes", None) else int(y_tr.max()) + 1
    return Data(d["name"], x_tr, y_tr, x_te, y_te, num_classes)


# --------------------------------------------------------------------------- models

class ModelSpec(dict):
    """What identifies a trained model: ``arch``, ``defective`` (dict or None), ``seed``,
    optional ``label``, ``mask_seed``, ``spiking`` (RandomSpiking settings), ``model_kwargs``,
    ``label_smoothing`` (a training option) and ``train`` overrides (e.g. ``mad``)."""

    @property
    def label(self) -> str:
        return self.get("label") or variant_label(self["arch"], self.get("defective"))


_KIND_SUFFIX = {"channel": "DC", "shared": "SM"}

ARCH_NAMES = {"resnet18": "ResNet-18", "resnet18_x2": "ResNet-18 x2", "resnet18_dc": "ResNet-18 DC",
              "resnet50": "ResNet-50", "resnet32x4": "ResNet-32x4", "densenet121": "DenseNet-121",
              "senet18": "SENet-18", "vgg19": "VGG-19", "wide_resnet": "WRN", "lenet5": "LeNet-5",
              "cw_mnist": "CW-MNIST"}


def arch_name(arch: str, kwargs: Optional[Mapping[str, Any]] = None) -> str:
    """Display name: ``ResNet-18``; ``ResNet-8`` for WRN-8-1; ``WRN-32-4`` …"""
    kwargs = kwargs or {}
    if arch == "wide_resnet":
        depth, width = kwargs.get("depth", 32), kwargs.get("width", 4)
        return f"ResNet-{depth}" if width == 1 else f"WRN-{depth}-{width}"
    if arch == "resnet32x4":  # the published post-activation "WRN-32-4"
        return f"ResNet-{kwargs.get('depth', 32)}x{kwargs.get('width', 4)}"
    return ARCH_NAMES.get(arch, arch)


def variant_label(arch: str, defective: Optional[Mapping[str, Any]], kwargs: Optional[Mapping[str, Any]] = None) -> str:
    """The seeds' row names: ``ResNet-18``, ``0.5-Bottom``, ``0.1-Bottom_DC``, ``0.5-Bottom_x2`` …"""
    if not defective:
        return arch_name(arch, kwargs)
    where = defective.get("where", "bottom")
    where = where.capitalize() if isinstance(where, str) else "+".join(where)
    label = f"{defective['keep']:g}-{where}"
    if defective.get("kind", "neuron") in _KIND_SUFFIX:
        label += "_" + _KIND_SUFFIX[defective["kind"]]
    if defective.get("widen", 1) != 1:
        label += f"_x{defective['widen']}"
    return label


def model_from_spec(spec: Mapping[str, Any], cfg: Mapping[str, Any], data: Data) -> nn.Module:
    """An untrained model for an experiment's model ``spec`` (:func:`sparsemask.models.build`
    with the data's shape, the spec's seeds and options).

    ``cfg["model"]`` entries other than ``arch`` (e.g. ``width``) are passed to builders that
    accept them; ``width: null`` means the architecture's own width.
    """
    from sparsemask import models

    extra = builder_kwargs(spec, cfg)
    defective = dict(spec["defective"]) if spec.get("defective") else None
    if defective is not None:
        defective.setdefault("seed", spec.get("mask_seed", spec.get("seed", 0)))
    torch.manual_seed(spec.get("seed", 0))
    # models.build records (name, kwargs) so checkpoints can rebuild the model.
    model = models.build(spec["arch"], num_classes=data.num_classes, in_channels=data.in_channels,
                              input_size=data.input_size, defective=defective, **extra)
    if spec.get("spiking"):  # seed 003's RS-1: Random Spiking right after the first conv
        from sparsemask.nn import RandomSpiking, insert_after_first_conv

        sp = dict(spec["spiking"])
        insert_after_first_conv(model, RandomSpiking(sp.pop("p", 0.8), seed=spec.get("seed", 0), **sp))
    return model


def builder_kwargs(spec: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Extra builder keywords for ``spec["arch"]``: ``cfg["model"]`` entries (other than
    ``arch``) that the builder accepts, then the spec's own ``model_kwargs``."""
    from sparsemask import models

    extra = {k: v for k, v in cfg.get("model", {}).items() if k != "arch" and v is not None}
    builder = models.MODELS.get(spec["arch"]) if hasattr(models, "MODELS") else getattr(models, spec["arch"], None)
    if builder is None:
        raise ValueError(f"unknown architecture {spec['arch']!r}")
    params = inspect.signature(builder).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        extra = {k: v for k, v in extra.items() if k in params}
    extra.update(spec.get("model_kwargs", {}))
    return extra


def _cache_key(spec: Mapping[str, Any], cfg: Mapping[str, Any], data: Data) -> str:
    spec = {k: v for k, v in spec.items() if k != "label"}  # the label names a model, it does not change it
    blob = json.dumps({"spec": spec, "model": cfg.get("model"), "train": cfg["train"], "data": cfg["data"],
                       "info": data.info()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_key(spec: Mapping[str, Any], cfg: Mapping[str, Any], data: Data) -> str:
    """The checkpoint-cache key :func:`get_model` uses: equal keys, one trained model (``--dry-run`` counts by it)."""
    return _cache_key(spec, cfg, data)


def train_config(spec: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The training hyperparameters of one model: ``cfg["train"]`` with the spec's overrides."""
    tc = deep_merge(cfg["train"], spec.get("train"))
    tc["seed"] = spec.get("seed", 0)
    if spec.get("label_smoothing") is not None:
        tc["label_smoothing"] = spec["label_smoothing"]
    return tc


def fit(model: nn.Module, data: Data, tc: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Train ``model`` in place with :func:`sparsemask.train.train`; returns its per-epoch history."""
    from sparsemask import train as smtrain

    fields = set(smtrain.TrainConfig.__dataclass_fields__)
    tc = dict(tc)
    mad = tc.pop("mad", None)
    unknown = set(tc) - fields
    if unknown:
        raise ValueError(f"config 'train' has keys TrainConfig does not know: {sorted(unknown)}")
    config = smtrain.TrainConfig(**{**tc, "device": cfg.get("device", "cpu"), "progress": bool(cfg.get("progress"))})
    train_data = (data.x_train, data.y_train)
    if mad:  # seed 002: train on grid-masked images (a fresh mask per image and epoch)
        from sparsemask.data.base import ImageDataset
        from sparsemask.nn import GridMask

        train_data = ImageDataset(data.x_train, data.y_train, classes=[str(i) for i in range(data.num_classes)],
                                  scale=1.0, name=data.name, split="train",
                                  transform=GridMask(mad["grid"], mad["rate"], seed=int(tc.get("seed", 0))))
    return smtrain.train(model, train_data, None, config)


def get_model(spec: Mapping[str, Any], cfg: Mapping[str, Any], data: Data,
              log: Optional[list] = None) -> nn.Module:
    """A trained model for ``spec`` (eval mode, on the configured device), from the checkpoint
    cache (``cfg["cache"]``) when an identical model was trained before, else trained now."""
    spec = ModelSpec(spec)
    device = resolve_device(cfg)
    model = model_from_spec(spec, cfg, data)
    cache = cfg.get("cache")
    path = Path(cache) / f"{spec['arch']}-{_cache_key(spec, cfg, data)}.pt" if cache else None
    entry = {"label": spec.label, "spec": dict(spec), "train": train_config(spec, cfg)}
    if path is not None and path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        entry["cached"] = str(path)
    else:
        t0 = time.perf_counter()
        entry["history"] = fit(model, data, entry["train"], cfg)
        entry["train_seconds"] = time.perf_counter() - t0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")  # own name: runs sharing a cache may save the same model
            torch.save(model.state_dict(), tmp)
            os.replace(tmp, path)
    model = model.to(device).eval()
    entry["clean_accuracy"] = accuracy(model, data.x_test, data.y_test, cfg)
    if log is not None:
        log.append(entry)
    return model


# --------------------------------------------------------------------------- evaluation

# Thin adapters of sparsemask.eval that read the batch size, device and progress setting
# from an experiment config.

def _eval_batch_size(cfg: Mapping[str, Any]) -> int:
    return int(cfg.get("eval", {}).get("batch_size", 256))


def predict(model: nn.Module, x: Tensor, cfg: Mapping[str, Any]) -> Tensor:
    """Predicted labels [N] (on x's device) for x [N, C, H, W] (:func:`sparsemask.eval.predict`)."""
    from sparsemask import eval as ev

    return ev.predict(model, x, _eval_batch_size(cfg))


def accuracy(model: nn.Module, x: Tensor, y: Tensor, cfg: Mapping[str, Any]) -> float:
    """Fraction of x classified as y (nan for no images; :func:`sparsemask.eval.accuracy`)."""
    from sparsemask import eval as ev

    return ev.accuracy(model, x, y, _eval_batch_size(cfg))


def success_defense_rate(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, cfg: Mapping[str, Any]) -> float:
    """Seed 001's metric (:func:`sparsemask.attacks.success_defense_rate`): accuracy on
    adversarial examples whose clean originals ``model`` classifies correctly."""
    from sparsemask import attacks

    return attacks.success_defense_rate(model, x, x_adv, y, batch_size=_eval_batch_size(cfg))


def make_attack(model: nn.Module, params: Mapping[str, Any],
                cfg: Optional[Mapping[str, Any]] = None) -> Callable[..., Tensor]:
    """An attack from a config entry (:func:`sparsemask.attacks.make_attack`), with the
    run's ``seed`` and ``progress`` setting where the attack takes them."""
    from sparsemask import attacks

    if cfg is None:
        return attacks.make_attack(model, params)
    return attacks.make_attack(model, params, seed=int(cfg.get("seed", 0)), progress=bool(cfg.get("progress", False)))


def run_attack(attack: Callable[..., Tensor], x: Tensor, y: Tensor, cfg: Mapping[str, Any],
               targets: Optional[Tensor] = None, desc: str = "attack") -> Tensor:
    """``attack(x, y)`` in batches on the configured device (:func:`sparsemask.eval.run_attack`); CPU result."""
    from sparsemask import eval as ev

    bs = cfg.get("eval", {}).get("attack_batch_size", _eval_batch_size(cfg))
    return ev.run_attack(attack, x.cpu(), y.cpu(), batch_size=int(bs), device=resolve_device(cfg), targets=targets,
                         progress=bool(cfg.get("progress", False)), desc=desc)


def fmt_pct(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}%"


# --------------------------------------------------------------------------- writers

def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    """A GitHub markdown table; ``caption`` goes below it, as in the seeds."""
    header = [str(h) for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    if caption:
        lines += ["", caption]
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(path: str | os.PathLike, x: Sequence[float], series: Mapping[str, Sequence[float]],
                xlabel: str, ylabel: str, title: str = "") -> None:
    """One line per series (e.g. accuracy vs σ per model) to a PNG."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, ys in series.items():
        ax.plot(list(x), list(ys), marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bars(path: str | os.PathLike, groups: Sequence[str], series: Mapping[str, Sequence[float]],
              ylabel: str, title: str = "") -> None:
    """Grouped bar chart (one group per entry of ``groups``, one bar per series)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.5, 0.9 * len(groups) * max(1, len(series)) / 2), 4))
    width = 0.8 / max(1, len(series))
    for k, (label, ys) in enumerate(series.items()):
        ax.bar([i + k * width for i in range(len(groups))], list(ys), width=width, label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
    ax.set_xticklabels(groups, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_adversarial_grid(path: str | os.PathLike, x: Tensor, x_adv: Tensor, y: Tensor,
                          pred_clean: Tensor, pred_adv: Tensor, n: int = 8, title: str = "") -> None:
    """Rows: clean images, adversarial images, perturbation (rescaled to the full grey range);
    titles show label -> prediction. x, x_adv [N, C, H, W] in [0, 1]."""
    plt = _plt()
    n = min(n, len(x))
    fig, axes = plt.subplots(3, max(n, 1), figsize=(1.3 * max(n, 1), 4.2), squeeze=False)

    def show(ax, img):
        img = img.detach().cpu().float()
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_xticks([])
        ax.set_yticks([])

    for i in range(n):
        delta = x_adv[i] - x[i]
        scale = float(delta.abs().max()) or 1.0
        show(axes[0, i], x[i])
        axes[0, i].set_title(f"{int(y[i])}->{int(pred_clean[i])}", fontsize=8)
        show(axes[1, i], x_adv[i])
        axes[1, i].set_title(f"adv->{int(pred_adv[i])}", fontsize=8)
        show(axes[2, i], (delta / (2 * scale) + 0.5).clamp(0, 1))
    axes[0, 0].set_ylabel("clean")
    axes[1, 0].set_ylabel("adversarial")
    axes[2, 0].set_ylabel("perturbation")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class ResultWriter:
    """Collects an experiment's numbers, tables and figures and writes them to ``out``:

    ``results.json`` (config, environment, models, every number), ``results.md`` (the tables
    laid out like the seed's, plus figure links) and the PNG files.
    """

    def __init__(self, out: str | os.PathLike, name: str, cfg: Mapping[str, Any], description: str = ""):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.name, self.cfg, self.description = name, dict(cfg), description
        self.numbers: dict[str, Any] = {}
        self.tables: list[tuple[str, str]] = []
        self.figures: list[tuple[str, str]] = []
        self.models: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.t0 = time.perf_counter()

    def table(self, title: str, markdown: str) -> None:
        self.tables.append((title, markdown))

    def figure(self, filename: str, caption: str = "") -> Path:
        """Reserve ``filename`` under ``out`` for a figure; returns its path."""
        self.figures.append((filename, caption))
        return self.out / filename

    def note(self, text: str) -> None:
        self.notes.append(text)

    def finish(self, data: Optional[Data] = None) -> dict[str, Any]:
        result = {
            "experiment": self.name, "description": self.description, "config": self.cfg,
            "data": data.info() if data is not None else None, "environment": environment(),
            "models": self.models, "numbers": self.numbers, "notes": self.notes,
            "tables": {t: md for t, md in self.tables}, "figures": [f for f, _ in self.figures],
            "seconds": time.perf_counter() - self.t0,
        }
        (self.out / "results.json").write_text(json.dumps(_finite(result), indent=2, default=_json_default) + "\n")
        md = [f"# {self.name}", "", self.description, "",
              f"Scale `{self.cfg.get('scale')}`; data: {data.info() if data is not None else '-'}.", ""]
        for title, table in self.tables:
            md += [f"## {title}", "", table]
        for filename, caption in self.figures:
            md += [f"![{caption or filename}]({filename})", "", caption, ""]
        if self.notes:
            md += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        md += [f"Every hyperparameter is in `results.json` (`config`). Ran in {result['seconds']:.1f} s.", ""]
        (self.out / "results.md").write_text("\n".join(md))
        return result


def _finite(obj):
    """NaN/inf -> None, recursively (strict JSON has no NaN; a missing number reads as null)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj):
    if isinstance(obj, Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return str(obj)


# --------------------------------------------------------------------------- experiment helpers

def variants(arch: str, keeps: Sequence[float], seed: int = 0, where: str = "bottom", kind: str = "neuron",
             standard: bool = True, cfg: Optional[Mapping[str, Any]] = None, **defective_extra) -> list[ModelSpec]:
    """The standard ``arch`` (if ``standard``) followed by one defective variant per keep.

    With ``cfg`` the standard model is labelled with its configured size (e.g. ``ResNet-8``).
    """
    label = arch_name(arch, builder_kwargs({"arch": arch}, cfg)) if cfg is not None else None
    specs = [ModelSpec(arch=arch, defective=None, seed=seed, label=label)] if standard else []
    for k, keep in enumerate(keeps):
        specs.append(ModelSpec(arch=arch, seed=seed + 1 + k,
                               defective=dict(keep=keep, where=where, kind=kind, **defective_extra)))
    return specs


def model_key(spec: Mapping[str, Any]) -> str:
    """A unique key of a model in result JSON: ``resnet18/0.5-Bottom`` (plus ``#seed`` if labelled)."""
    spec = ModelSpec(spec)
    return f"{spec['arch']}/{spec.label}"


def adversarial_grid(writer: "ResultWriter", model: nn.Module, data: Data, cfg: Mapping[str, Any],
                     title: str, filename: str = "adversarial_grid.png") -> None:
    """White-box adversarial examples of ``model`` on the first test images, as a PNG grid.

    Attack from ``cfg["grid_attack"]`` (default: seed 001's Figure 1 attack, MI-FGSM ε16).
    """
    from sparsemask import attacks

    params = dict(cfg.get("grid_attack") or {"name": "mifgsm", "eps255": 16, "steps": 10})
    n = int(cfg.get("grid_images", 8))
    x, y = data.x_test[:n], data.y_test[:n]
    x_adv = run_attack(make_attack(model, params, cfg), x, y, cfg, desc="grid")
    save_adversarial_grid(writer.figure(filename, f"{attacks.attack_label(params)} white-box examples: {title}"),
                          x, x_adv, y, predict(model, x, cfg), predict(model, x_adv, cfg), n=n, title=title)
