// The schema of sparsemask::defective_unit and its backward.
// Kernels: csrc/cpu/defective_unit.cpp; autocast: csrc/autocast/defective_unit.cpp;
// fake kernels and autograd: sparsemask/ops/defective_unit.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(sparsemask, m) {
  // The whole defective unit: out = act(mask * BN(conv2d(input, weight)) [+ residual]),
  // act = ReLU if relu else identity, with BN in training (batch statistics) or eval mode
  // (running statistics). Returns (out, kept, mean, invstd): kept [nnz, N] holds the conv's
  // output at the kept neurons (rows in the mask plan's order), what the backward needs;
  // mean/invstd as in masked_batch_norm_act (the caller updates the running statistics).
  // The conv has no bias (a bias before BN cancels). max_density as in masked_conv2d.
  m.def(
      "defective_unit(Tensor input, Tensor weight, Tensor mask, Tensor? bn_weight, Tensor? bn_bias, "
      "Tensor? running_mean, Tensor? running_var, Tensor? residual, int[2] stride, int[2] padding, "
      "int[2] dilation, bool training, float eps, bool relu, float max_density) -> (Tensor, Tensor, Tensor, Tensor)");
  // Gradients (input, weight, bn_weight, bn_bias, residual) of the unit; empty [0] where
  // output_mask is False.
  m.def(
      "defective_unit_backward(Tensor grad_out, Tensor input, Tensor weight, Tensor mask, Tensor kept, Tensor out, "
      "Tensor? bn_weight, Tensor mean, Tensor invstd, int[2] stride, int[2] padding, int[2] dilation, "
      "bool training, bool relu, float max_density, bool[5] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}
