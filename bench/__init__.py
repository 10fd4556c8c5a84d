"""pkbs benchmark harness: `make bench` / `python -m bench --help`.

Starts its own local stack (the real `pkbs up`) in a temporary PKBS_HOME, runs the
scenarios (throughput, latencies, container jobs, arrays, history, payloads,
resources), and reports every figure beside a baseline measured in the
same run on the same machine. Results: bench/results/<date>-<time>.json.
"""
