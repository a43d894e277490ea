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

The forward writes the output once: for layers up to 128 output channels a program owns
whole output rows [images, C_out] of its position, reduces every kept-channel block of it
and scatters the results into the row tile with an exact one-hot product, so zeros and
values go out in one coalesced store (no zero fill); wider layers zero-fill the output and
store kept neurons only.

The index lists come from :func:`sparsemask.plan.kernel_plan` (op ``sparsemask::_plan_view``):
the cached C++ plan itself, not a copy per call (the kernels only load from it); its fake
kernel has static shapes, so these ops trace under ``torch.compile``, where it is traced as
the copying ``mask_plan`` (see sparsemask/plan.py for why). Grids are static too: a program
whose block of kept channels is empty exits at once.

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
# Forward

_FWD_CONFIGS = _configs(
    [
        dict(BLOCK_N=64, BLOCK_J=16, BLOCK_K=64, warps=4, stages=3),
        dict(BLOCK_N=128, BLOCK_J=16, BLOCK_K=64, warps=4, stages=3),
        dict(BLOCK_N=128, BLOCK_J=32, BLOCK_K=32, warps=4, stages=3),
        dict(BLOCK_N=128, BLOCK_J=32, BLOCK_K=64, warps=8, stages=3),
        dict(BLOCK_N=64, BLOCK_J=32, BLOCK_K=64, warps=4, stages=4),
        dict(BLOCK_N=256, BLOCK_J=16, BLOCK_K=32, warps=8, stages=3),
    ],
    interpret=dict(BLOCK_N=16, BLOCK_J=16, BLOCK_K=32),
)


