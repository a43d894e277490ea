"""A roofline model of every GPU kernel design of ``masked_conv2d`` (no GPU needed).

For a layer (shape, keep, dtype) and a named design it computes, per pass (forward,
grad_input, grad_weight) and per kernel launch of that pass:

* HBM bytes: the tensors a kernel must read or write once, plus the extra passes the
  design makes (zero fill, mask multiply, float32 grad_weight buffer and its conversion);
* L2->SM bytes: what the kernel's loads really request when it re-reads (a patch per
  kept-channel block, a gathered 2-byte element per 32-byte sector, ...);
* FLOPs: useful (kept outputs only) and issued (tensor-core tiles as padded by the design);
* atomics (grad_weight) and index-math instructions (the CUDA staging loops);

and an expected time on an H200: the largest of the per-resource times plus a launch
cost per kernel. **These are model estimates from datasheet-derived rates (the `H200`
constants below), not measurements.** Kept channels per position are Binomial(C_out, keep)
(the ``neuron`` mask), and every expectation over them is computed exactly from that law.

    python benchmarks/gpu/roofline.py               # the table on stdout
    python benchmarks/gpu/roofline.py --docs docs/gpu.md   # ... written between the markers

Pure Python (no torch), so the test (tests/benchmarks/test_roofline.py) and the docs step
are instant.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

# --------------------------------------------------------------------------------------
# Device rates (H200 SXM). Datasheet values and the fraction assumed achievable; each
# assumption is named so the docs can print it next to the table.


@dataclass(frozen=True)
class Device:
    name: str = "H200 SXM (model)"
    hbm_Bps: float = 3.8e12        # datasheet 4.8 TB/s; ~3.5-4 TB/s achievable by a copy kernel
    l2_Bps: float = 9.0e12         # L2->SM; assumed ~2.4x HBM (H100 microbenchmarks: 2-3x)
    tensor_flops: float = 600e12   # bf16 dense datasheet 990 TFLOP/s; ~60% for small-K tiles
    atomic_relaxed_ps: float = 1.0e12  # fp32 red.relaxed at L2, per second (assumption)
    atomic_acq_rel_ps: float = 0.25e12  # acq_rel atomics (Triton's default sem) assumed 4x slower
    issue_ips: float = 33.4e12     # thread-instructions/s: 132 SMs x 4 schedulers x 32 lanes x 1.98 GHz
    launch_s: float = 2.5e-6       # per kernel launch in eager mode (CUDA graphs: ~1 us)
    l1_resident_B: int = 128 * 1024  # a gathered weight table this small stays in L1/shared


H200 = Device()
SECTOR = 32  # bytes per L2 sector: the unit a scattered 2-byte access costs


@dataclass(frozen=True)
class Layer:
    """A 3x3 (any k) convolution layer: input [n, c_in, hw, hw], weight [c_out, c_in, k, k]."""

    name: str
    n: int
    c_in: int
    c_out: int
    hw: int
    k: int = 3
    stride: int = 1
    padding: int = 1

    @property
    def out_hw(self) -> int:
        return (self.hw + 2 * self.padding - self.k) // self.stride + 1

    @property
    def q(self) -> int:  # output positions
        return self.out_hw ** 2

    @property
    def kdim(self) -> int:  # patch length (the GEMM K of forward and grad_weight)
        return self.k * self.k * self.c_in


# The issue's three layers (bf16, channels_last).
LAYERS = [
    Layer("ImageNet layer1 64->64 @56, N=128", 128, 64, 64, 56),
    Layer("CIFAR 64->64 @32, N=256", 256, 64, 64, 32),
    Layer("CIFAR 128->128 @16, N=256", 256, 128, 128, 16),
]
KEEPS = [0.1, 0.3]
PASSES = ("fwd", "grad_input", "grad_weight")


# --------------------------------------------------------------------------------------
# Expectations over the kept channels of a position: cnt ~ Binomial(C_out, keep).

@lru_cache(maxsize=None)
def _pmf(n: int, p: float) -> tuple[float, ...]:
    return tuple(math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(n + 1))


def expected_blocks(c_out: int, keep: float, block: int, positions: int = 1) -> float:
    """E[ceil(max(cnt_1..cnt_P) / block)]: kept-channel blocks a program walks when it owns
    ``positions`` positions (their counts independent, each Binomial(c_out, keep))."""
    pmf = _pmf(c_out, keep)
    cdf, total, e = 0.0, 0.0, 0.0
    for m, pm in enumerate(pmf):
        prev = cdf ** positions
        cdf += pm
        total_m = min(cdf, 1.0) ** positions - prev  # P(max == m)
        e += total_m * math.ceil(m / block)
        total += total_m
    return e / total if total else 0.0


def sector_fraction(keep: float, elem: int) -> float:
    """Fraction of a channels_last row's 32-byte sectors that a gather of its kept channels
    touches (each sector holds 32/elem channels, each kept with probability keep)."""
    per = max(1, SECTOR // elem)
    return 1.0 - (1.0 - keep) ** per


# --------------------------------------------------------------------------------------
# Kernels and designs


@dataclass
class Kernel:
    """One kernel launch of a pass: its traffic, work and the model's time."""

    name: str
    hbm: float = 0.0          # bytes
    l2: float = 0.0           # bytes L2 -> SM (>= hbm for kernels that re-read)
    flops_useful: float = 0.0
    flops_issued: float = 0.0
    atomics: float = 0.0
    atomic_sem: str = "relaxed"
    instr: float = 0.0        # extra thread-instructions modelled (index math)
    launches: int = 1
    note: str = ""

    def time_s(self, dev: Device = H200) -> float:
        rate = dev.atomic_relaxed_ps if self.atomic_sem == "relaxed" else dev.atomic_acq_rel_ps
        return max(self.hbm / dev.hbm_Bps, max(self.l2, self.hbm) / dev.l2_Bps, self.flops_issued / dev.tensor_flops,
                   self.atomics / rate, self.instr / dev.issue_ips) + self.launches * dev.launch_s

    def bound(self, dev: Device = H200) -> str:
        rate = dev.atomic_relaxed_ps if self.atomic_sem == "relaxed" else dev.atomic_acq_rel_ps
        terms = {"HBM": self.hbm / dev.hbm_Bps, "L2": max(self.l2, self.hbm) / dev.l2_Bps,
                 "MMA": self.flops_issued / dev.tensor_flops, "atomics": self.atomics / rate,
                 "issue": self.instr / dev.issue_ips}
        return max(terms, key=terms.get)


