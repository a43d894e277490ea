"""The mask plan: index lists derived from a defective layer's mask, built once and cached.

The kernels fetch plans themselves (csrc/plan.cpp keeps a cache keyed by the mask's
storage and version counter), so a module's mask buffer is planned once for its life and
again only after an in-place change such as ``load_state_dict``. This module exposes the
plan for inspection, for the Triton kernels, and the cache statistics for tests.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class MaskPlan(NamedTuple):
    """Index lists of a mask [C, H, W] with Q = H*W positions (first ``*_count`` entries valid).

    pos_count [Q] int32, pos_ch [Q, C] int32, pos_start [Q+1] int64 (prefix sums of
    pos_count), ch_count [C] int32, ch_pos [C, Q] int32; ids ascending.
    """

    pos_count: Tensor
    pos_ch: Tensor
    pos_start: Tensor
    ch_count: Tensor
    ch_pos: Tensor


def mask_plan(mask: Tensor) -> MaskPlan:
    """The plan of ``mask`` (bool [C_out, H_out, W_out]), on the mask's device."""
    if mask.dtype != torch.bool or mask.dim() != 3:
        raise ValueError(f"mask_plan: mask must be a 3-D bool tensor, got {mask.dtype} {tuple(mask.shape)}")
    return MaskPlan(*torch.ops.sparsemask.mask_plan(mask))


class CacheInfo(NamedTuple):
    builds: int
    hits: int
    entries: int


def cache_info() -> CacheInfo:
    """Plans built, cache hits and live entries since start (or the last :func:`clear_cache`)."""
    return CacheInfo(*torch.ops.sparsemask.plan_cache_info())


def clear_cache() -> None:
    """Drop every cached plan and reset the counters."""
    torch.ops.sparsemask.plan_cache_clear()
