// The extension module and the mask-plan ops. Each op's schema is in csrc/ops/<op>.cpp
// (a TORCH_LIBRARY_FRAGMENT), its kernels in csrc/cpu, csrc/cuda and
// csrc/autocast; Python (sparsemask/ops/, one module per op) adds fake kernels and autograd.
#include <Python.h>
#include <torch/library.h>

#include "cpu/buffer_pool.h"
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

std::vector<int64_t> cpu_pool_info() {
  cpu::PoolInfo info = cpu::pool_info();
  return {info.idle_bytes, info.idle_blocks, info.live_blocks, info.hits, info.misses, info.limit_bytes};
}

}  // namespace

TORCH_LIBRARY(sparsemask, m) {
  // The mask plan (see plan.h): copies of (pos_count, pos_ch, pos_start).
  m.def("mask_plan(Tensor mask) -> (Tensor, Tensor, Tensor)");
  m.impl("mask_plan", c10::DispatchKey::CompositeExplicitAutograd, TORCH_FN(mask_plan));
  // Internal: the cached (pos_count, pos_ch) without copies, read-only (see plan_view above).
  m.def("_plan_view(Tensor mask) -> (Tensor, Tensor)");
  m.impl("_plan_view", c10::DispatchKey::CompositeExplicitAutograd, TORCH_FN(plan_view));
  // [plans built, cache hits, live entries]
  m.def("plan_cache_info() -> int[]", &cache_info);
  m.def("plan_cache_clear() -> ()", &plan_cache_clear);
  // The CPU buffer pool of the ops' large outputs (csrc/cpu/buffer_pool.h):
  // [idle bytes, idle blocks, live blocks, hits, misses, limit bytes]; release frees idle blocks.
  m.def("cpu_pool_info() -> int[]", &cpu_pool_info);
  m.def("cpu_pool_release() -> ()", &cpu::pool_release);
}

}  // namespace sparsemask
