# sparsemask — one entry point for a fresh machine.
#   make test    create .venv, install torch + deps, build the extension (C++ and, when
#                nvcc is present, CUDA), run the quick tier of the test suite (all but `slow`)
#   make test-slow  the `slow` tier (the full autocast matrix, the large published networks,
#                every experiment's claims, the GPU stages' dry runs); CI runs both tiers
#   make demo    the main job on the embedded default
#   make bench   CPU benchmark of the masked convolution vs the dense baseline
#   make compile-report  compile every Triton kernel/config/dtype (CI's Triton and the GPU
#                machine's 3.6) and the CUDA sources for sm_90, no GPU needed -> docs/gpu.md
#   make gpu-check STAGE=N  (on a GPU machine) one stage of the GPU check -> $(OUT)/stageN
#                (1 build + correctness + timing, 2 GPU tests, 3 sanitizer, 4 benchmark sweep;
#                DRY_RUN=1 runs a stage's dry mode on a CPU machine; docs/gpu.md)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1
TORCHVISION_SPEC ?= torchvision==0.29.*
export MAX_JOBS ?= 2
OUT ?= gpu-results

.PHONY: all venv build test test-slow demo bench clean gpu-check compile-report

all: build

# The venv and the Python package (SPARSEMASK_SKIP_EXT=1: without the extension, which
# `make build` then compiles once, in place; pip would compile it a second time elsewhere).
$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel ninja
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	SPARSEMASK_SKIP_EXT=1 $(PY) -m pip install -q --no-build-isolation -e ".[test]"
	# Test references, --no-deps so neither can replace the torch above: torchvision for
	# tests/nn/test_defect_torchvision.py (its numpy/pillow come with the project's
	# dependencies), torchattacks for the APGD/Square cross-check (it imports only torch,
	# numpy and scipy).
	$(PY) -m pip install -q --no-deps "$(TORCHVISION_SPEC)" "torchattacks==3.5.1"
	touch $@

venv: $(VENV)/.installed

# Incremental (ninja) in-place build; cheap when nothing changed.
build: $(VENV)/.installed
	$(PY) setup.py -q build_ext --inplace

test: build
	$(PY) -m pytest -q -m "not slow" tests

test-slow: build
	$(PY) -m pytest -q -m slow tests

# The demo uses Fashion-MNIST (Debian package dataset-fashion-mnist) when it can install
# it, else scikit-learn's digits, and says which.
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
demo: build
	@test -d $(FMNIST_DIR) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; }; } || \
	  echo "note: could not install dataset-fashion-mnist; the demo falls back to scikit-learn digits"
	$(PY) -m sparsemask demo

# Compile reports for sm_90 without a GPU (docs/gpu.md, "Compile reports"): registers,
# spills and shared memory of every Triton kernel x autotune config x dtype, with the CI's
# Triton and with the GPU machine's (installed beside it into .triton36/, imported first
# through PYTHONPATH), and of the CUDA kernels (nvcc -Xptxas -v). Any compile error fails.
TRITON_GPU_VERSION ?= 3.6.0
REPORT_DIR ?= benchmarks/results/compile
# e.g. COMPILE_REPORT_ARGS="--first-config-only none" (every config for float32-ieee too)
COMPILE_REPORT_ARGS ?=
.triton36/.installed-$(TRITON_GPU_VERSION): $(VENV)/.installed
	$(PY) -m pip install -q --no-deps --upgrade --target .triton36 "triton==$(TRITON_GPU_VERSION)"
	touch $@

compile-report: build .triton36/.installed-$(TRITON_GPU_VERSION)
	@mkdir -p $(REPORT_DIR)
	PYTHONPATH=$(CURDIR)/.triton36 $(PY) benchmarks/compile_report.py triton $(COMPILE_REPORT_ARGS) \
	  --expect-version $(TRITON_GPU_VERSION) --label "the GPU machine's" \
	  --json $(REPORT_DIR)/triton-$(TRITON_GPU_VERSION).json
	$(PY) benchmarks/compile_report.py triton $(COMPILE_REPORT_ARGS) --label "CI's" --json $(REPORT_DIR)/triton-ci.json
	$(PY) benchmarks/compile_report.py cuda --json $(REPORT_DIR)/cuda.json
	$(PY) benchmarks/compile_report.py docs $(REPORT_DIR)/triton-$(TRITON_GPU_VERSION).json \
	  $(REPORT_DIR)/triton-ci.json $(REPORT_DIR)/cuda.json \
	  --command "make compile-report$(if $(COMPILE_REPORT_ARGS), COMPILE_REPORT_ARGS=\"$(COMPILE_REPORT_ARGS)\")"

bench: build
	$(PY) benchmarks/bench_masked_conv.py --out benchmarks/results

# On a GPU machine (no internet, its own torch): one stage of the staged GPU check
# (benchmarks/gpu/stage$(STAGE).sh; each builds in place without touching torch, fits in
# 8 minutes and leaves at most 8 files in $(OUT)/stage$(STAGE)). The device tool needs no
# make: docs/gpu.md gives each stage's command.
STAGE ?= 1
gpu-check:
	OUT=$(OUT)/stage$(STAGE) DRY_RUN=$(if $(DRY_RUN),$(DRY_RUN),0) bash benchmarks/gpu/stage$(STAGE).sh

clean:
	rm -rf build sparsemask/_C*.so sparsemask/_build_info.py *.egg-info
