// The CPU kernels behind sparsemask::masked_conv2d and sparsemask::defective_unit: the
// sparse forward, the kept-gradient gather, grad_input and grad_weight.
//
// Only kept outputs are computed. The work is organised around output positions q: the
// mask is shared by the whole batch, so at one position q the kept channels C_q form a
// small dense GEMM  out[n, C_q] = patch[n, :] . W[C_q, :]  with the batch as its M side.
//
// Layouts (built per call from the user's tensors, in the compute type T):
//   xp  [N, Hp, Wp, Cp]   input, channels padded to Cp = C rounded up to whole vectors.
//                         With dilation_w == 1 (Geometry::unpadded) not padded spatially
//                         (Hp = H, Wp = W): a patch is kh runs of kw*Cp elements, fewer and
//                         shorter where it crosses the border (Geometry::patch), and a
//                         channels_last input of type T with C = Cp is read as it is, no
//                         copy. Otherwise zero padded by `padding`, so that every patch is
//                         nseg runs of seglen elements: no bounds checks and no tails.
//   wp  [K, kh, kw, Cp]   weight, same channel padding (zeros contribute nothing).
//   gk  [nnz, N]          grad_output at kept neurons only, rows ordered by (q, j) as in
//                         the plan's pos_start: contiguous over the batch.
// Inner loops are register tiles written with GCC/Clang vector extensions, so they are
// vectorised for each ISA level (csrc/cpu/isa.h) without intrinsics.
//
// This header holds the passes; simd.h the vector helpers, packing.h the geometry and the
// packed layouts they read.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../checks.h"
#include "../plan.h"
#include "buffer_pool.h"
#include "packing.h"
#include "simd.h"

namespace sparsemask {
namespace cpu {
inline namespace SPARSEMASK_CPU_NS {  // one per ISA level (isa.h)

// ---------------------------------------------------------------------------------------
// Forward: res[n][j] = <patch of image n at q, weight row of channel j>
template <typename T, int NB, int JB>
inline void forward_tile(const T* const* xs, const T* const* ws, const Segments& sg, T (*res)[kColBlock]) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> acc[NB][JB];
  for (int n = 0; n < NB; ++n)
    for (int j = 0; j < JB; ++j) acc[n][j] = Vec<T>{};
  for (int64_t s = 0; s < sg.n; ++s) {
    const int64_t xo = sg.x[s], wo = sg.w[s];
    for (int64_t k = 0; k < sg.len; k += L) {
      Vec<T> xv[NB];
      for (int n = 0; n < NB; ++n) xv[n] = loadu(xs[n] + xo + k);
      for (int j = 0; j < JB; ++j) {
        const Vec<T> wv = loadu(ws[j] + wo + k);
        for (int n = 0; n < NB; ++n) acc[n][j] += xv[n] * wv;
      }
    }
  }
  if constexpr (NB * JB <= L && NB * JB > L / 4) {  // several vectors' sums: all at once
    Vec<T> all[L];
    for (int n = 0; n < NB; ++n)
      for (int j = 0; j < JB; ++j) all[n * JB + j] = acc[n][j];
    for (int i = NB * JB; i < L; ++i) all[i] = Vec<T>{};
    const Vec<T> sums = hsum_lanes<T>(all);
    for (int n = 0; n < NB; ++n)
      for (int j = 0; j < JB; ++j) res[n][j] = sums[n * JB + j];
    return;
  }
  for (int n = 0; n < NB; ++n)
    for (int j = 0; j < JB; ++j) res[n][j] = hsum<T>(acc[n][j]);
}

template <typename T, int NB>
inline void forward_tile_jb(int jb, const T* const* xs, const T* const* ws, const Segments& sg,
                            T (*res)[kColBlock]) {
  switch (jb) {
    case 1: return forward_tile<T, NB, 1>(xs, ws, sg, res);
    case 2: return forward_tile<T, NB, 2>(xs, ws, sg, res);
    case 3: return forward_tile<T, NB, 3>(xs, ws, sg, res);
    default: return forward_tile<T, NB, 4>(xs, ws, sg, res);
  }
}

#if SPARSEMASK_CPU_LEVEL == SPARSEMASK_CPU_AVX512
// Native bfloat16 forward tile (AVX512-BF16, level "avx512_bf16", chosen at load time by
// dispatch.cpp): xp and wp hold bfloat16 with Cp a multiple of 32, and each vdpbf16ps
// multiplies 32 pairs of a patch and a weight row into 16 float32 partial sums — twice the
// products per instruction of the float32 FMA tile, from half the bytes, with no conversion
// of the input to float32. Its own target attribute (the level's ISA + avx512bf16), so the
// library still loads on AVX-512 CPUs without BF16; noinline keeps the BF16 instructions
// out of every function that may run there. Products are exact in float32; sums float32.
inline bool& bf16_dot_enabled() {
  static bool enabled = false;  // set once by dispatch.cpp before the kernels are registered
  return enabled;
}

template <int NB, int JB>
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi,bmi2,popcnt,avx512bf16"), noinline)) void
forward_tile_bf16(const c10::BFloat16* const* xs, const c10::BFloat16* const* ws, const Segments& sg,
                  float (*res)[kColBlock]) {
  __m512 acc[NB][JB];
  for (int n = 0; n < NB; ++n)
    for (int j = 0; j < JB; ++j) acc[n][j] = _mm512_setzero_ps();
  for (int64_t s = 0; s < sg.n; ++s) {
    const int64_t xo = sg.x[s], wo = sg.w[s];
    for (int64_t k = 0; k < sg.len; k += 32) {
      __m512bh xv[NB];
      for (int n = 0; n < NB; ++n) xv[n] = (__m512bh)_mm512_loadu_si512(xs[n] + xo + k);
      for (int j = 0; j < JB; ++j) {
        const __m512bh wv = (__m512bh)_mm512_loadu_si512(ws[j] + wo + k);
        for (int n = 0; n < NB; ++n) acc[n][j] = _mm512_dpbf16_ps(acc[n][j], xv[n], wv);
      }
    }
  }
  for (int n = 0; n < NB; ++n)
    for (int j = 0; j < JB; ++j) res[n][j] = _mm512_reduce_add_ps(acc[n][j]);
}
#endif

// One register tile of the forward: float results for T = bfloat16 (native dot products,
// avx512 level only), T results otherwise.
template <typename T>
using ForwardResult = std::conditional_t<std::is_same_v<T, c10::BFloat16>, float, T>;

template <typename T, int NB>
inline void forward_tile_any(int jb, const T* const* xs, const T* const* ws, const Segments& sg,
                             ForwardResult<T> (*res)[kColBlock]) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
#if SPARSEMASK_CPU_LEVEL == SPARSEMASK_CPU_AVX512
    switch (jb) {
      case 1: return forward_tile_bf16<NB, 1>(xs, ws, sg, res);
      case 2: return forward_tile_bf16<NB, 2>(xs, ws, sg, res);
      case 3: return forward_tile_bf16<NB, 3>(xs, ws, sg, res);
      default: return forward_tile_bf16<NB, 4>(xs, ws, sg, res);
    }
#else
    static_assert(!std::is_same_v<T, T>, "native bfloat16 tiles exist in the avx512 level only");
#endif
  } else {
    forward_tile_jb<T, NB>(jb, xs, ws, sg, res);
  }
}

