// The CPU kernels compiled for baseline x86-64 (SSE2); see csrc/cpu/isa.h.
#include "../isa.h"
#define SPARSEMASK_CPU_LEVEL SPARSEMASK_CPU_BASELINE
#define SPARSEMASK_CPU_NS baseline
#include "../kernels_at_level.h"
