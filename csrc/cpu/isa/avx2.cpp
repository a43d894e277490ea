// The CPU kernels compiled for AVX2+FMA; see csrc/cpu/isa.h.
#include "../isa.h"
#define SPARSEMASK_CPU_LEVEL SPARSEMASK_CPU_AVX2
#define SPARSEMASK_CPU_NS avx2
#include "../kernels_at_level.h"