// Work is split into tiles of (a block of kRowBlock images) x (kPosChunk output positions),
// ordered so that one thread sweeps many positions with the same images: the rows those
// images' patches come from then stay in L2 while the positions advance, instead of the
// whole batch's patches (megabytes) streaming from L3 for every position.
constexpr int64_t kPosChunk = 64;

//
// store(n, row, co, q, value) receives every kept neuron once: image n, channel co, output
// position q, and row = its row in a kept-only [nnz, N] buffer (the plan's pos_start order);
// value is a ForwardResult<T> (float for bfloat16 operands).
// row_begin(n0, nb, q) is called for every position q of every block of nb images before
// its kept neurons are stored: a caller writing channels_last outputs zeroes the block's
// rows there, in cache, so each output line is written once (no zero-fill pass first).
struct NoRowBegin {
  void operator()(int64_t, int, int64_t) const {}
};

// Where forward_kernel's tasks read the input: source(n0, nb, q0, q1) returns image n0 of
// a [*, Hp, Wp, Cp] buffer (image n0 + n at + n * img_stride) that holds, for images
// [n0, n0 + nb), at least the rows the patches of positions [q0, q1) read.
//
// PackedInput: the whole input as pack_input gives it (copied, or the caller's own).
template <typename T>
struct PackedInput {
  const T* xp;
  int64_t img_stride;
  const T* operator()(int64_t n0, int, int64_t, int64_t) const { return xp + n0 * img_stride; }
};

// NchwRows: an NCHW input of type S transposed row by row, as the tasks reach the rows,
// into a per-thread buffer of `images` unpadded images in T — instead of a packed copy of
// the whole input first. That copy is written to memory and read back (64->64@32, N=32,
// keep 0.05: ~18 of the ~27 MB a forward moves); a thread's rows here stay in its cache
// between being transposed and being read. A thread sweeps the positions of one block of
// images in order (forward_kernel's and grad_weight_loops' task order), so each row is
// transposed about once per pass.
template <typename S, typename T>
class NchwRows {
 public:
  NchwRows(const at::Tensor& input, const Geometry& g, int64_t images)
      : src_(static_cast<const S*>(input.const_data_ptr())), g_(g), images_(images), state_(at::get_num_threads()) {
    TORCH_INTERNAL_ASSERT(g.unpadded && input.is_contiguous());
  }

  const T* operator()(int64_t n0, int nb, int64_t q0, int64_t q1) const {
    const int64_t tid = at::get_thread_num();
    TORCH_CHECK(tid < static_cast<int64_t>(state_.size()) && nb <= images_, "masked_conv2d: thread id ", tid,
                " or block of ", nb, " images out of range");
    Rows& r = state_[tid];
    if (r.buf == nullptr)
      r.buf = scratch(2, {images_, g_.H, g_.W, g_.Cp}, c10::CppTypeToScalarType<T>::value).template data_ptr<T>();
    // Input rows read by the patches of output rows [oy0, oy1].
    const int64_t oy0 = q0 / g_.Wo, oy1 = (q1 - 1) / g_.Wo;
    const int64_t y0 = std::max<int64_t>(0, oy0 * g_.p.sh - g_.p.ph);
    const int64_t y1 = std::min<int64_t>(g_.H, oy1 * g_.p.sh - g_.p.ph + (g_.kh - 1) * g_.p.dh + 1);
    if (r.n0 != n0 || y0 < r.lo || y0 > r.hi) r = {r.buf, n0, y0, y0};  // a new block or a jump
    for (int64_t y = std::max(r.hi, y0); y < y1; ++y)
      for (int n = 0; n < nb; ++n)
        pack_row_from_nchw<S, T>(src_ + (n0 + n) * g_.C * g_.H * g_.W, r.buf + n * g_.img_stride + y * g_.W * g_.Cp,
                                 g_, y);
    r.hi = std::max(r.hi, y1);
    return r.buf;
  }

 private:
  struct Rows {
    T* buf = nullptr;
    int64_t n0 = -1, lo = 0, hi = 0;  // rows [lo, hi) of the block of images from n0 are in buf
  };
  const S* src_;
  const Geometry& g_;
  int64_t images_;
  mutable std::vector<Rows> state_;  // one per thread, each touched by its own thread only
};

