"""Prometheus metrics of a worker: its runs (started, finished, how long they waited
and ran, how each ended), its slots, result uploads and work redeliveries."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pkbs.lifecycle import (
    EXIT_FAILED_BEFORE_START,
    EXIT_LOST_NOT_RERUNNABLE,
    EXIT_RESULTS_NOT_STORED,
)
from pkbs.models import JobRecord

from .runner import EXIT_MEM, EXIT_WALLTIME
from .slots import Slots

# Wait and run times from seconds to days.
TIME_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400,
                172800, 604800)

STARTED = Counter("pkbs_worker_jobs_started_total", "Runs started by this worker")
FINISHED = Counter("pkbs_worker_jobs_finished_total", "Runs finished and acknowledged")
WAIT_SECONDS = Histogram(
    "pkbs_job_wait_seconds",
    "From a job's submission to its first start, per queue",
    ["queue"], buckets=TIME_BUCKETS,
)
RUN_SECONDS = Histogram(
    "pkbs_job_run_seconds", "How long a run's processes ran, per queue", ["queue"],
    buckets=TIME_BUCKETS,
)
EXITS = Counter(
    "pkbs_job_exits_total", "Runs ended, per queue and how they ended (exit_class)",
    ["queue", "exit_class"],
)
UPLOAD_RETRIES = Counter(
    "pkbs_result_upload_retries_total", "WebDAV requests of result deliveries tried again"
)
UPLOAD_FAILURES = Counter(
    "pkbs_result_upload_failures_total",
    "Runs whose results could not be stored (the job ends with Exit_status -2)",
)
REDELIVERIES = Counter(
    "pkbs_work_redeliveries_total",
    "Work messages JetStream delivered again (num_delivered > 1), per queue", ["queue"],
)
GIVEN_BACK = Counter(
    "pkbs_work_given_back_total",
    "Work messages a worker put back in the queue unread (no room for them, or draining)",
)

# How a run ended (EXITS' exit_class).
OK, NONZERO, WALLTIME, MEMORY, DELETED = "ok", "nonzero", "walltime", "memory", "deleted"
RERUN, LOST, NOT_STARTED, NOT_STORED = "rerun", "lost", "not_started", "not_stored"
EXIT_CLASSES = (OK, NONZERO, WALLTIME, MEMORY, DELETED, RERUN, LOST, NOT_STARTED, NOT_STORED)
_BY_STATUS = {
    EXIT_WALLTIME: WALLTIME,
    EXIT_MEM: MEMORY,
    EXIT_FAILED_BEFORE_START: NOT_STARTED,
    EXIT_RESULTS_NOT_STORED: NOT_STORED,
    EXIT_LOST_NOT_RERUNNABLE: LOST,
}


def exit_class(final: JobRecord) -> str:
    """How the run that ended `final` (its finished record) ended."""
    if final.delete_requested:
        return DELETED
    status = final.exit_status or 0
    return _BY_STATUS.get(status, OK if status == 0 else NONZERO)


def prepare(queues: Iterable[str]) -> None:
    """Every series of each queue, at 0 until it counts: rates and alerts see the
    first exit of a kind too."""
    for queue in queues:
        WAIT_SECONDS.labels(queue)
        RUN_SECONDS.labels(queue)
        REDELIVERIES.labels(queue)
        for name in EXIT_CLASSES:
            EXITS.labels(queue, name)


def count_exit(queue: str, exit_class: str) -> None:
    EXITS.labels(queue, exit_class).inc()


class SlotGauges(Collector):
    """`pkbs_worker_slots` and `pkbs_worker_slots_busy` of each worker in this process,
    read at scrape time."""

    def __init__(self) -> None:
        self.workers: dict[str, Slots] = {}

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families())

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("pkbs_worker_slots", "CPU slots of the worker", labels=["worker"]),
            GaugeMetricFamily(
                "pkbs_worker_slots_busy", "CPU slots held by running jobs", labels=["worker"]
            ),
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        total, busy = self._families()
        for name, slots in sorted(self.workers.items()):
            total.add_metric([name], slots.total)
            busy.add_metric([name], slots.used)
        yield total
        yield busy


SLOTS = SlotGauges()
REGISTRY.register(SLOTS)
