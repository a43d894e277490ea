// What the fused defective-unit ops (defective_unit, defective_block) share on the CPU: the
// kept-only buffers [nnz, N] (rows in the mask plan's (position, channel) order, contiguous
// over the batch), BN's statistics and backward on them, and the passes between them and
// full-size activations (the output write, the ReLU-gated gather).
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "../dense_fallback.h"
#include "../plan.h"
#include "conv_kernels.h"

namespace sparsemask {
namespace cpu {
inline namespace SPARSEMASK_CPU_NS {  // one per ISA level (isa.h)

// A per-channel vector argument `name` of op `op` (e.g. a BN weight): [k], on input's device, floating.
inline void check_vec(const char* op, const std::optional<at::Tensor>& t, const char* name, const at::Tensor& input,
                      int64_t k) {
  if (!t.has_value() || !t->defined()) return;
  TORCH_CHECK(t->dim() == 1 && t->size(0) == k, op, ": ", name, " must have shape [C_out] = [", k, "], got ",
              t->sizes());
  TORCH_CHECK(t->device() == input.device(), op, ": ", name, " is on ", t->device(), " but input is on ",
              input.device());
  TORCH_CHECK(at::isFloatingType(t->scalar_type()), op, ": ", name, " must be floating point, got ", t->scalar_type());
}

// Per-channel sums over the rows of a [nnz, N] buffer, accumulated in double per thread:
// row_sums(r) -> {a, b} for row r; returns [2 * K]: sums[c] = sum of a, sums[K + c] = sum
// of b, over the rows of channel c.
template <typename RowSums>
std::vector<double> channel_sums(const int32_t* rc, int64_t nrows, int64_t K, const RowSums& row_sums) {
  const int64_t nthreads = at::get_num_threads();
  std::vector<double> acc(static_cast<size_t>(nthreads) * 2 * K, 0.0);
  at::parallel_for(0, nrows, 64, [&](int64_t r0, int64_t r1) {
    double* s = acc.data() + static_cast<size_t>(at::get_thread_num()) * 2 * K;
    for (int64_t r = r0; r < r1; ++r) {
      const auto [a, b] = row_sums(r);
      s[rc[r]] += a;
      s[K + rc[r]] += b;
    }
  });
  std::vector<double> sums(2 * K, 0.0);
  for (int64_t t = 0; t < nthreads; ++t)
    for (int64_t c = 0; c < 2 * K; ++c) sums[c] += acc[t * 2 * K + c];
  return sums;
}

// {sum x, sum x^2} over n < N (whole vectors, then a scalar tail).
template <typename T>
std::pair<T, T> sum_and_squares(const T* x, int64_t N) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> a{}, b{};
  int64_t n = 0;
  for (; n + L <= N; n += L) {
    const Vec<T> v = loadu(x + n);
    a += v;
    b += v * v;
  }
  T sa = hsum<T>(a), sb = hsum<T>(b);
  for (; n < N; ++n) {
    sa += x[n];
    sb += x[n] * x[n];
  }
  return {sa, sb};
}

// {sum g, sum g * (x - m) * is} over n < N: BN's backward reductions for one row.
template <typename T>
std::pair<T, T> grad_sums(const T* g, const T* x, T m, T is, int64_t N) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> a{}, b{};
  int64_t n = 0;
  for (; n + L <= N; n += L) {
    const Vec<T> gv = loadu(g + n);
    a += gv;
    b += gv * (loadu(x + n) - m);
  }
  T sa = hsum<T>(a), sb = hsum<T>(b);
  for (; n < N; ++n) {
    sa += g[n];
    sb += g[n] * (x[n] - m);
  }
  return {sa, sb * is};
}

// Parallel over tiles of (16 images) x (64 output positions): f(n0, n1, qb, qe) per tile.
// Tiles of one image block share kept-buffer lines; tiles of different positions write
// disjoint rows of a [nnz, N] buffer, so no two threads write the same line.
template <typename F>
void for_each_tile(const Geometry& g, const F& f) {
  constexpr int64_t kChunk = 16, kPos = 64;
  const int64_t nchunks = (g.N + kChunk - 1) / kChunk, qchunks = (g.Q + kPos - 1) / kPos;
  at::parallel_for(0, nchunks * qchunks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = (t / qchunks) * kChunk, qb = (t % qchunks) * kPos;
      f(n0, std::min(g.N, n0 + kChunk), qb, std::min(g.Q, qb + kPos));
    }
  });
}

