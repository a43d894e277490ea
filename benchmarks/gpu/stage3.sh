#!/usr/bin/env bash
# Stage 3 of the GPU check: compute-sanitizer on tiny cases of both GPU backends.
#
#   bash benchmarks/gpu/stage3.sh [--dry-run]        (OUT=dir; default gpu-results/stage3)
#
# Builds (or reuses a build), runs the sanitize case once plainly (it compiles the Triton
# kernels into the cache, so the sanitized runs do not compile under instrumentation, and
# checks the results), then memcheck and racecheck with PYTORCH_NO_CUDA_MEMORY_CACHING=1
# (plain cudaMalloc per tensor: an out-of-bounds access is not hidden inside a cached block),
# and initcheck (reads of device memory nothing wrote) as an advisory step if time is left.
# Returns to $OUT: stage3-summary.md, stage3-results.md (each tool's error summary and
# first reports), stage3-logs.tgz.
# --dry-run: no sanitizer; the sanitize case on the CPU (cpu + interpreted triton backends)
# and the sanitizer command lines printed.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
stage_init 3 "compute-sanitizer memcheck / racecheck" "$@"

DRY=()
[ "$DRY_RUN" = 1 ] && DRY=(--dry-run)
CASE=("$PY" benchmarks/gpu/gpu_check.py sanitize "${DRY[@]}" --out "$LOGS")

record_env
ensure_build || exit 1
export SPARSEMASK_TRITON_AUTOTUNE=0

step sanitize-plain 120 "${CASE[@]}"

SAN="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2> /dev/null || true)"
sanitize() {  # sanitize TOOL LIMIT [--advisory]
  local cmd=(env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "${SAN:-compute-sanitizer}" --tool "$1" --error-exitcode 1
             --print-limit 50 "${CASE[@]}")
  if [ "$DRY_RUN" = 1 ] || [ -z "$SAN" ]; then
    note "$1: not run ($([ "$DRY_RUN" = 1 ] && echo "dry run" || echo "compute-sanitizer not found")): ${cmd[*]}"
    [ "$DRY_RUN" = 1 ] || FAILED=1
    return
  fi
  step "$1" "$2" ${3:-} "${cmd[@]}"
}
sanitize memcheck 170
sanitize racecheck 150
[ "$(left)" -gt 90 ] && sanitize initcheck "$(left)" --advisory

{
  echo "## compute-sanitizer"; echo
  for tool in memcheck racecheck initcheck; do
    [ -f "$LOGS/$tool.log" ] || continue
    echo "### $tool"; echo
    { grep -E 'ERROR SUMMARY|SANITIZE|sanitize case done' "$LOGS/$tool.log"
      grep -m 20 -E '=+ +(Invalid|Race|Error|Uninitialized|Program hit)' "$LOGS/$tool.log"; } | sed 's/^/    /'
    echo
  done
} > "$LOGS/results.md"
RESULT_FILES=(results.md)
