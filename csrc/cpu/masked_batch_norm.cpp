// CPU kernels of sparsemask::masked_batch_norm_act: the epilogue of the defective unit,
//   out = act(mask * BN(x))          (act = ReLU or identity)
// in one pass over memory after the batch statistics, instead of BN, a mask multiply and
// an activation each reading and writing the whole activation tensor (and allocating a
// fresh one). The backward is two passes (per-channel reductions, then grad_input) instead
// of five. Statistics include the zeros at defective positions: x is the sparse conv's
// output, exactly 0 there (see sparsemask/nn/defective.py on BN statistics).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "buffer_pool.h"

namespace sparsemask {
namespace {

void check_args(const at::Tensor& input, const at::Tensor& mask, const std::optional<at::Tensor>& weight,
                const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(input.dim() == 4, "masked_batch_norm_act: input must be 4-D [N, C, H, W], got ", input.sizes());
  TORCH_CHECK(mask.scalar_type() == at::kBool, "masked_batch_norm_act: mask must be torch.bool, got ",
              mask.scalar_type());
  TORCH_CHECK(mask.dim() == 3 && mask.size(0) == input.size(1) && mask.size(1) == input.size(2) &&
                  mask.size(2) == input.size(3),
              "masked_batch_norm_act: mask must have shape [C, H, W] = [", input.size(1), ", ", input.size(2), ", ",
              input.size(3), "], got ", mask.sizes());
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
              "masked_batch_norm_act (CPU): input must be float32 or float64, got ", input.scalar_type());
  for (const auto& [name, t] : {std::pair{"weight", weight}, std::pair{"bias", bias}}) {
    if (t.has_value() && t->defined())
      TORCH_CHECK(t->dim() == 1 && t->size(0) == input.size(1), "masked_batch_norm_act: ", name,
                  " must have shape [C] = [", input.size(1), "], got ", t->sizes());
  }
}

// Per-channel float multipliers of the mask in the layout the loops walk: [HW, C] for
// channels_last (channel innermost), [C, HW] for contiguous NCHW. 1.0 kept, 0.0 defective.
at::Tensor mask_multipliers(const at::Tensor& mask, bool channels_last, at::ScalarType t) {
  at::Tensor m = mask.to(t);
  return channels_last ? m.flatten(1).t().contiguous() : m.flatten(1).contiguous();
}

// Walks x [N, C, H, W] (channels_last or contiguous) as rows of `inner` elements with a
// per-row offset into the [.., inner] mask multipliers and per-element channel index.
struct Walk {
  bool cl;
  int64_t N, C, HW;
  int64_t rows() const { return cl ? N * HW : N * C; }
  int64_t inner() const { return cl ? C : HW; }
};

template <typename T>
void forward_epilogue(const T* x, const T* mask_mul, const T* scale, const T* shift, bool relu, const Walk& w,
                      T* out) {
  const int64_t inner = w.inner();
  at::parallel_for(0, w.rows(), 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * inner;
      T* orow = out + r * inner;
      if (w.cl) {  // row = one pixel, channels innermost
        const T* m = mask_mul + (r % w.HW) * inner;
        for (int64_t c = 0; c < inner; ++c) {
          T v = xr[c] * scale[c] + shift[c];
          v = relu && v < T(0) ? T(0) : v;
          orow[c] = v * m[c];
        }
      } else {  // row = one (image, channel) plane
        const int64_t c = r % w.C;
        const T* m = mask_mul + c * inner;
        const T s = scale[c], b = shift[c];
        for (int64_t i = 0; i < inner; ++i) {
          T v = xr[i] * s + b;
          v = relu && v < T(0) ? T(0) : v;
          orow[i] = v * m[i];
        }
      }
    }
  });
}