@dataclass
class Sizes:
    """Bytes of each tensor of a layer and its dense FLOPs per pass."""

    x: float
    w: float
    y: float
    mask: float
    dense_flops: float

    @staticmethod
    def of(L: Layer, elem: int) -> "Sizes":
        return Sizes(x=L.n * L.c_in * L.hw ** 2 * elem, w=L.c_out * L.kdim * elem, y=L.n * L.c_out * L.q * elem,
                     mask=L.c_out * L.q, dense_flops=2.0 * L.n * L.c_out * L.q * L.kdim)


def floor_bytes(L: Layer, elem: int) -> dict:
    """The sparse byte floor per pass: every tensor the pass must touch, once."""
    s = Sizes.of(L, elem)
    return {"fwd": s.x + s.w + s.y, "grad_input": s.y + s.w + s.x, "grad_weight": s.y + s.x + s.w}


def design_dense(L: Layer, keep: float, elem: int) -> dict:
    """cuDNN conv2d then ``* mask`` (the baseline a user runs): dense MMA work, two extra
    passes over the output (mask the forward result, mask grad_output)."""
    s = Sizes.of(L, elem)
    useful = s.dense_flops * keep
    return {
        "fwd": [Kernel("cudnn fprop", hbm=s.x + s.w + s.y, flops_useful=useful, flops_issued=s.dense_flops),
                Kernel("mask multiply", hbm=2 * s.y + s.mask)],
        "grad_input": [Kernel("mask grad_output", hbm=2 * s.y + s.mask),
                       Kernel("cudnn dgrad", hbm=s.y + s.w + s.x, flops_useful=useful, flops_issued=s.dense_flops)],
        "grad_weight": [Kernel("cudnn wgrad", hbm=s.y + s.x + s.w, flops_useful=useful, flops_issued=s.dense_flops)],
    }


