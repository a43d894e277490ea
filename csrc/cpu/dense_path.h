// The dense path of the CPU op (backend `auto` above its threshold): oneDNN's convolution,
// then the mask applied in one pass with the plan's byte masks — instead of
// masked_fill_(mask.logical_not(), 0), whose inverted-mask allocation, broadcast and thread
// fork cost about as much as a small convolution itself (N=1, 3->64@32: 30 us of masking
// after a 37 us conv, measured 2026-12-02). The masked grad_output of the backward is a
// fresh heap tensor, not a pooled one (csrc/cpu/buffer_pool.h): it lives only for the backward, so
// the heap hands back the block the last same-sized temporary used, still in cache; a pool
// block is cold whenever other layers ran in between (3->64@32 N=32: 941 vs 572 us).
// Compiled per ISA level (the select loops vectorise with the level's instructions).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "../dense_fallback.h"
#include "../plan.h"

namespace sparsemask {
namespace cpu {
inline namespace SPARSEMASK_CPU_NS {  // one per ISA level (isa.h)

// dst[n][i] = keep[i] ? src[n][i] : 0 for N images of `per_image` elements of `bytes` bytes
// (dst may be src). Bits, not values: +0.0 for every float type, NaN/Inf kept as they are.
template <typename U>
void select_kept(const U* src, U* dst, const bool* keep, int64_t N, int64_t per_image) {
  // Small batches of small images stay on one thread: a fork costs more than the pass.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(per_image, 1));
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const U* s = src + n * per_image;
      U* d = dst + n * per_image;
      const uint8_t* k = reinterpret_cast<const uint8_t*>(keep);  // a bool is one byte, 0 or 1
      // An AND with all-ones or zero, not a branch or ?: on the bool: this form vectorises.
      for (int64_t i = 0; i < per_image; ++i) d[i] = s[i] & (U(0) - static_cast<U>(k[i]));
    }
  });
}

// `src` and `dst` [N, K, Ho, Wo], both contiguous in `fmt` (NCHW or channels_last).
inline void select_kept(const at::Tensor& src, at::Tensor& dst, const MaskPlan& plan, at::MemoryFormat fmt) {
  const at::Tensor& keep = fmt == at::MemoryFormat::ChannelsLast ? plan.keep_qc : plan.keep_cq;
  TORCH_INTERNAL_ASSERT(keep.defined() && src.is_contiguous(fmt) && dst.is_contiguous(fmt));
  const int64_t N = src.size(0), per_image = N > 0 ? src.numel() / N : 0;
  const bool* k = keep.const_data_ptr<bool>();
  switch (src.element_size()) {
    case 2: return select_kept(static_cast<const uint16_t*>(src.const_data_ptr()),
                               static_cast<uint16_t*>(dst.data_ptr()), k, N, per_image);
    case 4: return select_kept(static_cast<const uint32_t*>(src.const_data_ptr()),
                               static_cast<uint32_t*>(dst.data_ptr()), k, N, per_image);
    default: return select_kept(static_cast<const uint64_t*>(src.const_data_ptr()),
                                static_cast<uint64_t*>(dst.data_ptr()), k, N, per_image);
  }
}

// A mask that keeps every neuron (keep 1.0: an ablation's non-defective layer) needs no
// masking pass at all, forward or backward.
inline bool keeps_all(const MaskPlan& plan) {
  return plan.nnz == plan.channels * plan.height * plan.width;
}

inline at::Tensor dense_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias, const MaskPlan& plan,
                                    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  const at::MemoryFormat fmt = input.suggest_memory_format();
  at::Tensor out = at::conv2d(input, weight, bias, stride, padding, dilation).contiguous(fmt);
  if (!keeps_all(plan)) select_kept(out, out, plan, fmt);
  return out;
}

inline Grads dense_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                                const MaskPlan& plan, at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation, std::array<bool, 3> output_mask) {
  const at::MemoryFormat fmt = input.suggest_memory_format();
  const at::Tensor go = grad_output.contiguous(fmt);
  if (keeps_all(plan)) return dense_backward_masked(go, input, weight, stride, padding, dilation, output_mask);
  at::Tensor masked = at::empty(go.sizes(), go.options().memory_format(fmt));
  select_kept(go, masked, plan, fmt);
  return dense_backward_masked(masked, input, weight, stride, padding, dilation, output_mask);
}

}  // namespace SPARSEMASK_CPU_NS
}  // namespace cpu
}  // namespace sparsemask
