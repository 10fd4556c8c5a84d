"""Clock skew between hosts: the two workers' clocks are set an hour ahead and an
hour behind the dispatcher's (time.time in those processes only). Whatever must not
depend on agreeing clocks - heartbeats, walltime limits, the lease, job tokens that
let a job call qstat - still works; only the recorded times show the skew."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from tests.stackutil import Stack

SITECUSTOMIZE = '''
import os
import time

_offsets = {"-w1": 3600.0, "-w2": -3600.0}
_name = os.environ.get("PKBS_WORKER_NAME", "")
_offset = next((v for k, v in _offsets.items() if _name.endswith(k)), 0.0)
if _offset:
    _real = time.time
    time.time = lambda: _real() + _offset
    time.time_ns = lambda: int((_real() + _offset) * 1e9)
'''


def test_workers_with_skewed_clocks(fresh_stack: Stack, tmp_path: Path) -> None:
    hook = tmp_path / "skew"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    # ack_wait 2 s: jobs of 3 s live on heartbeats; reconcile every second would
    # queue again anything whose record looked old and had no work message.
    fresh_stack.extra_env.update({
        "PYTHONPATH": str(hook),
        "PKBS_ACK_WAIT_SECONDS": "2",
        "PKBS_RECONCILE_SECONDS": "1",
    })
    fresh_stack.up(workers=2, slots=1)
    jobs = [
        fresh_stack.qsub("-N", f"skew{i}", input='qstat "$PBS_JOBID" >/dev/null || exit 7\n'
                                                 "sleep 3\n")
        for i in range(4)
    ]
    limited = fresh_stack.qsub("-N", "wall", "-l", "walltime=00:00:02", input="sleep 30\n")
    skews = set()
    for job_id in jobs:
        job = fresh_stack.wait_state(job_id, "F", timeout=60)
        assert (job["Exit_status"], job["run_count"]) == (0, 1), job
        # stime comes from the worker's clock, qtime from the dispatcher's.
        started = datetime.strptime(job["stime"], "%a %b %d %H:%M:%S %Y")
        queued = datetime.strptime(job["qtime"], "%a %b %d %H:%M:%S %Y")
        skews.add(round((started - queued).total_seconds() / 3600))
    assert skews == {1, -1}, f"the jobs did not run on both skewed workers: {skews}"
    job = fresh_stack.wait_state(limited, "F", timeout=60)
    assert (job["Exit_status"], job["run_count"]) == (-29, 1), job
    hours, minutes, seconds = (int(x) for x in job["resources_used"]["walltime"].split(":"))
    assert (hours, minutes) == (0, 0) and 2 <= seconds < 10, job["resources_used"]
