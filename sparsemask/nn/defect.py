"""``defect(model, keep, where=...)``: turn a standard model's conv layers into defective ones.

Placement (seeds 000/001): ``where="bottom"`` / ``"top"`` use the model's own table
``model.defect_placement = {"bottom": [names], "top": [...]}`` — where the authors' published
code put the masks (``reading="code"``, the default) — or ``model.defect_placement_text``,
the paper text's reading (``reading="text"``; a model without that table reads the same
either way). Every builder in :mod:`sparsemask.models` sets both; torchvision-style ResNets
(``conv1``, ``layer1``..``layer4``) get the ResNet rule; any other model gets the generic
rule (:func:`forward_convs`): its Conv2d layers in the order they run on the example input,
less 1x1 convs on 1x1 maps (squeeze-excitation gates: Linear layers on pooled vectors);
``"bottom"`` is the first ceil(n/2) of them, ``"top"`` the other floor(n/2). ``where`` also
takes a list of names — a conv's name, a module's name meaning every Conv2d inside it, or a
BatchNorm2d's name meaning a *BN-output mask* (the BN's output masked, no conv made
defective: the published DenseNet-121 / SENet-18 mask the BN in front of a conv).

Any Conv2d can be made defective: grouped/depthwise convs run the dense reference
``conv2d(...) * mask`` (the masked op computes groups=1 only; ``defect`` warns, naming them),
``padding="same"`` and reflect/replicate/circular padding run sparse after explicit padding.
An input of another feature size than the example input's is refused, or with
``mask_resize="tile"`` meets the masks tiled periodically (see :data:`MASK_RESIZE`).

Masks are drawn ``sampling="exact"`` by default (exactly ``int(n * (1 - keep))`` units
dropped per layer tensor, as the published code's ``Masks/genmask_*.py``), or
``"bernoulli"`` (independent units, the papers' text).

Each defective layer's feature size (H_out, W_out) comes from one forward pass of an
example input with forward hooks, which also find the BatchNorm2d fed directly by each
defective conv; that BN becomes a :class:`MaskedBatchNorm2d`, giving the defective unit
``act(mask * BN(conv(x)))`` of the published code.

``widen=n`` multiplies the output channels of the chosen convs by n (the seeds' "xn"),
following the channel dimension through the model's graph (torch.fx): every conv/linear
writing into the same channel space (e.g. a ResNet stage's residual stream) is widened
with it, and every BN, conv and linear reading from it is resized. Resized layers are
freshly initialised (widening is an architecture change, made before training).
"""
from __future__ import annotations

import difflib
import warnings
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..masks import MASK_KINDS, check_keep, check_sampling, random_mask
from .defective import MASK_RESIZE, REFERENCES, DefectiveConv2d, MaskedBatchNorm2d

__all__ = ["defect", "defective_layers", "masked_norms", "resolve_where", "forward_convs", "widen_channels",
           "READINGS"]

Where = Union[str, Sequence[str]]
# "code": where the authors' published code (tiangeluo/DefectiveCNN) masks; "text": the paper's text.
READINGS = ("code", "text")


# ---------------------------------------------------------------------------------------
# Placement

def _resnet_placement(model: nn.Module, reading: str = "code") -> Optional[dict]:
    """ResNet rule for torchvision-style ResNets: blocks 0 (stem conv) .. 4 (layer4).

    bottom = blocks 0, 1, 2; top = blocks 3, 4. For Bottleneck ResNets only the 3x3 convs
    (code and text agree). For basic-block ResNets the published code also masks the BN
    output of every projection shortcut (``downsample``) in the chosen stages, i.e. the
    shortcut conv is defective (``reading="code"``); the text counts only block convs.
    """
    if not all(hasattr(model, n) for n in ("conv1", "layer1", "layer2", "layer3", "layer4")):
        return None
    bottleneck = any(name.endswith("conv3") for name, _ in model.layer1.named_modules())
    with_shortcuts = reading == "code" and not bottleneck
    blocks = [["conv1"]]
    for i in range(1, 5):
        names = [f"layer{i}.{n}" for n, m in getattr(model, f"layer{i}").named_modules()
                 if isinstance(m, nn.Conv2d)
                 and (with_shortcuts or ("downsample" not in n and "shortcut" not in n))]
        blocks.append(names)
    if bottleneck:
        blocks = [[n for n in b if tuple(model.get_submodule(n).kernel_size) == (3, 3)] for b in blocks]
    return {"bottom": blocks[0] + blocks[1] + blocks[2], "top": blocks[3] + blocks[4]}


