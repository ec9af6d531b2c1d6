# Two commands set everything up on a fresh clone (Python 3.11, pip, gcc):
#   make demo   - create .venv, install Atlas + native kernels, run the main job on ./atlas-data
#   make test   - same set-up, then the whole test suite (what .ci/run calls)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.atlas-installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml setup.py native/kernels.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -c "import atlas._kernels"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/atlas demo

test: $(STAMP)
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
