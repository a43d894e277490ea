// The schema of sparsemask::masked_batch_norm_act and its backward.
// Kernels: csrc/cpu/masked_batch_norm.cpp; autocast: csrc/autocast/masked_batch_norm.cpp;
// fake kernels and autograd: sparsemask/ops/masked_batch_norm.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(sparsemask, m) {
  // The defective unit's epilogue: act(mask * ((input - mean) * invstd * weight + bias)),
  // act = ReLU if relu else identity, returning (out, mean, invstd). In training mean and
  // invstd are input's batch statistics (computed in the same kernel; the caller updates
  // the running statistics from them) and the backward differentiates through them, as
  // BatchNorm's does; in eval they come from running_mean/running_var.
  m.def(
      "masked_batch_norm_act(Tensor input, Tensor mask, Tensor? weight, Tensor? bias, Tensor? running_mean, "
      "Tensor? running_var, bool training, float eps, bool relu) -> (Tensor, Tensor, Tensor)");
  m.def(
      "masked_batch_norm_act_backward(Tensor grad_out, Tensor input, Tensor output, Tensor mask, Tensor? weight, "
      "Tensor mean, Tensor invstd, bool training, bool relu, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
}
