#!/usr/bin/env bash
# Stage 4 of the GPU check: the full benchmark sweep (benchmarks/bench_gpu.py) in a time budget.
#
#   bash benchmarks/gpu/stage4.sh [--dry-run]        (OUT=dir; default gpu-results/stage4)
#
# Builds (or reuses a build), then bench_gpu.py with --budget-s: the sweep runs bf16 before
# fp32 and the done-when keeps (0.1, 0.3) first, stops starting new cases at the budget and
# still writes its report, whose last section is the suggested `auto` thresholds (the CUDA
# rows of _MAX_DENSITY in sparsemask/backend.py; conservative when the sweep was cut short).
# BENCH_ARGS adds arguments (e.g. "--dtypes bf16" to spend the budget on one dtype).
# Returns to $OUT: stage4-summary.md, stage4-bench_gpu.md, stage4-bench_gpu.json,
# stage4-logs.tgz.
# --dry-run: bench_gpu.py --dry-run (CPU, tiny shapes) with the same budget handling.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
stage_init 4 "benchmark sweep (bench_gpu.py)" "$@"

DRY=()
[ "$DRY_RUN" = 1 ] && DRY=(--dry-run)

record_env
ensure_build || exit 1

# The sweep stops starting cases 75 s before the step's timeout: one case (15 timings) plus a
# new shape's Triton autotuning can take about that long, and the report must still be written.
T=$(( $(left) < 440 ? $(left) : 440 ))
BUDGET=$((T > 150 ? T - 75 : T / 2))
if [ "$DRY_RUN" = 1 ]; then
  # A CPU sweep says nothing about speed: one dtype, two keeps, and a budget of a few seconds,
  # so the budget cut and the partial report are exercised too.
  BUDGET="${DRY_BENCH_BUDGET_S:-4}"
  DRY+=(--dtypes bf16 --keeps 0.1,0.5 --passes fwd,both)
fi
# shellcheck disable=SC2086  # BENCH_ARGS is a word list
step bench "$T" "$PY" benchmarks/bench_gpu.py "${DRY[@]}" --out "$LOGS" --budget-s "$BUDGET" ${BENCH_ARGS:-}
grep -q '^budget of' "$LOGS/bench.log" 2> /dev/null && note "bench: partial sweep, $(grep -m1 '^budget of' "$LOGS/bench.log")"

# The suggested auto thresholds, last in the output (the device tool returns the output's tail).
sed -n '/^## Done-when/,$p' "$LOGS/bench_gpu.md" 2> /dev/null
RESULT_FILES=(bench_gpu.md bench_gpu.json)