# Tile sizes of the modelled configurations (the first autotune config of each kernel).
V1 = dict(fwd_bn=64, fwd_j=16, gi_bn=64, gi_bc=32, gi_j=16, gw_j=16, gw_bk=64)
# (BLOCK_N, BLOCK_P, BLOCK_J) of the redesigned forward's autotune configs
# (sparsemask/triton/masked_conv2d.py, _FWD_CONFIGS); the model takes the fastest, as the
# autotuner would.
V2_FWD_CONFIGS = [(32, 4, 16), (64, 4, 16), (128, 2, 16)]
# (BLOCK_J, BLOCK_K) of grad_weight's autotune configs (_GRAD_WEIGHT_CONFIGS).
V2_GW_CONFIGS = [(16, 64), (16, 128), (32, 64), (32, 128), (16, 256)]
# (BLOCK_N, BLOCK_P, BLOCK_C, BLOCK_J) of the redesigned grad_input (_GRAD_INPUT_CONFIGS).
V2_GI_CONFIGS = [(32, 4, 32, 16), (64, 4, 32, 16), (32, 8, 32, 16), (32, 2, 64, 16), (32, 4, 64, 16)]
# csrc/cuda/masked_conv2d.cu, the wmma kernels (the bf16 default): forward BN=64 BJ=32 BK=32,
# grad_input BN=64 BC=32 BJ=16, grad_weight BJ=32 BK=64 BN=32.
CUDA_V1 = dict(fwd_bn=64, fwd_j=32, gi_bn=64, gi_bc=32, gi_j=16, gw_j=32, gw_bk=64, instr_per_staged=135)
# After the redesign the staging loop reads a precomputed 32-bit offset from shared memory:
# ~8 instructions per staged element (offset load, bounds select, 64-bit image address,
# global load, shared store) instead of ~135; an estimate from the loop's source, not SASS.
CUDA_V2_INSTR_PER_STAGED = 8
CUDA_ROW_CHANNELS = 128  # csrc/cuda/masked_conv2d.cu kRowChannels


def _fwd_v1(L: Layer, keep: float, elem: int, s: Sizes, bn: int, j: int, scatter_dot: bool) -> Kernel:
    """A program per (position, image tile) re-gathers the whole patch [bn, k*k*C_in] for
    every block of j kept channels; weights [j, k*k*C_in] per block."""
    b = expected_blocks(L.c_out, keep, j)
    n_tiles = math.ceil(L.n / bn)
    patch = L.q * L.n * L.kdim * elem * b
    weights = L.q * n_tiles * b * j * L.kdim * elem
    issued = 2.0 * L.q * n_tiles * bn * b * j * L.kdim
    if scatter_dot:  # the one-hot scatter of each block into the row tile: two dots (values, NaN codes)
        c_pad = max(16, 1 << (L.c_out - 1).bit_length())
        issued += 2 * 2.0 * L.q * n_tiles * bn * b * j * c_pad
    return Kernel("", hbm=s.x + s.w + s.y, l2=patch + weights + s.y, flops_useful=s.dense_flops * keep,
                  flops_issued=issued)


