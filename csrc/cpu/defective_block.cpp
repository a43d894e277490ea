// CPU kernels of sparsemask::defective_block: a ResNet basic block whose two convs are
// defective,
//   a1  = relu(mask1 * BN1(conv1(input)))
//   out = relu(mask2 * BN2(conv2(a1)) + residual)
// as one op, so that the first unit's output is never a full-size tensor: it exists only
// at its kept neurons, as act1 [nnz1, N], and conv2 reads it there ("input sparsity").
//
// conv2 works compact-to-compact. Its output neuron (q, co) is a sum over taps t and over
// the input channels c kept at the tap's input pixel p = p(q, t):
//   kept2[(q, co), n] = sum_t sum_{c kept at p} W2[co, c, t] * act1[(p, c), n]
// The plan lists each pixel's kept channels as one contiguous run of rows, and the rows are
// contiguous over the batch, so the loops vectorise over n with scalar weights broadcast:
// the work is (kept fraction of mask1) x (kept fraction of mask2) of the dense conv's, 1% at
// keep 0.1. The backward is the same in reverse: dL/d act1 at mask1's kept neurons only
// (the only place unit 1's backward reads it) and dL/dW2 from the same row pairs.
//
// Where auto's threshold says dense (max_density below a mask's kept fraction), conv2 runs
// on a materialised act1 through the unit stages instead; results are the same.
//
// Compiled once per ISA level, included by csrc/cpu/kernels_at_level.h (csrc/cpu/isa.h);
// setup.py does not compile this file on its own.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../checks.h"
#include "../dense_fallback.h"
#include "../plan.h"
#include "conv_kernels.h"
#include "unit_kernels.h"

