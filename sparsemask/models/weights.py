"""Reading sparsemask checkpoints into models: the one reader behind ``build(..., weights=)``,
``sparsemask.train.load_checkpoint`` and ``load_model``.

It lives with the builders (below ``train``) so that ``weights=`` loads a checkpoint without
the model layer reaching up into training. Files are read only with
``torch.load(weights_only=True)``: tensors and plain containers, never pickled code.

Named weights: ``weights="name"`` (no path separator, no such file) is looked up as
``<dir>/name.pt`` in the directory named by the ``SPARSEMASK_WEIGHTS`` environment variable
(default ``~/.cache/sparsemask/weights``); :func:`list_weights` lists them. Nothing is downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
from torch import nn

__all__ = ["CHECKPOINT_FORMAT", "MODEL_CONFIG_ATTR", "CheckpointMismatchError", "check_plain", "model_config_of",
           "read_checkpoint", "load_state", "describe", "weights_dir", "list_weights", "resolve_weights",
           "merge_config"]

CHECKPOINT_FORMAT = "sparsemask-checkpoint-v1"
# The attribute where build() records {"name", "kwargs"}, so a checkpoint can rebuild the model.
MODEL_CONFIG_ATTR = "sparsemask_build"
WEIGHTS_ENV = "SPARSEMASK_WEIGHTS"


class CheckpointMismatchError(ValueError):
    """A checkpoint does not belong to the model it is loaded into (other architecture or shapes)."""


def check_plain(value, where: str):
    """Raise TypeError unless ``value`` is made of str/int/float/bool/None/list/tuple/dict
    (str keys): what ``weights_only=True`` can load back."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            check_plain(v, where)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be str, got {k!r}")
            check_plain(v, where)
        return
    raise TypeError(f"{where}: only str/int/float/bool/None/list/tuple/dict can be stored in a checkpoint, "
                    f"got {type(value).__name__}")


