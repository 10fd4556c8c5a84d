"""A worker killed mid-job: the job is rerun elsewhere, counted, and never overlaps."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from pkbs.jobstore import JobStore
from pkbs.models import JobRecord
from pkbs.states import JobState
from tests.stackutil import Stack, poll, store_settings, worker_dir_running

# Each run logs "start <pid>" then ticks; a run whose worker died must stop ticking
# before the rerun starts.
TICKING_JOB = """#!/bin/bash
echo "start $$" >> "$LOG"
for i in $(seq 1 {ticks}); do echo "tick $$" >> "$LOG"; sleep 0.1; done
echo "end $$" >> "$LOG"
"""


def _worker_running(stack: Stack, job_id: str) -> str:
    def check() -> str | None:
        job = stack.job(job_id)
        if job["job_state"] != "R":
            return None
        host = stack.qstat_json(job_id)["Jobs"][job_id]
        return str(host.get("run_count", ""))

    poll(check, 30, what=f"{job_id} to run")
    return _worker_of(stack, job_id)


def _worker_of(stack: Stack, job_id: str) -> str:
    """Which worker runs the job (the name of its directory), once its process runs."""
    running = poll(lambda: worker_dir_running(stack, job_id), 10, what=f"{job_id}'s process")
    return running.name


def test_worker_sigkill_reruns_the_job_without_overlap(fresh_stack: Stack, tmp_path: Path) -> None:
    fresh_stack.extra_env["PKBS_ACK_WAIT_SECONDS"] = "2"
    fresh_stack.up(workers=2, slots=1)
    log = tmp_path / "runs.log"
    script = tmp_path / "job.sh"
    script.write_text(TICKING_JOB.format(ticks=30))
    job_id = fresh_stack.qsub("-N", "victim", "-v", f"LOG={log}", str(script))
    worker_name = _worker_running(fresh_stack, job_id)
    poll(lambda: log.exists() and "tick" in log.read_text(), 30, what="the first run to tick")
    index = worker_name.rsplit("-w", 1)[1]
    os.kill(fresh_stack.pid_of(f"worker-{index}"), signal.SIGKILL)

    final = fresh_stack.wait_state(job_id, "F", timeout=90)
    assert final["Exit_status"] == 0
    assert final["run_count"] == 2
    lines = log.read_text().split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("start")]
    assert len(starts) == 2, lines
    first_pid = lines[starts[0]].split()[1]
    after_rerun = lines[starts[1] :]
    assert f"tick {first_pid}" not in after_rerun, "the first run kept running during the rerun"
    assert f"end {first_pid}" not in lines
    assert lines[-2].startswith("end ")


def test_non_rerunnable_job_is_not_run_twice(fresh_stack: Stack, tmp_path: Path) -> None:
    fresh_stack.extra_env["PKBS_ACK_WAIT_SECONDS"] = "2"
    fresh_stack.up(workers=1, slots=1)
    log = tmp_path / "runs.log"
    script = tmp_path / "job.sh"
    script.write_text(TICKING_JOB.format(ticks=100))
    job_id = fresh_stack.qsub("-r", "n", "-v", f"LOG={log}", str(script))
    _worker_running(fresh_stack, job_id)
    poll(lambda: log.exists() and "tick" in log.read_text(), 30, what="the run to tick")
    os.kill(fresh_stack.pid_of("worker-1"), signal.SIGKILL)
    final = fresh_stack.wait_state(job_id, "F", timeout=60)
    assert final["Exit_status"] == -20
    assert "not rerunnable" in final["comment"]
    assert log.read_text().count("start") == 1


def test_a_queued_job_that_lost_its_work_message_is_queued_again(fresh_stack: Stack) -> None:
    """A dispatcher that dies between marking a job queued and publishing its work
    message leaves it queued with nothing to run it: the reconciler repairs that."""
    fresh_stack.extra_env["PKBS_RECONCILE_SECONDS"] = "1"
    fresh_stack.up(workers=1, slots=1)
    job_id = fresh_stack.qsub("-h", "-N", "orphan", input="echo repaired\n")

    async def release_without_message() -> None:
        store = await JobStore.open(store_settings(fresh_stack), "test")
        try:

            def queue(record: JobRecord) -> JobRecord:
                return record.model_copy(update={"state": JobState.QUEUED, "hold_types": "n"})

            await store.update(int(job_id.split(".")[0]), queue)
        finally:
            await store.close()

    asyncio.run(release_without_message())
    assert fresh_stack.job(job_id)["job_state"] == "Q"
    final = fresh_stack.wait_state(job_id, "F", timeout=60)
    assert final["Exit_status"] == 0
    assert final["run_count"] == 1