def _grad_input_v1(L: Layer, keep: float, elem: int, s: Sizes, bn: int, bc: int, j: int) -> Kernel:
    """A program per (input position, C_in tile, image tile) walks the taps; per tap it
    gathers grad_output's kept channels of the landing position (sector-granular) and
    their weight rows."""
    b = expected_blocks(L.c_out, keep, j)
    taps = L.q * L.k * L.k  # (output position, tap) pairs = (input position, tap) pairs that land
    c_tiles = math.ceil(L.c_in / bc)
    n_tiles = math.ceil(L.n / bn)
    go_row = L.c_out * elem * sector_fraction(keep, elem)  # bytes of sectors touched per gathered row
    go = taps * c_tiles * L.n * go_row * max(b, 1.0 if keep > 0 else 0.0)
    weights = taps * n_tiles * b * j * L.c_in * elem
    issued = 2.0 * taps * n_tiles * bn * b * j * L.c_in
    return Kernel("", hbm=s.x + s.w + s.y, l2=go + weights + s.x, flops_useful=s.dense_flops * keep,
                  flops_issued=issued)


def _grad_weight_v1(L: Layer, keep: float, elem: int, s: Sizes, j: int, bk: int, sem: str,
                    row_tile: bool = False) -> list:
    """A program per (position, kept-channel block, K tile) reduces over the batch and adds
    [j, bk] results atomically into a float32 buffer [C_out, k*k*C_in]; programs of
    positions with no channels in their block exit at once (grid sized for C_out).
    row_tile: K tiles run along a kernel row's contiguous (kx, c_in) elements, so there are
    k * ceil(k*C_in / bk) of them (grad_output is gathered once per K tile)."""
    b = expected_blocks(L.c_out, keep, j)
    k_tiles = L.k * math.ceil(L.k * L.c_in / bk) if row_tile else math.ceil(L.kdim / bk)
    patch = L.q * b * L.kdim * L.n * elem
    go = L.q * b * k_tiles * L.n * L.c_out * elem * sector_fraction(keep, elem)
    atomics = L.q * L.c_out * keep * L.kdim  # one per kept (position, channel) x patch element
    gw32 = L.c_out * L.kdim * 4
    issued = 2.0 * L.q * b * j * L.kdim * L.n
    grid = L.q * math.ceil(L.c_out / j) * k_tiles
    live = L.q * b * k_tiles
    return [Kernel("zero fp32 buffers", hbm=gw32, launches=2),
            Kernel("", hbm=s.x + s.y + gw32, l2=patch + go + atomics * 4, flops_useful=s.dense_flops * keep,
                   flops_issued=issued, atomics=atomics, atomic_sem=sem,
                   note=f"{live / grid:.0%} of {grid:,} programs do work"),
            Kernel("fp32 -> dtype, permute", hbm=gw32 + s.w)]


def design_triton_v1(L: Layer, keep: float, elem: int) -> dict:
    """The Triton kernels before the redesign (position-per-program, one-hot scatter)."""
    s = Sizes.of(L, elem)
    f = _fwd_v1(L, keep, elem, s, V1["fwd_bn"], V1["fwd_j"], scatter_dot=True)
    f.name, f.note = "fwd (q, image tile)", "255 regs + spills (compile report)"
    gi = _grad_input_v1(L, keep, elem, s, V1["gi_bn"], V1["gi_bc"], V1["gi_j"])
    gi.name = "grad_input (p, C_in tile, image tile)"
    gw = _grad_weight_v1(L, keep, elem, s, V1["gw_j"], V1["gw_bk"], sem="acq_rel")
    gw[1].name = "grad_weight (q, j block, K tile), acq_rel atomics"
    return {"fwd": [f], "grad_input": [gi], "grad_weight": gw}


