"""Defective convolutional layers (seeds 000/001): output neurons at fixed random positions are zero.

``DefectiveConv2d``     a Conv2d whose mask is a persistent bool buffer; forward runs
                        :func:`sparsemask.masked_conv2d`, which computes the kept neurons only.
``MaskedBatchNorm2d``   a BatchNorm2d that multiplies its output by the mask of the
                        defective conv feeding it: the defective unit of the published code is
                        ``act(mask * BN(conv(x)))`` — BN adds its shift ``beta - gamma*mu/sigma``
                        everywhere, so without the second mask the defective neurons would not
                        stay zero after BN. Or, with a mask of its own (no source conv), a
                        *BN-output mask*: the published DenseNet-121 and SENet-18 mask the BN
                        output in front of a conv (its input), where no conv output is masked.

BN statistics. In the default order the convolution is sparse, so BN's batch mean/variance
are taken over a tensor that is exactly 0 at the defective positions. The official code
computed the dense convolution, ran BN on the dense values and masked afterwards
(``reference="paper"``): its statistics include the values of the defective neurons. The
two orders give identical eval-mode outputs with the same running statistics *when the
conv's output reaches nothing but that BN* (BN is an affine map per channel, and the mask
zeroes the defective positions either way); in training mode the normalisation constants,
hence the learned models, differ slightly. Where the conv's raw output also goes elsewhere
(the text reading of DenseNet-121: the stem's output is both BN'd and concatenated), the
paper order carries the dense values there and eval outputs differ too.
Use ``reference="paper"`` (``DefectiveConv2d.defer_mask = True``) for parity runs.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..masks import MASK_KINDS, check_keep, check_sampling, random_mask
from .. import dispatch
from ..ops import conv_output_size, defective_block, defective_unit, masked_batch_norm_act, masked_conv2d

__all__ = ["DefectiveConv2d", "MaskedBatchNorm2d", "REFERENCES", "MASK_RESIZE", "conv_bn_act", "basic_block"]

IntPair = Union[int, Sequence[int]]
REFERENCES = ("sparse", "paper")
# What a layer does with an input whose feature size is not the one its mask was drawn for:
# "error" refuses (naming the sizes), "tile" repeats the mask periodically from the top-left
# corner and cuts it to the size, m'[c, y, x] = m[c, y mod H0, x mod W0] (docs/models.md).
MASK_RESIZE = ("error", "tile")


def _check_mask_resize(value, who: str) -> str:
    if value not in MASK_RESIZE:
        raise ValueError(f"{who}: mask_resize must be one of {', '.join(MASK_RESIZE)}, got {value!r}")
    return value


def _fitted_mask(module: nn.Module, mask: Tensor, size: tuple, who: str) -> Tensor:
    """``mask`` [C, H0, W0] for a feature map of spatial ``size`` under ``module.mask_resize``.

    Tiled masks are cached on the module per size and per mask storage/version, so the op's
    plan cache (keyed by mask storage and version) hits from the second call on."""
    size = tuple(int(v) for v in size)
    if size == tuple(mask.shape[1:]):
        return mask
    if module.mask_resize == "error":
        raise ValueError(
            f"{who}: this layer's mask is drawn for feature size {tuple(mask.shape[1:])} but the input "
            f"gives {size}; rebuild the model for the new size (defect(..., example_input=<an input of that "
            "size>)) or let the layer tile its mask (mask_resize='tile', docs/models.md)")
    key = (mask.data_ptr(), mask.device, mask._version)
    if module._tiles_key != key:
        module._tiles_key, module._tiles = key, {}
    tiled = module._tiles.get(size)
    if tiled is None:
        h0, w0 = mask.shape[1:]
        reps = (1, -(-size[0] // h0), -(-size[1] // w0))
        tiled = mask.repeat(*reps)[:, :size[0], :size[1]].contiguous()
        module._tiles[size] = tiled
    return tiled


def _check_feature_size(feature_size) -> tuple[int, int]:
    if isinstance(feature_size, int):
        feature_size = (feature_size, feature_size)
    try:
        h, w = (int(v) for v in feature_size)
    except (TypeError, ValueError):
        raise TypeError(f"feature_size must be an int or a pair (H_out, W_out), got {feature_size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"feature_size must be positive, got {(h, w)}")
    return h, w


class DefectiveConv2d(nn.Conv2d):
    """Conv2d with fixed defective output neurons, computed sparsely.

    ``y = conv2d(x, weight, bias) * mask`` with ``mask`` a bool buffer [C_out, H_out, W_out]
    drawn once by :func:`sparsemask.random_mask` (``kind`` = ``neuron`` | ``channel`` |
    ``shared``, keep probability ``keep``) and saved in the state_dict.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as nn.Conv2d
            with ``groups``, ``padding`` (int, pair, ``"same"``, ``"valid"``) and ``padding_mode``
            (``"zeros"``, ``"reflect"``, ``"replicate"``, ``"circular"``) as nn.Conv2d. Non-zero
            padding modes and asymmetric ``"same"`` padding pad the input explicitly, then run the
            sparse op; ``groups > 1`` (grouped/depthwise convs) runs the dense reference
            ``conv2d(...) * mask`` — still a defective layer, but not sparse (:attr:`dense_reason`).
        keep: probability a neuron is kept (the seeds' p; seed 000's drop ratio is 1 - p).
        kind: mask kind, see :data:`sparsemask.MASK_KINDS`.
        feature_size: (H_out, W_out) of this layer's output in the model (int for square).
        seed / generator: where the mask comes from (neither: torch's global generator).
        sampling: ``"bernoulli"`` (independent units) or ``"exact"`` (a fixed count of
            dropped units, the published code; :func:`sparsemask.defect` defaults to it).
        mask_resize: ``"error"`` (default: an input of another feature size is refused) or
            ``"tile"`` (the mask repeated periodically and cut to that size), see :data:`MASK_RESIZE`.

    Shapes: input [N, C_in, H, W] -> output [N, C_out, H_out, W_out], exactly 0 where
    ``mask`` is False (unless ``defer_mask``: then the dense output, masked later by the
    :class:`MaskedBatchNorm2d` that follows — the official code's order).

    The mask's plan (index lists) is cached by the op per mask storage and version, so the
    module keeps ONE mask tensor for its life and updates it in place (``load_state_dict``
    copies into it: one plan rebuild, then cache hits).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, dilation: IntPair = 1, bias: bool = True, *, keep: float,
                 kind: str = "neuron", feature_size, seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None, groups: int = 1, padding_mode: str = "zeros",
                 device=None, dtype=None, sampling: str = "bernoulli", mask_resize: str = "error") -> None:
        if in_channels == 0:  # masked_conv2d refuses C_in = 0 (see ops._validate); say so at build time
            raise ValueError("DefectiveConv2d: in_channels must be >= 1, got 0")
        keep = check_keep(keep)
        if kind not in MASK_KINDS:
            raise ValueError(f"DefectiveConv2d: unknown kind {kind!r}; expected one of {', '.join(MASK_KINDS)}")
        feature_size = _check_feature_size(feature_size)
        check_sampling(sampling)
        _check_mask_resize(mask_resize, "DefectiveConv2d")
        # nn.Conv2d checks groups, padding strings and padding_mode (its errors name them).
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups=groups, bias=bias,
                         padding_mode=padding_mode, device=device, dtype=dtype)
        self._op_padding, self._pre_pad = self._sparse_padding()
        self._tiles_key, self._tiles = None, {}
        self.mask_resize = mask_resize
        self.keep = keep
        self.kind = kind
        self.sampling = sampling
        self.feature_size = feature_size
        # True when a MaskedBatchNorm2d downstream applies the mask (reference="paper").
        self.defer_mask = False
        mask = random_mask(out_channels, *feature_size, keep, kind, seed=seed, generator=generator,
                           device=self.weight.device, sampling=sampling)
        self.register_buffer("mask", mask, persistent=True)

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, *, keep: float, feature_size, kind: str = "neuron",
                    seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
                    sampling: str = "bernoulli", mask_resize: str = "error") -> "DefectiveConv2d":
        """A DefectiveConv2d with ``conv``'s hyper-parameters and a copy of its weights."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_conv2d: conv must be an nn.Conv2d, got {type(conv).__name__}")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                  bias=conv.bias is not None, keep=keep, kind=kind, feature_size=feature_size, seed=seed,
                  generator=generator, groups=conv.groups, padding_mode=conv.padding_mode, device=conv.weight.device,
                  dtype=conv.weight.dtype, sampling=sampling, mask_resize=mask_resize)
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        new.train(conv.training)
        return new

    def kept_fraction(self) -> float:
        """Fraction of kept neurons in the mask."""
        return float(self.mask.float().mean())

    def _sparse_padding(self) -> tuple[Optional[tuple], bool]:
        """(padding for masked_conv2d, whether the input is padded first), or (None, False)
        where the masked op cannot run this conv (groups > 1): the dense reference runs."""
        if self.groups != 1:
            return None, False
        if self.padding_mode != "zeros":
            return (0, 0), True  # F.pad with the mode, then no padding: the conv is unchanged
        if isinstance(self.padding, str):  # "valid", or "same" (stride 1): symmetric where the total is even
            total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            if self.padding == "valid":
                return (0, 0), False
            if all(t % 2 == 0 for t in total):
                return tuple(t // 2 for t in total), False
            return (0, 0), True  # asymmetric "same": nn.Conv2d's own zero padding, made explicit
        return tuple(self.padding), False

    @property
    def dense_reason(self) -> Optional[str]:
        """Why this layer runs the dense reference ``conv2d(...) * mask`` instead of the sparse
        op (None when it runs sparse): the masked op computes groups=1 convolutions only."""
        return None if self._op_padding is not None else f"groups={self.groups}"

    def output_size(self, input_size) -> tuple[int, int]:
        """(H_out, W_out) of this conv for an input of spatial size ``input_size`` (H, W)."""
        h, w = (int(v) for v in input_size)
        if self._op_padding is None or self._pre_pad:
            left, right, top, bottom = self._reversed_padding_repeated_twice
            return conv_output_size((h + top + bottom, w + left + right), self.kernel_size, self.stride, (0, 0),
                                    self.dilation)
        return conv_output_size((h, w), self.kernel_size, self.stride, self._op_padding, self.dilation)

    def mask_for(self, input: Tensor) -> Tensor:
        """The mask for ``input`` [N, C_in, H, W]: ``mask`` at the feature size it was drawn
        for; at another size refused or tiled, as :attr:`mask_resize` says."""
        return _fitted_mask(self, self.mask, self.output_size(input.shape[-2:]), self._who())

    def _native(self, input: Tensor) -> bool:
        """Whether ``input`` gives the feature size the mask was drawn for."""
        return tuple(self.output_size(input.shape[-2:])) == tuple(self.mask.shape[1:])

    def _who(self) -> str:
        name = getattr(self, "layer_name", "")
        return f"DefectiveConv2d {name!r}" if name else "DefectiveConv2d"

    def forward(self, input: Tensor) -> Tensor:
        mask = self.mask_for(input) if input.dim() == 4 else self.mask
        if self.defer_mask:
            return self._conv_forward(input, self.weight, self.bias)
        if self._op_padding is None:  # grouped: the dense reference (see dense_reason)
            return self._conv_forward(input, self.weight, self.bias) * mask
        if self._pre_pad:
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=mode)
        return masked_conv2d(input, self.weight, self.bias, mask, self.stride, self._op_padding, self.dilation)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # copy_ would turn a float mask into bool by "!= 0": 0.5 everywhere loads as all-kept.
        mask = state_dict.get(prefix + "mask")
        if isinstance(mask, Tensor) and mask.dtype != torch.bool:
            error_msgs.append(f"{prefix}mask must be a torch.bool tensor (the defective layer's mask), got "
                              f"{mask.dtype}")
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        s = (f"{super().extra_repr()}, keep={self.keep:g}, kind={self.kind}, sampling={self.sampling}, "
             f"kept={self.kept_fraction():.3f}")
        if self.defer_mask:
            s += ", reference=paper"
        if self.dense_reason is not None:
            s += f", dense ({self.dense_reason})"
        if self.mask_resize != "error":
            s += f", mask_resize={self.mask_resize}"
        return s


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d followed by a fixed mask: ``BN(x) * mask``.

    With ``source`` (a :class:`DefectiveConv2d`): the mask of the defective conv that feeds
    this BN, read from ``source`` at every call, so it follows that module through
    ``.to()``, ``load_state_dict`` and ``deepcopy`` and is stored once; same parameters,
    buffers and state_dict keys as the BatchNorm2d it replaces.

    Without ``source``: a *BN-output mask* of its own, ``mask`` bool [C, H, W], kept as a
    persistent buffer (state_dict key ``<name>.mask``) — the published code's mask on a BN
    output that feeds a conv (DenseNet-121's 1x1 convs, SENet-18's pre-activation convs).
    ``keep``, ``kind`` and ``sampling`` only describe how that mask was drawn.

    Shapes: [N, C, H, W] -> [N, C, H, W] with C, H, W matching the mask.
    """

    def __init__(self, num_features: int, source: Optional[DefectiveConv2d] = None, *,
                 mask: Optional[Tensor] = None, keep: Optional[float] = None, kind: str = "neuron",
                 sampling: str = "bernoulli", mask_resize: str = "error", **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        # Own masks only; with a source the source's rule applies (one mask, one rule).
        self.mask_resize = _check_mask_resize(mask_resize, "MaskedBatchNorm2d")
        self._tiles_key, self._tiles = None, {}
        if (source is None) == (mask is None):
            raise ValueError("MaskedBatchNorm2d: pass exactly one of source (a DefectiveConv2d) or mask "
                             "(a bool tensor [C, H, W])")
        if source is not None:
            if not isinstance(source, DefectiveConv2d):
                raise TypeError(f"MaskedBatchNorm2d: source must be a DefectiveConv2d, got {type(source).__name__}")
            if source.out_channels != num_features:
                raise ValueError(f"MaskedBatchNorm2d: num_features={num_features} must equal the source conv's "
                                 f"out_channels={source.out_channels}")
            # A tuple keeps the conv out of this module's children (no duplicate parameters or
            # state_dict entries) while deepcopy still maps it to the copied conv.
            self._source = (source,)
            return
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 3 \
                or mask.shape[0] != num_features:
            raise ValueError(f"MaskedBatchNorm2d: mask must be a bool tensor [{num_features}, H, W], got "
                             f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}")
        self._source = (None,)
        self.keep = float(mask.float().mean()) if keep is None else check_keep(keep)
        self.kind = kind
        self.sampling = check_sampling(sampling)
        self.register_buffer("mask", mask.contiguous(), persistent=True)

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d, source: Optional[DefectiveConv2d] = None, *,
                       mask: Optional[Tensor] = None, keep: Optional[float] = None, kind: str = "neuron",
                       sampling: str = "bernoulli", mask_resize: str = "error") -> "MaskedBatchNorm2d":
        """Wrap ``bn``'s parameters and running statistics (shared, not copied), masked by
        ``source``'s mask or by ``mask`` [C, H, W] of its own."""
        if not isinstance(bn, nn.BatchNorm2d):
            raise TypeError(f"from_batchnorm: bn must be an nn.BatchNorm2d, got {type(bn).__name__}")
        extra = {} if source is not None else dict(keep=keep, kind=kind, sampling=sampling, mask_resize=mask_resize)
        if mask is not None:  # (with a source too: refused by __init__)
            like = bn.running_mean if bn.running_mean is not None else bn.weight
            extra["mask"] = mask.to(like.device) if like is not None else mask
        new = cls(bn.num_features, source, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                  track_running_stats=bn.track_running_stats, device="meta", **extra)
        # Take over bn's tensors as they are (device, dtype, values).
        new.weight, new.bias = bn.weight, bn.bias
        new.running_mean, new.running_var, new.num_batches_tracked = bn.running_mean, bn.running_var, \
            bn.num_batches_tracked
        new.train(bn.training)
        return new

    @property
    def source(self) -> Optional[DefectiveConv2d]:
        """The DefectiveConv2d whose mask this BN applies, or None for a mask of its own."""
        return self._source[0]

    def _mask(self, input: Tensor) -> Tensor:
        source = self._source[0]
        if source is not None:  # the conv's output is this BN's input: same spatial size
            return _fitted_mask(source, source.mask, input.shape[-2:], source._who())
        name = getattr(self, "layer_name", "")
        return _fitted_mask(self, self.mask, input.shape[-2:],
                            f"MaskedBatchNorm2d {name!r}" if name else "MaskedBatchNorm2d")

    def forward(self, input: Tensor) -> Tensor:
        mask = self._mask(input)
        # The published composite under the "dense" backend (the reference), and wherever the
        # fused kernel does not apply (cumulative-average momentum, non-CPU, low precision).
        if self.momentum is None or not dispatch.fused_bn(input):
            return super().forward(input) * mask
        self._check_input_dim(input)
        batch_stats, running_mean, running_var = self._step_statistics()
        # One pass for the statistics, one for normalise * mask (two backward): the fused
        # epilogue of the defective unit (csrc/cpu/masked_batch_norm.cpp).
        return masked_batch_norm_act(input, mask, self.weight, self.bias, running_mean, running_var,
                                     batch_stats, self.momentum, self.eps)

    def _uses_batch_statistics(self) -> bool:
        return self.training or (self.running_mean is None and self.running_var is None)

    def _step_statistics(self) -> tuple[bool, Optional[Tensor], Optional[Tensor]]:
        """What nn.BatchNorm2d.forward decides per call, for the fused kernels: counts the
        batch (num_batches_tracked) and returns (use batch statistics, running_mean or None,
        running_var or None)."""
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        batch_stats = self._uses_batch_statistics()
        keep_running = not self.training or self.track_running_stats
        return (batch_stats, self.running_mean if keep_running else None,
                self.running_var if keep_running else None)

    def extra_repr(self) -> str:
        if self.source is None:
            return (f"{super().extra_repr()}, own_mask={tuple(self.mask.shape)}, keep={self.keep:g}, "
                    f"kind={self.kind}, sampling={self.sampling}")
        return f"{super().extra_repr()}, masked_by=DefectiveConv2d(keep={self.source.keep:g}, kind={self.source.kind})"


