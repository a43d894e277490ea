# shellcheck shell=bash
# Shared by benchmarks/gpu/stage*.sh (sourced, not run). What every stage needs to fit the
# GPU machine's lease (docs/gpu.md, "The staged GPU check"):
#   * one deadline per stage (STAGE_BUDGET_S, default 450 s: under the 8 minutes a stage may
#     take, inside the device tool's 10-minute command limit) and a timeout per step, each
#     step's capped by what is left of the deadline;
#   * logs kept outside $OUT and re-tarred into $OUT after every step, so a stage killed from
#     outside still returns everything up to its last finished step;
#   * at most 8 files under $OUT (what the device tool returns), checked at the end;
#   * the build (in place, against the machine's own torch), or a build carried from stage 1;
#   * a dry mode (--dry-run or DRY_RUN=1) that runs on a CPU machine: everything but the GPU.
#
# Knobs: OUT (default gpu-results/stage<N>), PYTHON (default python3; the repo's .venv in
# dry mode when there is one), STAGE_BUDGET_S, DRY_RUN, BUILD_CACHE (a stage1-build.tgz to
# reuse; default gpu-results/stage1-build.tgz when present).

GPU_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$GPU_DIR/../.." && pwd)"
MAX_OUT_FILES=8           # the device tool returns at most 8 files from $OUT
MAX_OUT_FILE_BYTES=$((16 * 1024 * 1024))

# stage_init N "title" "$@": parse the stage's arguments, set up OUT/WORK/LOGS, start the clock.
stage_init() {
  STAGE="$1" TITLE="$2"
  shift 2
  DRY_RUN="${DRY_RUN:-0}"
  for arg in "$@"; do
    case "$arg" in
      --dry-run) DRY_RUN=1 ;;
      -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      *) echo "stage$STAGE: unknown argument '$arg' (expected --dry-run or --help)" >&2; exit 64 ;;
    esac
  done
  cd "$REPO" || exit 70
  if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
  elif [ "$DRY_RUN" = 1 ] && [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"
  else PY=python3; fi
  OUT="${OUT:-$REPO/gpu-results/stage$STAGE}"
  mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/sparsemask-stage$STAGE.XXXXXX")"
  LOGS="$WORK/stage$STAGE"            # becomes stage<N>-logs.tgz
  mkdir -p "$LOGS"
  SUMMARY="$OUT/stage$STAGE-summary.md"
  T0=$SECONDS
  DEADLINE=$((T0 + ${STAGE_BUDGET_S:-450}))
  FAILED=0
  RESULT_FILES=()                     # files of $LOGS also copied to $OUT at the end
  export PY REPO PYTHONUNBUFFERED=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # in-place build
  if [ "$DRY_RUN" = 1 ]; then
    export TRITON_INTERPRET=1
  else
    export TRITON_INTERPRET=0        # conftest only sets it when unset: 0 compiles for the GPU
    export TRITON_CACHE_DIR="$WORK/triton-cache"
  fi
  {
    echo "# stage $STAGE: $TITLE"
    echo
    echo "- started $(date -u +%Y-%m-%dT%H:%M:%SZ), dry run: $DRY_RUN, budget ${STAGE_BUDGET_S:-450} s, python $PY"
  } > "$SUMMARY"
  trap stage_finish EXIT
  trap 'echo "stage$STAGE: terminated"; exit 143' TERM INT
  echo "=== stage $STAGE: $TITLE (dry run: $DRY_RUN; out: $OUT)"
}

note() { echo "- $*" | tee -a "$SUMMARY"; }

left() { echo $((DEADLINE - SECONDS)); }   # seconds before the stage deadline

