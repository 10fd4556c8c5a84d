# Benchmarks — included by the main Makefile (`include mk/bench.mk`).
#
#   make bench                                   all scenarios, defaults (a few minutes on 2 cores)
#   make bench BENCH_ARGS="--only throughput --n 500"
#   make bench BENCH_ARGS="--history 100000 --profile"   (--profile needs py-spy in the venv)
#
# Starts its own stack (`pkbs up`) in a temporary PKBS_HOME, writes
# bench/results/<date>-<time>.json and prints a table; see docs/performance.md.
#
#   make soak                                    10 000 short jobs, random faults (~5 min;
#                                                bound 20 min + 3 min settle)
#   make soak SOAK_ARGS="--jobs 1000 --fault-interval 5 --seed 7"
#
# The soak (bench/soak.py, `python -m bench.soak --help`) also starts its own stack,
# injects worker/nats-server/dispatcher SIGKILLs and WsgiDAV SIGSTOPs at random times,
# audits every job and writes bench/results/soak-<date>-<time>.json; exit 1 if a job
# was lost, duplicated or left unfinished.

PYTHON ?= python3
VENV ?= .venv
BIN ?= $(VENV)/bin
PY ?= $(BIN)/python
BENCH_ARGS ?=
SOAK_ARGS ?=

.PHONY: bench soak

bench: install
	$(PY) -m bench $(BENCH_ARGS)

soak: install
	$(PY) -m bench.soak $(SOAK_ARGS)
