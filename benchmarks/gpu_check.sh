#!/usr/bin/env bash
# `make gpu-check`: everything a GPU machine must run for the GPU kernels, in one command.
#
# For a machine with an NVIDIA GPU (H100/H200, sm_90), no internet, and its own torch
# (2.11, cu130) + triton (3.6): the project is installed in place *without touching them*
# (pip --no-deps --no-build-isolation), then
#   1. environment record (nvidia-smi, versions)            -> $OUT/env.txt
#   2. build + editable install, CUDA kernels for sm_90       -> $OUT/build.log
#   3. GPU tests: every test marked `cuda` (CUDA C++ op and the Triton kernels on the GPU)
#      plus the Triton test file as a whole                   -> $OUT/pytest-*.{log,xml}
#   4. compute-sanitizer memcheck + racecheck on a small case -> $OUT/sanitizer-*.log
#   5. the GPU benchmark                                      -> $OUT/bench_gpu.{md,json}
#   6. a summary of what passed                              -> $OUT/SUMMARY.md
# Steps keep going after a failure so one run yields every result; the exit status is
# non-zero when any step failed.
#
# Knobs: OUT (default gpu-results), PYTHON (default python3), BENCH_ARGS (extra arguments
# for benchmarks/bench_gpu.py, e.g. "--quick"), STEPS (comma list of build,test,sanitize,
# bench; default all — split a long run over several commands), SKIP_BENCH=1, SKIP_SANITIZER=1,
# TORCH_CUDA_ARCH_LIST (default 9.0), DRY_RUN=1 (no GPU: skip the build and the sanitizer,
# run the benchmark with --dry-run; checks this script itself on a CPU machine).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-gpu-results}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/SUMMARY.md"
STEPS=",${STEPS:-build,test,sanitize,bench},"
want() { [[ "$STEPS" == *",$1,"* ]]; }
FAILED=0
echo "# gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$SUMMARY"

step() {  # step NAME LOGFILE COMMAND... : run into the log, show its tail, record pass/fail
  local name="$1" log="$2"
  shift 2
  echo "== $name" | tee -a "$SUMMARY"
  local t0=$SECONDS
  "$@" > "$log" 2>&1
  local rc=$?
  tail -n 25 "$log"
  if [ $rc -eq 0 ]; then
    echo "- $name: ok ($((SECONDS - t0)) s)" >> "$SUMMARY"
  else
    echo "- $name: FAILED rc=$rc ($((SECONDS - t0)) s), see $(basename "$log")" >> "$SUMMARY"
    FAILED=1
  fi
  return $rc
}

# 1. Environment. The GPU machine's torch must stay: record it before and after install.
{
  nvidia-smi || true
  command -v nvcc && nvcc --version || true
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
TORCH_BEFORE="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)"

# 2. Build. CUDA_HOME defaults to /usr/local/cuda in setup.py; FORCE_CUDA makes a failed
# detection an error instead of a silent CPU-only build.
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export FORCE_CUDA=1
export MAX_JOBS="${MAX_JOBS:-8}"
build() {
  "$PY" -m pip install --no-deps --no-build-isolation --no-index -v -e . ||
    { echo "pip install failed; building in place instead"; "$PY" setup.py build_ext --inplace; }
  "$PY" -c "import sparsemask, sparsemask._extension as e; assert e.built_with_cuda(), 'CUDA kernels not built'; print('sparsemask built with CUDA')"
}
if [ "${DRY_RUN:-0}" = "1" ] || ! want build; then
  step "import (no build)" "$OUT/build.log" "$PY" -c "import sparsemask; print('imported')"
else
  step "build" "$OUT/build.log" build
fi
TORCH_AFTER="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
if [ "$TORCH_BEFORE" != "$TORCH_AFTER" ]; then
  echo "- torch changed during install: $TORCH_BEFORE -> $TORCH_AFTER" | tee -a "$SUMMARY"
  FAILED=1
fi

# 3. Tests on the GPU. conftest sets TRITON_INTERPRET only when unset: 0 compiles for the GPU.
# The tests use each Triton kernel's first config (no autotuning): correctness, not speed.
export TRITON_INTERPRET=0
if want test; then
  step "pytest -m cuda" "$OUT/pytest-cuda.log" \
    env SPARSEMASK_TRITON_AUTOTUNE=0 "$PY" -m pytest -q -m cuda tests --junitxml="$OUT/pytest-cuda.xml" -p no:cacheprovider
  # (the cuda-marked Triton tests ran above; this adds the file's device-independent checks)
  step "pytest triton (not cuda)" "$OUT/pytest-triton.log" \
    "$PY" -m pytest -q -m "not cuda" tests/triton --junitxml="$OUT/pytest-triton.xml" -p no:cacheprovider
fi

# 4. compute-sanitizer on one small forward+backward of each sparse path.
if [ "${SKIP_SANITIZER:-0}" != "1" ] && [ "${DRY_RUN:-0}" != "1" ] && want sanitize; then
  SAN="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
  if [ -n "$SAN" ]; then
    for tool in memcheck racecheck; do
      step "compute-sanitizer $tool" "$OUT/sanitizer-$tool.log" \
        env SPARSEMASK_TRITON_AUTOTUNE=0 "$SAN" --tool "$tool" --error-exitcode 1 --target-processes all \
        "$PY" benchmarks/bench_gpu.py --sanitize-case
    done
  else
    echo "- compute-sanitizer: not found, skipped" | tee -a "$SUMMARY"
  fi
fi

# 5. Benchmark.
if [ "${SKIP_BENCH:-0}" != "1" ] && want bench; then
  if [ "${DRY_RUN:-0}" = "1" ]; then BENCH_ARGS="--dry-run ${BENCH_ARGS:-}"; fi
  # shellcheck disable=SC2086
  step "bench_gpu" "$OUT/bench_gpu.log" "$PY" benchmarks/bench_gpu.py --out "$OUT" ${BENCH_ARGS:-}
  if [ -f "$OUT/bench_gpu.md" ]; then
    sed -n '/## Done-when/,$p' "$OUT/bench_gpu.md" >> "$SUMMARY"
  fi
fi

echo
cat "$SUMMARY"
echo "results in $OUT"
exit $FAILED
