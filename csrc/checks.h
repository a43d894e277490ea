// Argument checks shared by every backend of the sparsemask ops. Each message names the
// argument and the value expected, because these errors are part of the public API.
#pragma once
#include <ATen/ATen.h>

namespace sparsemask {

// Output spatial size of a convolution, as F.conv2d computes it.
inline int64_t conv_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

struct ConvParams {
  int64_t sh, sw, ph, pw, dh, dw;
};

inline ConvParams check_params(at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(stride.size() == 2, "masked_conv2d: stride must have 2 elements, got ", stride.size());
  TORCH_CHECK(padding.size() == 2, "masked_conv2d: padding must have 2 elements, got ", padding.size());
  TORCH_CHECK(dilation.size() == 2, "masked_conv2d: dilation must have 2 elements, got ", dilation.size());
  TORCH_CHECK(stride[0] >= 1 && stride[1] >= 1, "masked_conv2d: stride must be >= 1, got ", stride);
  TORCH_CHECK(padding[0] >= 0 && padding[1] >= 0, "masked_conv2d: padding must be >= 0, got ", padding);
  TORCH_CHECK(dilation[0] >= 1 && dilation[1] >= 1, "masked_conv2d: dilation must be >= 1, got ", dilation);
  return {stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1]};
}

// Checks input/weight/bias/mask against each other; returns {H_out, W_out}.
inline std::pair<int64_t, int64_t> check_masked_conv2d_args(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& mask, const ConvParams& p) {
  TORCH_CHECK(input.dim() == 4, "masked_conv2d: input must be 4-D [N, C_in, H, W], got ", input.dim(), "-D ", input.sizes());
  TORCH_CHECK(weight.dim() == 4, "masked_conv2d: weight must be 4-D [C_out, C_in, kh, kw], got ", weight.dim(), "-D ", weight.sizes());
  TORCH_CHECK(input.size(1) == weight.size(1),
              "masked_conv2d: weight.shape[1] (C_in = ", weight.size(1), ") must equal input.shape[1] = ", input.size(1),
              " (groups must be 1)");
  // at::conv2d returns [N, 0, H_out, W_out] for C_in = 0 and the sparse backwards skip an empty
  // input (grad_bias 0): refused here, as ops.py does, rather than wrong in some backends.
  TORCH_CHECK_VALUE(input.size(1) > 0, "masked_conv2d: input has no channels (C_in = input.shape[1] = 0); need C_in >= 1");
  TORCH_CHECK(input.scalar_type() == weight.scalar_type(),
              "masked_conv2d: weight dtype ", weight.scalar_type(), " must equal input dtype ", input.scalar_type());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()),
              "masked_conv2d: input must be floating point, got ", input.scalar_type());
  TORCH_CHECK(weight.device() == input.device(),
              "masked_conv2d: weight is on ", weight.device(), " but input is on ", input.device());
  TORCH_CHECK(mask.device() == input.device(),
              "masked_conv2d: mask is on ", mask.device(), " but input is on ", input.device());
  TORCH_CHECK(mask.scalar_type() == at::kBool, "masked_conv2d: mask must be torch.bool, got ", mask.scalar_type());
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0),
                "masked_conv2d: bias must have shape [C_out] = [", weight.size(0), "], got ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == input.scalar_type(),
                "masked_conv2d: bias dtype ", bias->scalar_type(), " must equal input dtype ", input.scalar_type());
    TORCH_CHECK(bias->device() == input.device(),
                "masked_conv2d: bias is on ", bias->device(), " but input is on ", input.device());
  }
  const int64_t ho = conv_out_size(input.size(2), weight.size(2), p.sh, p.ph, p.dh);
  const int64_t wo = conv_out_size(input.size(3), weight.size(3), p.sw, p.pw, p.dw);
  TORCH_CHECK(ho > 0 && wo > 0, "masked_conv2d: the output would be empty: input ", input.sizes(),
              " is smaller than the (dilated) kernel ", weight.sizes(), " with this padding");
  TORCH_CHECK(mask.dim() == 3 && mask.size(0) == weight.size(0) && mask.size(1) == ho && mask.size(2) == wo,
              "masked_conv2d: mask must have shape [C_out, H_out, W_out] = [", weight.size(0), ", ", ho, ", ", wo,
              "], got ", mask.sizes());
  return {ho, wo};
}

}  // namespace sparsemask
