"""SIGTERM drains a worker: no new jobs, running ones finish within the grace period,
the rest are handed back and rerun elsewhere."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.stackutil import Stack, poll
from tests.test_reliability import _worker_running


def _term_worker(stack: Stack, worker_name: str) -> None:
    index = worker_name.rsplit("-w", 1)[1]
    os.kill(stack.pid_of(f"worker-{index}"), signal.SIGTERM)


def test_sigterm_lets_a_short_job_finish(fresh_stack: Stack, tmp_path: Path) -> None:
    fresh_stack.extra_env["PKBS_DRAIN_GRACE_SECONDS"] = "20"
    fresh_stack.up(workers=2, slots=1)
    marker = tmp_path / "started"
    job_id = fresh_stack.qsub("-N", "short", input=f"touch {marker}; sleep 1.5; echo finished\n")
    worker = _worker_running(fresh_stack, job_id)
    poll(marker.exists, 30, what="the job to start")
    _term_worker(fresh_stack, worker)
    final = fresh_stack.wait_state(job_id, "F", timeout=60)
    assert final["Exit_status"] == 0
    assert final["run_count"] == 1


def test_sigterm_hands_back_a_long_job(fresh_stack: Stack, tmp_path: Path) -> None:
    fresh_stack.extra_env["PKBS_DRAIN_GRACE_SECONDS"] = "1"
    fresh_stack.up(workers=2, slots=1)
    runs = tmp_path / "runs"
    job_id = fresh_stack.qsub(
        "-N",
        "long",
        input=f"echo run >> {runs}; n=$(wc -l < {runs}); "
        "if [ $n -eq 1 ]; then sleep 60; fi; echo done\n",
    )
    worker = _worker_running(fresh_stack, job_id)
    poll(lambda: runs.exists(), 30, what="the first run")
    _term_worker(fresh_stack, worker)
    final = fresh_stack.wait_state(job_id, "F", timeout=90)
    assert final["Exit_status"] == 0
    assert final["run_count"] == 2
    assert runs.read_text() == "run\nrun\n"
