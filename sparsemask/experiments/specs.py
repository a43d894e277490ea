"""Models of the experiments: data in memory, model specs (architecture + defective
variant + seeds), building, training (cached between experiments) and labels."""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from ..data.arrays import Data, load_arrays
from .config import deep_merge, progress, resolve_device
from .evaluation import accuracy

__all__ = ["Data", "load_data", "ModelSpec", "arch_name", "variant_label", "model_from_spec", "builder_kwargs",
           "insert_dropout_layer",
           "train_config", "fit", "get_model", "ARCH_NAMES", "cache_key"]

# --------------------------------------------------------------------------- data

def load_data(cfg: Mapping[str, Any]) -> Data:
    """The dataset named by ``cfg["data"]`` (:func:`sparsemask.data.load_arrays`: ``name``,
    ``root``, ``n_train``, ``n_test``, ``seed`` and reader options)."""
    d = dict(cfg["data"])
    return load_arrays(d.pop("name"), d.pop("root", None), **d)


# --------------------------------------------------------------------------- models

class ModelSpec(dict):
    """What identifies a trained model: ``arch``, ``defective`` (dict, list of dicts — one per
    placement, e.g. p-Bottom and q-Top — or None), ``seed``,
    optional ``label``, ``mask_seed``, ``spiking`` (RandomSpiking settings), ``dropout_layer``
    (SpatialDropout / DropBlock settings, :func:`insert_dropout_layer`), ``model_kwargs``,
    ``label_smoothing`` (a training option) and ``train`` overrides (e.g. ``mad``)."""

    @property
    def label(self) -> str:
        return self.get("label") or variant_label(self["arch"], self.get("defective"))


_KIND_SUFFIX = {"channel": "DC", "shared": "SM"}
# Mask seed offset between the placements of a list-valued ``defective`` (p-Bottom, q-Top).
_MIXED_SEED_STRIDE = 7919

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
    name = ARCH_NAMES.get(arch, arch)
    if arch.startswith("resnet18") and kwargs.get("width", 1) != 1:  # the width multiplier of CPU scales
        name += f" (width {kwargs['width']:g})"
    return name


def variant_label(arch: str, defective: Optional[Mapping[str, Any]], kwargs: Optional[Mapping[str, Any]] = None) -> str:
    """The seeds' row names: ``ResNet-18``, ``0.5-Bottom``, ``0.1-Bottom_DC``, ``0.5-Bottom_x2``,
    ``0.3-Bottom, 0.7-Top`` (``defective`` a list of placements) …"""
    if not defective:
        return arch_name(arch, kwargs)
    if isinstance(defective, (list, tuple)):  # seed 001 Table 4's mixed rows: "0.3-Bottom, 0.7-Top"
        return ", ".join(variant_label(arch, d, kwargs) for d in defective)
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
    defective = spec.get("defective") or None
    mask_seed = spec.get("mask_seed", spec.get("seed", 0))
    if isinstance(defective, (list, tuple)):  # "p-Bottom, q-Top": one entry per placement
        # Each placement's masks from a stream of its own (the first one's is the single-placement model's).
        defective = [{"seed": None if mask_seed is None else int(mask_seed) + _MIXED_SEED_STRIDE * i, **d}
                     for i, d in enumerate(defective)]
    elif defective is not None:
        defective = dict(defective)
        defective.setdefault("seed", mask_seed)
    torch.manual_seed(spec.get("seed", 0))
    # models.build records (name, kwargs) so checkpoints can rebuild the model.
    model = models.build(spec["arch"], num_classes=data.num_classes, in_channels=data.in_channels,
                              input_size=data.input_size, defective=defective, **extra)
    if spec.get("dropout_layer"):  # seed 001 Table 2's SpatialDropout / DropBlock baselines
        insert_dropout_layer(model, spec["dropout_layer"], seed=spec.get("seed", 0))
    if spec.get("spiking"):  # seed 003's RS-1: Random Spiking right after the first conv
        from sparsemask.nn import RandomSpiking, insert_after_first_conv

        sp = dict(spec["spiking"])
        insert_after_first_conv(model, RandomSpiking(sp.pop("p", 0.8), seed=spec.get("seed", 0), **sp))
    return model


