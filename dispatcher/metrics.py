"""Prometheus metrics of the dispatcher."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SUBMITTED = Counter("pkbs_jobs_submitted_total", "Jobs accepted by qsub", ["queue"])
DELETED = Counter("pkbs_jobs_deleted_total", "qdel requests accepted")
REJECTED = Counter("pkbs_requests_rejected_total", "Requests refused", ["reason"])
LATENCY = Histogram("pkbs_request_seconds", "Dispatcher request latency", ["route"])
