# Benchmarks — included by the main Makefile (`include mk/bench.mk`).
#
#   make bench                                   all scenarios, defaults (a few minutes on 2 cores)
#   make bench BENCH_ARGS="--only throughput --n 500"
#   make bench BENCH_ARGS="--history 100000 --profile"   (--profile needs py-spy in the venv)
#
# Starts its own stack (`pkbs up`) in a temporary PKBS_HOME, writes
# bench/results/<date>-<time>.json and prints a table; see docs/performance.md.

PYTHON ?= python3
VENV ?= .venv
BIN ?= $(VENV)/bin
PY ?= $(BIN)/python
BENCH_ARGS ?=

.PHONY: bench

bench: install
	$(PY) -m bench $(BENCH_ARGS)
