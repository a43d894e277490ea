// CPU kernels of sparsemask::defective_unit: the whole defective unit of the seeds,
//   out = act(mask * BN(conv2d(input, weight)) [+ residual])     act = ReLU or identity,
// as one op, so that nothing between the convolution and the activation touches the
// defective (always zero) neurons:
//   forward   the sparse conv writes the kept neurons only, into kept [nnz, N] (rows in
//             the mask plan's order); BN's batch statistics come from that small buffer
//             (the zeros at defective positions only add to the count); one pass then
//             writes out: zeros (or the residual) plus normalised kept values, ReLU'd.
//   backward  the ReLU-gated grad_out is gathered at kept neurons only (gk [nnz, N]); BN's
//             backward runs on gk in place; the conv's grad_input/grad_weight start from gk.
// Compared with masked_conv2d -> masked_batch_norm_act -> relu (-> add -> relu) this
// drops, per unit, the zero-fill of the conv output, both full-size passes of the BN
// statistics and its backward, and the separate activation/residual passes.
//
// The gradient returned for the conv output's defective neurons is never formed: those
// neurons are constant zeros, so no parameter or input gradient depends on it. This is
// exact for the composite, which is what tests/ops/test_defective_unit.py checks against
// F.conv2d * mask -> F.batch_norm -> * mask -> (+ residual) -> relu in float64.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "../checks.h"
#include "../dense_fallback.h"
#include "../plan.h"
#include "conv_kernels.h"