// Per-channel sum and sum of squares of x (mean, biased var) in one pass. Partial sums are
// float over blocks of rows (vectorised), flushed to double per block for accuracy.
template <typename T>
std::pair<std::vector<double>, std::vector<double>> channel_moments(const T* x, const Walk& w) {
  const int64_t inner = w.inner(), C = w.C;
  const int64_t nthreads = at::get_num_threads();
  std::vector<double> acc(static_cast<size_t>(nthreads) * 2 * C, 0.0);
  constexpr int64_t kBlock = 64;
  at::parallel_for(0, (w.rows() + kBlock - 1) / kBlock, 1, [&](int64_t b0, int64_t b1) {
    double* s1 = acc.data() + static_cast<size_t>(at::get_thread_num()) * 2 * C;
    double* s2 = s1 + C;
    std::vector<T> p1(w.cl ? C : 1), p2(w.cl ? C : 1);
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t r0 = blk * kBlock, r1 = std::min(w.rows(), r0 + kBlock);
      if (w.cl) {
        std::fill(p1.begin(), p1.end(), T(0));
        std::fill(p2.begin(), p2.end(), T(0));
        for (int64_t r = r0; r < r1; ++r) {
          const T* xr = x + r * inner;
          for (int64_t c = 0; c < C; ++c) {
            p1[c] += xr[c];
            p2[c] += xr[c] * xr[c];
          }
        }
        for (int64_t c = 0; c < C; ++c) {
          s1[c] += p1[c];
          s2[c] += p2[c];
        }
      } else {
        for (int64_t r = r0; r < r1; ++r) {
          const T* xr = x + r * inner;
          T a = 0, b = 0;
          for (int64_t i = 0; i < inner; ++i) {
            a += xr[i];
            b += xr[i] * xr[i];
          }
          s1[r % C] += a;
          s2[r % C] += b;
        }
      }
    }
  });
  std::vector<double> mean(C, 0.0), var(C, 0.0);
  const double count = static_cast<double>(w.N * w.HW);
  for (int64_t t = 0; t < nthreads; ++t)
    for (int64_t c = 0; c < C; ++c) {
      mean[c] += acc[t * 2 * C + c];
      var[c] += acc[t * 2 * C + C + c];
    }
  for (int64_t c = 0; c < C; ++c) {
    mean[c] /= count;
    var[c] = std::max(0.0, var[c] / count - mean[c] * mean[c]);
  }
  return {mean, var};
}

// Returns (out, mean, invstd): in training the batch statistics of input (the caller
// updates the running statistics from them), in eval the running ones.
std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_batch_norm_act_cpu(
    const at::Tensor& input_, const at::Tensor& mask, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, bool training, double eps, bool relu) {
  check_args(input_, mask, weight, bias);
  const int64_t C = input_.size(1);
  const at::MemoryFormat fmt = input_.suggest_memory_format();
  at::Tensor input = input_.contiguous(fmt);
  const at::ScalarType t = input.scalar_type();
  Walk w{fmt == at::MemoryFormat::ChannelsLast, input.size(0), C, input.size(2) * input.size(3)};
  at::Tensor mean, invstd;
  if (training) {
    AT_DISPATCH_FLOATING_TYPES(t, "masked_batch_norm_stats_cpu", [&] {
      auto [m, v] = channel_moments<scalar_t>(input.data_ptr<scalar_t>(), w);
      mean = at::tensor(m, input.options().dtype(at::kDouble)).to(t);
      invstd = (at::tensor(v, input.options().dtype(at::kDouble)) + eps).rsqrt().to(t);
    });
  } else {
    TORCH_CHECK(running_mean.has_value() && running_mean->defined() && running_var.has_value() &&
                    running_var->defined(),
                "masked_batch_norm_act: running_mean and running_var are required when training=False");
    mean = running_mean->to(t, /*non_blocking=*/false, /*copy=*/true);  // outputs must not alias inputs
    invstd = (running_var->to(t) + eps).rsqrt().contiguous();
  }
  at::Tensor scale = weight.has_value() && weight->defined() ? invstd * weight->to(t) : invstd.clone();
  at::Tensor shift = bias.has_value() && bias->defined() ? bias->to(t) - mean * scale : -mean * scale;
  scale = scale.contiguous();
  shift = shift.contiguous();
  at::Tensor out = cpu::pooled_empty(input.sizes(), input.options(), fmt);
  AT_DISPATCH_FLOATING_TYPES(t, "masked_batch_norm_act_cpu", [&] {
    at::Tensor mm = mask_multipliers(mask, w.cl, t);
    forward_epilogue<scalar_t>(input.data_ptr<scalar_t>(), mm.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(),
                               shift.data_ptr<scalar_t>(), relu, w, out.data_ptr<scalar_t>());
  });
  return {out, mean, invstd};
}