def _placement_table(model: nn.Module, reading: str) -> Optional[dict]:
    if reading == "text":
        table = getattr(model, "defect_placement_text", None)
        if table is not None:
            return table
    return getattr(model, "defect_placement", None) or _resnet_placement(model, reading)


def forward_convs(model: nn.Module, example_input: Optional[Tensor] = None) -> list[str]:
    """The generic placement's conv list: names of ``model``'s Conv2d layers in the order they
    first run on ``example_input`` (default ``zeros(model.input_shape)``), less 1x1 convs
    applied to 1x1 maps (squeeze-excitation gates, i.e. Linear layers on pooled vectors: no
    feature map to mask). ``where="bottom"`` is the first ceil(n/2), ``"top"`` the rest."""
    x = _example_input(model, example_input)
    order, handles = [], []

    def hook(name):
        def record(module, args, output):
            if name in order:
                return
            pointwise = tuple(module.kernel_size) == (1, 1)
            if not (pointwise and tuple(args[0].shape[-2:]) == (1, 1)):
                order.append(name)
        return record

    try:
        for n, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                handles.append(m.register_forward_hook(hook(n)))
        _run_eval(model, x)
    finally:
        for h in handles:
            h.remove()
    return order


def _generic_placement(model: nn.Module, example_input: Optional[Tensor]) -> dict:
    order = forward_convs(model, example_input)
    if not order:
        raise ValueError(f"defect: {type(model).__name__} runs no Conv2d on a feature map (the example input "
                         f"reaches none); nothing to make defective")
    half = (len(order) + 1) // 2
    return {"bottom": order[:half], "top": order[half:]}


def resolve_where(model: nn.Module, where: Where, reading: str = "code",
                  example_input: Optional[Tensor] = None) -> list[str]:
    """The names of the Conv2d layers (and BatchNorm2d layers: BN-output masks) ``where``
    selects, in model order. ``reading`` picks the placement table for "bottom"/"top";
    a model without one (and not a torchvision-style ResNet) gets the generic rule of
    :func:`forward_convs`, which runs ``example_input`` through the model."""
    if reading not in READINGS:
        raise ValueError(f"defect: reading must be one of {', '.join(READINGS)}, got {reading!r}")
    if isinstance(where, str):
        if where in ("bottom", "top"):
            placement = _placement_table(model, reading) or _generic_placement(model, example_input)
            if where not in placement:
                raise ValueError(f"defect: {type(model).__name__}'s defect_placement table has no {where!r} entry "
                                 f"(it has {', '.join(map(repr, placement))}); pass where=[layer names]")
            if not placement[where]:
                raise ValueError(f"defect: {type(model).__name__} has no conv layers for where={where!r} (the "
                                 f"generic rule splits {len(placement['bottom'])} conv(s) bottom-first); pass "
                                 "where=[layer names]")
            return list(placement[where])
        where = [where]
    if not isinstance(where, (list, tuple)) or not all(isinstance(w, str) for w in where) or not where:
        raise TypeError(f"defect: where must be 'bottom', 'top' or a non-empty list of layer names, got {where!r}")
    modules = dict(model.named_modules())
    chosen = []
    for name in where:
        if name not in modules:
            close = difflib.get_close_matches(name, list(modules), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"defect: {type(model).__name__} has no layer named {name!r}{hint}")
        module = modules[name]
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
            chosen.append(name)
            continue
        inside = [f"{name}.{n}" if name else n for n, m in module.named_modules() if isinstance(m, nn.Conv2d) and n]
        if not inside:
            raise ValueError(f"defect: layer {name!r} is a {type(module).__name__} with no Conv2d inside")
        chosen.extend(inside)
    order = {n: i for i, n in enumerate(modules)}
    return sorted(dict.fromkeys(chosen), key=order.__getitem__)


def defective_layers(model: nn.Module) -> list[str]:
    """Names of the DefectiveConv2d layers of ``model``, in model order."""
    return [n for n, m in model.named_modules() if isinstance(m, DefectiveConv2d)]