template <typename T, typename Store, typename RowBegin = NoRowBegin, typename Source>
void forward_kernel(const Source& source, const T* wp, const MaskPlan& plan, const Geometry& g, const Store& store,
                    const RowBegin& row_begin = RowBegin{}) {
  const int32_t* pos_count = plan.pos_count.data_ptr<int32_t>();
  const int32_t* pos_ch = plan.pos_ch.data_ptr<int32_t>();
  const int64_t* pos_start = plan.pos_start.data_ptr<int64_t>();
  const int64_t nblocks = (g.N + kRowBlock - 1) / kRowBlock;
  const int64_t qchunks = (g.Q + kPosChunk - 1) / kPosChunk;
  at::parallel_for(0, nblocks * qchunks, 1, [&](int64_t t0, int64_t t1) {
    const T* xs[kRowBlock];
    const T* ws[kColBlock];
    ForwardResult<T> res[kRowBlock][kColBlock];
    Segments sg;
    ClippedRuns clipped;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = (t / qchunks) * kRowBlock, qbegin = (t % qchunks) * kPosChunk;
      const int64_t qend = std::min(g.Q, qbegin + kPosChunk);
      const int nb = static_cast<int>(std::min<int64_t>(kRowBlock, g.N - n0));
      const T* xp = source(n0, nb, qbegin, qend);  // image n0
      for (int64_t q = qbegin; q < qend; ++q) {
        row_begin(n0, nb, q);
        const int64_t cnt = pos_count[q];
        if (cnt == 0) continue;
        const int32_t* chs = pos_ch + q * g.K;
        const int64_t org = g.patch(q, sg, clipped);
        for (int n = 0; n < nb; ++n) xs[n] = xp + n * g.img_stride + org;
        for (int64_t j0 = 0; j0 < cnt; j0 += kColBlock) {
          const int jb = static_cast<int>(std::min<int64_t>(kColBlock, cnt - j0));
          for (int j = 0; j < jb; ++j) ws[j] = wp + chs[j0 + j] * g.krow;
          if (nb == kRowBlock) {
            forward_tile_any<T, kRowBlock>(jb, xs, ws, sg, res);
          } else {
            for (int n = 0; n < nb; ++n) forward_tile_any<T, 1>(jb, xs + n, ws, sg, res + n);
          }
          for (int n = 0; n < nb; ++n)
            for (int j = 0; j < jb; ++j) store(n0 + n, pos_start[q] + j0 + j, chs[j0 + j], q, res[n][j]);
        }
      }
    }
  });
}

// Runs run(source) with the input source for `input` in compute type T (dtype t), for tasks
// of up to `images` images: NchwRows where reads_nchw_rows, in the dtype pairs the kernels
// use (same type, or 16-bit widened to float32); else PackedInput.
template <typename T, typename Run>
void with_input_source(const at::Tensor& input, const Geometry& g, at::ScalarType t, int64_t images, const Run& run) {
  const at::ScalarType s = input.scalar_type();
  if (reads_nchw_rows(input, g, t)) {
    if (s == t) return run(NchwRows<T, T>(input, g, images));
    if constexpr (std::is_same_v<T, float>) {
      if (s == at::kBFloat16) return run(NchwRows<c10::BFloat16, float>(input, g, images));
      if (s == at::kHalf) return run(NchwRows<c10::Half, float>(input, g, images));
    }
  }
  const at::Tensor xp = pack_input(input, g, t);
  run(PackedInput<T>{xp.const_data_ptr<T>(), g.img_stride});
}

// ---------------------------------------------------------------------------------------
// Backward, step 1: gk[r, n] = src[n, ch(r), q(r)] for kept neurons r only; with a gate,
// gk[r, n] = 0 where gate[n, ch(r), q(r)] <= 0 (the ReLU's derivative, gate = its output).
// src and gate may have any strides (channels_last reads best) and be of a 16-bit type S,
// converted element by element (no float32 copy of the whole gradient first).
template <typename T, typename S>
void gather_kept_from(const at::Tensor& go, const at::Tensor& gate, const MaskPlan& plan, const Geometry& g, T* dst) {
  const S* src = go.data_ptr<S>();
  const S* gp = gate.defined() ? gate.data_ptr<S>() : nullptr;
  const int64_t sN = go.stride(0), sC = go.stride(1), sH = go.stride(2), sW = go.stride(3);
  const int64_t gN = gp ? gate.stride(0) : 0, gC = gp ? gate.stride(1) : 0, gH = gp ? gate.stride(2) : 0,
                gW = gp ? gate.stride(3) : 0;
  const int32_t* pos_count = plan.pos_count.data_ptr<int32_t>();
  const int32_t* pos_ch = plan.pos_ch.data_ptr<int32_t>();
  const int64_t* pos_start = plan.pos_start.data_ptr<int64_t>();
  // Chunks of 16 images (one 64-byte line of a gk row) outermost: each gk line is written
  // whole, and the 16 images' src is read as 16 sequential streams (channels_last).
  constexpr int64_t kChunk = 16;
  at::parallel_for(0, (g.N + kChunk - 1) / kChunk, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t n0 = c0 * kChunk; n0 < std::min(g.N, c1 * kChunk); n0 += kChunk) {
      const int64_t n1 = std::min(g.N, n0 + kChunk);
      for (int64_t q = 0; q < g.Q; ++q) {
        const S* s = src + (q / g.Wo) * sH + (q % g.Wo) * sW;
        const S* gq = gp ? gp + (q / g.Wo) * gH + (q % g.Wo) * gW : nullptr;
        const int32_t* chs = pos_ch + q * g.K;
        for (int64_t j = 0; j < pos_count[q]; ++j) {
          const S* sj = s + chs[j] * sC;
          T* d = dst + (pos_start[q] + j) * g.N;
          if (gq) {
            const S* gj = gq + chs[j] * gC;
            for (int64_t n = n0; n < n1; ++n) {
              // Both loads unconditional: a select, not a branch (the gate is ~50% random).
              const T v = static_cast<T>(sj[n * sN]), gate_v = static_cast<T>(gj[n * gN]);
              d[n] = gate_v > T(0) ? v : T(0);
            }
          } else {
            for (int64_t n = n0; n < n1; ++n) d[n] = static_cast<T>(sj[n * sN]);
          }
        }
      }
    }
  });
}

