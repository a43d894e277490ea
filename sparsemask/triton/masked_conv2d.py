"""Triton kernels of ``masked_conv2d``: forward, grad_input, grad_weight (+ grad_bias).

The mask is shared by the whole batch, so at one output position q the kept channels
C_q = pos_ch[q, :pos_count[q]] form a dense GEMM with the batch as its M side:

    forward      out[n, C_q, q]   = patch_q[n, :] @ W[C_q, :]^T           (M=N, N=|C_q|, K=kh*kw*C_in)
    grad_weight  gW[C_q, :]      += go[n, C_q, q]^T @ patch_q[n, :]        (reduced over the batch)
    grad_input   gx[n, :, p]      = sum over the taps (ky, kx) that land p on an output q
                                    of go[n, C_q, q] @ W[C_q, :, ky, kx]     (gathered, no conflicts)

The reduction index k of a patch runs over (ky, kx, c_in) with c_in fastest, so with a
channels_last input (stride 1 over channels) every patch row is made of contiguous runs and
the loads coalesce; other layouts work through the strides, just slower. Products
accumulate in float32 (float64 for float64 inputs); float32 operands use TF32 when
``torch.backends.cudnn.allow_tf32`` is set, as cuDNN's convolution does.

The forward (see _masked_conv2d_fwd_kernel) gives a program a run of BLOCK_P output
positions along a row, a tile of BLOCK_N images and a range of output channels. Per (tap,
channel block) step it loads the input tile of the whole run at once — neighbouring taps
overlap, so the run's patches come from L1 rather than being re-gathered position by
position — and runs a batched MMA [BLOCK_P] x [BLOCK_N, K] @ [K, BLOCK_J] over each
position's kept channels. The output tile, zeros included, is written once by gathering the
accumulator columns into channel slots (exact: a NaN stays in its neuron), with stores that
are full-width vectors when the run's kept channels fit one block; no zero-fill pass.

The index lists come from :func:`sparsemask.plan.kernel_plan` (op ``sparsemask::_plan_view``):
the cached C++ plan itself, not a copy per call (the kernels only load from it); its fake
kernel has static shapes, so these ops trace under ``torch.compile``, where it is traced as
the copying ``mask_plan`` (see sparsemask/plan.py for why). Grids are static too (no host
work per call: no plan copies, no syncs); a backward program whose block of kept channels is
empty exits at once.

Under ``TRITON_INTERPRET=1`` the kernels run on CPU tensors (tests); autotuning is then
reduced to one small configuration so the interpreter stays fast.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch._prims_common import suggest_memory_format

from ..ops.autograd import register_masked_conv_autograd
from ..plan import kernel_plan

__all__ = ["masked_conv2d_triton"]

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# SPARSEMASK_TRITON_AUTOTUNE=0: only the first configuration of each kernel, no tuning
# runs (GPU tests: many shapes, each would otherwise compile and time every config).
_AUTOTUNE = os.environ.get("SPARSEMASK_TRITON_AUTOTUNE", "1") != "0"


def _configs(space: Sequence[dict], interpret: dict) -> list[triton.Config]:
    """Autotune configurations; a single small one under the interpreter (no benchmarking)."""
    if _INTERPRET:
        return [triton.Config(interpret, num_warps=1, num_stages=1)]
    configs = [triton.Config({k: v for k, v in c.items() if k not in ("warps", "stages")},
                             num_warps=c["warps"], num_stages=c["stages"]) for c in space]
    return configs if _AUTOTUNE else configs[:1]


@triton.jit
def _mma(a, b, acc, ALLOW_TF32: tl.constexpr):
    """acc + a @ b in acc's dtype; TF32 only for float32 operands and only when allowed."""
    if ALLOW_TF32:
        return tl.dot(a, b, acc, input_precision="tf32", out_dtype=acc.dtype)
    else:
        return tl.dot(a, b, acc, input_precision="ieee", out_dtype=acc.dtype)


# --------------------------------------------------------------------------------------
# Forward: a program owns a run of BLOCK_P output positions of one output row, a tile of
# BLOCK_N images and a range of C_RANGE output channels, and writes that output tile
# [BLOCK_N, BLOCK_P, C_RANGE] once, zeros included.

_FWD_CONFIGS = _configs(
    [
        dict(BLOCK_N=32, BLOCK_P=4, BLOCK_J=16, BLOCK_K=32, warps=4, stages=3),
        dict(BLOCK_N=64, BLOCK_P=4, BLOCK_J=16, BLOCK_K=32, warps=8, stages=2),
        dict(BLOCK_N=128, BLOCK_P=2, BLOCK_J=16, BLOCK_K=32, warps=8, stages=2),
    ],
    interpret=dict(BLOCK_N=16, BLOCK_P=2, BLOCK_J=16, BLOCK_K=16),
)