def masked_norms(model: nn.Module) -> list[str]:
    """Names of the BN-output masks of ``model`` (MaskedBatchNorm2d layers with a mask of
    their own, not fed by a DefectiveConv2d), in model order."""
    return [n for n, m in model.named_modules() if isinstance(m, MaskedBatchNorm2d) and m.source is None]


# ---------------------------------------------------------------------------------------
# Feature sizes and conv -> BN pairs from one forward pass

def _example_input(model: nn.Module, example_input: Optional[Tensor]) -> Tensor:
    if example_input is not None:
        if not isinstance(example_input, Tensor):
            raise TypeError(f"defect: example_input must be a Tensor, got {type(example_input).__name__}")
        return example_input
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError(f"defect: {type(model).__name__} has no input_shape attribute; pass example_input "
                         "(a tensor [1, C, H, W] of the size the model will see)")
    p = next(model.parameters(), None)
    return torch.zeros(tuple(shape), device=p.device if p is not None else None,
                       dtype=p.dtype if p is not None and p.is_floating_point() else None)


def _trace(model: nn.Module, names: list[str], x: Tensor) -> tuple[dict, dict]:
    """One forward pass: output size (H, W) of each named conv, input size (C, H, W) of each
    named BatchNorm2d, and the BN fed directly by each named conv."""
    modules = dict(model.named_modules())
    sizes, bn_of, produced = {}, {}, {}
    handles = []
    wanted = set(names)

    def conv_hook(name):
        def hook(module, args, output):
            sizes[name] = tuple(output.shape[-2:])
            produced[id(output)] = (name, output)  # keep the tensor alive so its id stays unique
        return hook

    def bn_hook(name):
        def hook(module, args):
            if name in wanted:
                sizes.setdefault(name, tuple(args[0].shape[1:]))
            hit = produced.get(id(args[0]))
            if hit is not None and hit[1] is args[0]:
                bn_of.setdefault(hit[0], name)
        return hook

    try:
        for n in names:
            if isinstance(modules[n], nn.Conv2d):
                handles.append(modules[n].register_forward_hook(conv_hook(n)))
        for n, m in modules.items():
            if type(m) is nn.BatchNorm2d:
                handles.append(m.register_forward_pre_hook(bn_hook(n)))
        _run_eval(model, x)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in sizes]
    if missing:
        raise ValueError(f"defect: layers {missing} did not run on the example input; cannot size their masks")
    return sizes, bn_of


def _run_eval(model: nn.Module, x: Tensor) -> None:
    training = model.training
    model.eval()  # running statistics must not move
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(training)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


# ---------------------------------------------------------------------------------------
# defect()

