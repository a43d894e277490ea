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

at::Tensor masked_conv2d_grad_input_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                         const at::Tensor& weight, const at::Tensor& mask, at::IntArrayRef stride,
                                         at::IntArrayRef padding, at::IntArrayRef dilation, double max_density) {
  c10::cuda::CUDAGuard guard(input.device());
  prepare_cuda(input, weight, std::nullopt, mask, stride, padding, dilation, max_density);
  return std::get<0>(at::convolution_backward(grad_output * mask, input, weight, std::nullopt, stride, padding,
                                              dilation, false, {0, 0}, 1, {true, false, false}))
      .contiguous(input.suggest_memory_format());
}

std::tuple<at::Tensor, at::Tensor> masked_conv2d_grad_weight_cuda(const at::Tensor& grad_output,
                                                                  const at::Tensor& input, const at::Tensor& weight,
                                                                  const at::Tensor& mask, at::IntArrayRef stride,
                                                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                                                  double max_density) {
  c10::cuda::CUDAGuard guard(input.device());
  prepare_cuda(input, weight, std::nullopt, mask, stride, padding, dilation, max_density);
  const int64_t bias_size[1] = {weight.size(0)};
  auto grads = at::convolution_backward(grad_output * mask, input, weight, at::IntArrayRef(bias_size), stride, padding,
                                        dilation, false, {0, 0}, 1, {false, true, true});
  return {std::get<1>(grads).contiguous(), std::get<2>(grads)};
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsemask, CUDA, m) {
  m.impl("masked_conv2d", TORCH_FN(masked_conv2d_cuda));
  m.impl("masked_conv2d_grad_input", TORCH_FN(masked_conv2d_grad_input_cuda));
  m.impl("masked_conv2d_grad_weight", TORCH_FN(masked_conv2d_grad_weight_cuda));
}

}  // namespace sparsemask
