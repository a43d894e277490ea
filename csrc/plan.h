// The mask plan: index lists derived once from a defective layer's mask and cached.
//
// mask: bool [C_out, H_out, W_out], Q = H_out * W_out output positions.
//   pos_count [Q]      int32  kept channels at output position q
//   pos_ch    [Q, C]   int32  their ids, ascending, first pos_count[q] entries valid
//   pos_start [Q + 1]  int64  prefix sum of pos_count: row of (q, j) in a kept-only buffer
//   row_ch    [nnz]    int32  channel of each kept row (q, j), in pos_start order
//   keep_cq   [C, Q]   bool   the mask, contiguous: one NCHW image's layout    } CPU masks only:
//   keep_qc   [Q, C]   bool   the mask transposed: one channels_last image's   } the dense path
//                             layout (csrc/cpu/dense_path.h masks outputs in one pass with them)
// All shapes but row_ch's depend only on the mask's shape, so fake kernels and torch.compile need no
// data-dependent sizes. The plan lives on the mask's device.
//
// The tensors are written only by build_plan, before the plan is published (get_plan hands
// out shared_ptr<const MaskPlan>); every kernel only reads them. That invariant is what lets
// the _plan_view op (csrc/sparsemask.cpp) give them to the Triton kernels without copies.
// Only what a kernel reads belongs here: per-channel lists (ch_count/ch_pos) and host copies
// of pos_count/pos_start had no reader and were dropped (they cost a second argsort and a
// [C, Q] tensor per mask).
#pragma once
#include <ATen/ATen.h>
#include <memory>

namespace sparsemask {

struct MaskPlan {
  int64_t channels = 0, height = 0, width = 0;
  int64_t nnz = 0;       // kept neurons
  double density = 0.0;  // nnz / mask.numel()
  at::Tensor pos_count, pos_ch, pos_start, row_ch;
  at::Tensor keep_cq, keep_qc;  // undefined for masks on other devices
};

// Builds (or fetches from the cache) the plan of `mask`. The cache is keyed by the mask's
// storage (held weakly, so a freed storage's address is never reused while its entry lives),
// storage offset, sizes and strides, and validated by the mask's *contents*: each entry holds
// a copy of the mask it was built from and a hit requires the mask to still equal it. The
// version counter is not enough: `mask.data.copy_`, writes through `.numpy()` or the untyped
// storage change a mask without bumping it (issue 15). On CPU the check is one memcmp of
// the mask (C*H*W bytes; ~2 us for 64x32x32); on other devices an at::equal (one
// device-to-host sync), skipped while the current stream is capturing a CUDA graph (a
// replayed graph uses the plan it captured anyway), see set_capture_query.
std::shared_ptr<const MaskPlan> get_plan(const at::Tensor& mask);

// Set by the CUDA backend (csrc/cuda/masked_conv2d.cu): whether `device`'s current stream
// is capturing a graph, when a synchronising content check must not run.
void set_capture_query(bool (*query)(c10::Device));
std::shared_ptr<const MaskPlan> get_plan(const at::Tensor& mask);

// Builds a plan without the cache (used by get_plan).
std::shared_ptr<MaskPlan> build_plan(const at::Tensor& mask);

struct PlanCacheInfo {
  int64_t builds, hits, entries;
};
PlanCacheInfo plan_cache_info();
void plan_cache_clear();

}  // namespace sparsemask