@triton.jit
def _fwd_run_acc(
    x_img,  # [1, BLOCK_N, 1] pointers: the tile's images
    w_rows,  # [BLOCK_P, 1, BLOCK_J] pointers: weight filters of each position's kept channels
    n_ok,  # [BLOCK_N]
    j_ok,  # [BLOCK_P, BLOCK_J]: kept channel j of position p exists in this block
    p_ok,  # [BLOCK_P]: position p is inside the output row
    oy, ox,  # output row (scalar), output columns [BLOCK_P]
    C_IN, H, W,
    x_sc, x_sh, x_sw, w_sc, w_sh, w_sw,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    KH: tl.constexpr, KW: tl.constexpr, TAP_LOOP: tl.constexpr, IS_FP64: tl.constexpr,
    ALLOW_TF32: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """acc [BLOCK_P, BLOCK_N, BLOCK_J]: for every position p of the run, the batched GEMM
    patch(oy, ox[p])[images] @ W[kept channels of p]^T over all KH*KW*C_IN patch elements.

    Each step loads the input tile of one tap for the whole run at once ([BLOCK_P, BLOCK_N,
    BLOCK_K]); the next tap's tile is the same input shifted by one column, so within the
    program those bytes come from L1 instead of being re-gathered per position."""
    if IS_FP64:
        acc = tl.zeros((BLOCK_P, BLOCK_N, BLOCK_J), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_P, BLOCK_N, BLOCK_J), dtype=tl.float32)
    n_ok3 = n_ok[None, :, None]
    w_ok = j_ok[:, None, :]
    if TAP_LOOP:
        # One flat loop over (tap, channel block) steps: a single innermost loop, which Triton
        # software-pipelines (nested tap loops unrolled by static_range held every tap's
        # pointers live: 255 registers and spills on sm_90).
        c_blocks = tl.cdiv(C_IN, BLOCK_K)
        for step in range(0, KH * KW * c_blocks):
            tap = step // c_blocks
            c0 = (step - tap * c_blocks) * BLOCK_K
            ky = tap // KW
            kx = tap - ky * KW
            iy = oy * STRIDE_H - PAD_H + ky * DIL_H
            ix = ox * STRIDE_W - PAD_W + kx * DIL_W  # [BLOCK_P]
            sp_ok = p_ok & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
            offs_c = c0 + tl.arange(0, BLOCK_K)
            c_ok = offs_c < C_IN
            x_off = (iy * x_sh + ix * x_sw)[:, None, None] + (offs_c * x_sc)[None, None, :]
            xt = tl.load(x_img + x_off, mask=sp_ok[:, None, None] & n_ok3 & c_ok[None, None, :], other=0.0)
            w_off = ky * w_sh + kx * w_sw + offs_c * w_sc
            wt = tl.load(w_rows + w_off[None, :, None], mask=w_ok & c_ok[None, :, None], other=0.0)
            acc = _mma(xt, wt, acc, ALLOW_TF32)
    else:
        # Few input channels (the RGB stem): one flat loop over k = (ky, kx, c_in), so a step
        # is not mostly padding.
        k_total = KH * KW * C_IN
        for k0 in range(0, k_total, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < k_total
            c = offs_k % C_IN
            tap = offs_k // C_IN
            ky = tap // KW
            kx = tap % KW
            iy = oy * STRIDE_H - PAD_H + ky * DIL_H  # [BLOCK_K]
            ix = ox[:, None] * STRIDE_W - PAD_W + (kx * DIL_W)[None, :]  # [BLOCK_P, BLOCK_K]
            in_ok = (p_ok[:, None] & (k_ok & (iy >= 0) & (iy < H))[None, :]) & (ix >= 0) & (ix < W)
            x_off = (c * x_sc + iy * x_sh)[None, :] + ix * x_sw  # [BLOCK_P, BLOCK_K]
            xt = tl.load(x_img + x_off[:, None, :], mask=in_ok[:, None, :] & n_ok3, other=0.0)
            w_off = c * w_sc + ky * w_sh + kx * w_sw
            wt = tl.load(w_rows + w_off[None, :, None], mask=w_ok & k_ok[None, :, None], other=0.0)
            acc = _mma(xt, wt, acc, ALLOW_TF32)
    return acc


@triton.jit
def _fwd_store_run(
    out_rows,  # [BLOCK_P, BLOCK_N, 1] pointers: output (n, oy, ox[p]) at channel 0
    m_rows,  # [BLOCK_P, 1] pointers: mask bytes of (channel 0, oy, ox[p])
    acc,  # [BLOCK_P, BLOCK_N, BLOCK_J]: values of the kept channels of rank j0 .. j0+BLOCK_J-1
    tile_ok,  # [BLOCK_P, BLOCK_N, 1]: position and image inside the output
    j0, first, whole,  # first block of the run; whole: the run's kept channels all in this block
    cb, C_OUT, Q, o_sc,
    C_RANGE: tl.constexpr, CHUNK: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    """Write block j0's kept neurons into their channel slots, CHUNK channels at a time, by
    an exact gather of acc's columns (no arithmetic on the values). A neuron's column is its
    rank among its position's kept channels in the range: a prefix sum over the mask.

    When the run's kept channels all fall in this block (keep <= ~0.15 at 64 channels), every
    element of the tile, zeros included, goes out with a mask that is uniform along the
    channels, so the stores are full-width vectors of contiguous channels_last runs; else
    the first block writes the zeros and its own neurons and each later block its own, so
    every element is still written exactly once."""
    offs = tl.arange(0, CHUNK)
    base = tl.zeros((BLOCK_P,), dtype=tl.int32)  # kept channels of the range before the chunk
    for cc in range(0, C_RANGE, CHUNK):
        c = cb + cc + offs
        c_ok = c < C_OUT
        kept = tl.load(m_rows + (c.to(tl.int64) * Q)[None, :], mask=c_ok[None, :], other=0) != 0  # [BLOCK_P, CHUNK]
        rank = base[:, None] + tl.cumsum(kept.to(tl.int32), axis=1) - 1
        base += tl.sum(kept.to(tl.int32), axis=1)
        in_blk = kept & (rank >= j0) & (rank < j0 + BLOCK_J)
        col = tl.where(in_blk, rank - j0, 0)
        vals = tl.gather(acc, tl.broadcast_to(col[:, None, :], (BLOCK_P, BLOCK_N, CHUNK)), axis=2)
        vals = tl.where(in_blk[:, None, :], vals, 0.0).to(out_rows.dtype.element_ty)
        ok = tile_ok & c_ok[None, None, :]
        ptrs = out_rows + (c.to(tl.int64) * o_sc)[None, None, :]
        if whole:
            tl.store(ptrs, vals, mask=ok)
        else:
            tl.store(ptrs, vals, mask=ok & (in_blk | (~kept & first))[:, None, :])


@triton.autotune(configs=_FWD_CONFIGS, key=["N", "C_IN", "C_OUT", "KH", "KW"])
@triton.jit
def _masked_conv2d_fwd_kernel(
    x_ptr,  # input [N, C_IN, H, W], any strides (channels_last: x_sc == 1)
    w_ptr,  # weight [C_OUT, C_IN, KH, KW], any strides (channels_last: w_sc == 1)
    b_ptr,  # bias [C_OUT] (read only when HAS_BIAS)
    out_ptr,  # output [N, C_OUT, H_OUT, W_OUT]: every element written once
    mask_ptr,  # mask [C_OUT, H_OUT, W_OUT] as uint8, contiguous
    pos_ch_ptr,  # [Q, C_OUT] int32: kept channel ids of output position q, ascending
    N, C_IN, H, W, C_OUT, H_OUT, W_OUT,  # sizes
    x_sn, x_sc, x_sh, x_sw,  # input strides (elements)
    w_sco, w_sc, w_sh, w_sw,  # weight strides
    o_sn, o_sc, o_sh, o_sw,  # output strides
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,  # convolution parameters
    KH: tl.constexpr,  # kernel height
    KW: tl.constexpr,  # kernel width
    TAP_LOOP: tl.constexpr,  # loop over taps, then channel blocks (C_IN >= 16), else over flat k
    C_RANGE: tl.constexpr,  # output channels per program (power of two >= 16)
    HAS_BIAS: tl.constexpr,
    IS_FP64: tl.constexpr,  # accumulate in float64 (else float32)
    ALLOW_TF32: tl.constexpr,
    BLOCK_N: tl.constexpr,  # images per program (MMA M)
    BLOCK_P: tl.constexpr,  # output positions per program, along a row (the MMA batch)
    BLOCK_J: tl.constexpr,  # kept channels per position and step (MMA N)
    BLOCK_K: tl.constexpr,  # patch elements per step (MMA K)
):
    """grid (H_OUT * cdiv(W_OUT, BLOCK_P), cdiv(N, BLOCK_N), cdiv(C_OUT, C_RANGE)).

    The kept channels of each position are gathered into BLOCK_J-wide MMA tiles (the plan's
    pos_ch), a batched MMA over the run's positions computes them, and the output tile
    [BLOCK_N, BLOCK_P, C_RANGE] is written once, zeros included (_fwd_store_run). No
    zero-fill pass, no patch re-gathered per position."""
    CHUNK: tl.constexpr = 16  # output channels per epilogue step (its gather index is a full tile)
    segs = tl.cdiv(W_OUT, BLOCK_P)
    pid = tl.program_id(0)
    oy = pid // segs
    ox = (pid % segs) * BLOCK_P + tl.arange(0, BLOCK_P)  # [BLOCK_P]
    p_ok = ox < W_OUT
    Q = H_OUT * W_OUT
    q = tl.where(p_ok, oy * W_OUT + ox, 0)
    cb = tl.program_id(2) * C_RANGE
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs = tl.arange(0, CHUNK)
    m_rows = mask_ptr + q[:, None]  # [BLOCK_P, 1]

    # Kept channels of each position below the range (their pos_ch entries come first) and in it.
    lo = tl.zeros((BLOCK_P,), dtype=tl.int32)
    for c0 in range(0, cb, CHUNK):
        lo += tl.sum(tl.load(m_rows + ((c0 + offs).to(tl.int64) * Q)[None, :]).to(tl.int32), axis=1)
    cnt = tl.zeros((BLOCK_P,), dtype=tl.int32)
    for cc in tl.static_range(0, C_RANGE, CHUNK):
        c = cb + cc + offs
        cnt += tl.sum(tl.load(m_rows + (c.to(tl.int64) * Q)[None, :], mask=(c < C_OUT)[None, :], other=0)
                      .to(tl.int32), axis=1)
    cnt = tl.where(p_ok, cnt, 0)
    jmax = tl.max(cnt, axis=0)

    x_img = x_ptr + offs_n.to(tl.int64)[None, :, None] * x_sn  # [1, BLOCK_N, 1]
    ch_rows = pos_ch_ptr + (q.to(tl.int64) * C_OUT + lo)[:, None]  # [BLOCK_P, 1]
    out_rows = out_ptr + (offs_n.to(tl.int64)[None, :, None] * o_sn + (oy * o_sh + ox * o_sw).to(tl.int64)[:, None, None])
    tile_ok = p_ok[:, None, None] & n_ok[None, :, None]
    for j0 in range(0, jmax, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        j_ok = offs_j[None, :] < cnt[:, None]  # [BLOCK_P, BLOCK_J]
        ch = tl.load(ch_rows + offs_j[None, :], mask=j_ok, other=0)
        w_rows = w_ptr + (ch.to(tl.int64) * w_sco)[:, None, :]
        acc = _fwd_run_acc(x_img, w_rows, n_ok, j_ok, p_ok, oy, ox, C_IN, H, W, x_sc, x_sh, x_sw, w_sc, w_sh,
                           w_sw, STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W, KH, KW, TAP_LOOP, IS_FP64,
                           ALLOW_TF32, BLOCK_P, BLOCK_N, BLOCK_J, BLOCK_K)
        if HAS_BIAS:
            acc += tl.load(b_ptr + ch, mask=j_ok, other=0.0).to(acc.dtype)[:, None, :]
        _fwd_store_run(out_rows, m_rows, acc, tile_ok, j0, j0 == 0, jmax <= BLOCK_J, cb, C_OUT, Q, o_sc,
                       C_RANGE, CHUNK, BLOCK_P, BLOCK_N, BLOCK_J)
    if jmax == 0:  # nothing kept in the run: the loop above wrote nothing
        zeros = tl.zeros((BLOCK_P, BLOCK_N, CHUNK), dtype=out_ptr.dtype.element_ty)
        for cc in tl.static_range(0, C_RANGE, CHUNK):
            c = cb + cc + offs
            tl.store(out_rows + (c.to(tl.int64) * o_sc)[None, None, :], zeros, mask=tile_ok & (c < C_OUT)[None, None, :])


# --------------------------------------------------------------------------------------
# grad_input: a program owns a run of BLOCK_P input positions of one input row, a C_in tile
# and an image tile, and writes that tile of grad_input once (no atomics: it gathers).

_GRAD_INPUT_CONFIGS = _configs(
    [
        dict(BLOCK_N=32, BLOCK_P=4, BLOCK_C=32, BLOCK_J=16, warps=4, stages=2),
        dict(BLOCK_N=64, BLOCK_P=4, BLOCK_C=32, BLOCK_J=16, warps=8, stages=2),
        dict(BLOCK_N=32, BLOCK_P=8, BLOCK_C=32, BLOCK_J=16, warps=8, stages=2),
        dict(BLOCK_N=32, BLOCK_P=2, BLOCK_C=64, BLOCK_J=16, warps=4, stages=2),
        dict(BLOCK_N=32, BLOCK_P=4, BLOCK_C=64, BLOCK_J=16, warps=8, stages=2),
    ],
    interpret=dict(BLOCK_N=16, BLOCK_P=2, BLOCK_C=16, BLOCK_J=16),
)


@triton.autotune(configs=_GRAD_INPUT_CONFIGS, key=["N", "C_IN", "C_OUT", "KH", "KW"])
@triton.jit
def _masked_conv2d_grad_input_kernel(
    go_ptr,  # grad_output [N, C_OUT, H_OUT, W_OUT], any strides (channels_last: g_sc == 1)
    w_ptr,  # weight [C_OUT, C_IN, KH, KW], any strides (channels_last: w_sc == 1)
    gx_ptr,  # grad_input [N, C_IN, H, W]: every element written once
    pos_count_ptr,  # [Q] int32
    pos_ch_ptr,  # [Q, C_OUT] int32
    N, C_IN, H, W, C_OUT, H_OUT, W_OUT,  # sizes
    g_sn, g_sc, g_sh, g_sw,  # grad_output strides
    w_sco, w_sc, w_sh, w_sw,  # weight strides
    gx_sn, gx_sc, gx_sh, gx_sw,  # grad_input strides
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    KH: tl.constexpr,
    KW: tl.constexpr,
    IS_FP64: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    BLOCK_N: tl.constexpr,  # images per program (MMA M)
    BLOCK_P: tl.constexpr,  # input positions per program, along a row (the MMA batch)
    BLOCK_C: tl.constexpr,  # input channels per program (MMA N)
    BLOCK_J: tl.constexpr,  # kept output channels per position and step (MMA K)
):
    """grid (H * cdiv(W, BLOCK_P), cdiv(C_IN, BLOCK_C), cdiv(N, BLOCK_N)).

    gx[n, c, iy, ix_p] = sum over the taps (ky, kx) that land input position (iy, ix_p) on an
    output position q_p, and over q_p's kept channels, of go[n, ch, q_p] * W[ch, c, ky, kx]:
    per tap a batched MMA over the run's positions, [BLOCK_P] x [BLOCK_N, BLOCK_J] (grad_output
    gathered at each landing position's kept channels) @ [BLOCK_J, BLOCK_C] (their weights).
    Neighbouring taps land on the same output run shifted by one, so grad_output rows come
    from L1 after the first tap instead of being re-gathered per input position."""
    segs = tl.cdiv(W, BLOCK_P)
    pid = tl.program_id(0)
    iy = pid // segs
    ix = (pid % segs) * BLOCK_P + tl.arange(0, BLOCK_P)  # [BLOCK_P]
    p_ok = ix < W
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C_IN
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    g_img = go_ptr + offs_n.to(tl.int64)[None, :, None] * g_sn  # [1, BLOCK_N, 1]
    w_cols = w_ptr + offs_c[None, None, :] * w_sc  # [1, 1, BLOCK_C]
    if IS_FP64:
        acc = tl.zeros((BLOCK_P, BLOCK_N, BLOCK_C), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_P, BLOCK_N, BLOCK_C), dtype=tl.float32)
    for tap in range(0, KH * KW):
        ky = tap // KW
        kx = tap - ky * KW
        ty = iy + PAD_H - ky * DIL_H
        oy = ty // STRIDE_H
        y_ok = (ty >= 0) & (ty - oy * STRIDE_H == 0) & (oy < H_OUT)
        tx = ix + PAD_W - kx * DIL_W  # [BLOCK_P]
        ox = tx // STRIDE_W
        ok = p_ok & y_ok & (tx >= 0) & (tx - ox * STRIDE_W == 0) & (ox < W_OUT)
        q = tl.where(ok, oy * W_OUT + ox, 0)
        cnt = tl.where(ok, tl.load(pos_count_ptr + q, mask=ok, other=0), 0)  # [BLOCK_P]
        g_pos = g_img + (oy * g_sh + ox * g_sw)[:, None, None]  # [BLOCK_P, BLOCK_N, 1]
        w_tap = w_cols + (ky * w_sh + kx * w_sw)
        for j0 in range(0, tl.max(cnt, axis=0), BLOCK_J):
            offs_j = j0 + tl.arange(0, BLOCK_J)
            j_ok = offs_j[None, :] < cnt[:, None]  # [BLOCK_P, BLOCK_J]
            ch = tl.load(pos_ch_ptr + q.to(tl.int64)[:, None] * C_OUT + offs_j[None, :], mask=j_ok, other=0)
            g = tl.load(g_pos + (ch * g_sc)[:, None, :], mask=j_ok[:, None, :] & n_ok[None, :, None],
                        other=0.0)  # [BLOCK_P, BLOCK_N, BLOCK_J]
            wt = tl.load(w_tap + (ch.to(tl.int64) * w_sco)[:, :, None], mask=j_ok[:, :, None] & c_ok[None, None, :],
                         other=0.0)  # [BLOCK_P, BLOCK_J, BLOCK_C]
            acc = _mma(g, wt, acc, ALLOW_TF32)
    gx_off = (offs_n.to(tl.int64)[None, :, None] * gx_sn + (offs_c * gx_sc)[None, None, :]
              + (iy * gx_sh + ix * gx_sw).to(tl.int64)[:, None, None])
    tl.store(gx_ptr + gx_off, acc.to(gx_ptr.dtype.element_ty),
             mask=p_ok[:, None, None] & n_ok[None, :, None] & c_ok[None, None, :])


# --------------------------------------------------------------------------------------
# grad_weight (+ grad_bias): persistent programs walk a strided list of (output position,
# kept-channel block, K tile) work items; per item they reduce over the batch and add the
# result into a float32 (float64) buffer gw [C_OUT, KH*KW*C_IN] in (ky, kx, c_in) order with
# relaxed atomics.

_GRAD_WEIGHT_CONFIGS = _configs(
    [
        dict(BLOCK_J=16, BLOCK_K=64, BLOCK_N=64, warps=4, stages=3),
        dict(BLOCK_J=16, BLOCK_K=128, BLOCK_N=64, warps=8, stages=3),
        dict(BLOCK_J=32, BLOCK_K=64, BLOCK_N=64, warps=4, stages=3),
        dict(BLOCK_J=16, BLOCK_K=64, BLOCK_N=128, warps=8, stages=2),
        dict(BLOCK_J=32, BLOCK_K=128, BLOCK_N=32, warps=8, stages=2),
        dict(BLOCK_J=16, BLOCK_K=256, BLOCK_N=16, warps=4, stages=3),
    ],
    interpret=dict(BLOCK_J=16, BLOCK_K=32, BLOCK_N=16),
)


@triton.jit
def _grad_weight_item(
    go_ptr, x_ptr, gw_ptr, gb_ptr, pos_ch_ptr,
    q, j0, pid_k, cnt,  # the item: position q, kept channels j0.. of its cnt, K tile pid_k
    N, C_IN, H, W, C_OUT, W_OUT,
    g_sn, g_sc, g_sh, g_sw, x_sn, x_sc, x_sh, x_sw,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    KH: tl.constexpr, KW: tl.constexpr, ROW_TILE: tl.constexpr, TAP_LOOP: tl.constexpr, HAS_BIAS: tl.constexpr,
    IS_FP64: tl.constexpr, ALLOW_TF32: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """gw[C_q[j0:j0+BLOCK_J], K tile] += go[:, those channels, q]^T @ patch_q[:, K tile]
    (reduced over the batch), added with relaxed atomics; grad_bias rides along on K tile 0."""
    k_total = KH * KW * C_IN
    oy = q // W_OUT
    ox = q - oy * W_OUT
    if ROW_TILE:
        # A K tile is a run of one kernel row's (kx, c_in) elements. In a channels_last input
        # without dilation they are contiguous (input column ix0 + kx, channel c at
        # (ix0 + kx) * C_IN + c), so a tile may span several taps: with BLOCK_K >= KW * C_IN a
        # kernel row is one tile and grad_output is gathered KH times per item instead of
        # KH * KW times (x_sc == 1, x_sw == C_IN: the launcher's condition).
        row = KW * C_IN
        r_blocks = tl.cdiv(row, BLOCK_K)
        ky = pid_k // r_blocks
        t = (pid_k - ky * r_blocks) * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = t < row
        offs_k = ky * row + t
        iy = oy * STRIDE_H - PAD_H + ky * DIL_H
        ix0 = ox * STRIDE_W - PAD_W
        kx = t // C_IN
        in_ok = k_ok & (iy >= 0) & (iy < H) & (ix0 + kx >= 0) & (ix0 + kx < W)
        x_cols = x_ptr + (iy * x_sh + ix0 * x_sw + t)[None, :]  # [1, BLOCK_K]
    else:
        if TAP_LOOP:
            c_blocks = tl.cdiv(C_IN, BLOCK_K)
            tap = pid_k // c_blocks
            c = (pid_k - tap * c_blocks) * BLOCK_K + tl.arange(0, BLOCK_K)
            k_ok = c < C_IN
            offs_k = tap * C_IN + c
        else:
            offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
            k_ok = offs_k < k_total
            c = offs_k % C_IN
            tap = offs_k // C_IN
        ky = tap // KW
        kx = tap % KW
        iy = oy * STRIDE_H - PAD_H + ky * DIL_H
        ix = ox * STRIDE_W - PAD_W + kx * DIL_W
        in_ok = k_ok & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        x_cols = x_ptr + (c.to(tl.int64) * x_sc + iy * x_sh + ix * x_sw)[None, :]  # [1, BLOCK_K]
    offs_j = j0 + tl.arange(0, BLOCK_J)
    j_ok = offs_j < cnt
    ch = tl.load(pos_ch_ptr + q.to(tl.int64) * C_OUT + offs_j, mask=j_ok, other=0).to(tl.int64)
    g_rows = go_ptr + (ch * g_sc + oy * g_sh + ox * g_sw)[:, None]  # [BLOCK_J, 1]
    if IS_FP64:
        acc = tl.zeros((BLOCK_J, BLOCK_K), dtype=tl.float64)
        gsum = tl.zeros((BLOCK_J,), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_J, BLOCK_K), dtype=tl.float32)
        gsum = tl.zeros((BLOCK_J,), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        g = tl.load(g_rows + offs_n.to(tl.int64)[None, :] * g_sn, mask=j_ok[:, None] & n_ok[None, :], other=0.0)
        xt = tl.load(x_cols + offs_n.to(tl.int64)[:, None] * x_sn, mask=n_ok[:, None] & in_ok[None, :], other=0.0)
        acc = _mma(g, xt, acc, ALLOW_TF32)
        if HAS_BIAS:
            gsum += tl.sum(g.to(gsum.dtype), axis=1)
    # Relaxed: the sums need no ordering with other memory (the kernel's end is the only
    # synchronisation point); Triton's default acq_rel adds fences to every atomic.
    tl.atomic_add(gw_ptr + ch[:, None] * k_total + offs_k[None, :], acc, mask=j_ok[:, None] & k_ok[None, :],
                  sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(gb_ptr + ch, gsum, mask=j_ok & (pid_k == 0), sem="relaxed")


@triton.autotune(configs=_GRAD_WEIGHT_CONFIGS, key=["N", "C_IN", "C_OUT", "KH", "KW"],
                 reset_to_zero=["gw_ptr", "gb_ptr"])
@triton.jit
def _masked_conv2d_grad_weight_kernel(
    go_ptr,  # grad_output [N, C_OUT, H_OUT, W_OUT], any strides
    x_ptr,  # input [N, C_IN, H, W], any strides
    gw_ptr,  # grad_weight accumulator [C_OUT, KH*KW*C_IN] float32/float64, zero-filled
    gb_ptr,  # grad_bias accumulator [C_OUT] float32/float64, zero-filled (used when HAS_BIAS)
    pos_count_ptr,  # [Q] int32
    pos_ch_ptr,  # [Q, C_OUT] int32
    N, C_IN, H, W, C_OUT, H_OUT, W_OUT,  # sizes
    g_sn, g_sc, g_sh, g_sw,  # grad_output strides
    x_sn, x_sc, x_sh, x_sw,  # input strides
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    KH: tl.constexpr,
    KW: tl.constexpr,
    ROW_TILE: tl.constexpr,  # a K tile is a run of one kernel row (channels_last input, no dilation)
    TAP_LOOP: tl.constexpr,  # else: a K tile is one tap's channel block (C_IN >= 16), else a flat k range
    NEED_WEIGHT: tl.constexpr,  # False: grad_bias only (one item per position, K tile 0)
    HAS_BIAS: tl.constexpr,
    IS_FP64: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    BLOCK_J: tl.constexpr,  # kept channels per step (MMA M)
    BLOCK_K: tl.constexpr,  # patch elements per item (MMA N)
    BLOCK_N: tl.constexpr,  # images per step (MMA K)
):
    """grid (P,), P <= the item count: program i takes items i, i + P, ... of the
    (position, kept-channel block, K tile) items, position-major, so programs running side by
    side share a position's grad_output rows and patch in L2. An empty item (a channel block
    past the position's count: 3 of 4 at keep 0.1 and 64 channels) costs one load and the next
    item, so no program exits at once while others still have work (the earlier grid of one
    program per item left those programs to be scheduled and retired one by one)."""
    k_total = KH * KW * C_IN
    c_blocks = tl.cdiv(C_IN, BLOCK_K)
    if not NEED_WEIGHT:
        K_TILES = 1
    elif ROW_TILE:
        K_TILES = KH * tl.cdiv(KW * C_IN, BLOCK_K)
    elif TAP_LOOP:
        K_TILES = KH * KW * c_blocks
    else:
        K_TILES = tl.cdiv(k_total, BLOCK_K)
    J_BLOCKS = tl.cdiv(C_OUT, BLOCK_J)
    for item in range(tl.program_id(0), H_OUT * W_OUT * J_BLOCKS * K_TILES, tl.num_programs(0)):
        q = item // (J_BLOCKS * K_TILES)
        rest = item - q * (J_BLOCKS * K_TILES)
        j0 = (rest // K_TILES) * BLOCK_J
        pid_k = rest - (j0 // BLOCK_J) * K_TILES
        cnt = tl.load(pos_count_ptr + q)
        if j0 < cnt:  # else the next item at once (most blocks of a position are empty at low keep)
            _grad_weight_item(go_ptr, x_ptr, gw_ptr, gb_ptr, pos_ch_ptr, q, j0, pid_k, cnt, N, C_IN, H, W, C_OUT,
                              W_OUT, g_sn, g_sc, g_sh, g_sw, x_sn, x_sc, x_sh, x_sw, STRIDE_H, STRIDE_W, PAD_H,
                              PAD_W, DIL_H, DIL_W, KH, KW, ROW_TILE, TAP_LOOP, HAS_BIAS, IS_FP64, ALLOW_TF32, BLOCK_J,
                              BLOCK_K, BLOCK_N)


# --------------------------------------------------------------------------------------
# Launchers and the registered ops


def _launchable(*tensors: Tensor) -> bool:
    """Whether to launch the kernels on these tensors.

    On the GPU always (``wrap_triton`` turns launches on traced tensors into graph nodes).
    Under TRITON_INTERPRET=1 ``wrap_triton`` hands back the raw interpreted kernel, which
    cannot take traced tensors: FakeTensors (the fake kernel: shapes only) skip the launch;
    other tensor subclasses (AOT/functionalization under torch.compile) are refused.
    """
    if not _INTERPRET:
        return True
    from torch._subclasses.fake_tensor import FakeTensor

    if any(isinstance(t, FakeTensor) for t in tensors):
        return False
    for t in tensors:
        if type(t) not in (torch.Tensor, torch.nn.Parameter):
            raise RuntimeError(f"masked_conv2d: the Triton interpreter (TRITON_INTERPRET=1) cannot run under "
                               f"torch.compile/AOT tracing (got a {type(t).__name__}); use a GPU or another backend")
    return True


# Most output channels one forward program owns (its tile [BLOCK_N, BLOCK_P, C_RANGE] lives
# in registers until its one store); wider layers split C_out over the grid's third axis.
_C_RANGE_MAX = 128


def _c_range(c_out: int) -> int:
    """Output channels per forward program: C_out rounded up to a power of two >= 16, at most
    _C_RANGE_MAX."""
    return min(max(16, triton.next_power_of_2(c_out)), max(16, _C_RANGE_MAX))


def _grad_weight_row_tile(x: Tensor, dilation_w: int) -> bool:
    """Whether grad_weight's K tiles may span a kernel row's (kx, c_in) run: it is contiguous
    when x [N, C_in, H, W] has channel stride 1 and column stride C_in (channels_last; a
    size-1 W may carry any stride, so it is checked, not assumed) and there is no horizontal
    dilation."""
    c_in = x.shape[1]
    return _tap_loop(c_in) and dilation_w == 1 and x.stride(1) == 1 and x.stride(3) == c_in


def _tap_loop(c_in: int) -> bool:
    """Tap-by-tap reduction once a tap has at least one MMA K step (16) of channels."""
    return c_in >= 16


def _channels_last_weight(weight: Tensor) -> Tensor:
    """The weight with C_in innermost (a no-op for a channels_last weight): each tap's
    channels are then one contiguous run. The weight is small; the copy is cheap."""
    return weight.contiguous(memory_format=torch.channels_last)


# Persistent grad_weight programs per SM (enough resident warps to hide load latency).
_PROGRAMS_PER_SM = 4


def _persistent_programs(device: torch.device) -> int:
    """Size of a persistent grid: a few programs per SM (torch caches the device properties,
    so this is no host work per call). Under the interpreter a small number, so that tests
    give each program several items."""
    if device.type != "cuda":
        return 3
    return torch.cuda.get_device_properties(device).multi_processor_count * _PROGRAMS_PER_SM


def _flags(dtype: torch.dtype) -> dict:
    return dict(IS_FP64=dtype == torch.float64,
                ALLOW_TF32=dtype == torch.float32 and bool(torch.backends.cudnn.allow_tf32))


def _out_size(input: Tensor, weight: Tensor, stride, padding, dilation) -> tuple[int, int]:
    return tuple((input.shape[2 + i] + 2 * padding[i] - dilation[i] * (weight.shape[2 + i] - 1) - 1) // stride[i] + 1
                 for i in range(2))


def _conv_args(stride, padding, dilation) -> tuple:
    return (stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1])


@torch.library.triton_op("sparsemask::masked_conv2d_triton", mutates_args=())
def _masked_conv2d_triton_op(input: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Tensor,
                             stride: list[int], padding: list[int], dilation: list[int]) -> Tensor:
    n, c_in, h, w = input.shape
    c_out, _, kh, kw = weight.shape
    ho, wo = _out_size(input, weight, stride, padding, dilation)
    c_range = _c_range(c_out)
    out = torch.empty((n, c_out, ho, wo), dtype=input.dtype, device=input.device,
                      memory_format=suggest_memory_format(input))
    _, pos_ch = kernel_plan(mask)
    if out.numel() == 0 or not _launchable(input, weight, mask):
        return out.zero_()
    # Patches are read as runs over C_in: channels_last makes them contiguous (no-op when
    # the caller already is channels_last, the fast layout).
    input = input.contiguous(memory_format=torch.channels_last)
    weight = _channels_last_weight(weight)
    mask_u8 = mask.contiguous().view(torch.uint8)  # a view: the kernel reads the mask's bytes

    def grid(meta):
        return (ho * triton.cdiv(wo, meta["BLOCK_P"]), triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(c_out, c_range))

    torch.library.wrap_triton(_masked_conv2d_fwd_kernel)[grid](
        input, weight, bias.contiguous() if bias is not None else out, out, mask_u8, pos_ch,  # b_ptr: stride 1
        n, c_in, h, w, c_out, ho, wo,
        *input.stride(), *weight.stride(), *out.stride(), *_conv_args(stride, padding, dilation),
        KH=kh, KW=kw, TAP_LOOP=_tap_loop(c_in), C_RANGE=c_range, HAS_BIAS=bias is not None,
        **_flags(input.dtype),
    )
    return out


@torch.library.triton_op("sparsemask::masked_conv2d_triton_backward", mutates_args=())
def _masked_conv2d_triton_backward_op(grad_output: Tensor, input: Tensor, weight: Tensor, mask: Tensor,
                                      stride: list[int], padding: list[int], dilation: list[int],
                                      output_mask: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    n, c_in, h, w = input.shape
    c_out, _, kh, kw = weight.shape
    ho, wo = _out_size(input, weight, stride, padding, dilation)
    need_input, need_weight, need_bias = output_mask
    pos_count, pos_ch = kernel_plan(mask)
    launch = _launchable(grad_output, input, weight, mask)
    grad_output = grad_output.contiguous(memory_format=torch.channels_last)
    flags = _flags(input.dtype)
    conv = _conv_args(stride, padding, dilation)
    grad_input = input.new_empty(0)
    grad_weight = weight.new_empty(0)
    grad_bias = weight.new_empty(0)
    if need_input:
        grad_input = torch.empty_like(input, memory_format=suggest_memory_format(input))
        if grad_input.numel() > 0 and launch:
            w_cl = _channels_last_weight(weight)
            grid = lambda meta: (h * triton.cdiv(w, meta["BLOCK_P"]), triton.cdiv(c_in, meta["BLOCK_C"]),  # noqa: E731
                                 triton.cdiv(n, meta["BLOCK_N"]))
            torch.library.wrap_triton(_masked_conv2d_grad_input_kernel)[grid](
                grad_output, w_cl, grad_input, pos_count, pos_ch,
                n, c_in, h, w, c_out, ho, wo,
                *grad_output.stride(), *w_cl.stride(), *grad_input.stride(), *conv,
                KH=kh, KW=kw, **flags,
            )
    if need_weight or need_bias:
        acc_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
        gw = torch.zeros((c_out, kh * kw * c_in), dtype=acc_dtype, device=input.device)
        gb = torch.zeros((c_out,), dtype=acc_dtype, device=input.device)
        if n > 0 and launch:
            x_cl = input.contiguous(memory_format=torch.channels_last)
            tap_loop = _tap_loop(c_in)
            row_tile = _grad_weight_row_tile(x_cl, dilation[1])

            def k_tiles(meta):  # as the kernel counts them
                if not need_weight:  # grad_bias alone: one item per position
                    return 1
                if row_tile:
                    return kh * triton.cdiv(kw * c_in, meta["BLOCK_K"])
                if tap_loop:
                    return kh * kw * triton.cdiv(c_in, meta["BLOCK_K"])
                return triton.cdiv(kh * kw * c_in, meta["BLOCK_K"])

            programs = _persistent_programs(input.device)
            torch.library.wrap_triton(_masked_conv2d_grad_weight_kernel)[
                lambda meta: (min(programs, ho * wo * triton.cdiv(c_out, meta["BLOCK_J"]) * k_tiles(meta)),)](
                grad_output, x_cl, gw, gb, pos_count, pos_ch,
                n, c_in, h, w, c_out, ho, wo,
                *grad_output.stride(), *x_cl.stride(), *conv,
                KH=kh, KW=kw, ROW_TILE=row_tile, TAP_LOOP=tap_loop, NEED_WEIGHT=bool(need_weight),
                HAS_BIAS=bool(need_bias), **flags,
            )
        if need_weight:
            grad_weight = gw.view(c_out, kh, kw, c_in).permute(0, 3, 1, 2).to(weight.dtype).contiguous()
        if need_bias:
            grad_bias = gb.to(weight.dtype)
    return grad_input, grad_weight, grad_bias


# Autograd: the same formula as the C++ op (one factory, sparsemask/ops/autograd.py).
register_masked_conv_autograd(_masked_conv2d_triton_op, torch.ops.sparsemask.masked_conv2d_triton_backward)


def masked_conv2d_triton(input: Tensor, weight: Tensor, bias: Optional[Tensor], mask: Tensor,
                         stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]) -> Tensor:
    """``conv2d(input, weight, bias, stride, padding, dilation) * mask`` with the Triton kernels.

    Args:
        input: [N, C_in, H, W] float16/bfloat16/float32/float64 on CUDA (or CPU under
            ``TRITON_INTERPRET=1``); channels_last is the fast layout.
        weight: [C_out, C_in, kh, kw]; bias: [C_out] or None; mask: bool [C_out, H_out, W_out].
        stride, padding, dilation: 2-lists of ints (already validated by
            :func:`sparsemask.masked_conv2d`, which calls this for backend ``"triton"``).

    Returns:
        [N, C_out, H_out, W_out] in the input's dtype and memory format, 0 where mask is False.
        Differentiable (grad_input, grad_weight, grad_bias through the Triton kernels).
    """
    if input.device.type != "cuda" and not _INTERPRET:
        raise RuntimeError(f"masked_conv2d: backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU "
                           f"tensors), got input on {input.device}")
    return torch.ops.sparsemask.masked_conv2d_triton(input, weight, bias, mask, list(stride), list(padding),
                                                     list(dilation))


# --------------------------------------------------------------------------------------
# Autocast (AutocastCUDA, and AutocastCPU for the interpreter): as conv2d on PyTorch's
# autocast list, the forward runs in the autocast dtype (bf16 activations meet fp32
# weights); the kernels accumulate in float32 anyway. The backward follows its input's
# dtype. Same rule as the C++ ops' Autocast kernels (csrc/autocast/masked_conv2d.cpp).

def _autocast_cast(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    if t is None or not t.is_floating_point() or t.dtype in (dtype, torch.float64):
        return t
    return t.to(dtype)


def _autocast_kernels(device_type: str):
    def forward(input, weight, bias, mask, stride, padding, dilation):
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return torch.ops.sparsemask.masked_conv2d_triton(
                _autocast_cast(input, dtype), _autocast_cast(weight, dtype), _autocast_cast(bias, dtype), mask,
                stride, padding, dilation)

    def backward(grad_output, input, weight, mask, stride, padding, dilation, output_mask):
        with torch.autocast(device_type, enabled=False):
            return torch.ops.sparsemask.masked_conv2d_triton_backward(
                _autocast_cast(grad_output, input.dtype), input, _autocast_cast(weight, input.dtype), mask, stride,
                padding, dilation, output_mask)

    return forward, backward


_autocast_lib = torch.library.Library("sparsemask", "IMPL")  # kept alive: it owns the registrations
for _device_type, _key in (("cuda", "AutocastCUDA"), ("cpu", "AutocastCPU")):
    _fwd, _bwd = _autocast_kernels(_device_type)
    _autocast_lib.impl("masked_conv2d_triton", _fwd, _key)
    _autocast_lib.impl("masked_conv2d_triton_backward", _bwd, _key)
