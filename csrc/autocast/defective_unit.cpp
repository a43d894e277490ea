// Autocast kernels of defective_unit and its backward (AutocastCPU, AutocastCUDA).
//
// The fused unit holds BatchNorm statistics, so it runs in float32: the activation (bf16
// from the layer before, or fp32 at the stem), the conv weight, BN's parameters and a
// residual of either dtype are brought to float32, and the output comes back in the
// autocast dtype — what conv2d followed by batch_norm returns under autocast. The kernel
// stays the fused, sparse one; only the two boundary casts are added. The backward follows
// its input's dtype.
#include "autocast.h"

namespace sparsemask {
namespace {

using Opt = std::optional<at::Tensor>;
using Four = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Five = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using ForwardFn = Four(const at::Tensor&, const at::Tensor&, const at::Tensor&, const Opt&, const Opt&, const Opt&,
                       const Opt&, const Opt&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool, double, bool,
                       double);
using BackwardFn = Five(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        const at::Tensor&, const at::Tensor&, const Opt&, const at::Tensor&, const at::Tensor&,
                        at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool, bool, double, std::array<bool, 5>);

template <c10::DeviceType D>
Four defective_unit_autocast(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
                             const Opt& bn_weight, const Opt& bn_bias, const Opt& running_mean,
                             const Opt& running_var, const Opt& residual, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, bool training, double eps, bool relu,
                             double max_density) {
  autocast::Guard guard(D);
  static auto op = autocast::op<ForwardFn>("sparsemask::defective_unit");
  const at::ScalarType math = autocast::math_dtype(input);
  auto cast = [math](const auto& t) { return autocast::to_dtype(t, math); };
  auto [out, kept, mean, invstd] =
      op.call(cast(input), cast(weight), mask, cast(bn_weight), cast(bn_bias), cast(running_mean),
              cast(running_var), cast(residual), stride, padding, dilation, training, eps, relu, max_density);
  return {out.to(autocast::conv_out_dtype(input, D)), kept, mean, invstd};
}

template <c10::DeviceType D>
Five defective_unit_backward_autocast(const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
                                      const at::Tensor& mask, const at::Tensor& kept, const at::Tensor& out,
                                      const Opt& bn_weight, const at::Tensor& mean, const at::Tensor& invstd,
                                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                      bool training, bool relu, double max_density, std::array<bool, 5> output_mask) {
  autocast::Guard guard(D);
  static auto op = autocast::op<BackwardFn>("sparsemask::defective_unit_backward");
  const at::ScalarType t = input.scalar_type();
  auto cast = [t](const auto& x) { return autocast::to_dtype(x, t); };
  return op.call(cast(grad_out), input, cast(weight), mask, cast(kept), cast(out), cast(bn_weight), mean, invstd,
                 stride, padding, dilation, training, relu, max_density, output_mask);
}

}  // namespace

SPARSEMASK_AUTOCAST_KERNELS(defective_unit)

}  // namespace sparsemask
