#!/usr/bin/env bash
# Stage 2 of the GPU check: the GPU test suite.
#
#   bash benchmarks/gpu/stage2.sh [--dry-run]        (OUT=dir; default gpu-results/stage2)
#
# Builds (or reuses a build, see lib.sh), then `pytest -m cuda tests` with
# SPARSEMASK_TRITON_AUTOTUNE=0 (each Triton kernel's first config: dozens of test shapes must
# not each autotune) and a per-test limit (`--timeout`, pytest-timeout, when installed; the
# step's own timeout otherwise), in PYTEST_WORKERS (default 4) pytest-xdist workers when
# xdist is installed. PYTEST_PATHS (default tests) and PYTEST_ARGS narrow it.
# Returns to $OUT: stage2-summary.md, stage2-results.md (counts, failures, slowest tests),
# stage2-junit.xml, stage2-logs.tgz.
# --dry-run: the same pytest command on a CPU machine, where conftest skips every cuda test
# (checks the command, the marker and the collection).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
stage_init 2 "GPU test suite (pytest -m cuda)" "$@"

record_env
ensure_build || exit 1

PLUGINS=()
if "$PY" -c "import pytest_timeout" 2> /dev/null; then
  PLUGINS+=(--timeout "${TEST_TIMEOUT_S:-120}")
else
  note "pytest-timeout not installed: only the step's timeout limits a hanging test"
fi
# Most of the suite's time is Triton compiling the kernels for each test shape, one at a time
# per process: pytest-xdist workers (the GPU machine has it) compile in parallel.
if [ "${PYTEST_WORKERS:-4}" != 0 ] && "$PY" -c "import xdist" 2> /dev/null; then
  PLUGINS+=(-n "${PYTEST_WORKERS:-4}")
fi
# shellcheck disable=SC2086  # PYTEST_PATHS / PYTEST_ARGS are word lists
step pytest-cuda 420 env SPARSEMASK_TRITON_AUTOTUNE=0 "$PY" -m pytest -m cuda ${PYTEST_PATHS:-tests} \
  -q -rfE --durations=15 -p no:cacheprovider --junitxml="$LOGS/junit.xml" "${PLUGINS[@]}" ${PYTEST_ARGS:-}

{
  echo "## pytest -m cuda"; echo
  # the -q summary line ("12 passed, 3 skipped in 9.1s", with or without ='s), then the failures
  grep -E '^=* ?[0-9]+ (passed|failed|skipped|deselected|errors?)\b.* in [0-9.]+s|^(FAILED|ERROR) ' \
    "$LOGS/pytest-cuda.log" | head -60 | sed 's/^/    /'
  echo; echo "Slowest:"; echo
  sed -n '/slowest .*durations/,/^=/p' "$LOGS/pytest-cuda.log" | grep -E '^[0-9.]+s ' | head -15 | sed 's/^/    /'
} > "$LOGS/results.md"
RESULT_FILES=(results.md junit.xml)
