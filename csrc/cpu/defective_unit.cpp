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

struct UnitPrep {
  ConvParams p;
  int64_t ho, wo;
  std::shared_ptr<const MaskPlan> plan;
};

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

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> defective_unit_cpu(
    const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask, const std::optional<at::Tensor>& bn_weight,
    const std::optional<at::Tensor>& bn_bias, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, const std::optional<at::Tensor>& residual, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool training, double eps, bool relu, double max_density) {
  UnitPrep pr = prepare_unit(input, weight, mask, stride, padding, dilation);
  const int64_t N = input.size(0), K = weight.size(0);
  check_vec("defective_unit", bn_weight, "bn_weight", input, K);
  check_vec("defective_unit", bn_bias, "bn_bias", input, K);
  check_vec("defective_unit", running_mean, "running_mean", input, K);
  check_vec("defective_unit", running_var, "running_var", input, K);
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
  at::Tensor out = pooled_empty({N, K, pr.ho, pr.wo}, input.options(), fmt);
  at::Tensor kept, mean, invstd;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "defective_unit_cpu", [&] {
    using T = scalar_t;
    Geometry g = make_geometry<T>(input, weight, pr.p, pr.ho, pr.wo);
    kept = kept_conv<T>(input, weight, plan, g, stride, padding, dilation, max_density);   // 1. conv, kept only
    std::tie(mean, invstd) = bn_statistics<T>(kept, plan, g, training, running_mean, running_var, eps);  // 2. BN
    auto [scale, shift] = bn_affine(mean, invstd, bn_weight, bn_bias);
    write_unit_output<T>(kept, plan, g, scale, shift, res, relu, out);   // 3. act(residual + mask * BN)
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
              "defective_unit_backward: grad_out and out must have the output's shape ", at::IntArrayRef(out_shape),
              ", got ", grad_out.sizes(), " and ", out.sizes());
  TORCH_CHECK(grad_out.scalar_type() == input.scalar_type() && out.scalar_type() == input.scalar_type(),
              "defective_unit_backward: grad_out and out must be ", input.scalar_type());
  TORCH_CHECK(kept.dim() == 2 && kept.size(0) == plan.nnz && kept.size(1) == N && kept.is_contiguous() &&
                  kept.scalar_type() == input.scalar_type(),
              "defective_unit_backward: kept must be the forward's contiguous [nnz, N] = [", plan.nnz, ", ", N,
              "] buffer, got ", kept.sizes());
  TORCH_CHECK(mean.numel() == K && invstd.numel() == K, "defective_unit_backward: mean and invstd must have ", K,
              " elements");
  check_vec("defective_unit", bn_weight, "bn_weight", input, K);
  const auto [need_input, need_weight, need_bn_weight, need_bn_bias, need_residual] = output_mask;
  at::Tensor gi = at::empty({0}, input.options()), gw = at::empty({0}, weight.options());
  at::Tensor gbw = at::empty({0}, input.options()), gbb = at::empty({0}, input.options());
  at::Tensor gres = at::empty({0}, input.options());
  const bool need_params = need_input || need_weight || need_bn_weight || need_bn_bias;
  if (!need_params) {
    if (need_residual) gres = relu ? at::threshold_backward(grad_out, out, 0) : grad_out.clone();
    return {gi, gw, gbw, gbb, gres};
  }
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "defective_unit_backward_cpu", [&] {
    using T = scalar_t;
    Geometry g = make_geometry<T>(input, weight, pr.p, pr.ho, pr.wo);
    auto [gk, gr] = gated_kept_grad<T>(grad_out, out, plan, g, relu, need_residual);   // 1. gated gather
    if (need_residual) gres = gr;
    auto [sw, sb] = bn_backward_kept<T>(gk, kept, plan, g, bn_weight, mean, invstd, training,   // 2. BN
                                        need_input || need_weight);
    if (need_bn_weight) gbw = sw;
    if (need_bn_bias) gbb = sb;
    auto [cgi, cgw] = conv_grads<T>(gk, input, weight, plan, g, stride, padding, dilation, max_density,   // 3. conv
                                    need_input, need_weight);
    if (need_input) gi = cgi;
    if (need_weight) gw = cgw;
  });
  return {gi, gw, gbw, gbb, gres};
}

}  // namespace

// Called by register_kernels (kernels_at_level.h) for the level dispatch.cpp chose.
void register_defective_unit(torch::Library& m) {
  m.impl("defective_unit", TORCH_FN(defective_unit_cpu));
  m.impl("defective_unit_backward", TORCH_FN(defective_unit_backward_cpu));
}

}  // namespace SPARSEMASK_CPU_NS
}  // namespace cpu

}  // namespace sparsemask
