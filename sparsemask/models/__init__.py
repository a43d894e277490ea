"""Model builders for every architecture in the seeds, torchvision style.

Every builder has the signature ``(num_classes=10, in_channels=3, input_size=32,
defective=None, **kw)`` with ``defective = dict(keep=..., where="bottom"|"top"|[names],
kind="neuron"|"channel"|"shared", widen=1, seed=..., reference="sparse"|"paper")``.
Inputs are in [0, 1]; normalisation is the model's first module.

The registry, torchvision/timm style: :func:`list_models` names the builders of
:data:`MODELS`; ``build(name, weights=None, **kw)`` (alias :func:`create_model`) builds one and,
with ``weights=`` (a checkpoint path or a named weight, see :mod:`.weights`), loads a
checkpoint written by ``sparsemask train`` / ``sparsemask.train`` into it after checking that
the checkpoint is for this architecture and these arguments.
"""
from __future__ import annotations

import fnmatch
import inspect
import os
from typing import Callable, List, Optional, Union

from torch import nn

from .common import Normalize
from .densenet import DenseNet, densenet121
from .lenet import CWMnist, LeNet5, cw_mnist, lenet5
from .resnet import CifarResNet, ResNet, dc_widths, resnet18, resnet18_dc, resnet18_x2, resnet32x4, resnet50
from .senet import SENet, senet18
from .vgg import VGG, vgg19
from . import weights as checkpoint_files  # not `weights`: build's argument of that name would hide it
from .weights import MODEL_CONFIG_ATTR, CheckpointMismatchError, list_weights, weights_dir
from .wide_resnet import WideResNet, wide_resnet, wrn_28_10, wrn_32_4

__all__ = ["MODELS", "build", "create_model", "list_models", "list_weights", "weights_dir", "CheckpointMismatchError",
           "MODEL_CONFIG_ATTR", "MODEL_METADATA_ATTR", "Normalize", "resnet18", "resnet18_x2", "resnet18_dc", "dc_widths",
           "resnet50", "resnet32x4", "CifarResNet", "densenet121", "senet18", "vgg19",
           "wide_resnet", "wrn_32_4", "wrn_28_10", "lenet5", "cw_mnist", "ResNet", "DenseNet", "SENet", "VGG",
           "WideResNet", "LeNet5", "CWMnist"]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet18_x2": resnet18_x2,
    "resnet18_dc": resnet18_dc,
    "resnet50": resnet50,
    "resnet32x4": resnet32x4,
    "densenet121": densenet121,
    "senet18": senet18,
    "vgg19": vgg19,
    "wide_resnet": wide_resnet,
    "wrn_32_4": wrn_32_4,
    "wrn_28_10": wrn_28_10,
    "lenet5": lenet5,
    "cw_mnist": cw_mnist,
}


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Names of the registered architectures (:data:`MODELS`), sorted; ``pattern`` filters them
    with shell wildcards (``list_models("resnet*")``)."""
    names = sorted(MODELS)
    return names if pattern is None else fnmatch.filter(names, pattern)


def build(name: Optional[str] = None, weights: Optional[Union[str, os.PathLike]] = None, **kwargs) -> nn.Module:
    """``MODELS[name](**kwargs)``, with a clear error for unknown names and arguments.

    The model remembers ``{"name", "kwargs"}`` (attribute ``MODEL_CONFIG_ATTR``) so that
    checkpoints of it can rebuild it (``sparsemask.train.load_model``).

    ``weights``: a checkpoint path, or the name of one in :func:`weights_dir`, to load (read with
    ``torch.load(weights_only=True)``). The builder arguments are the checkpoint's recorded
    ones (``name`` too, when omitted); any given here must equal them
    (:class:`CheckpointMismatchError` otherwise, as for a checkpoint of another architecture).
    The model is returned in eval mode, with the checkpoint's metadata attached
    (``sparsemask.train.checkpoint_metadata(model)``). Also ``create_model`` and
    ``sparsemask.train.build_model``.
    """
    if weights is not None:
        return _build_with_weights(name, weights, kwargs)
    _check_args(name, kwargs)
    model = MODELS[name](**kwargs)
    setattr(model, MODEL_CONFIG_ATTR, {"name": name, "kwargs": dict(kwargs)})
    return model


def _check_args(name, kwargs: dict):
    """The builder's signature parameters, after checking ``name`` and ``kwargs``."""
    if name is None:
        raise ValueError(f"build needs an architecture name (one of {', '.join(MODELS)}) or weights= to take it from")
    if name not in MODELS:
        raise ValueError(f"unknown architecture {name!r}; expected one of {', '.join(MODELS)}")
    params = inspect.signature(MODELS[name]).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise ValueError(f"{name} does not take {', '.join(map(repr, unknown))}; it takes {', '.join(params)}")
    return params


#: timm's name for :func:`build`.
create_model = build

# Where build(weights=) leaves the checkpoint's metadata (sparsemask.train.checkpoint_metadata reads it).
MODEL_METADATA_ATTR = "sparsemask_metadata"


def _build_with_weights(name: Optional[str], weights, kwargs: dict) -> nn.Module:
    w = checkpoint_files
    path = w.resolve_weights(weights)
    ckpt = w.read_checkpoint(path)  # read once: config, state and metadata come from this dict
    saved = ckpt.get("model_config")
    if name is None:
        if saved is None:
            raise ValueError(f"{path}: the checkpoint records no architecture ({ckpt.get('model_class')}); "
                             f"pass the name: build('resnet18', weights=...) or load_checkpoint(path, model)")
        name = saved["name"]
    params = _check_args(name, kwargs)
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    model = build(name, **w.merge_config(name, kwargs, ckpt, path, defaults))
    w.load_state(path, ckpt, model)
    setattr(model, MODEL_METADATA_ATTR, dict(ckpt.get("metadata") or {}))
    return model.eval()