// gk [nnz, N] in T from src (and gate) of dtype T, bfloat16 or float16.
template <typename T>
at::Tensor gather_kept(const at::Tensor& src_t, const MaskPlan& plan, const Geometry& g, at::ScalarType t,
                       const at::Tensor* gate_t = nullptr) {
  const at::ScalarType s = src_t.scalar_type();
  const bool direct = s == t || s == at::kBFloat16 || s == at::kHalf;
  at::Tensor go = direct ? src_t : src_t.to(t);
  at::Tensor gate = gate_t == nullptr ? at::Tensor() : gate_t->to(go.scalar_type());
  at::Tensor gk = pooled_empty({plan.nnz, g.N}, go.options().dtype(t));
  T* dst = gk.data_ptr<T>();
  if (go.scalar_type() == at::kBFloat16 && t != at::kBFloat16) {
    gather_kept_from<T, c10::BFloat16>(go, gate, plan, g, dst);
  } else if (go.scalar_type() == at::kHalf && t != at::kHalf) {
    gather_kept_from<T, c10::Half>(go, gate, plan, g, dst);
  } else {
    gather_kept_from<T, T>(go, gate, plan, g, dst);
  }
  return gk;
}

// ---------------------------------------------------------------------------------------
// grad_input, gathered per input position (no write conflicts, each element written once):
//   gx[n, iy, ix, c] = sum over taps (ky, kx) landing on an output position q and over
//                      kept channels co of q:  gk[(q, co), n] * W[co, ky, kx, c]
struct Tap {
  int64_t row0;   // pos_start[q]
  int64_t count;  // pos_count[q]
  int64_t q;
  int64_t woff;   // (ky * kw + kx) * Cp
};

template <typename T, typename O, int NB, int CV>
inline void grad_input_tile(const std::vector<Tap>& taps, const T* gk, const int32_t* pos_ch, const T* wp,
                            const Geometry& g, int64_t n0, int64_t c0, O* gx_row, int64_t gx_img_stride) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> acc[NB][CV];
  for (int n = 0; n < NB; ++n)
    for (int v = 0; v < CV; ++v) acc[n][v] = Vec<T>{};
  for (const Tap& t : taps) {
    const int32_t* chs = pos_ch + t.q * g.K;
    for (int64_t j = 0; j < t.count; ++j) {
      const T* grow = gk + (t.row0 + j) * g.N + n0;
      const T* wrow = wp + chs[j] * g.krow + t.woff + c0;
      Vec<T> gv[NB];
      for (int n = 0; n < NB; ++n) gv[n] = splat(grow[n]);
      for (int v = 0; v < CV; ++v) {
        const Vec<T> wv = loadu(wrow + v * L);
        for (int n = 0; n < NB; ++n) acc[n][v] += gv[n] * wv;
      }
    }
  }
  for (int n = 0; n < NB; ++n)
    for (int v = 0; v < CV; ++v) store_as<O, T>(gx_row + n * gx_img_stride + c0 + v * L, acc[n][v]);
}

template <typename T, typename O, int NB>
inline void grad_input_tile_cv(int cv, const std::vector<Tap>& taps, const T* gk, const int32_t* pos_ch, const T* wp,
                               const Geometry& g, int64_t n0, int64_t c0, O* gx_row, int64_t gx_img_stride) {
  switch (cv) {
    case 1: return grad_input_tile<T, O, NB, 1>(taps, gk, pos_ch, wp, g, n0, c0, gx_row, gx_img_stride);
    case 2: return grad_input_tile<T, O, NB, 2>(taps, gk, pos_ch, wp, g, n0, c0, gx_row, gx_img_stride);
    case 3: return grad_input_tile<T, O, NB, 3>(taps, gk, pos_ch, wp, g, n0, c0, gx_row, gx_img_stride);
    default: return grad_input_tile<T, O, NB, 4>(taps, gk, pos_ch, wp, g, n0, c0, gx_row, gx_img_stride);
  }
}

// The taps of input pixel (iy, ix): the output positions whose patches read it and that
// keep some channel, with the offset of the pixel within their weight rows.
inline void pixel_taps(const Geometry& g, const int32_t* pos_count, const int64_t* pos_start, int64_t iy, int64_t ix,
                       std::vector<Tap>& taps) {
  taps.clear();
  for (int64_t ky = 0; ky < g.kh; ++ky) {
    const int64_t ty = iy + g.p.ph - ky * g.p.dh;
    if (ty < 0 || ty % g.p.sh != 0 || ty / g.p.sh >= g.Ho) continue;
    for (int64_t kx = 0; kx < g.kw; ++kx) {
      const int64_t tx = ix + g.p.pw - kx * g.p.dw;
      if (tx < 0 || tx % g.p.sw != 0 || tx / g.p.sw >= g.Wo) continue;
      const int64_t q = (ty / g.p.sh) * g.Wo + tx / g.p.sw;
      if (pos_count[q] > 0) taps.push_back({pos_start[q], pos_count[q], q, (ky * g.kw + kx) * g.Cp});
    }
  }
}