def defect(model: nn.Module, keep: float, where: Where = "bottom", kind: str = "neuron", widen: int = 1,
           seed: Optional[int] = None, example_input: Optional[Tensor] = None, *, reference: str = "sparse",
           generator: Optional[torch.Generator] = None, sampling: str = "exact",
           reading: str = "code", mask_resize: str = "error") -> nn.Module:
    """Replace the conv layers ``where`` selects by :class:`DefectiveConv2d` (in place; returns ``model``).

    Args:
        model: any nn.Module with Conv2d layers (grouped/depthwise ones run dense, with a warning).
        keep: keep probability p in [0, 1] of each neuron (seed 000's drop ratio is 1 - p).
        where: ``"bottom"`` | ``"top"`` (the model's placement table, the ResNet rule or the
            generic rule: first / second half of the convs in forward order) | list of layer names
            (a BatchNorm2d's name: mask that BN's output, a :class:`MaskedBatchNorm2d` with a
            mask of its own, sized [C, H, W] by the BN's input).
        kind: ``"neuron"`` (the method) | ``"channel"`` ("DC") | ``"shared"`` ("SM").
        widen: multiply the chosen layers' output channels by this int (the seeds' "xn").
        seed / generator: masks are drawn layer by layer, in model order, from this
            generator (or one seeded with ``seed``; neither: torch's global generator).
        example_input: a tensor [1, C, H, W] of the size the model sees; default
            ``zeros(model.input_shape)`` (set by the builders). Masks are drawn for its size.
        mask_resize: ``"error"`` (an input of another size is refused, naming the sizes) or
            ``"tile"`` (the masks repeated periodically and cut to the new feature sizes).
        reference: ``"sparse"`` (sparse conv, BN sees zeros at the defective positions) or
            ``"paper"`` (dense conv, BN on dense values, then mask: the official code's order).
        sampling: ``"exact"`` (exactly ``int(n * (1 - keep))`` units dropped per layer tensor,
            the published code's masks) or ``"bernoulli"`` (independent units).
        reading: ``"code"`` (where the published code masks; e.g. ResNet-18's projection
            shortcuts) or ``"text"`` (the paper's text) — picks the placement table for
            ``where="bottom"/"top"``; no effect on explicit names.

    A BatchNorm2d fed directly by a chosen conv becomes a :class:`MaskedBatchNorm2d`, so the
    unit computes ``act(mask * BN(conv(x)))``. Calling ``defect`` again on other layers
    (e.g. bottom with one p, top with another) composes.
    """
    keep = check_keep(keep)
    if kind not in MASK_KINDS:
        raise ValueError(f"defect: unknown kind {kind!r}; expected one of {', '.join(MASK_KINDS)}")
    if reference not in REFERENCES:
        raise ValueError(f"defect: reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    try:
        check_sampling(sampling)
    except ValueError as exc:
        raise ValueError(f"defect: {exc}") from None
    if isinstance(widen, bool) or not isinstance(widen, int) or widen < 1:
        raise ValueError(f"defect: widen must be a positive int, got {widen!r}")
    if seed is not None and generator is not None:
        raise ValueError("defect: pass either seed or generator, not both")
    if mask_resize not in MASK_RESIZE:
        raise ValueError(f"defect: mask_resize must be one of {', '.join(MASK_RESIZE)}, got {mask_resize!r}")
    names = resolve_where(model, where, reading, example_input)
    modules = dict(model.named_modules())
    for n in names:
        m = modules[n]
        if isinstance(m, (DefectiveConv2d, MaskedBatchNorm2d)):
            raise ValueError(f"defect: layer {n!r} is already {'defective' if isinstance(m, nn.Conv2d) else 'masked'}")
    convs = [n for n in names if isinstance(modules[n], nn.Conv2d)]
    if widen > 1 and not convs:
        raise ValueError(f"defect: widen multiplies the output channels of defective convs, but where={where!r} "
                         "selects no conv (only BN-output masks)")
    if widen > 1:
        widen_channels(model, convs, widen, example_input=example_input)
    x = _example_input(model, example_input)
    sizes, bn_of = _trace(model, names, x)
    doubled = sorted(set(bn_of[c] for c in convs if c in bn_of) & set(names))
    if doubled:
        raise ValueError(f"defect: {doubled} would be masked twice: each is fed by a chosen conv, whose mask it "
                         "applies already; name either the conv or the BN")
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    for n in names:  # model order: the masks come from the generator in this order
        module = model.get_submodule(n)
        if isinstance(module, nn.BatchNorm2d):
            mask = random_mask(*sizes[n], keep, kind, generator=generator, sampling=sampling)
            bn = MaskedBatchNorm2d.from_batchnorm(module, mask=mask, keep=keep, kind=kind, sampling=sampling,
                                                  mask_resize=mask_resize)
            bn.layer_name = n  # for error messages
            _set_module(model, n, bn)
            continue
        conv = DefectiveConv2d.from_conv2d(module, keep=keep, feature_size=sizes[n], kind=kind,
                                           generator=generator, sampling=sampling, mask_resize=mask_resize)
        conv.layer_name = n
        _set_module(model, n, conv)
        if n in bn_of:
            _set_module(model, bn_of[n], MaskedBatchNorm2d.from_batchnorm(model.get_submodule(bn_of[n]), conv))
            conv.defer_mask = reference == "paper"
    dense = [f"{n} ({model.get_submodule(n).dense_reason})" for n in convs
             if model.get_submodule(n).dense_reason is not None]
    if dense:
        warnings.warn(f"defect: {len(dense)} defective layer(s) run the dense reference conv2d(...) * mask, "
                      f"correct but not sparse (the masked op computes groups=1 convolutions only): "
                      f"{', '.join(dense)}", stacklevel=2)
    return model


# ---------------------------------------------------------------------------------------
# widen: follow the channel dimension through the fx graph

_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Identity,
                 nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d,
                 nn.Flatten)