def model_config_of(model: nn.Module, model_config: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """The {'name', 'kwargs'} a model was built from: explicit, or recorded by ``models.build``."""
    cfg = model_config if model_config is not None else getattr(model, MODEL_CONFIG_ATTR, None)
    if cfg is None:
        return None
    if isinstance(cfg, (tuple, list)) and len(cfg) == 2:
        cfg = {"name": cfg[0], "kwargs": dict(cfg[1])}
    if not isinstance(cfg, dict) or not isinstance(cfg.get("name"), str) or not isinstance(cfg.get("kwargs", {}), dict):
        raise TypeError(f"model_config must be (name, kwargs) or {{'name': str, 'kwargs': dict}}, got {cfg!r}")
    cfg = {"name": cfg["name"], "kwargs": dict(cfg.get("kwargs", {}))}
    check_plain(cfg, "model_config")
    return cfg


def read_checkpoint(path: Union[str, os.PathLike], map_location="cpu") -> Dict[str, Any]:
    """The checkpoint dict at ``path``, read with ``torch.load(weights_only=True)``.

    FileNotFoundError when missing; ValueError for a directory, a damaged file or one that is
    not a sparsemask checkpoint."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a directory; expected a checkpoint file (e.g. {path / 'model.pt'})")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # the unpickler raises many kinds for damaged or foreign files
        raise ValueError(f"{path}: cannot be read as a checkpoint with torch.load(weights_only=True) "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a sparsemask checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return ckpt


def describe(ckpt: Dict[str, Any]) -> str:
    """``name({kwargs})`` of the model a checkpoint was written for (its class when unknown)."""
    cfg = ckpt.get("model_config")
    return f"{cfg['name']}({cfg['kwargs']})" if cfg else ckpt.get("model_class", "an unknown model")


def load_state(path: Path, ckpt: Dict[str, Any], model: nn.Module, check_config: bool = True) -> None:
    """Load ``ckpt["model"]`` into ``model`` after checking it belongs there: the recorded build
    config (when both have one and ``check_config``), keys, shapes, and bool masks.
    :class:`CheckpointMismatchError` names the differences."""
    saved_cfg, own_cfg = ckpt.get("model_config"), getattr(model, MODEL_CONFIG_ATTR, None)
    if check_config and saved_cfg is not None and own_cfg is not None and model_config_of(model) != saved_cfg:
        raise CheckpointMismatchError(f"checkpoint {path} was written for {describe(ckpt)}, but the model is "
                                      f"{own_cfg['name']}({own_cfg['kwargs']})")
    if not isinstance(ckpt.get("model"), dict):
        raise ValueError(f"checkpoint {path} has no 'model' state_dict (damaged or written by something else)")
    state, own = ckpt["model"], model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    # A float mask would load as "!= 0" (all kept for any non-zero value): bool stays bool.
    dtypes = [f"{k}: checkpoint {state[k].dtype} vs model {own[k].dtype}" for k in own
              if k in state and own[k].dtype == torch.bool and getattr(state[k], "dtype", None) != torch.bool]
    if dtypes:
        raise CheckpointMismatchError(f"checkpoint {path}: mask buffers must be bool, got {'; '.join(dtypes[:5])}")
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"shape mismatches {shapes[:5]}{' ...' if len(shapes) > 5 else ''}")
        raise CheckpointMismatchError(f"checkpoint {path} belongs to another model ({describe(ckpt)}) than this "
                                      f"{type(model).__name__}: {'; '.join(parts)}")
    model.load_state_dict(state)


# ------------------------------------------------------------------ named weights

def weights_dir() -> Path:
    """The directory of named weights: ``$SPARSEMASK_WEIGHTS``, else ``~/.cache/sparsemask/weights``."""
    return Path(os.environ.get(WEIGHTS_ENV) or Path.home() / ".cache" / "sparsemask" / "weights")


def list_weights() -> List[str]:
    """Names of the checkpoints (``*.pt``) in :func:`weights_dir`, sorted ([] when it does not exist)."""
    folder = weights_dir()
    return sorted(p.stem for p in folder.glob("*.pt")) if folder.is_dir() else []


def resolve_weights(weights: Union[str, os.PathLike]) -> Path:
    """The checkpoint file for ``weights``: an existing path as given, else a bare name looked up
    as ``weights_dir()/<name>.pt``. FileNotFoundError lists the named weights there."""
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a checkpoint path or a name, got {type(weights).__name__}")
    path = Path(weights)
    if path.exists() or os.sep in str(weights) or path.suffix:
        return path  # read_checkpoint says what is wrong with it
    named = weights_dir() / f"{weights}.pt"
    if named.is_file():
        return named
    raise FileNotFoundError(f"weights {str(weights)!r}: no such file, and no {named} (named weights live in "
                            f"${WEIGHTS_ENV} or ~/.cache/sparsemask/weights; available: "
                            f"{', '.join(list_weights()) or 'none'})")


def merge_config(name: str, kwargs: Dict[str, Any], ckpt: Dict[str, Any], path: Path,
                 defaults: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The build kwargs for loading ``ckpt`` as architecture ``name``: the recorded ones, with
    those the caller gave checked against them (a recorded value, else the builder's entry in
    ``defaults``); any difference is a :class:`CheckpointMismatchError` naming it. A
    checkpoint without a recorded config takes ``kwargs`` as they are (the state_dict check
    still applies)."""
    saved = ckpt.get("model_config")
    if saved is None:
        return dict(kwargs)
    if saved["name"] != name:
        raise CheckpointMismatchError(f"weights {path} are for {describe(ckpt)}, not {name!r}")
    recorded, defaults = saved["kwargs"], defaults or {}
    missing = object()
    # Compare as a checkpoint stores them (tuples come back as lists).
    differ = [f"{k}={v!r} (checkpoint: {recorded.get(k, defaults.get(k, 'unset'))!r})" for k, v in kwargs.items()
              if _plain(v) != _plain(recorded.get(k, defaults.get(k, missing)))]
    if differ:
        raise CheckpointMismatchError(f"weights {path} were trained as {describe(ckpt)}; these arguments differ: "
                                      f"{'; '.join(differ)}. Leave them out to use the checkpoint's")
    return dict(recorded)


def _plain(v):
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v
