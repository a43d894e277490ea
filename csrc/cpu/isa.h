// Runtime ISA dispatch of the CPU kernels (PyTorch's CPU_CAPABILITY approach, with GCC
// target pragmas instead of per-file -m flags).
//
// The translation units with the hot loops (masked_conv2d.cpp, defective_unit.cpp,
// defective_block.cpp and the headers they share) are compiled once per level by the
// wrappers in csrc/cpu/isa/: every ATen/std header is included first, for baseline x86-64,
// then `#pragma GCC target(...)` switches the rest of the unit to the level's ISA and the
// kernels land in `sparsemask::cpu::<level>` (an inline namespace). So
//   * only our own code is compiled for AVX2/AVX-512: an inline ATen/std function emitted
//     by a level's unit is compiled for baseline x86-64, and when the linker keeps one
//     copy of it for the whole library that copy runs on every x86-64 CPU;
//   * each level's kernels have their own symbols (no ODR clash between levels).
// csrc/cpu/dispatch.cpp picks one level when the library loads (the best the running CPU
// supports, or SPARSEMASK_CPU_CAPABILITY) and registers that level's kernels for the CPU
// dispatch key: no per-call cost. tests/ops/test_cpu_capability.py checks the library's
// instructions (zmm registers only in avx512 symbols, ymm only in avx2/avx512 ones).
#pragma once

// Levels. SPARSEMASK_CPU_LEVEL is defined by the wrapper of the unit being compiled.
#define SPARSEMASK_CPU_BASELINE 0
#define SPARSEMASK_CPU_AVX2 1
#define SPARSEMASK_CPU_AVX512 2
// Not a unit of its own: the avx512 unit's kernels with the native bfloat16 forward on.
#define SPARSEMASK_CPU_AVX512_BF16 3

// The AVX2/AVX-512 levels need GCC's target pragmas on x86-64; elsewhere (other
// architectures, other compilers) only the baseline level is built.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SPARSEMASK_ISA_DISPATCH 1
#else
#define SPARSEMASK_ISA_DISPATCH 0
#endif

// The ISA of each level (the target pragmas in kernels_at_level.h; dispatch.cpp checks
// the same features with __builtin_cpu_supports before choosing a level):
//   avx512_bf16  the avx512 kernels + avx512bf16 for the bfloat16 forward tile only
//           (a target attribute on that function: csrc/cpu/conv_kernels.h)
//   avx512  avx512f, avx512bw, avx512dq, avx512vl + the avx2 set — x86-64-v4 minus CD,
//           which the kernels do not use
//   avx2    avx2, fma, bmi, bmi2, popcnt — x86-64-v3's vector part
//   baseline  x86-64 (SSE2)