// gx of one input pixel (its taps) for images [n_begin, n_end): Cp elements per image, image
// n at out + (n - n_begin) * img_stride, in the input's dtype O (computed in T).
template <typename T, typename O>
void grad_input_pixel(const std::vector<Tap>& taps, const T* gk, const int32_t* pos_ch, const T* wp,
                      const Geometry& g, int64_t n_begin, int64_t n_end, O* out, int64_t img_stride) {
  constexpr int64_t L = kLanes<T>;
  if (taps.empty()) {
    for (int64_t n = n_begin; n < n_end; ++n) std::fill_n(out + (n - n_begin) * img_stride, g.Cp, O(0));
    return;
  }
  for (int64_t n0 = n_begin; n0 < n_end; n0 += kRowBlock) {
    const int64_t nb = std::min<int64_t>(kRowBlock, n_end - n0);
    O* rows = out + (n0 - n_begin) * img_stride;
    for (int64_t c0 = 0; c0 < g.Cp; c0 += kColBlock * L) {
      const int cv = static_cast<int>(std::min<int64_t>(kColBlock, (g.Cp - c0) / L));
      if (nb == kRowBlock) {
        grad_input_tile_cv<T, O, kRowBlock>(cv, taps, gk, pos_ch, wp, g, n0, c0, rows, img_stride);
      } else {
        for (int64_t n = 0; n < nb; ++n)
          grad_input_tile_cv<T, O, 1>(cv, taps, gk, pos_ch, wp, g, n0 + n, c0, rows + n * img_stride, img_stride);
      }
    }
  }
}

// gx [N, H, W, Cp] in the input's dtype O (computed in T; channel padding is written too
// and dropped by the caller).
template <typename T, typename O>
void grad_input_kernel(const T* gk, const T* wp, const MaskPlan& plan, const Geometry& g, O* gx) {
  const int32_t* pos_count = plan.pos_count.data_ptr<int32_t>();
  const int32_t* pos_ch = plan.pos_ch.data_ptr<int32_t>();
  const int64_t* pos_start = plan.pos_start.data_ptr<int64_t>();
  at::parallel_for(0, g.H * g.W, 1, [&](int64_t p0, int64_t p1) {
    std::vector<Tap> taps;
    taps.reserve(g.kh * g.kw);
    for (int64_t pix = p0; pix < p1; ++pix) {
      pixel_taps(g, pos_count, pos_start, pix / g.W, pix % g.W, taps);
      grad_input_pixel<T, O>(taps, gk, pos_ch, wp, g, 0, g.N, gx + pix * g.Cp, g.H * g.W * g.Cp);
    }
  });
}

// grad_input [N, C, H, W] (NCHW-contiguous, the input's dtype O) directly: each task computes
// one input row of a block of images channels-innermost into a per-thread buffer, in cache,
// and transposes it into the images' planes (transpose.h) — instead of the whole gx
// [N, H, W, Cp] written to memory, read back and transposed in a second pass.
template <typename T, typename O>
void grad_input_kernel_nchw(const T* gk, const T* wp, const MaskPlan& plan, const Geometry& g, O* out) {
  using U = Bits<sizeof(O)>;
  // Images per task: all of a usual batch. The weight rows of a pixel's taps are then read
  // once for all its images (32 per task was slower for bfloat16: 4x the weight reads), and
  // the buffer [128, W, Cp] is 1 MB at W=32, Cp=64 in float32, L2-sized.
  constexpr int64_t kImages = 128;
  const int32_t* pos_count = plan.pos_count.data_ptr<int32_t>();
  const int32_t* pos_ch = plan.pos_ch.data_ptr<int32_t>();
  const int64_t* pos_start = plan.pos_start.data_ptr<int64_t>();
  const int64_t blocks = (g.N + kImages - 1) / kImages, row = g.W * g.Cp, plane = g.H * g.W;
  at::parallel_for(0, g.H * blocks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<Tap> taps;
    taps.reserve(g.kh * g.kw);
    O* buf = scratch(3, {kImages, g.W, g.Cp}, c10::CppTypeToScalarType<O>::value).template data_ptr<O>();
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t y = t / blocks, n_begin = (t % blocks) * kImages, n_end = std::min(g.N, n_begin + kImages);
      for (int64_t x = 0; x < g.W; ++x) {
        pixel_taps(g, pos_count, pos_start, y, x, taps);
        grad_input_pixel<T, O>(taps, gk, pos_ch, wp, g, n_begin, n_end, buf + x * g.Cp, row);
      }
      for (int64_t n = n_begin; n < n_end; ++n)
        transpose(reinterpret_cast<const U*>(buf + (n - n_begin) * row), g.Cp,
                  reinterpret_cast<U*>(out + n * g.C * plane + y * g.W), plane, g.W, g.C);
    }
  });
}

// ---------------------------------------------------------------------------------------
// grad_weight, per output position with thread-private accumulators: the patch of q is
// loaded once per tile of JB kept channels and reused by all of them (an outer product
// accumulated over the batch), which is what makes this cheaper than per-channel loops.
template <typename T, int JB, int CV>
inline void grad_weight_tile(const T* const* grows, const T* xq, const Geometry& g, int64_t n0, int64_t n1,
                             T* const* gw) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> acc[JB][CV];
  for (int j = 0; j < JB; ++j)
    for (int v = 0; v < CV; ++v) acc[j][v] = loadu(gw[j] + v * L);
  for (int64_t n = n0; n < n1; ++n) {
    const T* x = xq + (n - n0) * g.img_stride;  // xq: image n0
    Vec<T> xv[CV];
    for (int v = 0; v < CV; ++v) xv[v] = loadu(x + v * L);
    for (int j = 0; j < JB; ++j) {
      const Vec<T> gj = splat(grows[j][n]);
      for (int v = 0; v < CV; ++v) acc[j][v] += gj * xv[v];
    }
  }
  for (int j = 0; j < JB; ++j)
    for (int v = 0; v < CV; ++v) storeu(gw[j] + v * L, acc[j][v]);
}

template <typename T, int JB>
inline void grad_weight_tile_cv(int cv, const T* const* grows, const T* xq, const Geometry& g, int64_t n0,
                                int64_t n1, T* const* gw) {
  switch (cv) {
    case 1: return grad_weight_tile<T, JB, 1>(grows, xq, g, n0, n1, gw);
    case 2: return grad_weight_tile<T, JB, 2>(grows, xq, g, n0, n1, gw);
    case 3: return grad_weight_tile<T, JB, 3>(grows, xq, g, n0, n1, gw);
    default: return grad_weight_tile<T, JB, 4>(grows, xq, g, n0, n1, gw);
  }
}

