// The schemas of the sparsemask ops. Backends register their kernels in csrc/cpu and
// csrc/cuda; Python (sparsemask/ops.py) adds fake kernels and autograd.
#include <Python.h>
#include <torch/library.h>

#include "plan.h"

extern "C" {
// `import sparsemask._C` loads this library, whose static initialisers register the ops.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace sparsemask {

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> mask_plan(const at::Tensor& mask) {
  // Copies, not the cached tensors: the caller owns an op's outputs (and may write them).
  std::shared_ptr<const MaskPlan> plan = get_plan(mask);
  return {plan->pos_count.clone(), plan->pos_ch.clone(), plan->pos_start.clone()};
}

// The cached tensors themselves, for the Triton kernels (sparsemask/triton): no copy per call.
// Safe in eager mode because plan tensors are never written after build_plan (plan.h) and the
// only callers pass them to kernels that only load from them. detach() gives each output its
// own TensorImpl over the cached storage, so a caller cannot change the cache's metadata.
// Compiled graphs must not hold these tensors: Inductor treats an op's outputs as its own
// buffers (it may reuse a dead one in place for another result), so sparsemask/plan.py
// registers a FunctionalTensorMode rule that traces this op as mask_plan (fresh copies).
std::tuple<at::Tensor, at::Tensor> plan_view(const at::Tensor& mask) {
  std::shared_ptr<const MaskPlan> plan = get_plan(mask);
  return {plan->pos_count.detach(), plan->pos_ch.detach()};
}

std::vector<int64_t> cache_info() {
  PlanCacheInfo info = plan_cache_info();
  return {info.builds, info.hits, info.entries};
}

}  // namespace

TORCH_LIBRARY(sparsemask, m) {
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
  // The mask plan (see plan.h): copies of (pos_count, pos_ch, pos_start).
  m.def("mask_plan(Tensor mask) -> (Tensor, Tensor, Tensor)");
  m.impl("mask_plan", c10::DispatchKey::CompositeExplicitAutograd, TORCH_FN(mask_plan));
  // Internal: the cached (pos_count, pos_ch) without copies, read-only (see plan_view above).
  m.def("_plan_view(Tensor mask) -> (Tensor, Tensor)");
  m.impl("_plan_view", c10::DispatchKey::CompositeExplicitAutograd, TORCH_FN(plan_view));
  // [plans built, cache hits, live entries]
  m.def("plan_cache_info() -> int[]", &cache_info);
  m.def("plan_cache_clear() -> ()", &plan_cache_clear);
}

}  // namespace sparsemask
