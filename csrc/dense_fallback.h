// What every backend of masked_conv2d shares around its sparse kernels: the dense path
// that `auto` falls back to (conv2d followed by the mask), the trivial all-masked results,
// and the checks on the backward's arguments.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <tuple>

#include "plan.h"

namespace sparsemask {

// The sparse kernel runs when the kept fraction is at most max_density (>= 1: always).
inline bool use_dense(const MaskPlan& plan, double max_density) {
  return max_density < 1.0 && plan.density > max_density;
}

inline at::Tensor dense_forward(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, const at::Tensor& mask,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  // masked_fill_, not mul_(mask): 0 * NaN is NaN, and a masked output is exactly 0 in every backend.
  return at::conv2d(input, weight, bias, stride, padding, dilation)
      .masked_fill_(mask.logical_not(), 0)
      .contiguous(input.suggest_memory_format());
}

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Outputs not requested by output_mask are empty [0] tensors (the schema's convention).
inline Grads empty_grads(const at::Tensor& input, const at::Tensor& weight) {
  return {at::empty({0}, input.options()), at::empty({0}, weight.options()), at::empty({0}, weight.options())};
}

// The dense backward from a grad_output whose masked entries are already exactly 0.
inline Grads dense_backward_masked(const at::Tensor& masked_grad_output, const at::Tensor& input,
                                   const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, std::array<bool, 3> output_mask) {
  const int64_t bias_size[1] = {weight.size(0)};
  auto [gi, gw, gb] = at::convolution_backward(masked_grad_output, input, weight, at::IntArrayRef(bias_size), stride,
                                               padding, dilation, false, {0, 0}, 1, output_mask);
  auto [grad_input, grad_weight, grad_bias] = empty_grads(input, weight);
  if (output_mask[0]) grad_input = gi.contiguous(input.suggest_memory_format());
  if (output_mask[1]) grad_weight = gw.contiguous();
  if (output_mask[2]) grad_bias = gb;
  return {grad_input, grad_weight, grad_bias};
}

inline Grads dense_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& mask, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, std::array<bool, 3> output_mask) {
  return dense_backward_masked(grad_output.masked_fill(mask.logical_not(), 0), input, weight, stride, padding,
                               dilation, output_mask);
}

// Gradients when nothing is kept (or the batch is empty): zeros of the right shapes.
inline Grads zero_grads(const at::Tensor& input, const at::Tensor& weight, std::array<bool, 3> output_mask) {
  auto [grad_input, grad_weight, grad_bias] = empty_grads(input, weight);
  if (output_mask[0]) grad_input = at::zeros_like(input, input.options().memory_format(input.suggest_memory_format()));
  if (output_mask[1]) grad_weight = at::zeros_like(weight, at::MemoryFormat::Contiguous);
  if (output_mask[2]) grad_bias = at::zeros({weight.size(0)}, weight.options());
  return {grad_input, grad_weight, grad_bias};
}

inline void check_grad_output(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                              int64_t ho, int64_t wo) {
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({input.size(0), weight.size(0), ho, wo}),
              "masked_conv2d_backward: grad_output must have the output's shape [", input.size(0), ", ",
              weight.size(0), ", ", ho, ", ", wo, "], got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(), "masked_conv2d_backward: grad_output dtype ",
              grad_output.scalar_type(), " must equal input dtype ", input.scalar_type());
  TORCH_CHECK(grad_output.device() == input.device(), "masked_conv2d_backward: grad_output is on ",
              grad_output.device(), " but input is on ", input.device());
}

}  // namespace sparsemask
