// Autocast kernels of masked_batch_norm_act and its backward (AutocastCPU, AutocastCUDA).
//
// BatchNorm statistics need float32 (a bf16 sum over N*H*W values loses the variance), so
// the op runs in float32 — input, affine parameters and running statistics — and returns
// its output in the input's dtype, as F.batch_norm does under autocast. The backward
// follows its input's dtype.
#include "autocast.h"

namespace sparsemask {
namespace {

using Opt = std::optional<at::Tensor>;
using Three = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using ForwardFn = Three(const at::Tensor&, const at::Tensor&, const Opt&, const Opt&, const Opt&, const Opt&, bool,
                        double, bool);
using BackwardFn = Three(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const Opt&,
                         const at::Tensor&, const at::Tensor&, bool, bool, std::array<bool, 3>);

template <c10::DeviceType D>
Three masked_batch_norm_act_autocast(const at::Tensor& input, const at::Tensor& mask, const Opt& weight,
                                     const Opt& bias, const Opt& running_mean, const Opt& running_var, bool training,
                                     double eps, bool relu) {
  autocast::Guard guard(D);
  static auto op = autocast::op<ForwardFn>("sparsemask::masked_batch_norm_act");
  const at::ScalarType math = autocast::math_dtype(input);
  auto [out, mean, invstd] = op.call(autocast::to_dtype(input, math), mask, autocast::to_dtype(weight, math),
                                     autocast::to_dtype(bias, math), autocast::to_dtype(running_mean, math),
                                     autocast::to_dtype(running_var, math), training, eps, relu);
  return {out.to(input.scalar_type()), mean, invstd};
}

template <c10::DeviceType D>
Three masked_batch_norm_act_backward_autocast(const at::Tensor& grad_out, const at::Tensor& input,
                                              const at::Tensor& output, const at::Tensor& mask, const Opt& weight,
                                              const at::Tensor& mean, const at::Tensor& invstd, bool training,
                                              bool relu, std::array<bool, 3> output_mask) {
  autocast::Guard guard(D);
  static auto op = autocast::op<BackwardFn>("sparsemask::masked_batch_norm_act_backward");
  const at::ScalarType t = input.scalar_type();
  return op.call(autocast::to_dtype(grad_out, t), input, autocast::to_dtype(output, t), mask, weight, mean, invstd,
                 training, relu, output_mask);
}

}  // namespace

SPARSEMASK_AUTOCAST_KERNELS(masked_batch_norm_act)

}  // namespace sparsemask