# The seeds' "3rd block" (block 0 = the stem conv) by the builders' module names: ResNets'
# layer3, the wide ResNets' block3, DenseNet's third dense block.
_THIRD_BLOCK = ("layer3", "block3", "dense3")


def insert_dropout_layer(model: nn.Module, settings: Mapping[str, Any], seed: Optional[int] = 0) -> nn.Module:
    """Put a SpatialDropout or DropBlock layer on the output of one block of ``model`` (in place).

    ``settings``: ``kind`` (``"spatial"`` | ``"dropblock"``), ``keep`` (seed 001: 0.9),
    ``block_size`` (DropBlock's square, seed 001: 3), ``after`` (the module whose output is
    dropped; default the seeds' "3rd block", Ghiasi et al.'s placement: ``layer3`` / ``block3`` /
    ``dense3``). The module ``after`` becomes ``Sequential(module, dropout)``; the layer is
    active in training only (a standard deterministic model at test time, as the seed's baselines).
    """
    from sparsemask.nn import DropBlock2d, SpatialDropout2d

    settings = dict(settings)
    kind = settings.pop("kind", "dropblock")
    keep = float(settings.pop("keep", 0.9))
    block_size = int(settings.pop("block_size", 3))
    after = settings.pop("after", None)
    if settings:
        raise ValueError(f"dropout_layer: unknown keys {sorted(settings)}; expected kind, keep, block_size, after")
    if kind == "spatial":
        layer = SpatialDropout2d(keep, seed=seed)
    elif kind == "dropblock":
        layer = DropBlock2d(keep, block_size, seed=seed)
    else:
        raise ValueError(f"dropout_layer: kind must be 'spatial' or 'dropblock', got {kind!r}")
    children = dict(model.named_children())
    if after is None:
        after = next((n for n in _THIRD_BLOCK if n in children), None)
        if after is None:
            raise ValueError(f"dropout_layer: {type(model).__name__} has no module named {' / '.join(_THIRD_BLOCK)} "
                             f"(the seeds' 3rd block); name one with 'after' (its modules: {', '.join(children)})")
    parent_name, _, name = after.rpartition(".")
    parent = model.get_submodule(parent_name)
    setattr(parent, name, nn.Sequential(model.get_submodule(after), layer))
    return model


def builder_kwargs(spec: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Extra builder keywords for ``spec["arch"]``: ``cfg["model"]`` entries (other than
    ``arch``) that the builder accepts, then the spec's own ``model_kwargs``.

    ``cfg["model"]`` options apply only to specs of ``cfg["model"]["arch"]``: a ``width`` of
    0.25 means a multiplier to ResNet-18 but a widening factor to a WRN, so another
    architecture in the same experiment (a LeNet source, say) keeps its own defaults."""
    from sparsemask import models

    model_cfg = cfg.get("model", {})
    same_arch = spec["arch"] == model_cfg.get("arch")
    extra = {k: v for k, v in model_cfg.items() if k != "arch" and v is not None} if same_arch else {}
    builder = models.MODELS.get(spec["arch"]) if hasattr(models, "MODELS") else getattr(models, spec["arch"], None)
    if builder is None:
        raise ValueError(f"unknown architecture {spec['arch']!r}")
    params = inspect.signature(builder).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        extra = {k: v for k, v in extra.items() if k in params}
    extra.update(spec.get("model_kwargs", {}))
    return extra


def cache_key(spec: Mapping[str, Any], cfg: Mapping[str, Any], data: Data) -> str:
    """The checkpoint-cache key :func:`get_model` uses: equal keys, one trained model (``--dry-run`` counts by it)."""
    spec = {k: v for k, v in spec.items() if k != "label"}  # the label names a model, it does not change it
    blob = json.dumps({"spec": spec, "model": cfg.get("model"), "train": cfg["train"], "data": cfg["data"],
                       "info": data.info()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
    path = Path(cache) / f"{spec['arch']}-{cache_key(spec, cfg, data)}.pt" if cache else None
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