// g' = grad_out where the unit passed gradient (kept, and output > 0 under ReLU), else 0.
template <typename T>
inline T passed(T g, T out, T m, bool relu) {
  return relu ? (out > T(0) ? g : T(0)) : g * m;  // branch-free after if-conversion
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_batch_norm_act_backward_cpu(
    const at::Tensor& grad_out_, const at::Tensor& input_, const at::Tensor& output_, const at::Tensor& mask,
    const std::optional<at::Tensor>& weight, const at::Tensor& save_mean, const at::Tensor& save_invstd,
    bool training, bool relu, std::array<bool, 3> output_mask) {
  // Gradients of masked_batch_norm_act w.r.t. (input, weight, bias); with training=True
  // they include the dependence of the batch statistics on the input, as BN's do.
  check_args(input_, mask, weight, std::nullopt);
  TORCH_CHECK(grad_out_.sizes() == input_.sizes() && output_.sizes() == input_.sizes(),
              "masked_batch_norm_act_backward: grad_out and output must have the input's shape ", input_.sizes());
  const at::MemoryFormat fmt = input_.suggest_memory_format();
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  at::Tensor input = input_.contiguous(fmt), grad_out = grad_out_.contiguous(fmt), output = output_.contiguous(fmt);
  const int64_t N = input.size(0), C = input.size(1), HW = input.size(2) * input.size(3);
  const int64_t M = N * HW;
  Walk w{cl, N, C, HW};
  at::Tensor grad_input = at::empty({0}, input.options()), grad_weight = at::empty({0}, input.options()),
             grad_bias = at::empty({0}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "masked_batch_norm_act_backward_cpu", [&] {
    using T = scalar_t;
    const T* x = input.data_ptr<T>();
    const T* go = grad_out.data_ptr<T>();
    const T* out = output.data_ptr<T>();
    at::Tensor mm = mask_multipliers(mask, cl, input.scalar_type());
    const T* mmul = mm.data_ptr<T>();
    at::Tensor mean_t = save_mean.to(input.scalar_type()).contiguous();
    at::Tensor invstd_t = save_invstd.to(input.scalar_type()).contiguous();
    const T* mean = mean_t.data_ptr<T>();
    const T* invstd = invstd_t.data_ptr<T>();
    const int64_t inner = w.inner();
    // Pass 1: per-channel sum(g') and sum(g' * (x - mean)); float partials over blocks of
    // rows (vectorised), flushed to thread-private doubles, summed at the end.
    const int64_t nthreads = at::get_num_threads();
    std::vector<double> sums(static_cast<size_t>(nthreads) * 2 * C, 0.0);
    constexpr int64_t kBlock = 64;
    at::parallel_for(0, (w.rows() + kBlock - 1) / kBlock, 1, [&](int64_t b0, int64_t b1) {
      double* sg = sums.data() + static_cast<size_t>(at::get_thread_num()) * 2 * C;
      double* sgx = sg + C;
      std::vector<T> pg(cl ? C : 1), pgx(cl ? C : 1);
      for (int64_t blk = b0; blk < b1; ++blk) {
        const int64_t r0 = blk * kBlock, r1 = std::min(w.rows(), r0 + kBlock);
        if (cl) {
          std::fill(pg.begin(), pg.end(), T(0));
          std::fill(pgx.begin(), pgx.end(), T(0));
        }
        for (int64_t r = r0; r < r1; ++r) {
          const T *xr = x + r * inner, *gr = go + r * inner, *orow = out + r * inner;
          if (cl) {
            const T* m = mmul + (r % HW) * inner;
            for (int64_t c = 0; c < inner; ++c) {
              const T g = passed(gr[c], orow[c], m[c], relu);
              pg[c] += g;
              pgx[c] += g * (xr[c] - mean[c]);
            }
          } else {
            const int64_t c = r % C;
            const T* m = mmul + c * inner;
            T a = 0, b = 0;
            for (int64_t i = 0; i < inner; ++i) {
              const T g = passed(gr[i], orow[i], m[i], relu);
              a += g;
              b += g * (xr[i] - mean[c]);
            }
            sg[c] += a;
            sgx[c] += b;
          }
        }
        if (cl)
          for (int64_t c = 0; c < C; ++c) {
            sg[c] += pg[c];
            sgx[c] += pgx[c];
          }
      }
    });
    std::vector<T> sum_g(C, T(0)), sum_gxhat(C, T(0));
    for (int64_t t = 0; t < nthreads; ++t)
      for (int64_t c = 0; c < C; ++c) {
        sum_g[c] += static_cast<T>(sums[t * 2 * C + c]);
        sum_gxhat[c] += static_cast<T>(sums[t * 2 * C + C + c]) * invstd[c];
      }
    if (output_mask[1]) grad_weight = at::tensor(at::ArrayRef<T>(sum_gxhat), input.options());
    if (output_mask[2]) grad_bias = at::tensor(at::ArrayRef<T>(sum_g), input.options());
    if (!output_mask[0]) return;
    // Pass 2: grad_input = gamma * invstd * (g' - mean(g') - xhat * mean(g' * xhat)) in
    // training (the statistics depend on x), gamma * invstd * g' in eval.
    std::vector<T> k(C), a(C), b(C);
    at::Tensor wt = weight.has_value() && weight->defined() ? weight->to(input.scalar_type()).contiguous() : at::Tensor();
    for (int64_t c = 0; c < C; ++c) {
      k[c] = (wt.defined() ? wt.data_ptr<T>()[c] : T(1)) * invstd[c];
      a[c] = training ? sum_g[c] / M : T(0);                         // mean of g'
      b[c] = training ? sum_gxhat[c] / M * invstd[c] : T(0);         // mean(g' xhat) / sigma
    }
    grad_input = cpu::pooled_empty(input.sizes(), input.options(), fmt);
    T* gi = grad_input.data_ptr<T>();
    at::parallel_for(0, w.rows(), 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T *xr = x + r * inner, *gr = go + r * inner, *orow = out + r * inner;
        T* dst = gi + r * inner;
        if (cl) {
          const T* m = mmul + (r % HW) * inner;
          for (int64_t c = 0; c < inner; ++c)
            dst[c] = k[c] * (passed(gr[c], orow[c], m[c], relu) - a[c] - (xr[c] - mean[c]) * b[c]);
        } else {
          const int64_t c = r % C;
          const T* m = mmul + c * inner;
          for (int64_t i = 0; i < inner; ++i)
            dst[i] = k[c] * (passed(gr[i], orow[i], m[i], relu) - a[c] - (xr[i] - mean[c]) * b[c]);
        }
      }
    });
  });
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsemask, CPU, m) {
  m.impl("masked_batch_norm_act", TORCH_FN(masked_batch_norm_act_cpu));
  m.impl("masked_batch_norm_act_backward", TORCH_FN(masked_batch_norm_act_backward_cpu));
}

}  // namespace sparsemask