_CONCAT = {torch.cat, torch.concat, torch.stack}


class _Groups:
    """Union-find over channel spaces."""

    def __init__(self):
        self.parent = {}

    def find(self, a):
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a, b):
        self.parent[self.find(a)] = self.find(b)


def widen_channels(model: nn.Module, names: Iterable[str], factor: int,
                   example_input: Optional[Tensor] = None) -> nn.Module:
    """Multiply the output channels of the convs ``names`` by ``factor`` (in place).

    Every Conv2d/Linear writing into the same channel space (joined by additions or
    multiplications, e.g. residual streams and SE gates) is widened too; every BatchNorm2d,
    Conv2d and Linear reading from it is resized. Resized layers are re-initialised.
    Models that concatenate channels (DenseNet) are not supported (clear error).
    """
    import torch.fx as fx

    names = list(names)
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many types; the user needs to know why widen failed
        raise ValueError(f"defect: widen needs a torch.fx-traceable model; tracing {type(model).__name__} "
                         f"failed: {exc}") from exc
    modules = dict(model.named_modules())
    groups = _Groups()
    space = {}  # node -> channel space id (None: no channel dim we track)
    producers, readers, norms = {}, {}, {}  # module name -> space
    for node in graph.nodes:
        ins = [space.get(a) for a in node.all_input_nodes if space.get(a) is not None]
        if node.op == "placeholder":
            space[node] = ("input",)
        elif node.op == "call_module":
            m = modules[node.target]
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if ins:
                    readers[node.target] = ins[0]
                space[node] = ("out", node.target)
                producers[node.target] = space[node]
            elif isinstance(m, nn.BatchNorm2d):
                if ins:
                    norms[node.target] = ins[0]
                space[node] = ins[0] if ins else None
            elif isinstance(m, _PASS_MODULES):
                space[node] = ins[0] if ins else None
            else:
                raise ValueError(f"defect: widen cannot follow channels through {node.target!r} "
                                 f"({type(m).__name__})")
        elif node.op in ("call_function", "call_method"):
            if node.target in _CONCAT or node.target in ("cat",):
                raise ValueError(f"defect: widen is not supported for {type(model).__name__}: it concatenates "
                                 "channels (torch.cat)")
            if node.target in ("size", "dim") or node.target is getattr:
                space[node] = None
                continue
            for a in ins[1:]:
                groups.union(a, ins[0])
            space[node] = ins[0] if ins else None
        else:  # get_attr (buffers such as Normalize's mean), output
            space[node] = None
    wide = {groups.find(producers[n]) for n in names}
    if groups.find(("input",)) in wide:
        raise ValueError("defect: widen would change the model's input channels")
    for name, sp in producers.items():
        m = modules[name]
        grow_out = groups.find(sp) in wide
        grow_in = name in readers and groups.find(readers[name]) in wide
        if grow_out or grow_in:
            _set_module(model, name, _resized(m, factor if grow_in else 1, factor if grow_out else 1))
    for name, sp in norms.items():
        if groups.find(sp) in wide:
            bn = modules[name]
            _set_module(model, name, type(bn)(bn.num_features * factor, bn.eps, bn.momentum, bn.affine,
                                              bn.track_running_stats, device=_device(bn), dtype=_dtype(bn)))
    return model


def _device(m: nn.Module):
    t = next(iter(m.parameters()), None)
    t = next(iter(m.buffers()), None) if t is None else t
    return t.device if t is not None else None


def _dtype(m: nn.Module):
    t = next(iter(m.parameters()), None)
    return t.dtype if t is not None else None


def _resized(m: nn.Module, in_factor: int, out_factor: int) -> nn.Module:
    kw = dict(device=m.weight.device, dtype=m.weight.dtype)
    if isinstance(m, nn.Linear):
        return nn.Linear(m.in_features * in_factor, m.out_features * out_factor, m.bias is not None, **kw)
    if m.groups != 1:
        raise ValueError(f"defect: widen cannot resize a grouped convolution (groups={m.groups})")
    return nn.Conv2d(m.in_channels * in_factor, m.out_channels * out_factor, m.kernel_size, m.stride, m.padding,
                     m.dilation, 1, m.bias is not None, m.padding_mode, **kw)
