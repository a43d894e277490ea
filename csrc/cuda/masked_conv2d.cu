// CUDA kernels of sparsemask::masked_conv2d.
//
// Starting point for the GPU issue: the ops are registered for CUDA with the dense
// (cuDNN conv + mask) path that `auto` falls back to; forcing the sparse path
// (max_density >= 1, backend "cuda") raises until the sparse CUDA kernels land.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../checks.h"
#include "../plan.h"

namespace sparsemask {
namespace {

void prepare_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  const at::Tensor& mask, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                  double max_density) {
  TORCH_CHECK(input.is_cuda(), "masked_conv2d (CUDA kernel): input must be a CUDA tensor, got ", input.device());
  ConvParams p = check_params(stride, padding, dilation);
  check_masked_conv2d_args(input, weight, bias, mask, p);
  TORCH_CHECK(max_density < 1.0 && get_plan(mask)->density > max_density,
              "masked_conv2d: the sparse CUDA kernels are not built in this version; use backend 'auto', "
              "'dense' or 'triton' on CUDA tensors");
}

at::Tensor masked_conv2d_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              const at::Tensor& mask, at::IntArrayRef stride, at::IntArrayRef padding,
                              at::IntArrayRef dilation, double max_density) {
  c10::cuda::CUDAGuard guard(input.device());
  prepare_cuda(input, weight, bias, mask, stride, padding, dilation, max_density);
  return at::conv2d(input, weight, bias, stride, padding, dilation).mul_(mask).contiguous(input.suggest_memory_format());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> masked_conv2d_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& mask,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, double max_density,
    std::array<bool, 3> output_mask) {
  c10::cuda::CUDAGuard guard(input.device());
  prepare_cuda(input, weight, std::nullopt, mask, stride, padding, dilation, max_density);
  const int64_t bias_size[1] = {weight.size(0)};
  auto [gi, gw, gb] = at::convolution_backward(grad_output * mask, input, weight, at::IntArrayRef(bias_size), stride,
                                               padding, dilation, false, {0, 0}, 1, output_mask);
  return {output_mask[0] ? gi.contiguous(input.suggest_memory_format()) : at::empty({0}, input.options()),
          output_mask[1] ? gw.contiguous() : at::empty({0}, weight.options()),
          output_mask[2] ? gb : at::empty({0}, weight.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsemask, CUDA, m) {
  m.impl("masked_conv2d", TORCH_FN(masked_conv2d_cuda));
  m.impl("masked_conv2d_backward", TORCH_FN(masked_conv2d_backward_cuda));
}

}  // namespace sparsemask
