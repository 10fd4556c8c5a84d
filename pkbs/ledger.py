"""The ledger of job process groups a worker runs, kept in a file beside its job
directories, so that the jobs of a worker that died can be killed: by the worker
when it is restarted, and sooner by the local stack's supervisor."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from pathlib import Path


def jobs_root(worker_dir: Path | None) -> Path:
    """Where workers make job directories (one folder per worker) and keep ledgers."""
    return Path(worker_dir or tempfile.gettempdir()) / "pkbs-jobs"


def ledger_path(worker_dir: Path | None, worker_name: str) -> Path:
    """The file listing the job process groups a worker is running."""
    return jobs_root(worker_dir) / f"{worker_name}.groups"


def reap_ledger(ledger: Path) -> list[str]:
    """SIGKILL the job process groups listed in a dead worker's ledger; return their
    job ids. Used by the restarted worker and, sooner, by the local supervisor."""
    try:
        lines = ledger.read_text().splitlines()
    except OSError:
        return []
    killed = []
    for line in lines:
        pgid_text, _, job_id = line.partition(" ")
        if pgid_text.isdigit() and _is_job_process(int(pgid_text), job_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pgid_text), signal.SIGKILL)
                killed.append(job_id)
    ledger.unlink(missing_ok=True)
    return killed


def _is_job_process(pid: int, job_id: str) -> bool:
    """Guard against pid reuse: the process must carry the job's PBS_JOBID."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return f"PBS_JOBID={job_id}".encode() in fh.read().split(b"\0")
    except OSError:
        return False