namespace sparsemask {
namespace {

using namespace cpu;

struct UnitPrep {
  ConvParams p;
  int64_t ho, wo;
  std::shared_ptr<const MaskPlan> plan;
};

void check_vec(const std::optional<at::Tensor>& t, const char* name, const at::Tensor& input, int64_t k) {
  if (!t.has_value() || !t->defined()) return;
  TORCH_CHECK(t->dim() == 1 && t->size(0) == k, "defective_unit: ", name, " must have shape [C_out] = [", k,
              "], got ", t->sizes());
  TORCH_CHECK(t->device() == input.device(), "defective_unit: ", name, " is on ", t->device(), " but input is on ",
              input.device());
  TORCH_CHECK(at::isFloatingType(t->scalar_type()), "defective_unit: ", name, " must be floating point, got ",
              t->scalar_type());
}

UnitPrep prepare_unit(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(input.device().is_cpu(), "defective_unit (CPU kernel): input must be a CPU tensor, got ",
              input.device());
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
              "defective_unit (CPU kernel): input must be float32 or float64, got ", input.scalar_type());
  ConvParams p = check_params(stride, padding, dilation);
  auto [ho, wo] = check_masked_conv2d_args(input, weight, std::nullopt, mask, p);
  return {p, ho, wo, get_plan(mask)};
}

// Channel of every kept row (the plan's pos_start order).
std::vector<int32_t> row_channels(const MaskPlan& plan, const Geometry& g) {
  std::vector<int32_t> rc(static_cast<size_t>(plan.nnz));
  const int32_t* pos_count = plan.pos_count.data_ptr<int32_t>();
  const int32_t* pos_ch = plan.pos_ch.data_ptr<int32_t>();
  const int64_t* pos_start = plan.pos_start.data_ptr<int64_t>();
  for (int64_t q = 0; q < g.Q; ++q)
    for (int64_t j = 0; j < pos_count[q]; ++j) rc[pos_start[q] + j] = pos_ch[q * g.K + j];
  return rc;
}

// Per-channel sums over the rows of a [nnz, N] buffer, accumulated in double per thread:
// row_sums(r) -> {a, b} for row r; returns [2 * K]: sums[c] = sum of a, sums[K + c] = sum
// of b, over the rows of channel c.
template <typename RowSums>
std::vector<double> channel_sums(const std::vector<int32_t>& rc, int64_t K, const RowSums& row_sums) {
  const int64_t nthreads = at::get_num_threads();
  std::vector<double> acc(static_cast<size_t>(nthreads) * 2 * K, 0.0);
  at::parallel_for(0, static_cast<int64_t>(rc.size()), 64, [&](int64_t r0, int64_t r1) {
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
  at::Tensor gk = at::empty({plan.nnz, g.N}, opts);
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

at::Tensor vec_or(const std::optional<at::Tensor>& t, int64_t k, double fill, at::ScalarType type) {
  return t.has_value() && t->defined() ? t->to(type).contiguous() : at::full({k}, fill, at::TensorOptions(type));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> defective_unit_cpu(
    const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask, const std::optional<at::Tensor>& bn_weight,
    const std::optional<at::Tensor>& bn_bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, const std::optional<at::Tensor>& residual, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool training, double eps, bool relu, double max_density) {
  UnitPrep pr = prepare_unit(input, weight, mask, stride, padding, dilation);
  const int64_t N = input.size(0), K = weight.size(0);
  check_vec(bn_weight, "bn_weight", input, K);
  check_vec(bn_bias, "bn_bias", input, K);
  check_vec(running_mean, "running_mean", input, K);
  check_vec(running_var, "running_var", input, K);
  TORCH_CHECK(eps > 0, "defective_unit: eps must be > 0, got ", eps);
  TORCH_CHECK(training || (running_mean.has_value() && running_mean->defined() && running_var.has_value() &&
                           running_var->defined()),
              "defective_unit: running_mean and running_var are required when training=False");
  TORCH_CHECK(!training || N * pr.ho * pr.wo > 1,
              "defective_unit: expected more than 1 value per channel when training, got input ", input.sizes());
  const at::MemoryFormat fmt = input.suggest_memory_format();
  at::Tensor res;
  if (residual.has_value() && residual->defined()) {
    TORCH_CHECK(residual->sizes() == at::IntArrayRef({N, K, pr.ho, pr.wo}),
                "defective_unit: residual must have the output's shape [", N, ", ", K, ", ", pr.ho, ", ", pr.wo,
                "], got ", residual->sizes());
    TORCH_CHECK(residual->scalar_type() == input.scalar_type() && residual->device() == input.device(),
                "defective_unit: residual must be ", input.scalar_type(), " on ", input.device(), ", got ",
                residual->scalar_type(), " on ", residual->device());
    res = residual->contiguous(fmt);
  }
  const MaskPlan& plan = *pr.plan;
  at::Tensor out = at::empty({N, K, pr.ho, pr.wo}, input.options().memory_format(fmt));
  at::Tensor kept, mean, invstd;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "defective_unit_cpu", [&] {
    using T = scalar_t;
    const at::ScalarType t = input.scalar_type();
    Geometry g = make_geometry<T>(input, weight, pr.p, pr.ho, pr.wo);
    // 1. The conv at kept neurons only.
    if (use_dense(plan, max_density)) {
      kept = gather_kept<T>(at::conv2d(input, weight, {}, stride, padding, dilation), plan, g, t);
    } else {
      kept = at::empty({plan.nnz, N}, input.options());
      if (plan.nnz > 0 && N > 0) {
        at::Tensor xp = pack_input(input, g, t);
        at::Tensor wp = pack_weight(weight, g, t);
        T* kp = kept.data_ptr<T>();
        forward_kernel<T>(xp.data_ptr<T>(), wp.data_ptr<T>(), plan, g,
                          [&](int64_t n, int64_t row, int64_t, int64_t, T v) { kp[row * N + n] = v; });
      }
    }
    const T* kp = kept.data_ptr<T>();
    // 2. BN statistics: batch moments from the kept values (zeros elsewhere), or running.
    if (training) {
      const std::vector<int32_t> rc = row_channels(plan, g);
      const std::vector<double> s =
          channel_sums(rc, K, [&](int64_t r) { return sum_and_squares<T>(kp + r * N, N); });
      const double count = static_cast<double>(N * g.Q);
      mean = at::empty({K}, input.options());
      invstd = at::empty({K}, input.options());
      T* m = mean.data_ptr<T>();
      T* is = invstd.data_ptr<T>();
      for (int64_t c = 0; c < K; ++c) {
        const double mu = s[c] / count, var = std::max(s[K + c] / count - mu * mu, 0.0);
        m[c] = static_cast<T>(mu);
        is[c] = static_cast<T>(1.0 / std::sqrt(var + eps));
      }
    } else {
      mean = running_mean->to(t).contiguous().clone();
      invstd = (running_var->to(t) + eps).rsqrt().contiguous();
    }
    // 3. out = act(residual + mask * (scale * y + shift)).
    at::Tensor scale = vec_or(bn_weight, K, 1.0, t) * invstd;
    at::Tensor shift = vec_or(bn_bias, K, 0.0, t) - mean * scale;
    const T* sc = scale.data_ptr<T>();
    const T* sh = shift.data_ptr<T>();
    if (fmt == at::MemoryFormat::ChannelsLast && out.is_contiguous(at::MemoryFormat::ChannelsLast)) {
      write_output_channels_last<T>(kp, plan, g, sc, sh, res.defined() ? res.data_ptr<T>() : nullptr, relu,
                                    out.data_ptr<T>());
    } else {
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
  });
  return {out, kept, mean, invstd};
}

// Gradients (input, weight, bn_weight, bn_bias, residual); those not asked for in
// output_mask come back as empty [0] tensors.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> defective_unit_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
    const at::Tensor& kept, const at::Tensor& out, const std::optional<at::Tensor>& bn_weight, const at::Tensor& mean,
    const at::Tensor& invstd, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool training,
    bool relu, double max_density, std::array<bool, 5> output_mask) {
  UnitPrep pr = prepare_unit(input, weight, mask, stride, padding, dilation);
  const MaskPlan& plan = *pr.plan;
  const int64_t N = input.size(0), K = weight.size(0);
  const std::vector<int64_t> out_shape{N, K, pr.ho, pr.wo};
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(out_shape) && out.sizes() == at::IntArrayRef(out_shape),
              "defective_unit_backward: grad_out and out must have the output's shape ", at::IntArrayRef(out_shape), ", got ",
              grad_out.sizes(), " and ", out.sizes());
  TORCH_CHECK(grad_out.scalar_type() == input.scalar_type() && out.scalar_type() == input.scalar_type(),
              "defective_unit_backward: grad_out and out must be ", input.scalar_type());
  TORCH_CHECK(kept.dim() == 2 && kept.size(0) == plan.nnz && kept.size(1) == N && kept.is_contiguous() &&
                  kept.scalar_type() == input.scalar_type(),
              "defective_unit_backward: kept must be the forward's contiguous [nnz, N] = [", plan.nnz, ", ", N,
              "] buffer, got ", kept.sizes());
  TORCH_CHECK(mean.numel() == K && invstd.numel() == K, "defective_unit_backward: mean and invstd must have ", K,
              " elements");
  check_vec(bn_weight, "bn_weight", input, K);
  const auto [need_input, need_weight, need_bn_weight, need_bn_bias, need_residual] = output_mask;
  at::Tensor gi = at::empty({0}, input.options()), gw = at::empty({0}, weight.options());
  at::Tensor gbw = at::empty({0}, input.options()), gbb = at::empty({0}, input.options());
  at::Tensor gres = at::empty({0}, input.options());
  const bool need_params = need_input || need_weight || need_bn_weight || need_bn_bias;
  const at::MemoryFormat cl = at::MemoryFormat::ChannelsLast;
  // grad_residual and the kept gradient in one pass (the usual residual unit), or apart.
  const bool one_pass = need_residual && relu && need_params && grad_out.is_contiguous(cl) && out.is_contiguous(cl);
  if (need_residual && !one_pass) gres = relu ? at::threshold_backward(grad_out, out, 0) : grad_out.clone();
  if (!need_params) return {gi, gw, gbw, gbb, gres};
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "defective_unit_backward_cpu", [&] {
    using T = scalar_t;
    const at::ScalarType t = input.scalar_type();
    Geometry g = make_geometry<T>(input, weight, pr.p, pr.ho, pr.wo);
    // 1. dL/d(BN output) at kept neurons: grad_out gated by the ReLU.
    at::Tensor gk;
    if (one_pass) {
      gres = at::empty({N, K, pr.ho, pr.wo}, grad_out.options().memory_format(cl));
      gk = gate_and_gather_channels_last<T>(grad_out.data_ptr<T>(), out.data_ptr<T>(), plan, g, gres.data_ptr<T>(),
                                            input.options());
    } else {
      gk = gather_kept<T>(grad_out, plan, g, t, relu ? &out : nullptr);
    }
    T* gp = gk.data_ptr<T>();
    const T* kp = kept.data_ptr<T>();
    const at::Tensor mean_c = mean.to(t).contiguous(), invstd_c = invstd.to(t).contiguous();
    const T* m = mean_c.data_ptr<T>();
    const T* is = invstd_c.data_ptr<T>();
    // 2. BN backward on the kept rows (the defective neurons' dL/d(BN output) is 0).
    const std::vector<int32_t> rc = row_channels(plan, g);
    const std::vector<double> s =
        channel_sums(rc, K, [&](int64_t r) { return grad_sums<T>(gp + r * N, kp + r * N, m[rc[r]], is[rc[r]], N); });
    if (need_bn_weight) gbw = at::empty({K}, input.options());
    if (need_bn_bias) gbb = at::empty({K}, input.options());
    for (int64_t c = 0; c < K; ++c) {
      if (need_bn_weight) gbw.data_ptr<T>()[c] = static_cast<T>(s[K + c]);
      if (need_bn_bias) gbb.data_ptr<T>()[c] = static_cast<T>(s[c]);
    }
    if (!(need_input || need_weight)) return;
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
    // 3. The conv's gradients from the kept gradient.
    if (use_dense(plan, max_density)) {
      at::Tensor go = at::zeros({N, K, pr.ho, pr.wo}, input.options().memory_format(input.suggest_memory_format()));
      scatter_kept<T>(gp, plan, g, go, [](T v, int64_t, T) { return v; });
      auto [dgi, dgw, dgb] = at::convolution_backward(go, input, weight, std::nullopt, stride, padding, dilation, false,
                                                      {0, 0}, 1, {need_input, need_weight, false});
      if (need_input) gi = dgi.contiguous(input.suggest_memory_format());
      if (need_weight) gw = dgw.contiguous();
    } else if (plan.nnz == 0 || N == 0) {
      if (need_input) gi = at::zeros_like(input, input.options().memory_format(input.suggest_memory_format()));
      if (need_weight) gw = at::zeros_like(weight, at::MemoryFormat::Contiguous);
    } else {
      auto [sgi, sgw] = conv_grads_from_kept<T>(gk, input, weight, plan, g, need_input, need_weight);
      if (need_input) gi = sgi;
      if (need_weight) gw = sgw;
    }
  });
  return {gi, gw, gbw, gbb, gres};
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsemask, CPU, m) {
  m.impl("defective_unit", TORCH_FN(defective_unit_cpu));
  m.impl("defective_unit_backward", TORCH_FN(defective_unit_backward_cpu));
}

}  // namespace sparsemask
