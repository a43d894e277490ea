// CPU kernels of sparsemask::masked_conv2d: forward, grad_input, grad_weight/grad_bias.
// The loops themselves are in conv_kernels.h (shared with the fused defective unit).
//
// Compiled once per ISA level, included by csrc/cpu/kernels_at_level.h (csrc/cpu/isa.h);
// setup.py does not compile this file on its own.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstring>

#include "../checks.h"
#include "../dense_fallback.h"
#include "../plan.h"
#include "conv_kernels.h"
#include "dense_path.h"

namespace sparsemask {
namespace cpu {
inline namespace SPARSEMASK_CPU_NS {  // one per ISA level (isa.h)
namespace {

// ---------------------------------------------------------------------------------------
// The registered CPU kernels.

struct Prepared {
  ConvParams p;
  int64_t ho, wo;
  std::shared_ptr<const MaskPlan> plan;
};

Prepared prepare(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                 const at::Tensor& mask, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(input.device().is_cpu(), "masked_conv2d (CPU kernel): input must be a CPU tensor, got ", input.device());
  ConvParams p = check_params(stride, padding, dilation);
  auto [ho, wo] = check_masked_conv2d_args(input, weight, bias, mask, p);
  return {p, ho, wo, get_plan(mask)};
}

// Where the forward's zeros come from. channels_last (channel stride 1): the K outputs of
// one image at one position are a contiguous row, zeroed by forward_kernel's row_begin just
// before that position's kept values are stored — each output line written once. Other
// layouts: the whole output zeroed first, then the kept values scattered into it.
struct ZeroRows {
  char* base = nullptr;  // null: the output was zeroed up front
  int64_t sN = 0, sH = 0, sW = 0, Wo = 1, row_bytes = 0;
  void operator()(int64_t n0, int nb, int64_t q) const {
    if (base == nullptr) return;
    char* row = base + ((q / Wo) * sH + (q % Wo) * sW);
    for (int n = 0; n < nb; ++n) std::memset(row + (n0 + n) * sN, 0, row_bytes);
  }
};

ZeroRows zero_rows(at::Tensor& out) {
  ZeroRows z;
  if (out.stride(1) != 1 || out.size(1) == 1) {  // not a channels_last row per position
    out.zero_();
    return z;
  }
  const int64_t es = out.element_size();
  z.base = static_cast<char*>(out.data_ptr());
  z.sN = out.stride(0) * es;
  z.sH = out.stride(2) * es;
  z.sW = out.stride(3) * es;
  z.Wo = out.size(3);
  z.row_bytes = out.size(1) * es;
  return z;
}

#if SPARSEMASK_CPU_LEVEL == SPARSEMASK_CPU_AVX512
// bfloat16 operands packed as bfloat16 (Cp a multiple of 32) and multiplied by the native
// AVX512-BF16 tile; float32 sums rounded once into the bfloat16 output `out` (zeroed).
void forward_bf16(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  const Prepared& pr, at::Tensor& out) {
  using B = c10::BFloat16;
  Geometry g = make_geometry<B>(input, weight, pr.p, pr.ho, pr.wo);
  at::Tensor wp = pack_weight(weight, g, at::kBFloat16);
  at::Tensor b = bias.has_value() && bias->defined() ? bias->to(at::kFloat).contiguous() : at::Tensor();
  const float* bias_p = b.defined() ? b.data_ptr<float>() : nullptr;
  B* out_p = out.data_ptr<B>();
  const int64_t sN = out.stride(0), sC = out.stride(1), sH = out.stride(2), sW = out.stride(3);
  with_input_source<B>(input, g, at::kBFloat16, kRowBlock, [&](const auto& source) {
    forward_kernel<B>(source, wp.data_ptr<B>(), *pr.plan, g,
                      [&](int64_t n, int64_t, int64_t co, int64_t q, float v) {
                        out_p[n * sN + co * sC + (q / g.Wo) * sH + (q % g.Wo) * sW] =
                            static_cast<B>(v + (bias_p ? bias_p[co] : 0.0f));
                      },
                      zero_rows(out));
  });
}
#endif

at::Tensor masked_conv2d_cpu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             const at::Tensor& mask, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, double max_density) {
  Prepared pr = prepare(input, weight, bias, mask, stride, padding, dilation);
  if (use_dense(*pr.plan, max_density)) {
    return dense_forward_cpu(input, weight, bias, *pr.plan, stride, padding, dilation);
  }
  // Pooled (buffer_pool.h): a training step's outputs reuse the previous step's warm pages.
  // Not zeroed here: the kernels write every element (ZeroRows).
  at::Tensor out =
      pooled_empty({input.size(0), weight.size(0), pr.ho, pr.wo}, input.options(), input.suggest_memory_format());
  if (out.numel() == 0 || pr.plan->nnz == 0) {
    return out.zero_();
  }
#if SPARSEMASK_CPU_LEVEL == SPARSEMASK_CPU_AVX512
  if (input.scalar_type() == at::kBFloat16 && bf16_dot_enabled()) {
    forward_bf16(input, weight, bias, pr, out);
    return out;
  }
#endif
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "masked_conv2d_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const at::ScalarType t = c10::CppTypeToScalarType<T>::value;
    Geometry g = make_geometry<T>(input, weight, pr.p, pr.ho, pr.wo);
    at::Tensor wp = pack_weight(weight, g, t);
    at::Tensor b = bias.has_value() && bias->defined() ? bias->to(t).contiguous() : at::Tensor();
    const T* bias_p = b.defined() ? b.data_ptr<T>() : nullptr;
    scalar_t* out_p = out.data_ptr<scalar_t>();  // 16-bit outputs rounded once, as they are stored
    const int64_t sN = out.stride(0), sC = out.stride(1), sH = out.stride(2), sW = out.stride(3);
    with_input_source<T>(input, g, t, kRowBlock, [&](const auto& source) {
      forward_kernel<T>(source, wp.data_ptr<T>(), *pr.plan, g,
                        [&](int64_t n, int64_t, int64_t co, int64_t q, T v) {
                          out_p[n * sN + co * sC + (q / g.Wo) * sH + (q % g.Wo) * sW] =
                              static_cast<scalar_t>(v + (bias_p ? bias_p[co] : T(0)));
                        },
                        zero_rows(out));
    });
  });
  return out;
}

// grad_bias[co] = sum of gk over the kept rows of channel co and the batch.
template <typename T>
at::Tensor grad_bias_from_kept(const T* gk, const MaskPlan& plan, const Geometry& g, const at::TensorOptions& opts) {
  at::Tensor gb = at::zeros({g.K}, opts);
  T* out = gb.data_ptr<T>();
  const int32_t* pos_count = plan.pos_count.data_ptr<int32_t>();
  const int32_t* pos_ch = plan.pos_ch.data_ptr<int32_t>();
  const int64_t* pos_start = plan.pos_start.data_ptr<int64_t>();
  for (int64_t q = 0; q < g.Q; ++q)
    for (int64_t j = 0; j < pos_count[q]; ++j) {
      const T* row = gk + (pos_start[q] + j) * g.N;
      T s = 0;
      for (int64_t n = 0; n < g.N; ++n) s += row[n];
      out[pos_ch[q * g.K + j]] += s;
    }
  return gb;
}

// Gradients of conv2d(...) * mask w.r.t. (input, weight, bias); an output not asked for in
// output_mask is returned as an empty tensor of shape [0].
std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_conv2d_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, double max_density,
    std::array<bool, 3> output_mask) {
  Prepared pr = prepare(input, weight, std::nullopt, mask, stride, padding, dilation);
  check_grad_output(grad_output, input, weight, pr.ho, pr.wo);
  if (use_dense(*pr.plan, max_density))
    return dense_backward_cpu(grad_output, input, weight, *pr.plan, stride, padding, dilation, output_mask);
  if (input.numel() == 0 || pr.plan->nnz == 0) return zero_grads(input, weight, output_mask);
  const auto [need_input, need_weight, need_bias] = output_mask;
  auto [grad_input, grad_weight, grad_bias] = empty_grads(input, weight);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "masked_conv2d_backward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const at::ScalarType t = c10::CppTypeToScalarType<T>::value;
    const MaskPlan& plan = *pr.plan;
    Geometry g = make_geometry<T>(input, weight, pr.p, pr.ho, pr.wo);
    at::Tensor gk = gather_kept<T>(grad_output, plan, g, t);
    auto [gi, gw] = conv_grads_from_kept<T>(gk, input, weight, plan, g, need_input, need_weight);
    if (need_input) grad_input = gi;
    if (need_weight) grad_weight = gw;
    if (need_bias) grad_bias = grad_bias_from_kept<T>(gk.data_ptr<T>(), plan, g, gk.options()).to(weight.scalar_type());
  });
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace

// Called by register_kernels (kernels_at_level.h) for the level dispatch.cpp chose.
void register_masked_conv2d(torch::Library& m) {
  m.impl("masked_conv2d", TORCH_FN(masked_conv2d_cpu));
  m.impl("masked_conv2d_backward", TORCH_FN(masked_conv2d_backward_cpu));
}

}  // namespace SPARSEMASK_CPU_NS
}  // namespace cpu

}  // namespace sparsemask
