"""The mask plan: index lists derived from a defective layer's mask, built once and cached.

The kernels fetch plans themselves (csrc/plan.cpp keeps a cache keyed by the mask's
storage and version counter), so a module's mask buffer is planned once for its life and
again only after an in-place change such as ``load_state_dict``. This module exposes the
plan for inspection (:func:`mask_plan`, copies), the cached plan for the Triton kernels
(:func:`kernel_plan`, no copies) and the cache statistics for tests.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch._subclasses.functional_tensor import FunctionalTensorMode


class MaskPlan(NamedTuple):
    """Index lists of a mask [C, H, W] with Q = H*W positions (first ``pos_count[q]`` entries valid).

    pos_count [Q] int32 (kept channels of position q), pos_ch [Q, C] int32 (their ids,
    ascending), pos_start [Q+1] int64 (prefix sums of pos_count: the row of (q, j) in a
    buffer that holds kept neurons only).
    """

    pos_count: Tensor
    pos_ch: Tensor
    pos_start: Tensor


def mask_plan(mask: Tensor) -> MaskPlan:
    """The plan of ``mask`` (bool [C_out, H_out, W_out]), on the mask's device.

    The tensors are copies of the cached plan, the caller's to keep or change.
    """
    if mask.dtype != torch.bool or mask.dim() != 3:
        raise ValueError(f"mask_plan: mask must be a 3-D bool tensor, got {mask.dtype} {tuple(mask.shape)}")
    return MaskPlan(*torch.ops.sparsemask.mask_plan(mask))


# --------------------------------------------------------------------------------------
# The kernels' accessor: sparsemask::_plan_view.
#
# The Triton kernels need (pos_count, pos_ch) on every forward and backward. The public
# mask_plan op copies them (its outputs are the caller's), which is work per call that
# belongs to the mask. _plan_view returns the cached tensors instead (new TensorImpls over
# the cached storage; nothing is copied). Why that is sound, and where it is not:
#
# * Eager mode. Op outputs must not alias the op's inputs unless the schema says so; these
#   alias no input (they alias the plan cache), and opcheck's schema test agrees. The real
#   hazard would be a later write through the shared storage. Nothing writes plan tensors
#   after build_plan (csrc/plan.h), a changed mask gets a new plan rather than an update of
#   the old one, and the only callers (sparsemask/triton) hand them to kernels that only
#   tl.load from them. The op is internal (leading underscore) for that reason.
# * Traced graphs (torch.compile, export). Inductor owns the outputs of the ops in its graph:
#   once an output is dead it may reuse that buffer in place for another result of the
#   same size and dtype (`bufK = bufJ; del bufJ  # reuse`), which would overwrite the
#   cache. So under FunctionalTensorMode (AOT tracing, which every compiled graph goes
#   through) the op is traced as mask_plan, whose outputs are fresh copies the graph may
#   reuse. Compiled graphs therefore still copy pos_count and pos_ch once per call; making
#   them copy-free needs the plan to enter the graph as an input (module state), not as an
#   op output.
# * A Python-side cache (a dict keyed on the mask's storage and version) was the other
#   candidate: it duplicates the C++ cache's invalidation logic and cannot be traced
#   (compile sees FakeTensors without real storage), so compile would need this op anyway.


@torch.library.register_fake("sparsemask::_plan_view")
def _plan_view_fake(mask):
    c, h, w = mask.shape
    q = h * w
    return (mask.new_empty((q,), dtype=torch.int32), mask.new_empty((q, c), dtype=torch.int32))


@torch.library.register_torch_dispatch("sparsemask::_plan_view", FunctionalTensorMode)
def _plan_view_traced(mode, func, types, args, kwargs):
    (mask,) = args
    with mode:
        pos_count, pos_ch, _ = torch.ops.sparsemask.mask_plan(mask)
    return pos_count, pos_ch


def kernel_plan(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(pos_count [Q] int32, pos_ch [Q, C] int32) of ``mask``: the cached tensors, read-only.

    For kernels only (sparsemask/triton): never write to them or hand them to a caller.
    ``mask`` is already validated (bool [C_out, H_out, W_out]).
    """
    return torch.ops.sparsemask._plan_view(mask)


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


class PoolInfo(NamedTuple):
    idle_bytes: int
    idle_blocks: int
    live_blocks: int
    hits: int
    misses: int
    limit_bytes: int


def cpu_pool_info() -> PoolInfo:
    """The CPU buffer pool that keeps the ops' large outputs (forward outputs, grad_input,
    kept-gradient buffers) for reuse across steps instead of returning them to the OS
    (csrc/cpu/buffer_pool.h): idle bytes/blocks, blocks in use, hits and misses since start,
    and the idle limit (``SPARSEMASK_CPU_POOL_MB``, default 1024; 0 disables the pool)."""
    return PoolInfo(*torch.ops.sparsemask.cpu_pool_info())


def cpu_pool_release() -> None:
    """Return every idle block of the CPU buffer pool to the OS (blocks in use come back to
    the pool when their tensors are freed)."""
    torch.ops.sparsemask.cpu_pool_release()


# The fake (meta) kernel of sparsemask::mask_plan, for torch.compile/FakeTensor.
@torch.library.register_fake("sparsemask::mask_plan")
def _mask_plan_fake(mask):
    c, h, w = mask.shape
    q = h * w
    i32 = dict(dtype=torch.int32, device=mask.device)
    return (mask.new_empty((q,), **i32), mask.new_empty((q, c), **i32),
            mask.new_empty((q + 1,), dtype=torch.int64, device=mask.device))
