// Chooses the ISA level of the CPU kernels when the library loads and registers that
// level's kernels for the CPU dispatch key (see isa.h). Compiled for baseline x86-64.
//
//   SPARSEMASK_CPU_CAPABILITY   unset/empty: the best level this CPU supports;
//                               avx512_bf16 | avx512 | avx2 | baseline: that level, which must be one the
//                               CPU supports (a lower one than the best is fine, to test or
//                               compare levels); anything else is refused.
// A refused value cannot throw here (static initialisation); the ops' CPU kernels then
// raise its message when called, and so does sparsemask::cpu_capability(), which
// `import sparsemask` calls, so the import itself fails with the message.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cctype>
#include <cstdlib>
#include <string>

#include "isa.h"

namespace sparsemask {
namespace cpu {

namespace baseline {
void register_kernels(torch::Library& m);
}
#if SPARSEMASK_ISA_DISPATCH
namespace avx2 {
void register_kernels(torch::Library& m);
}
namespace avx512 {
void register_kernels(torch::Library& m);
void enable_bf16_dot();
}
#endif

namespace {

const char* const kLevelNames[] = {"baseline", "avx2", "avx512", "avx512_bf16"};

// The best level this CPU (and its OS: __builtin_cpu_supports reports AVX/AVX-512 only when
// the OS saves their registers) supports, with the features SPARSEMASK_TARGET_* enable.
int best_supported_level() {
#if SPARSEMASK_ISA_DISPATCH
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
                    __builtin_cpu_supports("popcnt");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  const bool avx512_bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  return avx512_bf16 ? SPARSEMASK_CPU_AVX512_BF16
         : avx512    ? SPARSEMASK_CPU_AVX512
         : avx2      ? SPARSEMASK_CPU_AVX2
                     : SPARSEMASK_CPU_BASELINE;
#else
  return SPARSEMASK_CPU_BASELINE;
#endif
}

struct Choice {
  int level = SPARSEMASK_CPU_BASELINE;
  std::string error;  // non-empty: SPARSEMASK_CPU_CAPABILITY was refused
};

Choice choose() {
  Choice c;
  const int best = best_supported_level();
  c.level = best;
  const char* env = std::getenv("SPARSEMASK_CPU_CAPABILITY");
  if (env == nullptr || *env == '\0') return c;
  std::string want(env);
  for (char& ch : want) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  std::string supported;
  for (int l = best; l >= 0; --l) supported += std::string(supported.empty() ? "" : ", ") + kLevelNames[l];
  for (int l = 0; l <= SPARSEMASK_CPU_AVX512_BF16; ++l) {
    if (want != kLevelNames[l]) continue;
    if (l > best) {
      c.error = std::string("SPARSEMASK_CPU_CAPABILITY=") + env + " asks for " + kLevelNames[l] +
                " kernels, which this CPU" + (SPARSEMASK_ISA_DISPATCH ? "" : " (or this build)") +
                " does not support; it supports: " + supported + ". Unset it to use the best one.";
    } else {
      c.level = l;
    }
    return c;
  }
  c.error = std::string("SPARSEMASK_CPU_CAPABILITY=") + env +
            " is not a CPU capability; use one of avx512_bf16, avx512, avx2, baseline (this CPU supports: " + supported +
            "), or unset it to use the best one.";
  return c;
}

const Choice& choice() {
  static const Choice c = choose();
  return c;
}

std::string cpu_capability() {
  TORCH_CHECK(choice().error.empty(), choice().error);
  return kLevelNames[choice().level];
}

// Stands in for every CPU kernel when SPARSEMASK_CPU_CAPABILITY was refused.
void refused_kernel(const c10::OperatorHandle& op, torch::jit::Stack*) {
  TORCH_CHECK(false, op.schema().name(), " (CPU kernel): ", choice().error);
}

}  // namespace
}  // namespace cpu

TORCH_LIBRARY_FRAGMENT(sparsemask, m) {
  // The ISA level of the CPU kernels: "avx512_bf16", "avx512", "avx2" or "baseline" (csrc/cpu/isa.h).
  m.def("cpu_capability() -> str", &cpu::cpu_capability);
}

TORCH_LIBRARY_IMPL(sparsemask, CPU, m) {
  const cpu::Choice& c = cpu::choice();
  if (!c.error.empty()) {
    for (const char* op : {"masked_conv2d", "masked_conv2d_backward", "defective_unit", "defective_unit_backward",
                           "defective_block", "defective_block_backward"})
      m.impl(op, torch::CppFunction::makeFromBoxedFunction<&cpu::refused_kernel>());
    return;
  }
  switch (c.level) {
#if SPARSEMASK_ISA_DISPATCH
    case SPARSEMASK_CPU_AVX512_BF16:
      cpu::avx512::enable_bf16_dot();
      cpu::avx512::register_kernels(m);
      break;
    case SPARSEMASK_CPU_AVX512: cpu::avx512::register_kernels(m); break;
    case SPARSEMASK_CPU_AVX2: cpu::avx2::register_kernels(m); break;
#endif
    default: cpu::baseline::register_kernels(m);
  }
}

}  // namespace sparsemask
