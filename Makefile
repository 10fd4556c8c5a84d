# pkbs — every target does its own set-up; a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: install demo test test-stack test-containers browser screenshots lint typecheck check wheel bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# Start the embedded stack, run the example jobs, show qstat and a result.
demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

# The whole suite: the local stack's tests, then the system as containers (Docker is
# installed and started when missing: scripts/docker-host.sh; images: make images).
test: test-stack test-containers

# The dashboard's tests drive Debian's chromium: installed when missing (scripts/browser-host.sh).
test-stack: install browser
	$(PY) -m pytest --ignore=tests/containers

browser:
	bash scripts/browser-host.sh

screenshots: install browser
	PKBS_SCREENSHOTS=$(CURDIR)/docs/images $(PY) -m pytest tests/test_dashboard.py -n0

test-containers: images
	$(PY) -m pytest tests/containers -n0 -rA

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