# step NAME LIMIT_S [--advisory] CMD...: run CMD under `timeout` for LIMIT_S seconds or what
# is left before the deadline, whichever is less; STEP_BUDGET_S (20 s under that) tells the
# Python parts when to stop starting cases. Output goes to $LOGS/NAME.log and its tail to the
# console. A failed --advisory step is reported but does not fail the stage.
step() {
  local name="$1" limit="$2" advisory=0
  shift 2
  if [ "${1:-}" = "--advisory" ]; then advisory=1; shift; fi
  local left=$((DEADLINE - SECONDS)) t0=$SECONDS rc
  local t=$((limit < left ? limit : left))
  echo "=== [$((SECONDS - T0)) s] $name (timeout $t s)"
  if [ "$t" -lt 10 ]; then
    rc=125
    echo "skipped: no time left before the stage deadline" > "$LOGS/$name.log"
  else
    # bash -c runs shell functions too (exported below); timeout ends the whole process group.
    STEP_BUDGET_S=$((t > 40 ? t - 20 : t / 2)) timeout -k 10 "$t" bash -c '"$@"' "$name" "$@" \
      > "$LOGS/$name.log" 2>&1
    rc=$?
  fi
  tail -n "${TAIL_LINES:-12}" "$LOGS/$name.log"
  local verdict="ok"
  case $rc in
    0) ;;
    2) verdict="INCOMPLETE (budget cut it short)" ;;
    124|137) verdict="TIMED OUT after $t s" ;;
    125) verdict="SKIPPED (no time left)" ;;
    *) verdict="FAILED rc=$rc" ;;
  esac
  if [ $rc -ne 0 ]; then
    if [ $advisory = 1 ]; then verdict="$verdict (advisory: does not fail the stage)"; else FAILED=1; fi
  fi
  note "$name: $verdict ($((SECONDS - t0)) s, log $name.log)"
  pack_logs
  return $rc
}

pack_logs() {
  tar czf "$OUT/stage$STAGE-logs.tgz" -C "$WORK" "stage$STAGE" 2>/dev/null
}

# The machine, the versions, the tools: the first thing in every stage's log.
record_env() {
  {
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu --format=csv 2>&1 ||
      echo "nvidia-smi: not available"
    for t in nvcc make ninja compute-sanitizer strip; do echo "$t: $(command -v $t || echo missing)"; done
    command -v nvcc > /dev/null && nvcc --version | tail -2
    echo "nproc: $(nproc)"
    "$PY" - <<'EOF'
import sys, torch
from importlib import metadata
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
      torch.backends.cudnn.version(), "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
for name in ("triton", "pytest", "pytest-timeout", "pytest-benchmark", "expecttest", "hypothesis"):
    try:
        print(name, metadata.version(name))
    except metadata.PackageNotFoundError:
        print(name, "missing")
EOF
  } > "$LOGS/env.txt" 2>&1
  cat "$LOGS/env.txt"
  note "environment: $(grep -m1 '^torch\|^python' "$LOGS/env.txt"); $(grep -m1 '^triton' "$LOGS/env.txt")"
}

# Whether sparsemask imports with its CUDA kernels built against the running torch, and one
# CPU op runs (a build carried from another machine may use instructions this CPU lacks).
build_ok() {
  "$PY" - <<'EOF'
import torch, sparsemask, sparsemask._extension as e
assert e.built_with_cuda(), "sparsemask._C has no CUDA kernels"
x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
m = torch.ones(3, 3, 3, dtype=torch.bool)
with sparsemask.backend("cpu"):
    sparsemask.masked_conv2d(x, w, None, m)
print("sparsemask built with CUDA for", torch.__version__)
EOF
}

# The build: in place, every core, sm_90, ptxas's register/spill report in the log. torch
# must stay the machine's own: build_ext never installs anything; torch is checked anyway.
do_build() {
  local before after
  before="$("$PY" -c 'import torch; print(torch.__version__)')"
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" FORCE_CUDA=1 MAX_JOBS="$(nproc)"
  export NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:+$NVCC_APPEND_FLAGS }-Xptxas=-v"
  echo "MAX_JOBS=$MAX_JOBS TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST torch $before"
  "$PY" setup.py build_ext --inplace ||
    { echo "build_ext failed; trying pip install --no-deps --no-build-isolation -e ."
      "$PY" -m pip install --no-deps --no-build-isolation --no-index -e .; } || return 1
  after="$("$PY" -c 'import torch; print(torch.__version__)')"
  [ "$before" = "$after" ] || { echo "torch changed during the build: $before -> $after"; return 1; }
  build_ok
}

