// Geometry and packing of the CPU kernels: the padded, channel-padded input xp and weight
// wp (layouts in conv_kernels.h), built per call into per-thread scratch buffers.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../checks.h"
#include "simd.h"
#include "transpose.h"

namespace sparsemask {
namespace cpu {
inline namespace SPARSEMASK_CPU_NS {  // one per ISA level (isa.h)

// The runs of one patch: n runs of len contiguous elements, at x[s] in the input (from the
// offset Geometry::patch returns) and at w[s] in a packed weight row.
struct Segments {
  int64_t n, len;
  const int64_t* x;
  const int64_t* w;
};

// Where Geometry::patch writes the runs of a patch clipped at the image border (one per
// kernel row: an unpadded geometry has at most this many kernel rows).
constexpr int64_t kMaxClippedRuns = 16;
struct ClippedRuns {
  int64_t x[kMaxClippedRuns], w[kMaxClippedRuns];
};

struct Geometry {
  int64_t N, C, H, W, Cp;  // input; Cp = C rounded up to whole vectors
  int64_t K, Ho, Wo, Q;    // output channels and size, Q = Ho * Wo positions
  int64_t kh, kw;
  ConvParams p;
  // unpadded: the input is read as [N, H, W, Cp] without the padding ring (Hp == H, Wp ==
  // W), patches crossing the border clipped (patch()) — the caller's channels_last tensor
  // itself where it has that layout (reads_in_place), else a copy; see make_geometry.
  bool unpadded = false;
  int64_t Hp, Wp, img_stride, krow;  // (padded) input size, elements per image, per weight row
  int64_t nseg, seglen;              // a whole patch = nseg runs of seglen contiguous elements
  std::vector<int64_t> seg_x, seg_w;  // run offsets in the input (from the patch origin) and in wp rows

  int64_t pad_y() const { return (Hp - H) / 2; }
  int64_t pad_x() const { return (Wp - W) / 2; }

  // The patch of output position q: its runs (into `runs`, or `clipped` for a patch that
  // crosses the border of an unpadded input: only the rows and columns inside the image,
  // the padding's zeros contributing nothing), and the offset within one image that their
  // x offsets start from.
  int64_t patch(int64_t q, Segments& runs, ClippedRuns& clipped) const {
    const int64_t oy = q / Wo, ox = q % Wo;
    runs = {nseg, seglen, seg_x.data(), seg_w.data()};
    if (!unpadded) return (oy * p.sh * Wp + ox * p.sw) * Cp;
    const int64_t iy0 = oy * p.sh - p.ph, ix0 = ox * p.sw - p.pw;  // may be negative
    if (iy0 >= 0 && iy0 + (kh - 1) * p.dh < H && ix0 >= 0 && ix0 + kw - 1 < W) return (iy0 * W + ix0) * Cp;
    const int64_t kx0 = std::max<int64_t>(0, -ix0), kx1 = std::min<int64_t>(kw, W - ix0);
    runs = {0, std::max<int64_t>(0, kx1 - kx0) * Cp, clipped.x, clipped.w};
    if (kx1 <= kx0) return 0;
    for (int64_t ky = 0; ky < kh; ++ky) {
      const int64_t iy = iy0 + ky * p.dh;
      if (iy < 0 || iy >= H) continue;
      clipped.x[runs.n] = (iy * W + ix0 + kx0) * Cp;
      clipped.w[runs.n] = (ky * kw + kx0) * Cp;
      ++runs.n;
    }
    return 0;
  }
};

// Whether the kernels can read `input` itself as the unpadded [N, H, W, Cp] of geometry g,
// in compute type t: channels_last, already of type t, channels a whole number of vectors.
// Then no copy is made: that copy was 10% of a channels_last forward and 1.2-1.8 ms of each
// backward (64->64@32, N=128, fp32).
inline bool reads_in_place(const at::Tensor& input, const Geometry& g, at::ScalarType t) {
  return g.unpadded && input.scalar_type() == t && input.size(1) == g.Cp &&
         input.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// Whether the kernels read an NCHW `input` row by row as they reach the rows (NchwRows,
// interleave_image_pairs_from_nchw in conv_kernels.h): NCHW-contiguous, read unpadded by g,
// and not a tensor that is read in place (C = 1 is both layouts at once).
inline bool reads_nchw_rows(const at::Tensor& input, const Geometry& g, at::ScalarType t) {
  return g.unpadded && input.is_contiguous() && !reads_in_place(input, g, t);
}

template <typename T>
Geometry make_geometry(const at::Tensor& input, const at::Tensor& weight, const ConvParams& p, int64_t ho, int64_t wo) {
  Geometry g;
  g.N = input.size(0);
  g.C = input.size(1);
  g.H = input.size(2);
  g.W = input.size(3);
  g.Cp = (g.C + kLanes<T> - 1) / kLanes<T> * kLanes<T>;
  g.K = weight.size(0);
  g.kh = weight.size(2);
  g.kw = weight.size(3);
  g.Ho = ho;
  g.Wo = wo;
  g.Q = ho * wo;
  g.p = p;
  // Unpadded wherever a patch row is one run (dilation_w 1) and the clipped runs fit
  // ClippedRuns; the padded layout (no clipping at all) for the rest.
  g.unpadded = p.dw == 1 && g.kh <= kMaxClippedRuns;
  g.Hp = g.unpadded ? g.H : g.H + 2 * p.ph;
  g.Wp = g.unpadded ? g.W : g.W + 2 * p.pw;
  g.img_stride = g.Hp * g.Wp * g.Cp;
  g.krow = g.kh * g.kw * g.Cp;
  if (p.dw == 1) {  // the kw taps of a kernel row are adjacent in memory: one run per row
    g.nseg = g.kh;
    g.seglen = g.kw * g.Cp;
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      g.seg_x.push_back(ky * p.dh * g.Wp * g.Cp);
      g.seg_w.push_back(ky * g.kw * g.Cp);
    }
  } else {
    g.nseg = g.kh * g.kw;
    g.seglen = g.Cp;
    for (int64_t ky = 0; ky < g.kh; ++ky)
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        g.seg_x.push_back((ky * p.dh * g.Wp + kx * p.dw) * g.Cp);
        g.seg_w.push_back((ky * g.kw + kx) * g.Cp);
      }
  }
  return g;
}

// A grow-only scratch buffer per calling thread. The padded input is rebuilt on every call,
// and a fresh 40 MB allocation costs more in page faults than the copy itself (measured:
// 9 ms to fault in and zero 38 MB vs 1.3 ms to copy into warm memory, 2 cores).
// The buffer is bytes, viewed as the dtype asked for: a bfloat16 forward (bfloat16 packing)
// and its backward (float32 packing) then share it instead of replacing each other's
// buffer on every call (a fresh 40 MB per call again: measured +11 ms per bf16 step, N=128).
// Slots: 0 the packed input (pack_input), 1 bfloat16 image pairs (interleave_image_pairs),
// 2 NchwRows' rows, 3 grad_input_kernel_nchw's rows (conv_kernels.h).
inline at::Tensor scratch(int slot, at::IntArrayRef sizes, const at::TensorOptions& opts) {
  thread_local at::Tensor buffers[4];
  at::Tensor& buf = buffers[slot];
  const at::ScalarType dtype = opts.dtype().toScalarType();
  const int64_t nbytes = c10::multiply_integers(sizes) * static_cast<int64_t>(c10::elementSize(dtype));
  if (!buf.defined() || buf.numel() < nbytes) {
    buf = at::empty({nbytes}, opts.dtype(at::kByte));
  }
  return buf.narrow(0, 0, nbytes).view(dtype).view(sizes);
}

// xp [N, Hp, Wp, Cp] in dtype T from input [N, C, H, W] of any layout and float dtype. Only
// the padding ring and the padded channels are zeroed; the interior is overwritten.
// One padded row of xp (`d`: Wp * Cp elements) from image row y of an NCHW-contiguous input
// (`image`: that image's C planes of H * W): the [C, W] slab transposed into the row
// (transpose.h), or channel by channel where the dtype widens. A transposing TensorIterator
// copy of the whole tensor instead cost 54% of a keep-0.05 forward (64->64@32, N=32: ~1.5 of
// 2.7 ms).

template <typename S, typename D>
void pack_row_from_nchw(const S* image, D* d, const Geometry& g, int64_t y) {
  const int64_t plane = g.H * g.W, pad = g.pad_x() * g.Cp;
  std::memset(d, 0, pad * sizeof(D));
  std::memset(d + pad + g.W * g.Cp, 0, (g.Wp * g.Cp - pad - g.W * g.Cp) * sizeof(D));
  D* body = d + pad;
  if (g.Cp > g.C)
    for (int64_t x = 0; x < g.W; ++x) std::memset(body + x * g.Cp + g.C, 0, (g.Cp - g.C) * sizeof(D));
  if constexpr (sizeof(S) == sizeof(D)) {  // same dtype: move bits, 16x16 tiles
    using U = Bits<sizeof(D)>;
    transpose(reinterpret_cast<const U*>(image + y * g.W), plane, reinterpret_cast<U*>(body), g.Cp, g.C, g.W);
  } else {  // widening (16-bit to float32): element by element, one plane row at a time
    for (int64_t c = 0; c < g.C; ++c) {
      const S* s = image + c * plane + y * g.W;
      D* dc = body + c;
      for (int64_t x = 0; x < g.W; ++x) dc[x * g.Cp] = static_cast<D>(s[x]);
    }
  }
}

template <typename S, typename D>
void pack_from_nchw(const at::Tensor& input, at::Tensor& xp, const Geometry& g) {
  const S* src = static_cast<const S*>(input.const_data_ptr());
  D* dst = static_cast<D*>(xp.data_ptr());
  const int64_t row = g.Wp * g.Cp;
  at::parallel_for(0, g.N * g.Hp, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / g.Hp, y = r % g.Hp - g.pad_y();
      if (y < 0 || y >= g.H) {
        std::memset(dst + r * row, 0, row * sizeof(D));
        continue;
      }
      pack_row_from_nchw(src + n * g.C * g.H * g.W, dst + r * row, g, y);
    }
  });
}