// out [N, K, Ho, Wo] channels_last: per pixel, the residual's channel vector (or zeros)
// plus the normalised kept values, then ReLU. Chunks of 16 images outermost (as in
// gather_kept): a kept line serves 16 images while each image's output is written in order.
template <typename T>
void write_output_channels_last(const T* kept, const MaskPlan& plan, const Geometry& g, const T* scale,
                                const T* shift, const T* residual, bool relu, T* out) {
  const int32_t* pos_count = plan.pos_count.data_ptr<int32_t>();
  const int32_t* pos_ch = plan.pos_ch.data_ptr<int32_t>();
  const int64_t* pos_start = plan.pos_start.data_ptr<int64_t>();
  const int64_t img = g.Q * g.K;
  for_each_tile(g, [&](int64_t n0, int64_t n1, int64_t qb, int64_t qe) {
    for (int64_t n = n0; n < n1; ++n) {
      T* o = out + n * img + qb * g.K;
      const int64_t len = (qe - qb) * g.K;
      if (residual) {
        std::memcpy(o, residual + n * img + qb * g.K, sizeof(T) * len);
      } else {
        std::memset(o, 0, sizeof(T) * len);
      }
    }
    for (int64_t q = qb; q < qe; ++q) {
      const int32_t* chs = pos_ch + q * g.K;
      for (int64_t j = 0; j < pos_count[q]; ++j) {
        const int64_t c = chs[j];
        const T* kr = kept + (pos_start[q] + j) * g.N;
        const T sc = scale[c], sh = shift[c];
        T* o = out + q * g.K + c;
        if (residual) {
          for (int64_t n = n0; n < n1; ++n) o[n * img] += kr[n] * sc + sh;
        } else if (relu) {
          for (int64_t n = n0; n < n1; ++n) o[n * img] = std::max(kr[n] * sc + sh, T(0));
        } else {
          for (int64_t n = n0; n < n1; ++n) o[n * img] = kr[n] * sc + sh;
        }
      }
    }
    if (residual && relu) {
      for (int64_t n = n0; n < n1; ++n) {
        T* o = out + n * img + qb * g.K;
        for (int64_t i = 0; i < (qe - qb) * g.K; ++i) o[i] = std::max(o[i], T(0));
      }
    }
  });
}

// dst[n, c(r), q(r)] = f(kept[r, n], c(r), dst[n, c(r), q(r)]) for every kept neuron; dst
// of any strides (the general-layout path; images in parallel, so no write conflicts).
template <typename T, typename F>
void scatter_kept(const T* kept, const MaskPlan& plan, const Geometry& g, at::Tensor& dst, const F& f) {
  const int32_t* pos_count = plan.pos_count.data_ptr<int32_t>();
  const int32_t* pos_ch = plan.pos_ch.data_ptr<int32_t>();
  const int64_t* pos_start = plan.pos_start.data_ptr<int64_t>();
  T* d = dst.data_ptr<T>();
  const int64_t sN = dst.stride(0), sC = dst.stride(1), sH = dst.stride(2), sW = dst.stride(3);
  at::parallel_for(0, g.N, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t n = b0; n < b1; ++n)
      for (int64_t q = 0; q < g.Q; ++q) {
        T* dq = d + n * sN + (q / g.Wo) * sH + (q % g.Wo) * sW;
        for (int64_t j = 0; j < pos_count[q]; ++j) {
          const int64_t c = pos_ch[q * g.K + j];
          dq[c * sC] = f(kept[(pos_start[q] + j) * g.N + n], c, dq[c * sC]);
        }
      }
  });
}

