// The body of each per-level unit in csrc/cpu/isa/ (see isa.h): the CPU kernels of
// masked_conv2d, defective_unit and defective_block compiled for SPARSEMASK_CPU_LEVEL,
// in namespace sparsemask::cpu::SPARSEMASK_CPU_NS, plus register_kernels(), which
// dispatch.cpp calls for the chosen level. One unit per level for all three ops, so the
// ATen headers are parsed three times (once per level), not nine.
#ifndef SPARSEMASK_CPU_LEVEL
#error "define SPARSEMASK_CPU_LEVEL and SPARSEMASK_CPU_NS, then include this file (csrc/cpu/isa/*.cpp)"
#endif

#include "isa.h"

#if SPARSEMASK_CPU_LEVEL == SPARSEMASK_CPU_BASELINE || SPARSEMASK_ISA_DISPATCH

// Every header the kernels include, first and for baseline x86-64 (outside the target
// region below): their inline functions may be the copy the linker keeps for all levels.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#if SPARSEMASK_ISA_DISPATCH
#include <immintrin.h>  // the AVX512-BF16 forward tile (conv_kernels.h)
#endif

#include "../checks.h"
#include "../dense_fallback.h"
#include "../plan.h"
#include "buffer_pool.h"

// -Wpsabi: GCC notes that passing AVX/AVX-512 vectors by value has another ABI than in a
// baseline unit; every function that does so is inside the region, so they all agree.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
// The target strings are literals (GCC does not expand macros in this pragma); the same
// features are checked by best_supported_level() in dispatch.cpp.
#if SPARSEMASK_CPU_LEVEL == SPARSEMASK_CPU_AVX512
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi,bmi2,popcnt")
#elif SPARSEMASK_CPU_LEVEL == SPARSEMASK_CPU_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,popcnt")
#endif

#include "simd.h"
#include "packing.h"
#include "conv_kernels.h"
#include "dense_path.h"
#include "unit_kernels.h"

#include "masked_conv2d.cpp"
#include "defective_unit.cpp"
#include "defective_block.cpp"

namespace sparsemask {
namespace cpu {
inline namespace SPARSEMASK_CPU_NS {

#if SPARSEMASK_CPU_LEVEL == SPARSEMASK_CPU_AVX512
// Level "avx512_bf16": the avx512 kernels with the native bfloat16 forward turned on.
void enable_bf16_dot() { bf16_dot_enabled() = true; }
#endif

void register_kernels(torch::Library& m) {
  register_masked_conv2d(m);
  register_defective_unit(m);
  register_defective_block(m);
}

}  // namespace SPARSEMASK_CPU_NS
}  // namespace cpu
}  // namespace sparsemask

#if SPARSEMASK_CPU_LEVEL != SPARSEMASK_CPU_BASELINE
#pragma GCC pop_options
#endif
#pragma GCC diagnostic pop

#endif  // level built