// Packs an NCHW-contiguous input with pack_from_nchw where the dtype pair is one the
// kernels use (same dtype, or 16-bit floats widened to float32); false otherwise.
inline bool pack_nchw_fast(const at::Tensor& input, at::Tensor& xp, const Geometry& g) {
  if (!input.is_contiguous()) return false;
  const at::ScalarType s = input.scalar_type(), d = xp.scalar_type();
  if (s == at::kFloat && d == at::kFloat) pack_from_nchw<float, float>(input, xp, g);
  else if (s == at::kDouble && d == at::kDouble) pack_from_nchw<double, double>(input, xp, g);
  else if (s == at::kBFloat16 && d == at::kBFloat16) pack_from_nchw<c10::BFloat16, c10::BFloat16>(input, xp, g);
  else if (s == at::kBFloat16 && d == at::kFloat) pack_from_nchw<c10::BFloat16, float>(input, xp, g);
  else if (s == at::kHalf && d == at::kFloat) pack_from_nchw<c10::Half, float>(input, xp, g);
  else return false;
  return true;
}

// The input as the kernels read it: the caller's tensor itself where reads_in_place, else xp.
inline at::Tensor pack_input(const at::Tensor& input, const Geometry& g, at::ScalarType t) {
  if (reads_in_place(input, g, t)) return input;
  at::Tensor xp = scratch(0, {g.N, g.Hp, g.Wp, g.Cp}, input.options().dtype(t));
  // bfloat16 widened to float32 in the same pass (its bits shifted up: exact), for the
  // float32 kernels that read a bfloat16 input (the backward).
  const bool widen_bf16 = input.scalar_type() == at::kBFloat16 && t == at::kFloat;
  if ((input.scalar_type() == t || widen_bf16) && g.C == g.Cp &&
      input.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    // The common case (channels_last, whole vectors of channels): every padded row is
    // [pw zeros | one copy of W*C elements | pw zeros], or all zeros in the top/bottom
    // padding — one parallel pass, instead of a strided TensorIterator copy plus zero_()s.
    const size_t es = xp.element_size(), in_es = input.element_size();
    const char* src = static_cast<const char*>(input.data_ptr());
    char* dst = static_cast<char*>(xp.data_ptr());
    const int64_t row = g.Wp * g.Cp, pad = g.pad_x() * g.Cp, body = g.W * g.C;
    at::parallel_for(0, g.N * g.Hp, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / g.Hp, y = r % g.Hp - g.pad_y();
        char* d = dst + r * row * es;
        if (y < 0 || y >= g.H) {
          std::memset(d, 0, row * es);
          continue;
        }
        std::memset(d, 0, pad * es);
        const char* s = src + ((n * g.H + y) * body) * in_es;
        if (widen_bf16) {
          const uint16_t* s16 = reinterpret_cast<const uint16_t*>(s);
          uint32_t* d32 = reinterpret_cast<uint32_t*>(d + pad * es);
          for (int64_t i = 0; i < body; ++i) d32[i] = static_cast<uint32_t>(s16[i]) << 16;
        } else {
          std::memcpy(d + pad * es, s, body * es);
        }
        std::memset(d + (pad + body) * es, 0, (row - pad - body) * es);
      }
    });
    return xp;
  }
  if (pack_nchw_fast(input, xp, g)) return xp;
  const int64_t py = g.pad_y(), px = g.pad_x();
  if (py > 0) {
    xp.narrow(1, 0, py).zero_();
    xp.narrow(1, g.Hp - py, py).zero_();
  }
  if (px > 0) {
    xp.narrow(2, 0, px).zero_();
    xp.narrow(2, g.Wp - px, px).zero_();
  }
  if (g.Cp > g.C) xp.narrow(3, g.C, g.Cp - g.C).zero_();
  xp.narrow(1, py, g.H).narrow(2, px, g.W).narrow(3, 0, g.C).copy_(input.permute({0, 2, 3, 1}));
  return xp;
}

// wp [K, kh, kw, Cp] in dtype T.
inline at::Tensor pack_weight(const at::Tensor& weight, const Geometry& g, at::ScalarType t) {
  at::Tensor wp = at::zeros({g.K, g.kh, g.kw, g.Cp}, weight.options().dtype(t));
  wp.narrow(3, 0, g.C).copy_(weight.permute({0, 2, 3, 1}));
  return wp;
}

}  // namespace SPARSEMASK_CPU_NS
}  // namespace cpu
}  // namespace sparsemask