// The residual branch's gradient, gres = grad_out * (out > 0) over the whole tensor, and in
// the same pass its kept entries gk [nnz, N] (the gate of the unit's own ReLU is the same):
// one read of grad_out and out instead of threshold_backward plus a gather (channels_last).
template <typename T>
at::Tensor gate_and_gather_channels_last(const T* go, const T* out, const MaskPlan& plan, const Geometry& g,
                                         T* gres, const at::TensorOptions& opts) {
  at::Tensor gk = pooled_empty({plan.nnz, g.N}, opts);
  T* gkp = gk.data_ptr<T>();
  const int32_t* pos_count = plan.pos_count.data_ptr<int32_t>();
  const int32_t* pos_ch = plan.pos_ch.data_ptr<int32_t>();
  const int64_t* pos_start = plan.pos_start.data_ptr<int64_t>();
  const int64_t img = g.Q * g.K;
  for_each_tile(g, [&](int64_t n0, int64_t n1, int64_t qb, int64_t qe) {
    // Each image's rows in order (three sequential streams); the gk block of these
    // positions and images stays in cache while it fills.
    for (int64_t n = n0; n < n1; ++n) {
      const T* __restrict__ gor = go + n * img + qb * g.K;
      const T* __restrict__ outr = out + n * img + qb * g.K;
      T* __restrict__ gr = gres + n * img + qb * g.K;
      for (int64_t i = 0; i < (qe - qb) * g.K; ++i) gr[i] = outr[i] > T(0) ? gor[i] : T(0);
      for (int64_t q = qb; q < qe; ++q) {
        const int32_t* chs = pos_ch + q * g.K;
        const T* grq = gr + (q - qb) * g.K;
        T* gkq = gkp + pos_start[q] * g.N + n;
        for (int64_t j = 0; j < pos_count[q]; ++j) gkq[j * g.N] = grq[chs[j]];
      }
    }
  });
  return gk;
}

inline at::Tensor vec_or(const std::optional<at::Tensor>& t, int64_t k, double fill, at::ScalarType type) {
  return t.has_value() && t->defined() ? t->to(type).contiguous() : at::full({k}, fill, at::TensorOptions(type));
}

// ---------------------------------------------------------------------------------------
// The unit's stages.

// The conv at the kept neurons only: kept [nnz, N] (the dense conv + gather above max_density).
template <typename T>
at::Tensor kept_conv(const at::Tensor& input, const at::Tensor& weight, const MaskPlan& plan, const Geometry& g,
                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, double max_density) {
  const at::ScalarType t = input.scalar_type();
  if (use_dense(plan, max_density))
    return gather_kept<T>(at::conv2d(input, weight, {}, stride, padding, dilation), plan, g, t);
  at::Tensor kept = pooled_empty({plan.nnz, g.N}, input.options());
  if (plan.nnz > 0 && g.N > 0) {
    at::Tensor wp = pack_weight(weight, g, t);
    T* kp = kept.data_ptr<T>();
    const int64_t N = g.N;
    with_input_source<T>(input, g, t, kRowBlock, [&](const auto& source) {
      forward_kernel<T>(source, wp.data_ptr<T>(), plan, g,
                        [&](int64_t n, int64_t row, int64_t, int64_t, T v) { kp[row * N + n] = v; });
    });
  }
  return kept;
}

// BN's (mean, invstd) [K]: batch moments of the kept values with the defective neurons'
// zeros in the count (training), or from the running statistics.
template <typename T>
std::pair<at::Tensor, at::Tensor> bn_statistics(const at::Tensor& kept, const MaskPlan& plan, const Geometry& g,
                                                bool training, const std::optional<at::Tensor>& running_mean,
                                                const std::optional<at::Tensor>& running_var, double eps) {
  const int64_t N = g.N, K = g.K;
  if (!training) {
    return {running_mean->to(kept.scalar_type()).contiguous().clone(),
            (running_var->to(kept.scalar_type()) + eps).rsqrt().contiguous()};
  }
  const T* kp = kept.data_ptr<T>();
  const int32_t* rc = plan.row_ch.data_ptr<int32_t>();
  const std::vector<double> s =
      channel_sums(rc, plan.nnz, K, [&](int64_t r) { return sum_and_squares<T>(kp + r * N, N); });
  const double count = static_cast<double>(N * g.Q);
  at::Tensor mean = at::empty({K}, kept.options()), invstd = at::empty({K}, kept.options());
  T* m = mean.data_ptr<T>();
  T* is = invstd.data_ptr<T>();
  for (int64_t c = 0; c < K; ++c) {
    const double mu = s[c] / count, var = std::max(s[K + c] / count - mu * mu, 0.0);
    m[c] = static_cast<T>(mu);
    is[c] = static_cast<T>(1.0 / std::sqrt(var + eps));
  }
  return {mean, invstd};
}

