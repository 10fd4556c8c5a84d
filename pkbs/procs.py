"""Process housekeeping shared by workers and the local supervisor (Linux).

Workers and the supervisor are child subreapers: the orphans of a job (daemons that
left its session) are re-parented to the worker, and the jobs of a worker that dies
are re-parented to the supervisor, instead of to init. Either can then find and end
them, so a job never runs on after its job or its worker is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def jobs_root(worker_dir: Path | None) -> Path:
    """Where workers make their job directories (one folder per worker)."""
    return Path(worker_dir or tempfile.gettempdir()) / "pkbs-jobs"


def become_subreaper() -> bool:
    """prctl(PR_SET_CHILD_SUBREAPER): False where it is not available."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def own_children() -> list[int]:
    """Pids of this process's children (of every thread)."""
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children") as fh:
                pids.extend(int(p) for p in fh.read().split())
    return pids


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its process group, then reap it if it is our child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    reap(pid)


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def has_env(pid: int, name: str, value: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return f"{name}={value}".encode() in fh.read().split(b"\0")
    except OSError:
        return False