template <typename T>
inline void grad_weight_tile_dispatch(int jb, int cv, const T* const* grows, const T* xq, const Geometry& g,
                                      int64_t n0, int64_t n1, T* const* gw) {
  switch (jb) {
    case 1: return grad_weight_tile_cv<T, 1>(cv, grows, xq, g, n0, n1, gw);
    case 2: return grad_weight_tile_cv<T, 2>(cv, grows, xq, g, n0, n1, gw);
    case 3: return grad_weight_tile_cv<T, 3>(cv, grows, xq, g, n0, n1, gw);
    default: return grad_weight_tile_cv<T, 4>(cv, grows, xq, g, n0, n1, gw);
  }
}

// Images per grad_weight tile: enough to amortise the accumulators' load/store, few enough
// that these images' input rows stay in L2 while the positions advance. 32, not 16: the
// bfloat16 tile takes images in pairs, so 16 images were only 8 iterations per load/store
// of the accumulators (N=128, keep 0.1, channels_last bf16 grad_weight 5.1 -> 4.4 ms at
// 64->64@32, 3.05 -> 2.6 at 128->128@16; float32 unchanged; 64 images no better).
constexpr int64_t kImageChunk = 32;

// The loops of grad_weight, shared by the float tiles and the native bfloat16 ones: returns
// the float/double accumulators gw [K, kh, kw, Cp] (dtype of acc_opts, summed over threads).
// tile(jb, cv, rows, x, offset, n0, n1, gws) accumulates into gws[0..jb) (weight rows of
// the kept channels, at a run of cv * lanes elements) the outer product over images [n0, n1)
// of the kept-gradient rows rows[0..jb) and the input at element `offset` of each image
// (patch origin + run + k0), image n0 of the input at x = source(n0, ...) (forward_kernel's
// sources: the packed or in-place input, or NchwRows).
template <typename Acc, typename Source, typename Tile>
at::Tensor grad_weight_loops(const MaskPlan& plan, const Geometry& g, int64_t lanes, const at::TensorOptions& acc_opts,
                             const Source& source, const Tile& tile) {
  const int64_t nthreads = at::get_num_threads();
  at::Tensor gw_all = at::zeros({nthreads, g.K, g.kh, g.kw, g.Cp}, acc_opts);
  Acc* gw_base = gw_all.data_ptr<Acc>();
  const int32_t* pos_count = plan.pos_count.data_ptr<int32_t>();
  const int32_t* pos_ch = plan.pos_ch.data_ptr<int32_t>();
  const int64_t* pos_start = plan.pos_start.data_ptr<int64_t>();
  const int64_t nchunks = (g.N + kImageChunk - 1) / kImageChunk;
  const int64_t qchunks = (g.Q + kPosChunk - 1) / kPosChunk;
  at::parallel_for(0, nchunks * qchunks, 1, [&](int64_t t0, int64_t t1) {
    const int64_t tid = at::get_thread_num();
    TORCH_CHECK(tid < nthreads, "masked_conv2d: thread id ", tid, " out of range ", nthreads);
    Acc* gw = gw_base + tid * g.K * g.krow;
    int64_t rows[kColBlock];
    Acc* gws[kColBlock];
    Segments sg;
    ClippedRuns clipped;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = (t / qchunks) * kImageChunk, n1 = std::min(g.N, n0 + kImageChunk);
      const int64_t qbegin = (t % qchunks) * kPosChunk, qend = std::min(g.Q, qbegin + kPosChunk);
      const auto* x = source(n0, static_cast<int>(n1 - n0), qbegin, qend);  // image n0
      for (int64_t q = qbegin; q < qend; ++q) {
        const int64_t cnt = pos_count[q];
        if (cnt == 0) continue;
        const int32_t* chs = pos_ch + q * g.K;
        const int64_t org = g.patch(q, sg, clipped);
        for (int64_t j0 = 0; j0 < cnt; j0 += kColBlock) {
          const int jb = static_cast<int>(std::min<int64_t>(kColBlock, cnt - j0));
          for (int j = 0; j < jb; ++j) rows[j] = pos_start[q] + j0 + j;
          for (int64_t s = 0; s < sg.n; ++s) {
            for (int64_t k0 = 0; k0 < sg.len; k0 += kColBlock * lanes) {
              const int cv = static_cast<int>(std::min<int64_t>(kColBlock, (sg.len - k0) / lanes));
              for (int j = 0; j < jb; ++j) gws[j] = gw + chs[j0 + j] * g.krow + sg.w[s] + k0;
              tile(jb, cv, rows, x, org + sg.x[s] + k0, n0, n1, gws);
            }
          }
        }
      }
    }
  });
  return nthreads == 1 ? gw_all[0] : gw_all.sum(0);
}

// Returns gw [K, kh, kw, Cp] in dtype T, the input read through `source`.
template <typename T, typename Source>
at::Tensor grad_weight_kernel(const T* gk, const Source& source, const MaskPlan& plan, const Geometry& g,
                              const at::TensorOptions& opts) {
  return grad_weight_loops<T>(plan, g, kLanes<T>, opts, source,
                              [&](int jb, int cv, const int64_t* rows, const T* x, int64_t offset, int64_t n0,
                                  int64_t n1, T* const* gws) {
                                const T* grows[kColBlock];
                                for (int j = 0; j < jb; ++j) grows[j] = gk + rows[j] * g.N;
                                grad_weight_tile_dispatch<T>(jb, cv, grows, x + offset, g, n0, n1, gws);
                              });
}

