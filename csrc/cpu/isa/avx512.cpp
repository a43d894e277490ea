// The CPU kernels compiled for AVX-512; see csrc/cpu/isa.h.
#include "../isa.h"
#define SPARSEMASK_CPU_LEVEL SPARSEMASK_CPU_AVX512
#define SPARSEMASK_CPU_NS avx512
#include "../kernels_at_level.h"