def design_cuda_v1(L: Layer, keep: float, elem: int) -> dict:
    """The CUDA C++ kernels before the redesign: zero-fill then scattered 2-byte stores,
    ~135 instructions of 64-bit div/mod per staged patch element, 32-wide channel tiles."""
    s = Sizes.of(L, elem)
    c = CUDA_V1
    f = _fwd_v1(L, keep, elem, s, c["fwd_bn"], c["fwd_j"], scatter_dot=False)
    staged = f.l2 / elem  # every staged element (patch + weights) went through patch_offset/weight_offset
    kept = L.n * L.q * L.c_out * keep
    f.hbm = s.x + s.w + min(s.y, kept * SECTOR)  # scattered stores: a sector per kept element
    f.l2 += kept * SECTOR
    f.instr = staged * c["instr_per_staged"]
    f.name, f.note = "fwd (q, image tile), scatter stores", "64-bit div/mod per staged element"
    # grad_input indexes by tap (uniform per block) and grad_weight precomputes its K tile's
    # offsets once: their index math is not modelled.
    gi = _grad_input_v1(L, keep, elem, s, c["gi_bn"], c["gi_bc"], c["gi_j"])
    gi.name = "grad_input"
    gw = _grad_weight_v1(L, keep, elem, s, c["gw_j"], c["gw_bk"], sem="relaxed")
    gw[1].name = "grad_weight, atomicAdd"
    return {"fwd": [Kernel("zero fill output", hbm=s.y), f], "grad_input": [gi], "grad_weight": gw}


def design_cuda_v2(L: Layer, keep: float, elem: int) -> dict:
    """The CUDA C++ kernels after the redesign: the forward stages with per-K-tile 32-bit
    offsets and, for C_out <= 128, writes each output row once (no zero fill, coalesced row
    stores); the backward kernels as v1 (their index math was already per K tile)."""
    s = Sizes.of(L, elem)
    v1 = design_cuda_v1(L, keep, elem)
    c = CUDA_V1
    f = _fwd_v1(L, keep, elem, s, c["fwd_bn"], c["fwd_j"], scatter_dot=False)
    f.instr = f.l2 / elem * CUDA_V2_INSTR_PER_STAGED
    f.name = "fwd (q, image tile), 32-bit offsets"
    if L.c_out <= CUDA_ROW_CHANNELS:
        f.name += ", rows written once"
        return {"fwd": [f], "grad_input": v1["grad_input"], "grad_weight": v1["grad_weight"]}
    kept = L.n * L.q * L.c_out * keep
    f.hbm = s.x + s.w + min(s.y, kept * SECTOR)
    f.l2 += kept * SECTOR
    return {"fwd": [Kernel("zero fill output", hbm=s.y), f], "grad_input": v1["grad_input"],
            "grad_weight": v1["grad_weight"]}


def _fwd_v2(L: Layer, keep: float, elem: int, s: Sizes, bn: int, p: int, j: int) -> Kernel:
    """A program per (image tile, run of p positions of an output row, C_out range): for each
    tap it loads the input tile [p, bn, C_in] once (the neighbouring taps' tiles overlap, so
    the (p-1)*stride + k columns it touches per input row come from L1), gathers the weights
    of the p positions' kept channels ([p, C_in, j], L1-resident when the weight is small),
    runs a batched MMA [p] x [bn, C_in] @ [C_in, j] and writes the dense output tile
    [bn, p, C_out] once (zeros included, contiguous channels_last rows) by gathering the
    accumulator columns. Blocks of j kept channels: the max over the p positions."""
    b = expected_blocks(L.c_out, keep, j, positions=p)
    n_tiles = math.ceil(L.n / bn)
    segs = L.out_hw * math.ceil(L.out_hw / p)
    cols = (p - 1) * L.stride + L.k  # input columns one program touches per input row
    x_l2 = segs * n_tiles * b * L.k * cols * bn * L.c_in * elem
    w_l2 = segs * n_tiles * b * p * j * L.kdim * elem
    if s.w <= H200.l1_resident_B:
        w_l2 = segs * s.w  # each program's SM fetches the (small) weight once into L1
    issued = 2.0 * segs * n_tiles * b * p * bn * j * L.kdim
    return Kernel("fwd (row run, image tile), write-once", hbm=s.x + s.w + s.y + s.mask, l2=x_l2 + w_l2 + s.y,
                  flops_useful=s.dense_flops * keep, flops_issued=issued)


