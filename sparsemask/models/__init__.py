"""Model builders for every architecture in the seeds, torchvision style.

Every builder has the signature ``(num_classes=10, in_channels=3, input_size=32,
defective=None, **kw)`` with ``defective = dict(keep=..., where="bottom"|"top"|[names],
kind="neuron"|"channel"|"shared", widen=1, seed=..., reference="sparse"|"paper")``.
Inputs are in [0, 1]; normalisation is the model's first module. ``build(name, **kw)``
looks a builder up in :data:`MODELS`.
"""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from .common import Normalize
from .densenet import DenseNet, densenet121
from .lenet import CWMnist, LeNet5, cw_mnist, lenet5
from .resnet import CifarResNet, ResNet, dc_widths, resnet18, resnet18_dc, resnet18_x2, resnet32x4, resnet50
from .senet import SENet, senet18
from .vgg import VGG, vgg19
from .wide_resnet import WideResNet, wide_resnet, wrn_28_10, wrn_32_4

__all__ = ["MODELS", "build", "MODEL_CONFIG_ATTR", "Normalize", "resnet18", "resnet18_x2", "resnet18_dc", "dc_widths",
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


# The attribute where build() records (name, kwargs), so a checkpoint can rebuild the model
# (sparsemask.train.save_checkpoint stores it; load_model reads it back).
MODEL_CONFIG_ATTR = "sparsemask_build"


def build(name: str, **kwargs) -> nn.Module:
    """``MODELS[name](**kwargs)``, with a clear error for unknown names. The model remembers
    ``{"name", "kwargs"}`` (attribute ``MODEL_CONFIG_ATTR``) so that checkpoints of it can
    rebuild it (``sparsemask.train.load_model``); also available as
    ``sparsemask.train.build_model``."""
    if name not in MODELS:
        raise ValueError(f"unknown architecture {name!r}; expected one of {', '.join(MODELS)}")
    params = inspect.signature(MODELS[name]).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise ValueError(f"{name} does not take {', '.join(map(repr, unknown))}; it takes {', '.join(params)}")
    model = MODELS[name](**kwargs)
    setattr(model, MODEL_CONFIG_ATTR, {"name": name, "kwargs": dict(kwargs)})
    return model
