"""Experiment configuration: the scale presets, config files, ``--set`` overrides and the
merge order (see :mod:`sparsemask.experiments.common`), the device and the environment record."""
from __future__ import annotations

import copy
import os
import platform
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import torch

__all__ = ["deep_merge", "load_config_file", "shipped_configs", "parse_overrides", "resolve_config", "progress", "environment",
           "resolve_device", "SCALES"]

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
    # The seeds' ResNet-18 at a quarter of its width (16/16/32/64/128 channels) on real
    # Fashion-MNIST: every experiment fits in minutes on 2 CPU cores.
    "small": deep_merge(_SMOKE, {
        "scale": "small", "progress": True, "cache": "runs/cache",
        "data": {"name": "fashion-mnist", "root": "/usr/share/datasets/fashion-mnist", "n_train": 6000,
                 "n_test": 1000},
        "model": {"arch": "resnet18", "depth": None, "width": 0.25},
        "train": {"epochs": 4, "batch_size": 128},
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


# Example configs shipped with the package (`--config 001-transfer-paper.yaml` finds them by
# name from anywhere, the old `configs/NAME` path included).
SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"


def shipped_configs() -> list[str]:
    """File names of the example configs shipped with the package."""
    return sorted(p.name for p in SHIPPED_CONFIGS.iterdir() if p.suffix in (".yaml", ".yml", ".toml"))


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) experiment config into a dict.

    ``path`` is a file, or the name of a config shipped with the package (:func:`shipped_configs`)."""
    path = Path(path)
    if not path.is_file() and not path.exists() and (SHIPPED_CONFIGS / path.name).is_file():
        path = SHIPPED_CONFIGS / path.name
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist (shipped configs, usable by name: "
                                f"{', '.join(shipped_configs())})")
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
