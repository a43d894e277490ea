#!/usr/bin/env bash
# Stage 1 of the GPU check: build, correctness matrix, quick timing, autocast smoke.
#
#   bash benchmarks/gpu/stage1.sh [--dry-run]        (OUT=dir; default gpu-results/stage1)
#
# On the GPU machine (torch 2.11 + Triton 3.6, 16 cores, no internet, no make needed):
#   1. environment record; the build in place against the machine's torch (MAX_JOBS=nproc,
#      sm_90, ptxas -v), or one reused from an earlier stage / a carried stage1-build.tgz;
#   2. the correctness matrix (gpu_check.py matrix): backends cuda and triton x fp16, bf16,
#      fp32, fp64 (+ tf32) x odd shapes x keep 0.5/0.05/1/0, forward and all gradients vs
#      float64 F.conv2d(...) * mask, outputs NaN-poisoned; then bf16/fp16 again with the
#      scalar CUDA kernels (SPARSEMASK_CUDA_MMA=0);
#   3. timing of the 3 done-when shapes, bf16 channels_last, fwd and fwd+bwd, do_bench and
#      CUDA-graph replay, against cuDNN conv2d * mask (Triton autotunes here);
#   4. autocast smoke: defective ResNet-18 fwd+bwd under torch.autocast(bf16) on each GPU
#      backend; a failure fails the stage (AUTOCAST_REQUIRED=0 makes it advisory).
# Returns to $OUT: stage1-summary.md, stage1-results.md, stage1-logs.tgz, stage1-build.tgz.
# --dry-run (or DRY_RUN=1): a CPU machine; no build, the matrix on backends cpu + triton
# (interpreter) at tiny shapes, timing on the CPU, autocast on the CPU.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
stage_init 1 "build, correctness matrix, timing, autocast" "$@"

DRY=()
[ "$DRY_RUN" = 1 ] && DRY=(--dry-run)
CHECK=("$PY" benchmarks/gpu/gpu_check.py)

record_env
ensure_build || exit 1   # nothing below can run without the extension

# Correctness first: the first config of each Triton kernel only (no autotuning of dozens of
# shapes). The matrix stops starting cases at its budget; the time after it is reserved for
# the timing and the autocast smoke (~150 s together).
# Triton compiles one kernel at a time per process, so the matrix runs in shards over half the
# cores (the dry run uses 2, to keep the sharding itself checked).
JOBS=$(( $(nproc) / 2 > 8 ? 8 : $(nproc) / 2 ))
[ "$DRY_RUN" = 1 ] || [ "$JOBS" -lt 1 ] && JOBS=2
step matrix $(( $(left) - 150 < 240 ? $(left) - 150 : 240 )) \
  env SPARSEMASK_TRITON_AUTOTUNE=0 "${CHECK[@]}" matrix "${DRY[@]}" --out "$LOGS" --jobs "$JOBS"
# The scalar half/bfloat16 CUDA kernels (SPARSEMASK_CUDA_MMA is read once per process).
if [ "$DRY_RUN" = 1 ]; then
  note "matrix-mma0: not in a dry run (the CPU has no tensor-core kernels to switch off)"
else
  step matrix-mma0 60 env SPARSEMASK_TRITON_AUTOTUNE=0 SPARSEMASK_CUDA_MMA=0 "${CHECK[@]}" matrix --out "$LOGS" \
    --tag mma0 --backends cuda --dtypes bf16,fp16 --keeps 0.5,0.05 --poison fill
fi

step timing 110 "${CHECK[@]}" timing "${DRY[@]}" --out "$LOGS"

ADVISORY=()
[ "${AUTOCAST_REQUIRED:-1}" = 0 ] && ADVISORY=(--advisory)
step autocast 60 "${ADVISORY[@]}" env SPARSEMASK_TRITON_AUTOTUNE=0 "${CHECK[@]}" autocast "${DRY[@]}" --out "$LOGS"

# One results file: matrix, scalar-kernel matrix, timing, autocast lines.
{
  for f in matrix.md matrix-mma0.md timing.md; do [ -f "$LOGS/$f" ] && cat "$LOGS/$f" && echo; done
  echo "## Autocast smoke"; echo
  grep -h '^AUTOCAST' "$LOGS/autocast.log" 2>/dev/null | sed 's/^/    /'
} > "$LOGS/results.md"
RESULT_FILES=(results.md)
pack_build