// BN's per-channel (scale, shift) [K] from (mean, invstd) and the affine parameters.
inline std::pair<at::Tensor, at::Tensor> bn_affine(const at::Tensor& mean, const at::Tensor& invstd,
                                                   const std::optional<at::Tensor>& bn_weight,
                                                   const std::optional<at::Tensor>& bn_bias) {
  const at::ScalarType t = mean.scalar_type();
  const int64_t K = mean.numel();
  at::Tensor scale = vec_or(bn_weight, K, 1.0, t) * invstd;
  return {scale, vec_or(bn_bias, K, 0.0, t) - mean * scale};
}

// out = act(residual + mask * (scale * kept + shift)), any memory format of out.
template <typename T>
void write_unit_output(const at::Tensor& kept, const MaskPlan& plan, const Geometry& g, const at::Tensor& scale,
                       const at::Tensor& shift, const at::Tensor& res, bool relu, at::Tensor& out) {
  const T* kp = kept.data_ptr<T>();
  const T* sc = scale.data_ptr<T>();
  const T* sh = shift.data_ptr<T>();
  if (out.is_contiguous(at::MemoryFormat::ChannelsLast) &&
      (!res.defined() || res.is_contiguous(at::MemoryFormat::ChannelsLast))) {
    write_output_channels_last<T>(kp, plan, g, sc, sh, res.defined() ? res.data_ptr<T>() : nullptr, relu,
                                  out.data_ptr<T>());
    return;
  }
  if (res.defined()) {
    out.copy_(res);
  } else {
    out.zero_();
  }
  const bool add = res.defined();
  scatter_kept<T>(kp, plan, g, out, [&](T v, int64_t c, T old) {
    const T y = v * sc[c] + sh[c];
    return add ? old + y : (relu ? std::max(y, T(0)) : y);
  });
  if (add && relu) out.relu_();
}

// dL/d(BN output) at the kept neurons: grad_out gated by the ReLU (gk [nnz, N]), and the
// residual's gradient gres when asked for (in the same pass where the layout allows).
template <typename T>
std::pair<at::Tensor, at::Tensor> gated_kept_grad(const at::Tensor& grad_out, const at::Tensor& out,
                                                  const MaskPlan& plan, const Geometry& g, bool relu,
                                                  bool need_residual) {
  const at::MemoryFormat cl = at::MemoryFormat::ChannelsLast;
  if (need_residual && relu && grad_out.is_contiguous(cl) && out.is_contiguous(cl)) {
    at::Tensor gres = pooled_empty(grad_out.sizes(), grad_out.options(), cl);
    at::Tensor gk = gate_and_gather_channels_last<T>(grad_out.data_ptr<T>(), out.data_ptr<T>(), plan, g,
                                                     gres.data_ptr<T>(), grad_out.options());
    return {gk, gres};
  }
  at::Tensor gres;
  if (need_residual) gres = relu ? at::threshold_backward(grad_out, out, 0) : grad_out.clone();
  return {gather_kept<T>(grad_out, plan, g, grad_out.scalar_type(), relu ? &out : nullptr), gres};
}

