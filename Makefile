# regression-lab: `make train` and `make test` each set up .venv first (see README).
#
#   make train          # set up, train the lab model, print the prediction for x = 10
#   make test           # set up with the test extras, check the import contract, run both test tiers
#   make test-fast      # the fast tier only (no subprocess fits, DDP, SIGKILL or sweeps)
#   make check-bench    # scripts/gpu_check.sh --cpu and the quick benchmark, checked (CI runs it too)
#   make lint           # ruff check + format check
#
# TORCH pins the torch release the venv gets: 2.13.0 is the release this project is tested
# with (a CPU wheel of it ships on the project's machines; elsewhere pip takes PyPI's build).
# `make TORCH=torch train` takes the newest release instead.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup train test test-fast check-bench lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[dev]"
	touch $@

train: setup
	MPLBACKEND=Agg $(BIN)/regression-lab fit

test: setup
	# The layers' import rules (pyproject.toml, [tool.importlinter]), then both test tiers.
	# Two workers: the suite trains real models and starts real processes, on 2 cores.
	$(BIN)/lint-imports
	MPLBACKEND=Agg $(BIN)/python -m pytest -n 2 -m "not bench"

test-fast: setup
	$(BIN)/lint-imports
	MPLBACKEND=Agg $(BIN)/python -m pytest -n 2 -m "not slow and not bench"

check-bench: setup
	# A benchmark's smoke run, not a test: every step and row runs, the figures are not judged.
	MPLBACKEND=Agg $(BIN)/python -m pytest -n 2 -m bench

lint: setup
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
