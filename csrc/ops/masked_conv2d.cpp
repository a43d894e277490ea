// The schema of sparsemask::masked_conv2d and its backward.
// Kernels: csrc/cpu/masked_conv2d.cpp, csrc/cuda/masked_conv2d.cu; autocast: csrc/autocast/masked_conv2d.cpp;
// autograd: csrc/autograd/masked_conv2d.cpp; fake kernels: sparsemask/ops/masked_conv2d.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(sparsemask, m) {
  // out = conv2d(input, weight, bias, stride, padding, dilation) * mask, computing only the
  // kept outputs. Where the mask's kept fraction exceeds max_density the kernel runs the
  // dense convolution instead (the auto backend's fallback); max_density >= 1 forces sparse.
  m.def(
      "masked_conv2d(Tensor input, Tensor weight, Tensor? bias, Tensor mask, int[2] stride, int[2] padding, "
      "int[2] dilation, float max_density) -> Tensor");
  // Gradients (grad_input, grad_weight, grad_bias) of the op above; only kept outputs
  // contribute. Outputs not requested by output_mask come back as empty tensors [0].
  m.def(
      "masked_conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor mask, int[2] stride, "
      "int[2] padding, int[2] dilation, float max_density, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
}
