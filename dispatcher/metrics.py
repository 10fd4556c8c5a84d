"""Prometheus metrics of the dispatcher: requests (counted, refused, and their latency
per route template, measured by `RequestTimer`) and the jobs by queue and state,
counted from the job index each time /metrics is scraped (`JobCounts`), so they
cannot drift from the records, whatever restarted."""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pkbs.states import FINAL_STATES, JobState

if TYPE_CHECKING:
    from .jobindex import JobIndex

SUBMITTED = Counter("pkbs_jobs_submitted_total", "Jobs accepted by qsub", ["queue"])
DELETED = Counter("pkbs_jobs_deleted_total", "qdel requests accepted")
REJECTED = Counter("pkbs_requests_rejected_total", "Requests refused", ["reason"])
REQUEST_SECONDS = Histogram(
    "pkbs_api_request_duration_seconds",
    "Time from a request's arrival to its response's start, per route template and method",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
UNMATCHED_ROUTE = "<unmatched>"  # a path no route serves (one label value for them all)
# The states an unfinished job can be in: each is reported for every queue (0 too),
# so a graph or an alert has a series before the first such job.
UNFINISHED_STATES = tuple(s.value for s in JobState if s not in FINAL_STATES)


class RequestTimer:
    """ASGI middleware: each HTTP request's latency into REQUEST_SECONDS, labelled
    with the route's template (`/v1/jobs/{job_id}`, never the job id itself)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        observed = False

        def observe() -> None:
            nonlocal observed
            if not observed:
                observed = True
                route = scope.get("route")
                template = getattr(route, "path", None) or UNMATCHED_ROUTE
                REQUEST_SECONDS.labels(template, scope["method"]).observe(
                    time.perf_counter() - started
                )

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                observe()
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            observe()  # no response started (the client went away)


class JobCounts(Collector):
    """`pkbs_jobs{queue, state}`: the unfinished jobs of each queue in each state
    (subjobs that have a record included), read from the job index at scrape time."""

    def __init__(self) -> None:
        self.index: JobIndex | None = None
        self.queues: Callable[[], Iterable[str]] = tuple  # the configured queues' names

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "pkbs_jobs", "Unfinished jobs by queue and state, from the job index",
            labels=["queue", "state"],
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        index = self.index
        if index is None or not index.ready:
            return  # nothing known yet: no series rather than wrong zeros
        counts = index.counts()
        for queue in sorted(set(self.queues()) | set(counts)):
            states = counts.get(queue, Tally())
            for state in sorted(set(UNFINISHED_STATES) | set(states)):
                family.add_metric([queue, state], states.get(state, 0))
        yield family


JOBS = JobCounts()
REGISTRY.register(JOBS)
