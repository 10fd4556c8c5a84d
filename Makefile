# pkbs — every target does its own set-up; a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: install demo test lint typecheck check wheel bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# Start the embedded stack, run the example jobs, show qstat and a result.
demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

test: install
	$(PY) -m pytest

lint: install
	$(BIN)/ruff check pkbs cli worker dispatcher tests bench

typecheck: install
	$(BIN)/mypy pkbs cli worker dispatcher

check: lint typecheck test

wheel: install
	$(PY) -m build --wheel --outdir dist .

clean:
	rm -rf $(VENV) dist build *.egg-info

include mk/k8s.mk
include mk/bench.mk
