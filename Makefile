# Quick start: `make train` and `make test` set up .venv on first use (and again whenever
# pyproject.toml changes), then run. Extra arguments: make train ARGS="cell=gru trainer.max_epochs=1"
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed
BIN    := $(VENV)/bin
ARGS   ?=
PYTEST_ARGS ?=
# the suite runs on this many pytest-xdist workers, each test file whole on one of them (its module
# fixtures, the SLURM cluster and the PostgreSQL study stay with one worker); 0 = one process
PYTEST_JOBS ?= 2

.PHONY: setup train test test-fast lint clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch/torchvision are named explicitly so pip takes the local wheels rather than resolving afresh.
	$(BIN)/pip install --quiet "torch>=2.4,<=2.14.1" "torchvision>=0.19,<=0.29.1"
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

train: $(STAMP)
	$(BIN)/rnnexp-train $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_JOBS) --dist loadfile $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_JOBS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check rnnexp tests

clean-venv:
	rm -rf $(VENV)