@triton.jit
def _fwd_tile(
    x_rows,  # [BLOCK_N, 1] pointers: input images of the tile
    w_rows,  # [BLOCK_J, 1] pointers: weight rows of the tile's kept channels
    n_ok, j_ok,  # [BLOCK_N], [BLOCK_J] validity
    oy, ox,  # output position
    C_IN, H, W,
    x_sc, x_sh, x_sw, w_sc, w_sh, w_sw,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    KH: tl.constexpr, KW: tl.constexpr, TAP_LOOP: tl.constexpr, IS_FP64: tl.constexpr,
    ALLOW_TF32: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """acc [BLOCK_N, BLOCK_J] = patch(oy, ox)[images] @ W[channels]^T over all kh*kw*C_in."""
    if IS_FP64:
        acc = tl.zeros((BLOCK_N, BLOCK_J), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_N, BLOCK_J), dtype=tl.float32)
    if TAP_LOOP:
        # One (ky, kx) tap at a time: the BLOCK_K channels of a step are contiguous in
        # channels_last memory (vector loads) and no per-element index arithmetic.
        for ky in tl.static_range(KH):
            iy = oy * STRIDE_H - PAD_H + ky * DIL_H
            for kx in tl.static_range(KW):
                ix = ox * STRIDE_W - PAD_W + kx * DIL_W
                sp_ok = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
                x_tap = x_rows + iy * x_sh + ix * x_sw
                w_tap = w_rows + ky * w_sh + kx * w_sw
                for c0 in range(0, C_IN, BLOCK_K):
                    offs_c = c0 + tl.arange(0, BLOCK_K)
                    c_ok = offs_c < C_IN
                    xt = tl.load(x_tap + offs_c.to(tl.int64)[None, :] * x_sc,
                                 mask=n_ok[:, None] & (c_ok & sp_ok)[None, :], other=0.0)
                    wt = tl.load(w_tap + offs_c.to(tl.int64)[None, :] * w_sc,
                                 mask=j_ok[:, None] & c_ok[None, :], other=0.0)
                    acc = _mma(xt, tl.trans(wt), acc, ALLOW_TF32)
    else:
        # Few input channels (the RGB stem): one flat loop over k = (ky, kx, c_in) so a step
        # is not mostly padding.
        k_total = KH * KW * C_IN
        for k0 in range(0, k_total, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < k_total
            c = offs_k % C_IN
            tap = offs_k // C_IN
            ky = tap // KW
            kx = tap % KW
            iy = oy * STRIDE_H - PAD_H + ky * DIL_H
            ix = ox * STRIDE_W - PAD_W + kx * DIL_W
            in_ok = k_ok & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
            x_off = c.to(tl.int64) * x_sc + iy * x_sh + ix * x_sw
            xt = tl.load(x_rows + x_off[None, :], mask=n_ok[:, None] & in_ok[None, :], other=0.0)
            w_off = c.to(tl.int64) * w_sc + ky * w_sh + kx * w_sw
            wt = tl.load(w_rows + w_off[None, :], mask=j_ok[:, None] & k_ok[None, :], other=0.0)
            acc = _mma(xt, tl.trans(wt), acc, ALLOW_TF32)
    return acc


@triton.autotune(configs=_FWD_CONFIGS, key=["N", "C_IN", "C_OUT", "KH", "KW"])
@triton.jit
def _masked_conv2d_fwd_kernel(
    x_ptr,  # input [N, C_IN, H, W], any strides (channels_last: x_sc == 1)
    w_ptr,  # weight [C_OUT, C_IN, KH, KW], any strides
    b_ptr,  # bias [C_OUT] (read only when HAS_BIAS)
    out_ptr,  # output [N, C_OUT, H_OUT, W_OUT]; FULL_ROWS: every element written, else pre-zeroed
    pos_count_ptr,  # [Q] int32: kept channels of output position q
    pos_ch_ptr,  # [Q, C_OUT] int32: their ids, first pos_count[q] valid
    N, C_IN, H, W, C_OUT, H_OUT, W_OUT,  # sizes
    x_sn, x_sc, x_sh, x_sw,  # input strides (elements)
    w_sco, w_sc, w_sh, w_sw,  # weight strides
    o_sn, o_sc, o_sh, o_sw,  # output strides
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,  # convolution parameters
    KH: tl.constexpr,  # kernel height
    KW: tl.constexpr,  # kernel width
    TAP_LOOP: tl.constexpr,  # loop over taps, then channel blocks (C_IN >= 16), else over flat k
    FULL_ROWS: tl.constexpr,  # a program owns whole output rows [BLOCK_N, C_OUT] of its position
    C_OUT_PAD: tl.constexpr,  # C_OUT rounded up to a power of two >= 16 (FULL_ROWS)
    HAS_BIAS: tl.constexpr,
    IS_FP64: tl.constexpr,  # accumulate in float64 (else float32)
    ALLOW_TF32: tl.constexpr,
    BLOCK_N: tl.constexpr,  # images per program (the MMA M side)
    BLOCK_J: tl.constexpr,  # kept channels per step (MMA N side)
    BLOCK_K: tl.constexpr,  # patch elements per step (MMA K side)
):
    q = tl.program_id(0).to(tl.int64)
    cnt = tl.load(pos_count_ptr + q)
    oy = q // W_OUT
    ox = q % W_OUT
    if FULL_ROWS:
        # grid (Q, N blocks). All kept-channel blocks of q are reduced here and scattered
        # into a dense row tile with a one-hot product (exact: one nonzero term per entry),
        # so the output, zeros included, is written once with whole-row stores and needs no
        # separate zero fill.
        offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        x_rows = x_ptr + offs_n.to(tl.int64)[:, None] * x_sn
        offs_co = tl.arange(0, C_OUT_PAD)
        if IS_FP64:
            rows = tl.zeros((BLOCK_N, C_OUT_PAD), dtype=tl.float64)
        else:
            rows = tl.zeros((BLOCK_N, C_OUT_PAD), dtype=tl.float32)
        # The one-hot product would spread a NaN/Inf of one entry to its whole row
        # (0 * NaN = NaN): finite values go through it, non-finite ones as a code
        # (1 NaN, 2 +Inf, 3 -Inf; exact, one nonzero term per entry) restored after the loop.
        special = tl.zeros((BLOCK_N, C_OUT_PAD), dtype=rows.dtype)
        for j0 in range(0, cnt, BLOCK_J):
            offs_j = j0 + tl.arange(0, BLOCK_J)
            j_ok = offs_j < cnt
            ch = tl.load(pos_ch_ptr + q * C_OUT + offs_j, mask=j_ok, other=-1).to(tl.int64)
            acc = _fwd_tile(x_rows, w_ptr + ch[:, None] * w_sco, n_ok, j_ok, oy, ox, C_IN, H, W,
                            x_sc, x_sh, x_sw, w_sc, w_sh, w_sw, STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
                            KH, KW, TAP_LOOP, IS_FP64, ALLOW_TF32, BLOCK_N, BLOCK_J, BLOCK_K)
            if HAS_BIAS:
                acc += tl.load(b_ptr + ch, mask=j_ok, other=0.0).to(acc.dtype)[None, :]
            onehot = (ch[:, None] == offs_co[None, :]).to(acc.dtype)  # [BLOCK_J, C_OUT_PAD]
            is_nan = acc != acc
            is_pinf = acc == float("inf")
            is_ninf = acc == -float("inf")
            code = tl.where(is_nan, 1.0, tl.where(is_pinf, 2.0, tl.where(is_ninf, 3.0, 0.0))).to(acc.dtype)
            finite = tl.where(is_nan | is_pinf | is_ninf, 0.0, acc).to(acc.dtype)
            rows = tl.dot(finite, onehot, rows, input_precision="ieee", out_dtype=rows.dtype)
            special = tl.dot(code, onehot, special, input_precision="ieee", out_dtype=rows.dtype)
        rows = tl.where(special == 1.0, float("nan"), rows)
        rows = tl.where(special == 2.0, float("inf"), rows)
        rows = tl.where(special == 3.0, -float("inf"), rows)
        o_off = offs_n.to(tl.int64)[:, None] * o_sn + offs_co.to(tl.int64)[None, :] * o_sc + oy * o_sh + ox * o_sw
        tl.store(out_ptr + o_off, rows.to(out_ptr.dtype.element_ty),
                 mask=n_ok[:, None] & (offs_co < C_OUT)[None, :])
    else:
        # grid (Q, C_OUT blocks, N blocks): one block of kept channels per program, written
        # into a zero-filled output; programs past pos_count[q] exit at once.
        j0 = tl.program_id(1) * BLOCK_J
        if j0 < cnt:
            offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
            n_ok = offs_n < N
            offs_j = j0 + tl.arange(0, BLOCK_J)
            j_ok = offs_j < cnt
            ch = tl.load(pos_ch_ptr + q * C_OUT + offs_j, mask=j_ok, other=0).to(tl.int64)
            x_rows = x_ptr + offs_n.to(tl.int64)[:, None] * x_sn
            acc = _fwd_tile(x_rows, w_ptr + ch[:, None] * w_sco, n_ok, j_ok, oy, ox, C_IN, H, W,
                            x_sc, x_sh, x_sw, w_sc, w_sh, w_sw, STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
                            KH, KW, TAP_LOOP, IS_FP64, ALLOW_TF32, BLOCK_N, BLOCK_J, BLOCK_K)
            if HAS_BIAS:
                acc += tl.load(b_ptr + ch, mask=j_ok, other=0.0).to(acc.dtype)[None, :]
            o_off = offs_n.to(tl.int64)[:, None] * o_sn + ch[None, :] * o_sc + oy * o_sh + ox * o_sw
            tl.store(out_ptr + o_off, acc.to(out_ptr.dtype.element_ty), mask=n_ok[:, None] & j_ok[None, :])


# --------------------------------------------------------------------------------------
# grad_input: gathered per input position p; every element of grad_input written once.

_GRAD_INPUT_CONFIGS = _configs(
    [
        dict(BLOCK_N=64, BLOCK_C=32, BLOCK_J=16, warps=4, stages=3),
        dict(BLOCK_N=128, BLOCK_C=32, BLOCK_J=16, warps=4, stages=3),
        dict(BLOCK_N=128, BLOCK_C=64, BLOCK_J=16, warps=8, stages=3),
        dict(BLOCK_N=64, BLOCK_C=64, BLOCK_J=32, warps=4, stages=3),
        dict(BLOCK_N=256, BLOCK_C=32, BLOCK_J=16, warps=8, stages=2),
    ],
    interpret=dict(BLOCK_N=16, BLOCK_C=16, BLOCK_J=16),
)


@triton.autotune(configs=_GRAD_INPUT_CONFIGS, key=["N", "C_IN", "C_OUT", "KH", "KW"])
@triton.jit
def _masked_conv2d_grad_input_kernel(
    go_ptr,  # grad_output [N, C_OUT, H_OUT, W_OUT], any strides (channels_last: g_sc == 1)
    w_ptr,  # weight [C_OUT, C_IN, KH, KW], any strides
    gx_ptr,  # grad_input [N, C_IN, H, W], fully written
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
    BLOCK_C: tl.constexpr,  # input channels per program (MMA N)
    BLOCK_J: tl.constexpr,  # kept output channels per step (MMA K)
):
    p = tl.program_id(0).to(tl.int64)
    c0 = tl.program_id(1) * BLOCK_C
    n0 = tl.program_id(2) * BLOCK_N
    iy = p // W
    ix = p % W
    offs_n = n0 + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs_c = c0 + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C_IN
    g_rows = go_ptr + offs_n.to(tl.int64)[:, None] * g_sn  # [BLOCK_N, 1]
    w_cols = w_ptr + offs_c.to(tl.int64)[None, :] * w_sc  # [1, BLOCK_C]
    if IS_FP64:
        acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
    for ky in tl.static_range(KH):
        ty = iy + PAD_H - ky * DIL_H
        oy = ty // STRIDE_H
        y_ok = (ty >= 0) & (ty - oy * STRIDE_H == 0) & (oy < H_OUT)
        for kx in tl.static_range(KW):
            tx = ix + PAD_W - kx * DIL_W
            ox = tx // STRIDE_W
            ok = y_ok & (tx >= 0) & (tx - ox * STRIDE_W == 0) & (ox < W_OUT)
            q = tl.where(ok, oy * W_OUT + ox, 0)
            cnt = tl.where(ok, tl.load(pos_count_ptr + q), 0)
            for j0 in range(0, cnt, BLOCK_J):
                offs_j = j0 + tl.arange(0, BLOCK_J)
                j_ok = offs_j < cnt
                ch = tl.load(pos_ch_ptr + q * C_OUT + offs_j, mask=j_ok, other=0).to(tl.int64)
                g = tl.load(g_rows + (ch * g_sc + oy * g_sh + ox * g_sw)[None, :],
                            mask=n_ok[:, None] & j_ok[None, :], other=0.0)
                wt = tl.load(w_cols + (ch * w_sco + ky * w_sh + kx * w_sw)[:, None],
                             mask=j_ok[:, None] & c_ok[None, :], other=0.0)
                acc = _mma(g, wt, acc, ALLOW_TF32)
    gx_off = offs_n.to(tl.int64)[:, None] * gx_sn + offs_c.to(tl.int64)[None, :] * gx_sc + iy * gx_sh + ix * gx_sw
    tl.store(gx_ptr + gx_off, acc.to(gx_ptr.dtype.element_ty), mask=n_ok[:, None] & c_ok[None, :])


# --------------------------------------------------------------------------------------
# grad_weight (+ grad_bias): per output position, reduced over the batch, added atomically
# into a float32 (float64) buffer gw [C_OUT, KH*KW*C_IN] in (ky, kx, c_in) order.

_GRAD_WEIGHT_CONFIGS = _configs(
    [
        dict(BLOCK_J=16, BLOCK_K=64, BLOCK_N=64, warps=4, stages=3),
        dict(BLOCK_J=16, BLOCK_K=128, BLOCK_N=64, warps=4, stages=3),
        dict(BLOCK_J=32, BLOCK_K=64, BLOCK_N=64, warps=4, stages=3),
        dict(BLOCK_J=16, BLOCK_K=64, BLOCK_N=128, warps=8, stages=3),
        dict(BLOCK_J=32, BLOCK_K=128, BLOCK_N=32, warps=8, stages=2),
    ],
    interpret=dict(BLOCK_J=16, BLOCK_K=32, BLOCK_N=16),
)


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
    TAP_LOOP: tl.constexpr,  # a program's K block is one tap's channel block (C_IN >= 16)
    HAS_BIAS: tl.constexpr,
    IS_FP64: tl.constexpr,
    ALLOW_TF32: tl.constexpr,
    BLOCK_J: tl.constexpr,  # kept channels per program (MMA M)
    BLOCK_K: tl.constexpr,  # patch elements per program (MMA N)
    BLOCK_N: tl.constexpr,  # images per step (MMA K)
):
    q = tl.program_id(0).to(tl.int64)
    j0 = tl.program_id(1) * BLOCK_J
    pid_k = tl.program_id(2)
    cnt = tl.load(pos_count_ptr + q)
    if j0 < cnt:
        oy = q // W_OUT
        ox = q % W_OUT
        offs_j = j0 + tl.arange(0, BLOCK_J)
        j_ok = offs_j < cnt
        ch = tl.load(pos_ch_ptr + q * C_OUT + offs_j, mask=j_ok, other=0).to(tl.int64)
        k_total = KH * KW * C_IN
        if TAP_LOOP:
            c_blocks = tl.cdiv(C_IN, BLOCK_K)
            tap = pid_k // c_blocks
            c = (pid_k % c_blocks) * BLOCK_K + tl.arange(0, BLOCK_K)
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
            xt = tl.load(x_cols + offs_n.to(tl.int64)[:, None] * x_sn, mask=n_ok[:, None] & in_ok[None, :],
                         other=0.0)
            acc = _mma(g, xt, acc, ALLOW_TF32)
            if HAS_BIAS:
                gsum += tl.sum(g.to(gsum.dtype), axis=1)
        tl.atomic_add(gw_ptr + ch[:, None] * k_total + offs_k[None, :], acc, mask=j_ok[:, None] & k_ok[None, :])
        if HAS_BIAS:
            tl.atomic_add(gb_ptr + ch, gsum, mask=j_ok & (pid_k == 0))


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