namespace sparsemask {
namespace cpu {
inline namespace SPARSEMASK_CPU_NS {  // one per ISA level (isa.h)
namespace {

// conv2 between two plans: input plan (mask1, [C1, H1, W1]) and output plan (mask2).
struct CompactConv {
  const MaskPlan* in;
  const MaskPlan* out;
  int64_t N, C1, H1, W1, K2, Ho, Wo, kh, kw;
  ConvParams p;
  // The two plans' lists: per position, kept count, kept channel ids, first kept row.
  const int32_t *cnt1, *ch1, *cnt2, *ch2;
  const int64_t *ps1, *ps2;
  int64_t krow() const { return kh * kw * C1; }
  // Input pixel of output position q at tap (ky, kx), or -1 when it falls in the padding.
  int64_t input_pixel(int64_t q, int64_t ky, int64_t kx) const {
    const int64_t iy = (q / Wo) * p.sh - p.ph + ky * p.dh, ix = (q % Wo) * p.sw - p.pw + kx * p.dw;
    return (iy < 0 || iy >= H1 || ix < 0 || ix >= W1) ? -1 : iy * W1 + ix;
  }
  // Output position that reads input pixel `pix` at tap (ky, kx), or -1.
  int64_t output_position(int64_t pix, int64_t ky, int64_t kx) const {
    const int64_t ty = pix / W1 + p.ph - ky * p.dh, tx = pix % W1 + p.pw - kx * p.dw;
    if (ty < 0 || tx < 0 || ty % p.sh != 0 || tx % p.sw != 0 || ty / p.sh >= Ho || tx / p.sw >= Wo) return -1;
    return (ty / p.sh) * Wo + tx / p.sw;
  }
};

struct TapRef {
  int64_t pos;   // the other side's position (input pixel or output position)
  int64_t woff;  // (ky * kw + kx) * C1 into a [K2, kh, kw, C1] weight row
};

constexpr int kTile = 4;  // channels per register tile (and batch vectors per tile)

// acc[j][v] += sum over (rows of a run) of w_j(row) * x(row)[v-th vector]: the shared inner
// loop of the forward (rows = kept input channels of a pixel, w = W2[co_j, c, t]) and of the
// input gradient (rows = kept output channels of a position, w = W2[co, c_j, t]).
template <typename T, int JB, int NV>
inline void accumulate_rows(Vec<T> (&acc)[kTile][kTile], const T* rows, int64_t nrows, int64_t N, int64_t n0,
                            const T* const (&w)[kTile], const int32_t* row_ids, int64_t wstride) {
  constexpr int64_t L = kLanes<T>;
  for (int64_t i = 0; i < nrows; ++i) {
    const T* x = rows + i * N + n0;
    Vec<T> xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = loadu(x + v * L);
    const int64_t wo = row_ids[i] * wstride;
    for (int j = 0; j < JB; ++j) {
      const Vec<T> wv = splat(w[j][wo]);
      for (int v = 0; v < NV; ++v) acc[j][v] += wv * xv[v];
    }
  }
}

// Vector-tile driver: for every (tile of JB targets) x (NV batch vectors) calls body(acc)
// to accumulate, then stores acc[j][v] at dst(j) + n0 + v*L; batch columns past the last
// whole vector are done one at a time with a 1-lane scalar tile.
template <typename T, int JB, int NV, typename Body, typename Dst>
inline void run_tile(int64_t n0, const Body& body, const Dst& dst) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> acc[kTile][kTile];
  for (int j = 0; j < JB; ++j)
    for (int v = 0; v < NV; ++v) acc[j][v] = Vec<T>{};
  body.template operator()<JB, NV>(acc, n0);
  for (int j = 0; j < JB; ++j)
    for (int v = 0; v < NV; ++v) storeu(dst(j) + n0 + v * L, acc[j][v]);
}

// Calls run_tile over the batch for JB targets: whole 4-vector blocks, then 1-3 vectors,
// then the scalar tail (done by `scalar(n)`).
template <typename T, int JB, typename Body, typename Dst, typename Scalar>
inline void over_batch(int64_t N, const Body& body, const Dst& dst, const Scalar& scalar) {
  constexpr int64_t L = kLanes<T>;
  int64_t n0 = 0;
  for (; n0 + kTile * L <= N; n0 += kTile * L) run_tile<T, JB, kTile>(n0, body, dst);
  for (; n0 + L <= N; n0 += L) run_tile<T, JB, 1>(n0, body, dst);
  for (; n0 < N; ++n0) scalar(n0);
}

// over_batch for a tile of `jb` (1-4) targets.
template <typename T, typename Body, typename Dst, typename Scalar>
inline void over_batch_tiles(int jb, int64_t N, const Body& body, const Dst& dst, const Scalar& scalar) {
  switch (jb) {
    case 1: return over_batch<T, 1>(N, body, dst, scalar);
    case 2: return over_batch<T, 2>(N, body, dst, scalar);
    case 3: return over_batch<T, 3>(N, body, dst, scalar);
    default: return over_batch<T, 4>(N, body, dst, scalar);
  }
}

// kept2 [nnz2, N] = conv2 of act1 [nnz1, N] (both compact).
template <typename T>
at::Tensor compact_conv_forward(const at::Tensor& act1, const at::Tensor& w2t, const CompactConv& cc) {
  at::Tensor kept2 = pooled_empty({cc.out->nnz, cc.N}, act1.options());
  const T* a = act1.data_ptr<T>();
  const T* w = w2t.data_ptr<T>();
  T* k2 = kept2.data_ptr<T>();
  const int32_t *cnt1 = cc.cnt1, *ch1 = cc.ch1, *cnt2 = cc.cnt2, *ch2 = cc.ch2;
  const int64_t *ps1 = cc.ps1, *ps2 = cc.ps2;
  const int64_t N = cc.N, Q = cc.Ho * cc.Wo;
  at::parallel_for(0, Q, 8, [&](int64_t q0, int64_t q1) {
    std::vector<TapRef> taps;
    for (int64_t q = q0; q < q1; ++q) {
      if (cnt2[q] == 0) continue;
      taps.clear();
      for (int64_t ky = 0; ky < cc.kh; ++ky)
        for (int64_t kx = 0; kx < cc.kw; ++kx) {
          const int64_t pix = cc.input_pixel(q, ky, kx);
          if (pix >= 0 && cnt1[pix] > 0) taps.push_back({pix, (ky * cc.kw + kx) * cc.C1});
        }
      for (int64_t j0 = 0; j0 < cnt2[q]; j0 += kTile) {
        const int jb = static_cast<int>(std::min<int64_t>(kTile, cnt2[q] - j0));
        const T* wrows[kTile];
        for (int j = 0; j < kTile; ++j) wrows[j] = w + ch2[q * cc.K2 + j0 + std::min(j, jb - 1)] * cc.krow();
        auto dst = [&](int j) { return k2 + (ps2[q] + j0 + j) * N; };
        auto body = [&]<int JB, int NV>(Vec<T>(&acc)[kTile][kTile], int64_t n0) {
          for (const TapRef& t : taps) {
            const T* const wt[kTile] = {wrows[0] + t.woff, wrows[1] + t.woff, wrows[2] + t.woff, wrows[3] + t.woff};
            accumulate_rows<T, JB, NV>(acc, a + ps1[t.pos] * N, cnt1[t.pos], N, n0, wt, ch1 + t.pos * cc.C1, 1);
          }
        };
        auto scalar = [&](int64_t n) {
          for (int j = 0; j < jb; ++j) {
            T s = 0;
            for (const TapRef& t : taps)
              for (int64_t i = 0; i < cnt1[t.pos]; ++i)
                s += wrows[j][t.woff + ch1[t.pos * cc.C1 + i]] * a[(ps1[t.pos] + i) * N + n];
            dst(j)[n] = s;
          }
        };
        over_batch_tiles<T>(jb, N, body, dst, scalar);
      }
    }
  });
  return kept2;
}

// g_act1 [nnz1, N] = dL/d act1 at mask1's kept neurons, from gk2 [nnz2, N] = dL/d conv2 out.
template <typename T>
at::Tensor compact_conv_grad_input(const at::Tensor& gk2, const at::Tensor& w2t, const CompactConv& cc) {
  at::Tensor ga = pooled_empty({cc.in->nnz, cc.N}, gk2.options());
  const T* g = gk2.data_ptr<T>();
  const T* w = w2t.data_ptr<T>();
  T* gap = ga.data_ptr<T>();
  const int32_t *cnt1 = cc.cnt1, *ch1 = cc.ch1, *cnt2 = cc.cnt2, *ch2 = cc.ch2;
  const int64_t *ps1 = cc.ps1, *ps2 = cc.ps2;
  const int64_t N = cc.N, P = cc.H1 * cc.W1, krow = cc.krow();
  at::parallel_for(0, P, 8, [&](int64_t p0, int64_t p1) {
    std::vector<TapRef> taps;
    for (int64_t pix = p0; pix < p1; ++pix) {
      if (cnt1[pix] == 0) continue;
      taps.clear();
      for (int64_t ky = 0; ky < cc.kh; ++ky)
        for (int64_t kx = 0; kx < cc.kw; ++kx) {
          const int64_t q = cc.output_position(pix, ky, kx);
          if (q >= 0 && cnt2[q] > 0) taps.push_back({q, (ky * cc.kw + kx) * cc.C1});
        }
      for (int64_t i0 = 0; i0 < cnt1[pix]; i0 += kTile) {
        const int ib = static_cast<int>(std::min<int64_t>(kTile, cnt1[pix] - i0));
        int64_t cs[kTile];
        for (int i = 0; i < kTile; ++i) cs[i] = ch1[pix * cc.C1 + i0 + std::min(i, ib - 1)];
        auto dst = [&](int i) { return gap + (ps1[pix] + i0 + i) * N; };
        if (taps.empty()) {
          for (int i = 0; i < ib; ++i) std::fill_n(dst(i), N, T(0));
          continue;
        }
        auto body = [&]<int IB, int NV>(Vec<T>(&acc)[kTile][kTile], int64_t n0) {
          for (const TapRef& t : taps) {
            // weights W2[co, c_i, t] for the rows (co) of position t.pos: base w + woff + c_i,
            // row stride krow (one weight row per output channel).
            const T* const wt[kTile] = {w + t.woff + cs[0], w + t.woff + cs[1], w + t.woff + cs[2], w + t.woff + cs[3]};
            accumulate_rows<T, IB, NV>(acc, g + ps2[t.pos] * N, cnt2[t.pos], N, n0, wt, ch2 + t.pos * cc.K2, krow);
          }
        };
        auto scalar = [&](int64_t n) {
          for (int i = 0; i < ib; ++i) {
            T s = 0;
            for (const TapRef& t : taps)
              for (int64_t j = 0; j < cnt2[t.pos]; ++j)
                s += w[ch2[t.pos * cc.K2 + j] * krow + t.woff + cs[i]] * g[(ps2[t.pos] + j) * N + n];
            dst(i)[n] = s;
          }
        };
        over_batch_tiles<T>(ib, N, body, dst, scalar);
      }
    }
  });
  return ga;
}

// dot(a[0:N], b[0:N]) with vector partial sums.
template <typename T>
inline T dot(const T* a, const T* b, int64_t N) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> acc{};
  int64_t n = 0;
  for (; n + L <= N; n += L) acc += loadu(a + n) * loadu(b + n);
  T s = hsum<T>(acc);
  for (; n < N; ++n) s += a[n] * b[n];
  return s;
}

// dL/dW2 [K2, C1, kh, kw] from gk2 [nnz2, N] and act1 [nnz1, N]: one dot over the batch per
// (kept output neuron, tap, kept input channel at the tap's pixel) — thread-private sums.
template <typename T>
at::Tensor compact_conv_grad_weight(const at::Tensor& gk2, const at::Tensor& act1, const CompactConv& cc) {
  const int64_t nthreads = at::get_num_threads(), krow = cc.krow();
  at::Tensor gw_all = at::zeros({nthreads, cc.K2, cc.kh, cc.kw, cc.C1}, gk2.options());
  T* base = gw_all.data_ptr<T>();
  const T* g = gk2.data_ptr<T>();
  const T* a = act1.data_ptr<T>();
  const int32_t *cnt1 = cc.cnt1, *ch1 = cc.ch1, *cnt2 = cc.cnt2, *ch2 = cc.ch2;
  const int64_t *ps1 = cc.ps1, *ps2 = cc.ps2;
  const int64_t N = cc.N, Q = cc.Ho * cc.Wo;
  at::parallel_for(0, Q, 8, [&](int64_t q0, int64_t q1) {
    const int64_t tid = at::get_thread_num();
    TORCH_CHECK(tid < nthreads, "defective_block: thread id ", tid, " out of range ", nthreads);
    T* gw = base + tid * cc.K2 * krow;
    for (int64_t q = q0; q < q1; ++q)
      for (int64_t ky = 0; ky < cc.kh; ++ky)
        for (int64_t kx = 0; kx < cc.kw; ++kx) {
          const int64_t pix = cc.input_pixel(q, ky, kx);
          if (pix < 0) continue;
          const int64_t woff = (ky * cc.kw + kx) * cc.C1;
          for (int64_t j = 0; j < cnt2[q]; ++j) {
            const T* grow = g + (ps2[q] + j) * N;
            T* gwr = gw + ch2[q * cc.K2 + j] * krow + woff;
            for (int64_t i = 0; i < cnt1[pix]; ++i)
              gwr[ch1[pix * cc.C1 + i]] += dot<T>(grow, a + (ps1[pix] + i) * N, N);
          }
        }
  });
  at::Tensor gw = nthreads == 1 ? gw_all[0] : gw_all.sum(0);
  return gw.permute({0, 3, 1, 2}).contiguous();
}

// act1 = relu(kept1 * scale + shift) on the kept rows.
template <typename T>
at::Tensor kept_activation(const at::Tensor& kept, const MaskPlan& plan, const Geometry& g, const at::Tensor& scale,
                           const at::Tensor& shift) {
  at::Tensor act = pooled_empty(kept.sizes(), kept.options());
  const int32_t* rc = plan.row_ch.data_ptr<int32_t>();
  const T* k = kept.data_ptr<T>();
  const T* sc = scale.data_ptr<T>();
  const T* sh = shift.data_ptr<T>();
  T* o = act.data_ptr<T>();
  const int64_t N = g.N;
  at::parallel_for(0, plan.nnz, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T s = sc[rc[r]], b = sh[rc[r]];
      for (int64_t n = 0; n < N; ++n) o[r * N + n] = std::max(k[r * N + n] * s + b, T(0));
    }
  });
  return act;
}

