// Autocast kernels of masked_conv2d and its backward (AutocastCPU, AutocastCUDA).
//
// Forward: like conv2d on PyTorch's autocast list, input/weight/bias run in the autocast
// dtype (bf16 activations meet fp32 weights all the time under autocast); the kernels
// accumulate in float32 whatever the storage dtype. Backward: grad_output and weight follow
// the input's dtype (autograd already hands them over that way; a direct caller may not).
#include "autocast.h"

namespace sparsemask {
namespace {

using ForwardFn = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                             const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, double);
using BackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
    at::IntArrayRef, double, std::array<bool, 3>);

template <c10::DeviceType D>
at::Tensor masked_conv2d_autocast(const at::Tensor& input, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, const at::Tensor& mask,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                  double max_density) {
  autocast::Guard guard(D);
  const at::ScalarType dtype = autocast::lower_precision(D);
  static auto op = autocast::op<ForwardFn>("sparsemask::masked_conv2d");
  // cached_cast: within one autocast region a weight is cast once, not once per call.
  return op.call(at::autocast::cached_cast(dtype, input, D), at::autocast::cached_cast(dtype, weight, D),
                 at::autocast::cached_cast(dtype, bias, D), mask, stride, padding, dilation, max_density);
}

template <c10::DeviceType D>
std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_conv2d_backward_autocast(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, double max_density,
    std::array<bool, 3> output_mask) {
  autocast::Guard guard(D);
  static auto op = autocast::op<BackwardFn>("sparsemask::masked_conv2d_backward");
  const at::ScalarType dtype = input.scalar_type();
  return op.call(autocast::to_dtype(grad_output, dtype), input, autocast::to_dtype(weight, dtype), mask, stride,
                 padding, dilation, max_density, output_mask);
}

}  // namespace

SPARSEMASK_AUTOCAST_KERNELS(masked_conv2d)

}  // namespace sparsemask