# Widest output row a forward program keeps in registers (FULL_ROWS mode); wider layers
# use the zero-fill + scatter mode.
_FULL_ROWS_MAX_C_OUT = 128


def _tap_loop(c_in: int) -> bool:
    """Tap-by-tap reduction once a tap has at least one MMA K step (16) of channels."""
    return c_in >= 16


def _channels_last_weight(weight: Tensor) -> Tensor:
    """The weight with C_in innermost (a no-op for a channels_last weight): each tap's
    channels are then one contiguous run. The weight is small; the copy is cheap."""
    return weight.contiguous(memory_format=torch.channels_last)


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
    c_out_pad = max(16, triton.next_power_of_2(c_out))
    full_rows = c_out_pad <= _FULL_ROWS_MAX_C_OUT
    out = torch.empty((n, c_out, ho, wo), dtype=input.dtype, device=input.device,
                      memory_format=suggest_memory_format(input))
    if not full_rows:
        out.zero_()  # dropped neurons are never visited in this mode
    pos_count, pos_ch = kernel_plan(mask)
    if out.numel() == 0 or not _launchable(input, weight, mask):
        return out.zero_() if full_rows else out
    # Patches are read as runs over C_in: channels_last makes them contiguous (no-op when
    # the caller already is channels_last, the fast layout).
    input = input.contiguous(memory_format=torch.channels_last)
    weight = _channels_last_weight(weight)

    def grid(meta):
        if full_rows:
            return (ho * wo, triton.cdiv(n, meta["BLOCK_N"]))
        return (ho * wo, triton.cdiv(c_out, meta["BLOCK_J"]), triton.cdiv(n, meta["BLOCK_N"]))

    torch.library.wrap_triton(_masked_conv2d_fwd_kernel)[grid](
        input, weight, bias.contiguous() if bias is not None else out, out, pos_count, pos_ch,  # b_ptr: stride 1
        n, c_in, h, w, c_out, ho, wo,
        *input.stride(), *weight.stride(), *out.stride(), *_conv_args(stride, padding, dilation),
        KH=kh, KW=kw, TAP_LOOP=_tap_loop(c_in), FULL_ROWS=full_rows, C_OUT_PAD=c_out_pad,
        HAS_BIAS=bias is not None, **_flags(input.dtype),
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
            grid = lambda meta: (h * w, triton.cdiv(c_in, meta["BLOCK_C"]),  # noqa: E731
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
            # grad_bias alone needs one program per kept (q, channel) block, so one K block.
            tap_loop = _tap_loop(c_in)

            def grid(meta):
                if not need_weight:
                    k_blocks = 1
                elif tap_loop:
                    k_blocks = kh * kw * triton.cdiv(c_in, meta["BLOCK_K"])
                else:
                    k_blocks = triton.cdiv(kh * kw * c_in, meta["BLOCK_K"])
                return (ho * wo, triton.cdiv(c_out, meta["BLOCK_J"]), k_blocks)
            torch.library.wrap_triton(_masked_conv2d_grad_weight_kernel)[grid](
                grad_output, x_cl, gw, gb, pos_count, pos_ch,
                n, c_in, h, w, c_out, ho, wo,
                *grad_output.stride(), *x_cl.stride(), *conv,
                KH=kh, KW=kw, TAP_LOOP=tap_loop, HAS_BIAS=bool(need_bias), **flags,
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