// act1 [nnz1, N] as a full [N, C1, H1, W1] tensor (zeros elsewhere), in `fmt`.
template <typename T>
at::Tensor materialize(const at::Tensor& kept, const MaskPlan& plan, const Geometry& g, at::MemoryFormat fmt) {
  at::Tensor full = at::zeros({g.N, g.K, g.Ho, g.Wo}, kept.options().memory_format(fmt));
  scatter_kept<T>(kept.data_ptr<T>(), plan, g, full, [](T v, int64_t, T) { return v; });
  return full;
}

struct BlockPrep {
  ConvParams p1, p2;
  int64_t h1, w1, h2, w2;
  std::shared_ptr<const MaskPlan> plan1, plan2;
};

BlockPrep prepare_block(const at::Tensor& input, const at::Tensor& w1, const at::Tensor& mask1, at::IntArrayRef s1,
                        at::IntArrayRef p1, at::IntArrayRef d1, const at::Tensor& w2, const at::Tensor& mask2,
                        at::IntArrayRef s2, at::IntArrayRef p2, at::IntArrayRef d2) {
  TORCH_CHECK(input.device().is_cpu(), "defective_block (CPU kernel): input must be a CPU tensor, got ",
              input.device());
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
              "defective_block (CPU kernel): input must be float32 or float64, got ", input.scalar_type());
  BlockPrep b;
  b.p1 = check_params(s1, p1, d1);
  std::tie(b.h1, b.w1) = check_masked_conv2d_args(input, w1, std::nullopt, mask1, b.p1);
  b.p2 = check_params(s2, p2, d2);
  TORCH_CHECK(w2.dim() == 4 && w2.size(1) == w1.size(0),
              "defective_block: w2 must be [C_out2, C_out1 = ", w1.size(0), ", kh, kw], got ", w2.sizes());
  TORCH_CHECK(w2.scalar_type() == input.scalar_type() && w2.device() == input.device(),
              "defective_block: w2 must be ", input.scalar_type(), " on ", input.device());
  b.h2 = conv_out_size(b.h1, w2.size(2), b.p2.sh, b.p2.ph, b.p2.dh);
  b.w2 = conv_out_size(b.w1, w2.size(3), b.p2.sw, b.p2.pw, b.p2.dw);
  TORCH_CHECK(b.h2 > 0 && b.w2 > 0, "defective_block: conv2's output would be empty");
  TORCH_CHECK(mask2.scalar_type() == at::kBool && mask2.device() == input.device() && mask2.dim() == 3 &&
                  mask2.size(0) == w2.size(0) && mask2.size(1) == b.h2 && mask2.size(2) == b.w2,
              "defective_block: mask2 must be bool [C_out2, H_out2, W_out2] = [", w2.size(0), ", ", b.h2, ", ", b.w2,
              "], got ", mask2.scalar_type(), " ", mask2.sizes());
  b.plan1 = get_plan(mask1);
  b.plan2 = get_plan(mask2);
  return b;
}