def has_forward_hooks(*modules: nn.Module) -> bool:
    """Whether any of ``modules`` (or the global registry) has forward (pre-)hooks: a fused
    op would skip them, so fusion is off where any exist."""
    from torch.nn.modules import module as _m

    if _m._global_forward_hooks or _m._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def _fusable(conv: nn.Module, bn: nn.Module, act: Optional[nn.Module], x: Tensor) -> bool:
    """Whether conv -> bn -> act can run as one sparsemask::defective_unit call with results
    identical to running the modules (see :func:`conv_bn_act`)."""
    if not (isinstance(conv, DefectiveConv2d) and isinstance(bn, MaskedBatchNorm2d) and bn.source is conv):
        return False
    if act is not None and type(act) is not nn.ReLU:
        return False
    if conv.defer_mask or conv.bias is not None or conv.groups != 1 or conv.padding_mode != "zeros" \
            or isinstance(conv.padding, str) or bn.momentum is None or x.dim() != 4:
        return False
    if not dispatch.fused_unit(x, [], keep=conv.keep):
        return False
    return not has_forward_hooks(conv, bn) and not (act is not None and has_forward_hooks(act))


def conv_bn_act(conv: nn.Module, bn: nn.Module, x: Tensor, act: Optional[nn.Module] = None,
                residual: Optional[Tensor] = None) -> Tensor:
    """``act(bn(conv(x)) [+ residual])``: a model's conv-BN(-add)-activation unit.

    When ``conv`` is a :class:`DefectiveConv2d`, ``bn`` the :class:`MaskedBatchNorm2d` it
    feeds and ``act`` an ``nn.ReLU`` (or None), this runs the fused
    :func:`sparsemask.ops.defective_unit` — same values, gradients, running statistics
    and ``num_batches_tracked`` as the modules, with far fewer passes over memory. Otherwise
    (standard layers, the ``dense`` reference backend, GPU tensors, low precision,
    ``reference="paper"``, forward hooks on any of the modules, a non-ReLU activation) it
    calls the modules one after the other, so hooks and replaced modules behave as usual.

    Shapes: x [N, C_in, H, W]; residual (optional) and the result [N, C_out, H_out, W_out].
    """
    if not _fusable(conv, bn, act, x) or not conv._native(x):  # another feature size: the modules tile
        out = bn(conv(x))
        if residual is not None:
            out = out + residual
        return act(out) if act is not None else out
    batch_stats, running_mean, running_var = bn._step_statistics()
    return defective_unit(x, conv.weight, conv.mask, bn.weight, bn.bias, running_mean, running_var,
                          stride=conv.stride, padding=conv.padding, dilation=conv.dilation, training=batch_stats,
                          momentum=bn.momentum, eps=bn.eps, relu=act is not None, residual=residual, keep=conv.keep)