def _grad_input_v2(L: Layer, keep: float, elem: int, s: Sizes, bn: int, p: int, bc: int, j: int) -> Kernel:
    """A program per (run of p input positions of a row, C_in tile, image tile): per tap a
    batched MMA over the run, grad_output gathered at each landing position's kept channels
    (sector-granular). Taps kx of one row land on the same output run shifted by one, so per
    (program, ky) the (p-1)/stride + kw distinct landing positions come from L2, the rest
    from L1; blocks of j kept channels: the max over the run's landing positions."""
    b = expected_blocks(L.c_out, keep, j, positions=p)
    segs = L.hw * math.ceil(L.hw / p)
    c_tiles = math.ceil(L.c_in / bc)
    n_tiles = math.ceil(L.n / bn)
    rows_per_ky = 1.0 / L.stride  # output rows an input row lands on, per ky
    cols = (p - 1) / L.stride + L.k  # landing output columns per (program, ky), stride 1: p + k - 1
    go_row = L.c_out * elem * sector_fraction(keep, elem)
    go = segs * c_tiles * n_tiles * L.k * rows_per_ky * cols * bn * go_row * max(b, 1.0 if keep > 0 else 0.0)
    taps = L.q * L.k * L.k  # landing (output position, tap) pairs
    w_l2 = taps / p * n_tiles * b * p * j * L.c_in * elem if s.w > H200.l1_resident_B else segs * c_tiles * s.w
    issued = 2.0 * taps * n_tiles * bn * b * j * L.c_in
    return Kernel("grad_input (row run, C_in tile, image tile)", hbm=s.x + s.w + s.y, l2=go + w_l2 + s.x,
                  flops_useful=s.dense_flops * keep, flops_issued=issued)


def design_triton_v2(L: Layer, keep: float, elem: int) -> dict:
    """The redesigned Triton kernels (sparsemask/triton/masked_conv2d.py): forward and
    grad_input over row runs, the forward written once; grad_weight persistent with relaxed
    atomics and K tiles along kernel rows (each the fastest of its autotune configs)."""
    s = Sizes.of(L, elem)
    v1 = design_triton_v1(L, keep, elem)
    fwd = min((_fwd_v2(L, keep, elem, s, bn, p, j) for bn, p, j in V2_FWD_CONFIGS), key=Kernel.time_s)
    fwd.note = "fastest modelled config"
    # grad_weight: the same per-item work (the same atomic count) walked by a persistent grid
    # with relaxed atomics, K tiles along kernel rows (fewer grad_output gathers).
    gw = min((_grad_weight_v1(L, keep, elem, s, j, bk, sem="relaxed", row_tile=L.c_in >= 16)
              for j, bk in V2_GW_CONFIGS), key=lambda ks: sum(k.time_s() for k in ks))
    gw[1].name, gw[1].note = "grad_weight (persistent, row K tiles), relaxed atomics", "fastest modelled config"
    gi = min((_grad_input_v2(L, keep, elem, s, *c) for c in V2_GI_CONFIGS), key=Kernel.time_s)
    gi.note = "fastest modelled config"
    return {"fwd": [fwd], "grad_input": [gi], "grad_weight": gw}


DESIGNS = {
    "dense": design_dense,
    "triton-v1": design_triton_v1,
    "cuda-v1": design_cuda_v1,
    "triton-v2": design_triton_v2,
    "cuda-v2": design_cuda_v2,
}


@dataclass
class PassEstimate:
    kernels: list = field(default_factory=list)

    @property
    def hbm(self) -> float:
        return sum(k.hbm for k in self.kernels)

    @property
    def l2(self) -> float:
        return sum(max(k.l2, k.hbm) for k in self.kernels)

    @property
    def flops_useful(self) -> float:
        return sum(k.flops_useful for k in self.kernels)

    @property
    def flops_issued(self) -> float:
        return sum(k.flops_issued for k in self.kernels)

    @property
    def atomics(self) -> float:
        return sum(k.atomics for k in self.kernels)

    def time_us(self, dev: Device = H200) -> float:
        return sum(k.time_s(dev) for k in self.kernels) * 1e6


