"""Prometheus metrics of a worker."""

from __future__ import annotations

from prometheus_client import Counter

STARTED = Counter("pkbs_worker_jobs_started_total", "Runs started by this worker")
FINISHED = Counter("pkbs_worker_jobs_finished_total", "Runs finished and acknowledged")