def _unit_args(conv: DefectiveConv2d, bn: MaskedBatchNorm2d, running_mean, running_var) -> dict:
    return dict(weight=conv.weight, mask=conv.mask, bn_weight=bn.weight, bn_bias=bn.bias, running_mean=running_mean,
                running_var=running_var, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                momentum=bn.momentum, eps=bn.eps)


def basic_block(conv1: nn.Module, bn1: nn.Module, conv2: nn.Module, bn2: nn.Module, act: Optional[nn.Module],
                x: Tensor, residual: Optional[Tensor]) -> Tensor:
    """A ResNet basic block's body, ``act(bn2(conv2(act(bn1(conv1(x))))) + residual)``.

    When both units are defective and fusable (see :func:`conv_bn_act`; ``act`` an
    ``nn.ReLU``; both BNs in the same mode) this runs :func:`sparsemask.ops.defective_block`:
    the first unit's output is held only at its kept neurons and the second conv reads it
    there, so that conv costs (keep1 x keep2) of a dense one. Otherwise the two units run
    through :func:`conv_bn_act`. Same values, gradients and BN buffers either way.

    Shapes: x [N, C_in, H, W]; residual and the result [N, C_out, H_out, W_out].
    """
    if (act is None or not _fusable(conv1, bn1, act, x) or not _fusable(conv2, bn2, act, x)
            or bn1._uses_batch_statistics() != bn2._uses_batch_statistics() or not conv1._native(x)):
        out = conv_bn_act(conv1, bn1, x, act)
        return conv_bn_act(conv2, bn2, out, act, residual=residual)
    batch_stats, rm1, rv1 = bn1._step_statistics()
    _, rm2, rv2 = bn2._step_statistics()
    return defective_block(x, _unit_args(conv1, bn1, rm1, rv1), _unit_args(conv2, bn2, rm2, rv2),
                           residual=residual, training=batch_stats, keep=max(conv1.keep, conv2.keep))