def estimate(L: Layer, keep: float, elem: int, design: str) -> dict:
    """{pass: PassEstimate} of one design for one layer."""
    return {p: PassEstimate(ks) for p, ks in DESIGNS[design](L, keep, elem).items()}


def floor_us(L: Layer, elem: int, dev: Device = H200) -> float:
    """fwd+bwd time if every pass moved only its floor bytes at the HBM rate."""
    return sum(floor_bytes(L, elem).values()) / dev.hbm_Bps * 1e6


# --------------------------------------------------------------------------------------
# Tables

def _mb(b: float) -> str:
    return f"{b / 1e6:,.0f}"


def table(layers=LAYERS, keeps=KEEPS, elem: int = 2, dev: Device = H200) -> str:
    """Markdown: per layer/keep/design the fwd, grad_input, grad_weight and total µs,
    HBM and L2 MB, issued vs useful GFLOP and atomics (fwd+bwd, bf16)."""
    lines = [
        f"Model estimates (not measurements), bf16, channels_last, forward + backward; device rates: "
        f"HBM {dev.hbm_Bps / 1e12:.1f} TB/s, L2->SM {dev.l2_Bps / 1e12:.1f} TB/s, MMA {dev.tensor_flops / 1e12:.0f} "
        f"TFLOP/s, atomics {dev.atomic_relaxed_ps / 1e12:.2f} T/s relaxed and {dev.atomic_acq_rel_ps / 1e12:.2f} T/s "
        f"acq_rel, {dev.launch_s * 1e6:.1f} µs per launch (benchmarks/gpu/roofline.py `H200`).",
        "",
        "| layer | keep | design | fwd µs | grad_in µs | grad_w µs | total µs | HBM MB | L2 MB | GFLOP issued / useful | "
        "atomics (M) | bound (fwd / gi / gw) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for L in layers:
        for keep in keeps:
            fb = sum(floor_bytes(L, elem).values())
            lines.append(f"| {L.name} | {keep} | *floor* |  |  |  | {floor_us(L, elem, dev):.0f} | {_mb(fb)} |  | "
                         f"{Sizes.of(L, elem).dense_flops * 3 * keep / 1e9:.1f} (useful) |  |  |")
            for d in DESIGNS:
                est = estimate(L, keep, elem, d)
                t = {p: est[p].time_us(dev) for p in PASSES}
                hbm = sum(est[p].hbm for p in PASSES)
                l2 = sum(est[p].l2 for p in PASSES)
                fi = sum(est[p].flops_issued for p in PASSES)
                fu = sum(est[p].flops_useful for p in PASSES)
                at = sum(est[p].atomics for p in PASSES)
                bound = " / ".join(max(est[p].kernels, key=lambda k: k.time_s(dev)).bound(dev) for p in PASSES)
                lines.append(f"| {L.name} | {keep} | {d} | {t['fwd']:.0f} | {t['grad_input']:.0f} | "
                             f"{t['grad_weight']:.0f} | **{sum(t.values()):.0f}** | {_mb(hbm)} | {_mb(l2)} | "
                             f"{fi / 1e9:.1f} / {fu / 1e9:.1f} | {at / 1e6:.1f} | {bound} |")
    return "\n".join(lines)


BEGIN, END = "<!-- roofline:begin -->", "<!-- roofline:end -->"


def write_docs(path: Path, text: str) -> None:
    """Replace what lies between the roofline markers in ``path`` (appending them if absent)."""
    doc = path.read_text()
    block = f"{BEGIN}\n\nGenerated by `python benchmarks/gpu/roofline.py --docs docs/gpu.md`.\n\n{text}\n\n{END}"
    if BEGIN in doc and END in doc:
        doc = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(doc)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=Path, help="write the table into this markdown file between the markers")
    args = ap.parse_args(argv)
    text = table()
    if args.docs:
        write_docs(args.docs, text)
        print(f"wrote the roofline table into {args.docs}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