CompactConv compact_conv(const BlockPrep& b, int64_t N, const at::Tensor& w2) {
  const MaskPlan &p1 = *b.plan1, &p2 = *b.plan2;
  return {&p1, &p2, N, w2.size(1), b.h1, b.w1, w2.size(0), b.h2, b.w2, w2.size(2), w2.size(3), b.p2,
          p1.pos_count.data_ptr<int32_t>(), p1.pos_ch.data_ptr<int32_t>(), p2.pos_count.data_ptr<int32_t>(),
          p2.pos_ch.data_ptr<int32_t>(), p1.pos_start.data_ptr<int64_t>(), p2.pos_start.data_ptr<int64_t>()};
}

using Eight = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Eight defective_block_cpu(const at::Tensor& input, const at::Tensor& w1, const at::Tensor& mask1,
                          const std::optional<at::Tensor>& bn1_weight, const std::optional<at::Tensor>& bn1_bias,
                          const std::optional<at::Tensor>& rm1, const std::optional<at::Tensor>& rv1,
                          at::IntArrayRef stride1, at::IntArrayRef padding1, at::IntArrayRef dilation1, double eps1,
                          const at::Tensor& w2, const at::Tensor& mask2, const std::optional<at::Tensor>& bn2_weight,
                          const std::optional<at::Tensor>& bn2_bias, const std::optional<at::Tensor>& rm2,
                          const std::optional<at::Tensor>& rv2, at::IntArrayRef stride2, at::IntArrayRef padding2,
                          at::IntArrayRef dilation2, double eps2, const std::optional<at::Tensor>& residual,
                          bool training, double max_density) {
  BlockPrep b = prepare_block(input, w1, mask1, stride1, padding1, dilation1, w2, mask2, stride2, padding2, dilation2);
  const int64_t N = input.size(0), K1 = w1.size(0), K2 = w2.size(0);
  for (const auto& [name, t, k] : {std::tuple{"bn1_weight", bn1_weight, K1}, std::tuple{"bn1_bias", bn1_bias, K1},
                                   std::tuple{"bn1_running_mean", rm1, K1}, std::tuple{"bn1_running_var", rv1, K1},
                                   std::tuple{"bn2_weight", bn2_weight, K2}, std::tuple{"bn2_bias", bn2_bias, K2},
                                   std::tuple{"bn2_running_mean", rm2, K2}, std::tuple{"bn2_running_var", rv2, K2}})
    check_vec("defective_block", t, name, input, k);
  TORCH_CHECK(eps1 > 0 && eps2 > 0, "defective_block: eps must be > 0");
  auto defined = [](const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); };
  TORCH_CHECK(training || (defined(rm1) && defined(rv1) && defined(rm2) && defined(rv2)),
              "defective_block: running statistics are required when training=False");
  TORCH_CHECK(!training || (N * b.h1 * b.w1 > 1 && N * b.h2 * b.w2 > 1),
              "defective_block: expected more than 1 value per channel when training, got input ", input.sizes());
  const at::MemoryFormat fmt = input.suggest_memory_format();
  at::Tensor res;
  if (defined(residual)) {
    TORCH_CHECK(residual->sizes() == at::IntArrayRef({N, K2, b.h2, b.w2}),
                "defective_block: residual must have the output's shape [", N, ", ", K2, ", ", b.h2, ", ", b.w2,
                "], got ", residual->sizes());
    TORCH_CHECK(residual->scalar_type() == input.scalar_type() && residual->device() == input.device(),
                "defective_block: residual must be ", input.scalar_type(), " on ", input.device());
    res = residual->contiguous(fmt);
  }
  const MaskPlan& plan1 = *b.plan1;
  const MaskPlan& plan2 = *b.plan2;
  at::Tensor out = pooled_empty({N, K2, b.h2, b.w2}, input.options(), fmt);
  at::Tensor kept1, act1, kept2, mean1, invstd1, mean2, invstd2;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "defective_block_cpu", [&] {
    using T = scalar_t;
    // Unit 1, kept neurons only: conv1, BN1, relu -> act1 [nnz1, N].
    Geometry g1 = make_geometry<T>(input, w1, b.p1, b.h1, b.w1);
    kept1 = kept_conv<T>(input, w1, plan1, g1, stride1, padding1, dilation1, max_density);
    std::tie(mean1, invstd1) = bn_statistics<T>(kept1, plan1, g1, training, rm1, rv1, eps1);
    auto [scale1, shift1] = bn_affine(mean1, invstd1, bn1_weight, bn1_bias);
    act1 = kept_activation<T>(kept1, plan1, g1, scale1, shift1);
    // conv2: compact to compact, or through a materialised act1 where auto says dense.
    at::Tensor a1_like = at::empty({N, K1, b.h1, b.w1}, input.options().device(at::kMeta));
    Geometry g2 = make_geometry<T>(a1_like, w2, b.p2, b.h2, b.w2);
    if (use_dense(plan1, max_density) || use_dense(plan2, max_density)) {
      kept2 = kept_conv<T>(materialize<T>(act1, plan1, g1, fmt), w2, plan2, g2, stride2, padding2, dilation2,
                           max_density);
    } else {
      at::Tensor w2t = w2.permute({0, 2, 3, 1}).contiguous();
      kept2 = compact_conv_forward<T>(act1, w2t, compact_conv(b, N, w2));
    }
    // Unit 2: BN2, + residual, relu -> out.
    std::tie(mean2, invstd2) = bn_statistics<T>(kept2, plan2, g2, training, rm2, rv2, eps2);
    auto [scale2, shift2] = bn_affine(mean2, invstd2, bn2_weight, bn2_bias);
    write_unit_output<T>(kept2, plan2, g2, scale2, shift2, res, true, out);
  });
  return {out, kept1, act1, kept2, mean1, invstd1, mean2, invstd2};
}