// BN's backward on the kept rows, in place: gk (dL/d(BN output), defective neurons' 0
// implied) becomes dL/d(BN input) at the kept neurons when `through`; returns the
// (grad_bn_weight, grad_bn_bias) sums [K].
template <typename T>
std::pair<at::Tensor, at::Tensor> bn_backward_kept(at::Tensor& gk, const at::Tensor& kept, const MaskPlan& plan,
                                                   const Geometry& g, const std::optional<at::Tensor>& bn_weight,
                                                   const at::Tensor& mean, const at::Tensor& invstd, bool training,
                                                   bool through) {
  const int64_t N = g.N, K = g.K;
  const at::ScalarType t = kept.scalar_type();
  T* gp = gk.data_ptr<T>();
  const T* kp = kept.data_ptr<T>();
  const at::Tensor mean_c = mean.to(t).contiguous(), invstd_c = invstd.to(t).contiguous();
  const T* m = mean_c.data_ptr<T>();
  const T* is = invstd_c.data_ptr<T>();
  const int32_t* rc = plan.row_ch.data_ptr<int32_t>();
  const std::vector<double> s =
      channel_sums(rc, plan.nnz, K,
                   [&](int64_t r) { return grad_sums<T>(gp + r * N, kp + r * N, m[rc[r]], is[rc[r]], N); });
  at::Tensor gbw = at::empty({K}, kept.options()), gbb = at::empty({K}, kept.options());
  for (int64_t c = 0; c < K; ++c) {
    gbw.data_ptr<T>()[c] = static_cast<T>(s[K + c]);
    gbb.data_ptr<T>()[c] = static_cast<T>(s[c]);
  }
  if (!through) return {gbw, gbb};
  const at::Tensor w = vec_or(bn_weight, K, 1.0, t);
  const T* wp = w.data_ptr<T>();
  const double count = static_cast<double>(N * g.Q);
  at::parallel_for(0, plan.nnz, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = rc[r];
      const T a = wp[c] * is[c];
      T* gr = gp + r * N;
      if (training) {
        // a * (g - mean(g) - xhat * mean(g * xhat)), xhat = (x - m) * is, as b0 + a*g - b1*x.
        const T mg = static_cast<T>(s[c] / count), mgx = static_cast<T>(s[K + c] / count);
        const T b1 = a * is[c] * mgx, b0 = -a * mg + b1 * m[c];
        const T* __restrict__ xr = kp + r * N;
        for (int64_t n = 0; n < N; ++n) gr[n] = b0 + a * gr[n] - b1 * xr[n];
      } else {
        for (int64_t n = 0; n < N; ++n) gr[n] *= a;
      }
    }
  });
  return {gbw, gbb};
}

// The conv's (grad_input, grad_weight) from the kept gradient gk (undefined where not asked).
template <typename T>
std::pair<at::Tensor, at::Tensor> conv_grads(const at::Tensor& gk, const at::Tensor& input, const at::Tensor& weight,
                                             const MaskPlan& plan, const Geometry& g, at::IntArrayRef stride,
                                             at::IntArrayRef padding, at::IntArrayRef dilation, double max_density,
                                             bool need_input, bool need_weight) {
  at::Tensor gi, gw;
  if (!(need_input || need_weight)) return {gi, gw};
  const at::MemoryFormat fmt = input.suggest_memory_format();
  if (use_dense(plan, max_density)) {
    at::Tensor go = at::zeros({g.N, g.K, g.Ho, g.Wo}, input.options().memory_format(fmt));
    scatter_kept<T>(gk.data_ptr<T>(), plan, g, go, [](T v, int64_t, T) { return v; });
    auto [dgi, dgw, dgb] = at::convolution_backward(go, input, weight, std::nullopt, stride, padding, dilation, false,
                                                    {0, 0}, 1, {need_input, need_weight, false});
    if (need_input) gi = dgi.contiguous(fmt);
    if (need_weight) gw = dgw.contiguous();
  } else if (plan.nnz == 0 || g.N == 0) {
    if (need_input) gi = at::zeros_like(input, input.options().memory_format(fmt));
    if (need_weight) gw = at::zeros_like(weight, at::MemoryFormat::Contiguous);
  } else {
    std::tie(gi, gw) = conv_grads_from_kept<T>(gk, input, weight, plan, g, need_input, need_weight);
  }
  return {gi, gw};
}

}  // namespace SPARSEMASK_CPU_NS
}  // namespace cpu
}  // namespace sparsemask
