"""The metrics of a known workload, scraped from the dispatcher's and every worker's
/metrics on a real local stack and parsed with prometheus-client's parser: exits by
class, jobs by queue and state (also after the dispatcher restarted), wait and run
time histograms, slots, API latency per route template."""

from __future__ import annotations

import os
import signal
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.stackutil import Stack, cli, poll, submit, wait_restarted

QUEUE = "workq"
WORKERS, SLOTS = 2, 2

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 where the series does not exist."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def dispatcher(stack: Stack) -> Samples:
    return scrape(f"{stack.state()['endpoint']}/metrics")


def workers(stack: Stack) -> list[Samples]:
    ports = [p["metrics_port"] for p in stack.state()["processes"] if p.get("metrics_port")]
    assert len(ports) == WORKERS
    return [scrape(f"http://127.0.0.1:{port}/metrics") for port in ports]


def worker_total(stack: Stack, name: str, **labels: str) -> float:
    return sum(total(samples, name, **labels) for samples in workers(stack))


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("pkbs-metrics"),
              extra_env={"PKBS_KILL_GRACE_SECONDS": "2"})
    s.up(workers=WORKERS, slots=SLOTS)
    yield s
    s.down()


def test_known_workload_is_counted(observed: Stack) -> None:
    stack = observed
    held = submit(stack, "-h", "-N", "held", input="true\n")
    long = submit(stack, "-N", "deleted", input="sleep 60\n")
    stack.wait_state(long, "R")
    # While it runs: one busy slot of the stack's four, one job R and one H.
    poll(lambda: worker_total(stack, "pkbs_worker_slots_busy") == 1, 10, 0.1, "a busy slot")
    assert worker_total(stack, "pkbs_worker_slots") == WORKERS * SLOTS
    running = dispatcher(stack)
    assert value(running, "pkbs_jobs", queue=QUEUE, state="R") == 1
    assert value(running, "pkbs_jobs", queue=QUEUE, state="H") == 1
    assert value(running, "pkbs_jobs", queue=QUEUE, state="Q") == 0  # reported, at 0

    ok = [submit(stack, "-N", f"ok{i}", input="echo fine\n") for i in range(3)]
    failed = submit(stack, "-N", "exit3", input="exit 3\n")
    timed_out = submit(stack, "-N", "walltime", "-l", "walltime=1", input="sleep 30\n")
    assert cli(stack, "qdel", long).returncode == 0
    for job_id in [*ok, failed, timed_out, long]:
        stack.wait_state(job_id, "F")
    assert stack.job(timed_out)["Exit_status"] == -29

    def exits(exit_class: str) -> float:
        return worker_total(stack, "pkbs_job_exits_total", queue=QUEUE, exit_class=exit_class)

    # The worker counts an exit after its final write: poll for the last one.
    poll(lambda: exits("deleted") == 1, 10, 0.1, "the deleted job's exit")
    counted = {c: exits(c) for c in ("ok", "nonzero", "walltime", "deleted", "memory",
                                     "rerun", "lost", "not_started", "not_stored")}
    assert counted == {"ok": 3, "nonzero": 1, "walltime": 1, "deleted": 1, "memory": 0,
                       "rerun": 0, "lost": 0, "not_started": 0, "not_stored": 0}
    assert worker_total(stack, "pkbs_job_wait_seconds_count", queue=QUEUE) == 6
    assert worker_total(stack, "pkbs_job_run_seconds_count", queue=QUEUE) == 6
    # The walltime kill ran at least its second, the deleted job until its qdel.
    assert worker_total(stack, "pkbs_job_run_seconds_sum", queue=QUEUE) >= 1
    assert worker_total(stack, "pkbs_job_run_seconds_bucket", queue=QUEUE, le="+Inf") == 6
    assert worker_total(stack, "pkbs_worker_jobs_started_total") == 6
    assert worker_total(stack, "pkbs_worker_slots_busy") == 0
    assert worker_total(stack, "pkbs_result_upload_failures_total") == 0
    assert worker_total(stack, "pkbs_work_redeliveries_total", queue=QUEUE) == 0

    after = dispatcher(stack)
    assert value(after, "pkbs_jobs", queue=QUEUE, state="R") == 0
    assert value(after, "pkbs_jobs", queue=QUEUE, state="H") == 1
    assert value(after, "pkbs_jobs_submitted_total", queue=QUEUE) == 7
    # Latency per route template and method, never per job id.
    posts = value(after, "pkbs_api_request_duration_seconds_count",
                  route="/v1/jobs", method="POST")
    assert posts == 7
    assert value(after, "pkbs_api_request_duration_seconds_count",
                 route="/v1/jobs/{job_id}", method="DELETE") == 1
    assert not [ls for (n, ls) in after if n.startswith("pkbs_api_request")
                and any(v.startswith(long) for _, v in ls)]

    # Counted from the job index, not kept in counters: the same after a restart.
    old = stack.pid_of("dispatcher")
    os.kill(old, signal.SIGKILL)
    wait_restarted(stack, "dispatcher", old)
    restarted = poll(lambda: (s := dispatcher(stack)) and
                     value(s, "pkbs_jobs", queue=QUEUE, state="H") == 1 and s,
                     15, 0.1, "job counts after the restart")
    assert value(restarted, "pkbs_jobs", queue=QUEUE, state="R") == 0
    assert value(restarted, "pkbs_jobs_submitted_total", queue=QUEUE) == 0
    assert cli(stack, "qdel", held).returncode == 0
    poll(lambda: value(dispatcher(stack), "pkbs_jobs", queue=QUEUE, state="H") == 0,
         10, 0.1, "the held job to be gone from the counts")