// Gradients (input, w1, bn1_weight, bn1_bias, w2, bn2_weight, bn2_bias, residual); empty
// [0] where output_mask is False.
Eight defective_block_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& w1, const at::Tensor& mask1,
    const std::optional<at::Tensor>& bn1_weight, const at::Tensor& mean1, const at::Tensor& invstd1,
    at::IntArrayRef stride1, at::IntArrayRef padding1, at::IntArrayRef dilation1, const at::Tensor& w2,
    const at::Tensor& mask2, const std::optional<at::Tensor>& bn2_weight, const at::Tensor& mean2,
    const at::Tensor& invstd2, at::IntArrayRef stride2, at::IntArrayRef padding2, at::IntArrayRef dilation2,
    const at::Tensor& kept1, const at::Tensor& act1, const at::Tensor& kept2, const at::Tensor& out, bool training,
    double max_density, std::array<bool, 8> output_mask) {
  BlockPrep b = prepare_block(input, w1, mask1, stride1, padding1, dilation1, w2, mask2, stride2, padding2, dilation2);
  const MaskPlan& plan1 = *b.plan1;
  const MaskPlan& plan2 = *b.plan2;
  const int64_t N = input.size(0), K1 = w1.size(0), K2 = w2.size(0);
  const std::vector<int64_t> out_shape{N, K2, b.h2, b.w2};
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(out_shape) && out.sizes() == at::IntArrayRef(out_shape),
              "defective_block_backward: grad_out and out must have the output's shape ", at::IntArrayRef(out_shape));
  TORCH_CHECK(grad_out.scalar_type() == input.scalar_type() && out.scalar_type() == input.scalar_type(),
              "defective_block_backward: grad_out and out must be ", input.scalar_type());
  for (const auto& [name, t, nnz] : {std::tuple{"kept1", &kept1, plan1.nnz}, std::tuple{"act1", &act1, plan1.nnz},
                                     std::tuple{"kept2", &kept2, plan2.nnz}})
    TORCH_CHECK(t->dim() == 2 && t->size(0) == nnz && t->size(1) == N && t->is_contiguous() &&
                    t->scalar_type() == input.scalar_type(),
                "defective_block_backward: ", name, " must be the forward's contiguous [", nnz, ", ", N,
                "] buffer, got ", t->sizes());
  TORCH_CHECK(mean1.numel() == K1 && invstd1.numel() == K1 && mean2.numel() == K2 && invstd2.numel() == K2,
              "defective_block_backward: BN statistics of the wrong size");
  check_vec("defective_block", bn1_weight, "bn1_weight", input, K1);
  check_vec("defective_block", bn2_weight, "bn2_weight", input, K2);
  const auto [need_in, need_w1, need_b1w, need_b1b, need_w2, need_b2w, need_b2b, need_res] = output_mask;
  Eight grads{at::empty({0}, input.options()), at::empty({0}, w1.options()), at::empty({0}, input.options()),
              at::empty({0}, input.options()), at::empty({0}, w2.options()), at::empty({0}, input.options()),
              at::empty({0}, input.options()), at::empty({0}, input.options())};
  const bool need_unit1 = need_in || need_w1 || need_b1w || need_b1b;
  const bool need_any = need_unit1 || need_w2 || need_b2w || need_b2b;
  if (!need_any) {
    if (need_res) std::get<7>(grads) = at::threshold_backward(grad_out, out, 0);
    return grads;
  }
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "defective_block_backward_cpu", [&] {
    using T = scalar_t;
    const at::MemoryFormat fmt = input.suggest_memory_format();
    Geometry g1 = make_geometry<T>(input, w1, b.p1, b.h1, b.w1);
    at::Tensor a1_like = at::empty({N, K1, b.h1, b.w1}, input.options().device(at::kMeta));
    Geometry g2 = make_geometry<T>(a1_like, w2, b.p2, b.h2, b.w2);
    // Unit 2: gated gather (+ the residual's gradient), BN2 backward on the kept rows.
    auto [gk2, gres] = gated_kept_grad<T>(grad_out, out, plan2, g2, true, need_res);
    if (need_res) std::get<7>(grads) = gres;
    auto [s2w, s2b] = bn_backward_kept<T>(gk2, kept2, plan2, g2, bn2_weight, mean2, invstd2, training,
                                          need_w2 || need_unit1);
    if (need_b2w) std::get<5>(grads) = s2w;
    if (need_b2b) std::get<6>(grads) = s2b;
    // conv2: dL/dW2 and dL/d act1 at mask1's kept neurons.
    at::Tensor ga1;
    const bool dense2 = use_dense(plan1, max_density) || use_dense(plan2, max_density);
    if (dense2) {
      at::Tensor a1_full = materialize<T>(act1, plan1, g1, fmt);
      auto [gi2, gw2] = conv_grads<T>(gk2, a1_full, w2, plan2, g2, stride2, padding2, dilation2, 0.0, need_unit1,
                                      need_w2);
      if (need_w2) std::get<4>(grads) = gw2;
      if (need_unit1) ga1 = gather_kept<T>(gi2, plan1, g1, input.scalar_type());
    } else {
      const CompactConv cc = compact_conv(b, N, w2);
      if (need_w2) std::get<4>(grads) = compact_conv_grad_weight<T>(gk2, act1, cc);
      if (need_unit1) ga1 = compact_conv_grad_input<T>(gk2, w2.permute({0, 2, 3, 1}).contiguous(), cc);
    }
    if (!need_unit1) return;
    // Unit 1: relu gate (act1 > 0), BN1 backward, conv1's gradients.
    {
      T* gp = ga1.data_ptr<T>();
      const T* ap = act1.data_ptr<T>();
      const int64_t total = plan1.nnz * N;
      at::parallel_for(0, total, 4096, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const T v = gp[i], a = ap[i];
          gp[i] = a > T(0) ? v : T(0);
        }
      });
    }
    auto [s1w, s1b] = bn_backward_kept<T>(ga1, kept1, plan1, g1, bn1_weight, mean1, invstd1, training,
                                          need_in || need_w1);
    if (need_b1w) std::get<2>(grads) = s1w;
    if (need_b1b) std::get<3>(grads) = s1b;
    auto [gi, gw1] = conv_grads<T>(ga1, input, w1, plan1, g1, stride1, padding1, dilation1, max_density, need_in,
                                   need_w1);
    if (need_in) std::get<0>(grads) = gi;
    if (need_w1) std::get<1>(grads) = gw1;
  });
  return grads;
}

}  // namespace

// Called by register_kernels (kernels_at_level.h) for the level dispatch.cpp chose.
void register_defective_block(torch::Library& m) {
  m.impl("defective_block", TORCH_FN(defective_block_cpu));
  m.impl("defective_block_backward", TORCH_FN(defective_block_backward_cpu));
}

}  // namespace SPARSEMASK_CPU_NS
}  // namespace cpu

}  // namespace sparsemask