#if SPARSEMASK_CPU_LEVEL == SPARSEMASK_CPU_AVX512
// Native bfloat16 grad_weight (AVX512-BF16; the forward's tile has the same target and
// reasons). grad_weight reduces over images, so vdpbf16ps takes its pairs along the batch:
// xq [ceil(N/2), Hp, Wp, Cp, 2] is the packed input with images 2p and 2p+1 interleaved
// element by element, gk2 [nnz, Np] the kept gradient with Np = N rounded up to even (a pair
// of images is one 32-bit word, broadcast to all lanes), padding image and gradient zero.
// One instruction: 16 weights += 2 images' products each, float32 sums of exact products.
template <int JB, int CV>
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi,bmi2,popcnt,avx512bf16"), noinline)) void
grad_weight_tile_bf16(const c10::BFloat16* const* grows, const c10::BFloat16* xq, int64_t pair_stride, int64_t p0,
                      int64_t p1, float* const* gw) {
  __m512 acc[JB][CV];
  for (int j = 0; j < JB; ++j)
    for (int v = 0; v < CV; ++v) acc[j][v] = _mm512_loadu_ps(gw[j] + v * 16);
  for (int64_t p = p0; p < p1; ++p) {
    const c10::BFloat16* x = xq + (p - p0) * pair_stride;  // xq: pair p0
    __m512bh xv[CV];
    for (int v = 0; v < CV; ++v) xv[v] = (__m512bh)_mm512_loadu_si512(x + v * 32);
    for (int j = 0; j < JB; ++j) {
      int32_t pair;
      std::memcpy(&pair, grows[j] + 2 * p, sizeof(pair));
      const __m512bh gj = (__m512bh)_mm512_set1_epi32(pair);
      for (int v = 0; v < CV; ++v) acc[j][v] = _mm512_dpbf16_ps(acc[j][v], xv[v], gj);
    }
  }
  for (int j = 0; j < JB; ++j)
    for (int v = 0; v < CV; ++v) _mm512_storeu_ps(gw[j] + v * 16, acc[j][v]);
}

template <int JB>
inline void grad_weight_tile_bf16_cv(int cv, const c10::BFloat16* const* grows, const c10::BFloat16* xq,
                                     int64_t pair_stride, int64_t p0, int64_t p1, float* const* gw) {
  switch (cv) {
    case 1: return grad_weight_tile_bf16<JB, 1>(grows, xq, pair_stride, p0, p1, gw);
    case 2: return grad_weight_tile_bf16<JB, 2>(grows, xq, pair_stride, p0, p1, gw);
    case 3: return grad_weight_tile_bf16<JB, 3>(grows, xq, pair_stride, p0, p1, gw);
    default: return grad_weight_tile_bf16<JB, 4>(grows, xq, pair_stride, p0, p1, gw);
  }
}

// xq [ceil(N/2), Hp, Wp, Cp, 2] from xp [N, Hp, Wp, Cp] (bfloat16): pairs of images
// interleaved element by element (image 2p in the low half of each 32-bit word); a missing
// last image is zeros.
inline at::Tensor interleave_image_pairs(const at::Tensor& xp, const Geometry& g) {
  const int64_t pairs = (g.N + 1) / 2;
  at::Tensor xq = scratch(1, {pairs, g.Hp, g.Wp, g.Cp, 2}, xp.options());
  const uint16_t* src = reinterpret_cast<const uint16_t*>(xp.const_data_ptr());
  uint32_t* dst = reinterpret_cast<uint32_t*>(xq.data_ptr());
  constexpr int64_t kBlock = 4096;  // words per task
  const int64_t blocks = (g.img_stride + kBlock - 1) / kBlock;
  at::parallel_for(0, pairs * blocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t p = t / blocks, e0 = (t % blocks) * kBlock, e1 = std::min(g.img_stride, e0 + kBlock);
      const uint16_t* a = src + 2 * p * g.img_stride;
      uint32_t* d = dst + p * g.img_stride;
      if (2 * p + 1 < g.N) {
        const uint16_t* b = a + g.img_stride;
        for (int64_t e = e0; e < e1; ++e) d[e] = uint32_t(a[e]) | (uint32_t(b[e]) << 16);
      } else {
        for (int64_t e = e0; e < e1; ++e) d[e] = uint32_t(a[e]);
      }
    }
  });
  return xq;
}

// The same xq straight from an NCHW-contiguous bfloat16 input read unpadded (g.unpadded):
// each task transposes one row of the two images of a pair into a small buffer (in cache)
// and interleaves them — the packed copy of the whole input is never written and read back
// (NCHW bf16 64->64@32, N=128: one 17 MB round trip through memory less per backward).
inline at::Tensor interleave_image_pairs_from_nchw(const at::Tensor& input, const Geometry& g) {
  using B = c10::BFloat16;
  TORCH_INTERNAL_ASSERT(g.unpadded && input.is_contiguous() && input.scalar_type() == at::kBFloat16);
  const int64_t pairs = (g.N + 1) / 2, row = g.W * g.Cp, image = g.C * g.H * g.W;
  at::Tensor xq = scratch(1, {pairs, g.H, g.W, g.Cp, 2}, input.options());
  const B* src = input.const_data_ptr<B>();
  uint32_t* dst = reinterpret_cast<uint32_t*>(xq.data_ptr());
  at::parallel_for(0, pairs * g.H, 1, [&](int64_t t0, int64_t t1) {
    std::vector<B> rows(2 * row);
    const uint16_t* a = reinterpret_cast<const uint16_t*>(rows.data());
    const uint16_t* b = a + row;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t p = t / g.H, y = t % g.H;
      pack_row_from_nchw<B, B>(src + 2 * p * image, rows.data(), g, y);
      if (2 * p + 1 < g.N) pack_row_from_nchw<B, B>(src + (2 * p + 1) * image, rows.data() + row, g, y);
      else std::fill(rows.begin() + row, rows.end(), B(0.0f));
      uint32_t* d = dst + (p * g.H + y) * row;
      for (int64_t e = 0; e < row; ++e) d[e] = uint32_t(a[e]) | (uint32_t(b[e]) << 16);
    }
  });
  return xq;
}

