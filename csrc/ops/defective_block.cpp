// The schema of sparsemask::defective_block and its backward.
// Kernels: csrc/cpu/defective_block.cpp; autocast: csrc/autocast/defective_block.cpp;
// fake kernels and autograd: sparsemask/ops/defective_block.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(sparsemask, m) {
  // A ResNet basic block with two defective convs, fused: a1 = relu(mask1 * BN1(conv1(input))),
  // out = relu(mask2 * BN2(conv2(a1)) + residual). a1 exists only at mask1's kept neurons
  // (act1 [nnz1, N]) and conv2 reads it there. Returns (out, kept1, act1, kept2, mean1,
  // invstd1, mean2, invstd2); kept1/kept2 are the convs' outputs at kept neurons.
  m.def(
      "defective_block(Tensor input, Tensor w1, Tensor mask1, Tensor? bn1_weight, Tensor? bn1_bias, "
      "Tensor? bn1_running_mean, Tensor? bn1_running_var, int[2] stride1, int[2] padding1, int[2] dilation1, "
      "float eps1, Tensor w2, Tensor mask2, Tensor? bn2_weight, Tensor? bn2_bias, Tensor? bn2_running_mean, "
      "Tensor? bn2_running_var, int[2] stride2, int[2] padding2, int[2] dilation2, float eps2, Tensor? residual, "
      "bool training, float max_density) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Gradients (input, w1, bn1_weight, bn1_bias, w2, bn2_weight, bn2_bias, residual).
  m.def(
      "defective_block_backward(Tensor grad_out, Tensor input, Tensor w1, Tensor mask1, Tensor? bn1_weight, "
      "Tensor mean1, Tensor invstd1, int[2] stride1, int[2] padding1, int[2] dilation1, Tensor w2, Tensor mask2, "
      "Tensor? bn2_weight, Tensor mean2, Tensor invstd2, int[2] stride2, int[2] padding2, int[2] dilation2, "
      "Tensor kept1, Tensor act1, Tensor kept2, Tensor out, bool training, float max_density, bool[8] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}