# ensure_build: reuse a built extension (left by an earlier stage on this machine, or carried
# as stage1-build.tgz), else build. Dry mode builds nothing: its Python steps import the
# package as it is (a separate import step would only cost another interpreter start).
ensure_build() {
  if [ "$DRY_RUN" = 1 ]; then
    note "build: not in a dry run (uses the package as built here)"
    return
  fi
  local cache="${BUILD_CACHE:-$REPO/gpu-results/stage1-build.tgz}"
  if [ -f "$cache" ]; then
    mkdir -p "$TRITON_CACHE_DIR"
    tar xzf "$cache" -C "$REPO" sparsemask 2>/dev/null
    tar xzf "$cache" -C "$TRITON_CACHE_DIR" --strip-components=1 triton-cache 2>/dev/null
    note "build cache $cache unpacked"
  fi
  if build_ok > "$LOGS/build-reuse.log" 2>&1; then
    note "build: reused ($(tail -1 "$LOGS/build-reuse.log"))"
  else
    step build "${BUILD_TIMEOUT_S:-330}" do_build || return 1
  fi
}

# pack_build: stage1-build.tgz = the extension (debug info stripped) + Triton's cache, for
# later stages on a fresh machine (docs/gpu.md says how to carry it); left out if too big.
pack_build() {
  [ "$DRY_RUN" = 1 ] && return
  local dir="$WORK/build-pack" so
  mkdir -p "$dir/sparsemask" "$dir/triton-cache"
  for so in sparsemask/_C*.so; do
    cp "$so" "$dir/sparsemask/" && { strip --strip-debug "$dir/sparsemask/$(basename "$so")" 2>/dev/null || true; }
  done
  cp sparsemask/_build_info.py "$dir/sparsemask/"
  cp -r "$TRITON_CACHE_DIR"/. "$dir/triton-cache/" 2>/dev/null
  tar czf "$OUT/stage1-build.tgz" -C "$dir" sparsemask triton-cache
  if [ "$(stat -c %s "$OUT/stage1-build.tgz")" -gt $((MAX_OUT_FILE_BYTES - 65536)) ]; then
    tar czf "$OUT/stage1-build.tgz" -C "$dir" sparsemask   # without Triton's cache
  fi
  if [ "$(stat -c %s "$OUT/stage1-build.tgz")" -gt $((MAX_OUT_FILE_BYTES - 65536)) ]; then
    rm -f "$OUT/stage1-build.tgz"; note "stage1-build.tgz: too big to return, left out"
  else
    note "stage1-build.tgz: $(du -h "$OUT/stage1-build.tgz" | cut -f1) (extension + Triton cache)"
  fi
}

# check_out: what the device tool returns from $OUT — at most 8 plain files, 16 MiB each, two
# folders deep, names of letters, digits, '.', '_', '-'. Prints the problems; 0 when none.
check_out() {
  local n bad=0 f
  n="$(find "$OUT" -type f | wc -l)"
  if [ "$n" -gt "$MAX_OUT_FILES" ]; then
    echo "OUT-CHECK: $OUT holds $n files; the device tool returns at most $MAX_OUT_FILES"; bad=1
  fi
  while IFS= read -r f; do
    echo "OUT-CHECK: cannot come back (name, depth, size or type): $f"; bad=1
  done < <(find "$OUT" -mindepth 1 -regextype posix-extended \( ! -regex '.*/[A-Za-z0-9._-]+' \
                -o -size +$((MAX_OUT_FILE_BYTES / 1024))k -o \( ! -type f ! -type d \) \) -print
           find "$OUT" -mindepth 4 -print)
  return $bad
}

export -f build_ok do_build

stage_finish() {
  local rc=$FAILED f
  trap - EXIT TERM INT
  for f in "${RESULT_FILES[@]}"; do
    [ -f "$LOGS/$f" ] && cp "$LOGS/$f" "$OUT/stage$STAGE-$f"
  done
  note "total $((SECONDS - T0)) s; stage $([ $rc = 0 ] && echo passed || echo FAILED)"
  pack_logs
  if ! check_out | tee -a "$SUMMARY"; then rc=3; fi
  pack_logs
  echo
  cat "$SUMMARY"
  echo "files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
  rm -rf "$WORK"
  exit $rc
}
