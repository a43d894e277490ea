// Shared pieces of the Autocast kernels (torchvision's csrc/ops/autocast/ pattern): each
// kernel casts its arguments, excludes the Autocast key and calls the op again, so the
// cast and the op are recorded by autograd like any other ops.
//
// Two rules, as PyTorch's own autocast lists have them:
//   * convolution-like ops run in the autocast dtype (bf16/fp16): masked_conv2d;
//   * ops with BatchNorm statistics inside run in float32 and return their main output in
//     the dtype the surrounding autocast code expects: masked_batch_norm_act keeps its
//     input's dtype (as F.batch_norm does), the fused conv+BN ops return the autocast
//     dtype (as conv2d followed by batch_norm does under autocast).
// float64 tensors are never cast (autocast leaves them alone too).
#pragma once
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace sparsemask {
namespace autocast {

// The typed dispatcher handle of sparsemask::<name>.
template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// Excludes this device's Autocast key for the redispatch below it.
struct Guard {
  explicit Guard(c10::DeviceType device)
      : exclude(at::autocast::get_autocast_dispatch_key_from_device_type(device)) {}
  c10::impl::ExcludeDispatchKeyGuard exclude;
};

inline at::ScalarType lower_precision(c10::DeviceType device) {
  return at::autocast::get_lower_precision_fp_from_device_type(device);
}

// A float16/bfloat16/float32 tensor as `dtype`; undefined, float64 and non-floating tensors
// unchanged.
inline at::Tensor to_dtype(const at::Tensor& t, at::ScalarType dtype) {
  if (!t.defined() || !at::isFloatingType(t.scalar_type()) || t.scalar_type() == at::kDouble ||
      t.scalar_type() == dtype)
    return t;
  return t.to(dtype);
}

inline std::optional<at::Tensor> to_dtype(const std::optional<at::Tensor>& t, at::ScalarType dtype) {
  if (!t.has_value()) return t;
  return to_dtype(*t, dtype);
}

// The dtype the BN-bearing fused ops compute in: float64 stays float64, the rest float32.
inline at::ScalarType math_dtype(const at::Tensor& input) {
  return input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// The dtype a fused conv+BN op returns under autocast: what conv2d (+ batch_norm) returns.
inline at::ScalarType conv_out_dtype(const at::Tensor& input, c10::DeviceType device) {
  return input.scalar_type() == at::kDouble ? at::kDouble : lower_precision(device);
}

}  // namespace autocast
}  // namespace sparsemask

// Registers NAME_autocast<D> and NAME_backward_autocast<D> (templates on the device type,
// defined in the including file) as the AutocastCPU and AutocastCUDA kernels of
// sparsemask::NAME and sparsemask::NAME_backward.
#define SPARSEMASK_AUTOCAST_KERNELS(NAME)                                                       \
  TORCH_LIBRARY_IMPL(sparsemask, AutocastCPU, m) {                                              \
    m.impl(#NAME, TORCH_FN(NAME##_autocast<c10::DeviceType::CPU>));                             \
    m.impl(#NAME "_backward", TORCH_FN(NAME##_backward_autocast<c10::DeviceType::CPU>));        \
  }                                                                                             \
  TORCH_LIBRARY_IMPL(sparsemask, AutocastCUDA, m) {                                             \
    m.impl(#NAME, TORCH_FN(NAME##_autocast<c10::DeviceType::CUDA>));                            \
    m.impl(#NAME "_backward", TORCH_FN(NAME##_backward_autocast<c10::DeviceType::CUDA>));       \
  }
