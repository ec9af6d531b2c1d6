# Two commands set everything up on a fresh clone (Python 3.11, pip, gcc; the tests install
# Debian's chromium for the viewer tests when it is missing and they run as root):
#   make demo   - create .venv, install Atlas + native kernels, run the main job on ./atlas-data
#   make test   - same set-up, then the whole test suite (what .ci/run calls)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.atlas-installed
# torch is installed on its own, before Atlas, so that pip never resolves the `stream` extra to
# a multi-GB CUDA build: this pin is the CPU build these machines provide. For another torch,
# e.g. a CUDA build on a GPU machine: `make test TORCH="torch --index-url URL"` (any pip
# arguments), or TORCH= to keep the torch already in the venv.
TORCH  ?= torch==2.13.0

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml setup.py native/kernels.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(if $(strip $(TORCH)),$(BIN)/python -m pip install --quiet $(TORCH))
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -c "import atlas._kernels"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/atlas demo

test: $(STAMP)
	./scripts/ensure-chromium
	./scripts/run-tests

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/atlas bench kernels
	$(BIN)/atlas bench write

clean:
	rm -rf $(VENV) build src/*.egg-info src/atlas/*.so atlas-data bench-results