// grad_weight [K, C, kh, kw] in bfloat16 for a bfloat16 input, from the float32 kept
// gradient gk [nnz, N] (exact bfloat16 values: gathered from a bfloat16 grad_output).
inline at::Tensor grad_weight_bf16(const at::Tensor& gk, const at::Tensor& input, const at::Tensor& weight,
                                   const MaskPlan& plan, const Geometry& g_float) {
  using B = c10::BFloat16;
  const Geometry g = make_geometry<B>(input, weight, g_float.p, g_float.Ho, g_float.Wo);
  const at::Tensor xq = reads_nchw_rows(input, g, at::kBFloat16)
                           ? interleave_image_pairs_from_nchw(input, g)
                           : interleave_image_pairs(pack_input(input, g, at::kBFloat16), g);
  const int64_t Np = (g.N + 1) / 2 * 2;
  const at::Tensor gk2 = (Np == g.N ? gk : at::constant_pad_nd(gk, {0, Np - g.N})).to(at::kBFloat16).contiguous();
  const B* gk2_p = gk2.const_data_ptr<B>();
  const B* xq_p = xq.const_data_ptr<B>();
  // Image n0 (even) starts pair n0 / 2, at n0 * img_stride bfloat16 elements.
  at::Tensor gw = grad_weight_loops<float>(
      plan, g, 16, gk.options().dtype(at::kFloat), PackedInput<B>{xq_p, g.img_stride},
      [&](int jb, int cv, const int64_t* rows, const B* xn0, int64_t offset, int64_t n0, int64_t n1,
          float* const* gws) {
        const B* grows[kColBlock];
        for (int j = 0; j < jb; ++j) grows[j] = gk2_p + rows[j] * Np;
        const B* x = xn0 + 2 * offset;
        const int64_t p0 = n0 / 2, p1 = (n1 + 1) / 2;  // n0 is a multiple of kImageChunk: even
        switch (jb) {
          case 1: return grad_weight_tile_bf16_cv<1>(cv, grows, x, 2 * g.img_stride, p0, p1, gws);
          case 2: return grad_weight_tile_bf16_cv<2>(cv, grows, x, 2 * g.img_stride, p0, p1, gws);
          case 3: return grad_weight_tile_bf16_cv<3>(cv, grows, x, 2 * g.img_stride, p0, p1, gws);
          default: return grad_weight_tile_bf16_cv<4>(cv, grows, x, 2 * g.img_stride, p0, p1, gws);
        }
      });
  return gw.narrow(3, 0, g.C).permute({0, 3, 1, 2}).to(weight.scalar_type()).contiguous();
}
#endif

// ---------------------------------------------------------------------------------------
// grad_input (input's dtype and memory format) and grad_weight (contiguous) from the kept
// gradient gk [nnz, N] in the compute type T; a gradient not asked for is left undefined.
template <typename T>
std::pair<at::Tensor, at::Tensor> conv_grads_from_kept(const at::Tensor& gk, const at::Tensor& input,
                                                       const at::Tensor& weight, const MaskPlan& plan,
                                                       const Geometry& g, bool need_input, bool need_weight) {
  const at::ScalarType t = c10::CppTypeToScalarType<T>::value;
  at::Tensor grad_input, grad_weight;
  if (need_input) {
    at::Tensor wp = pack_weight(weight, g, t);
    // NCHW: written into the planes row by row; otherwise gx [N, H, W, Cp], then viewed.
    const at::MemoryFormat fmt = input.suggest_memory_format();
    const bool nchw = fmt == at::MemoryFormat::Contiguous;
    at::Tensor out = nchw ? pooled_empty(input.sizes(), input.options(), fmt)
                          : pooled_empty({g.N, g.H, g.W, g.Cp}, input.options());
    const auto run = [&](auto out_zero) {
      using O = decltype(out_zero);
      if (nchw) grad_input_kernel_nchw<T, O>(gk.data_ptr<T>(), wp.data_ptr<T>(), plan, g, out.data_ptr<O>());
      else grad_input_kernel<T, O>(gk.data_ptr<T>(), wp.data_ptr<T>(), plan, g, out.data_ptr<O>());
    };
    // Written in the input's dtype by the kernels (16-bit inputs: no float32 copy to convert).
    const at::ScalarType out_t = input.scalar_type();
    if (out_t == at::kBFloat16 && t != out_t) run(c10::BFloat16{});
    else if (out_t == at::kHalf && t != out_t) run(c10::Half{});
    else run(T{});
    if (nchw) {
      grad_input = out;
    } else {
      // [N, H, W, Cp] viewed as [N, C, H, W]: already channels_last when C == Cp, else one
      // strided copy.
      at::Tensor view = out.narrow(3, 0, g.C).permute({0, 3, 1, 2});
      grad_input = view.is_contiguous(fmt) ? view : pooled_empty(input.sizes(), input.options(), fmt).copy_(view);
    }
  }
  if (need_weight) {
#if SPARSEMASK_CPU_LEVEL == SPARSEMASK_CPU_AVX512
    if (std::is_same_v<T, float> && input.scalar_type() == at::kBFloat16 && bf16_dot_enabled()) {
      return {grad_input, grad_weight_bf16(gk, input, weight, plan, g)};
    }
#endif
    at::Tensor gw;
    with_input_source<T>(input, g, t, kImageChunk, [&](const auto& source) {
      gw = grad_weight_kernel<T>(gk.data_ptr<T>(), source, plan, g, input.options().dtype(t));
    });
    grad_weight = gw.narrow(3, 0, g.C).permute({0, 3, 1, 2}).to(weight.scalar_type()).contiguous();
  }
  return {grad_input, grad_weight};
}

}  // namespace SPARSEMASK_CPU_NS
}  // namespace cpu
}  // namespace sparsemask
