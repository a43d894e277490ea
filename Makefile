# sparsemask — one entry point for a fresh machine.
#   make test    create .venv, install torch + deps, build the extension (C++ and, when
#                nvcc is present, CUDA), run the test suite
#   make demo    the main job on the embedded default
#   make bench   CPU benchmark of the masked convolution vs the dense baseline
#   make gpu-check  (on a GPU machine) build, GPU tests, GPU benchmarks -> $(OUT)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1
export MAX_JOBS ?= 2
OUT ?= gpu-results

.PHONY: all venv build test demo bench clean gpu-check

all: build

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel ninja
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	touch $@

venv: $(VENV)/.installed

# Incremental (ninja) in-place build; cheap when nothing changed.
build: $(VENV)/.installed
	$(PY) setup.py -q build_ext --inplace

test: build
	$(PY) -m pytest -q tests

# The demo uses Fashion-MNIST (Debian package dataset-fashion-mnist) when it can install
# it, else scikit-learn's digits, and says which.
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
demo: build
	@test -d $(FMNIST_DIR) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; }; } || \
	  echo "note: could not install dataset-fashion-mnist; the demo falls back to scikit-learn digits"
	$(PY) -m sparsemask demo

bench: build
	$(PY) benchmarks/bench_masked_conv.py --out benchmarks/results

# On a GPU machine (no internet, its own torch): installs in place without touching torch,
# runs the GPU tests and the GPU benchmark, writes markdown + JSON results to $(OUT).
gpu-check:
	OUT=$(OUT) bash benchmarks/gpu_check.sh

clean:
	rm -rf build sparsemask/_C*.so sparsemask/_build_info.py *.egg-info
