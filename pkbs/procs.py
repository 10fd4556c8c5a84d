"""Process housekeeping shared by workers and the local supervisor (Linux).

Workers and the supervisor are child subreapers: the orphans of a job (daemons that
left its session) are re-parented to the worker, and the jobs of a worker that dies
are re-parented to the supervisor, instead of to init. Either can then find and end
them, so a job never runs on after its job or its worker is gone.

Every process that holds credentials (supervisor, dispatcher, workers) makes itself
non-dumpable at start: its /proc/<pid>/environ, mem, maps, fd... then belong to root
and pass the kernel's ptrace check only with CAP_SYS_PTRACE (or CAP_SYS_ADMIN /
CAP_PERFMON), so a job running as the same user cannot read the credentials there.
The jobs themselves are unaffected: execve makes a process dumpable again. When the
stack runs as root, jobs would still have those capabilities: the worker removes
them from its bounding set, so no job it starts ever gets them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import tempfile
import time
from pathlib import Path

PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
# Each of these lets a process open a non-dumpable process's /proc/<pid>/environ
# (measured on Linux 6.18 as root: with all three gone, the open fails).
PEEK_CAPS = (CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_PERFMON)


def jobs_root(worker_dir: Path | None) -> Path:
    """Where workers make their job directories (one folder per worker)."""
    return Path(worker_dir or tempfile.gettempdir()).absolute() / "pkbs-jobs"


def _prctl(option: int, arg: int) -> bool:
    """prctl(option, arg, 0, 0, 0) == 0; False where prctl is not available."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(option, arg, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """prctl(PR_SET_CHILD_SUBREAPER): False where it is not available."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def hide_from_jobs() -> bool:
    """prctl(PR_SET_DUMPABLE, 0): a process of the same user without CAP_SYS_PTRACE
    can no longer open this process's /proc/<pid>/environ, mem, maps, fd, nor ptrace
    it. /proc/<pid>/stat, status and cmdline stay readable (pkbs status, the bench).
    Call it first thing in every process that holds credentials."""
    return _prctl(PR_SET_DUMPABLE, 0)


def drop_peek_caps() -> list[int]:
    """Remove PEEK_CAPS from this process's capability bounding set, so the programs
    it starts (jobs) never hold them, even as root; this process keeps its own. Only
    possible with CAP_SETPCAP (root); without it there is nothing to drop anyway.
    Returns the capabilities that were dropped."""
    return [cap for cap in PEEK_CAPS if _prctl(PR_CAPBSET_DROP, cap)]


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


RUN_ID_VARIABLE = "PKBS_RUN_ID"


def run_id(run_token: str) -> str:
    """What a run's processes carry in PKBS_RUN_ID: derived from its run token (which
    fences the run's writes, and is not given to the job itself)."""
    return hashlib.sha256(run_token.encode()).hexdigest()[:20]


def end_run(run_token: str) -> int:
    """SIGKILL every process (and its group) of the run with this token, found by
    PKBS_RUN_ID in its environment: what a lost run left on this host when its worker
    died and nobody ended it. Returns how many were found."""
    me = os.getpid()
    value = run_id(run_token)
    found = [
        int(entry.name)
        for entry in os.scandir("/proc")
        if entry.name.isdigit()
        and int(entry.name) != me
        and has_env(int(entry.name), RUN_ID_VARIABLE, value)
    ]
    for pid in found:
        kill_tree(pid)
    # SIGKILL lands when a process next leaves the kernel: wait until they are gone
    # (or zombies), so that not even a write in progress comes after this returns.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(_alive(pid) for pid in found):
        time.sleep(0.005)
    return len(found)


def _alive(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] != b"Z"


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name: [0] is field 3 (the
    state), [3] field 6 (session), [19] field 22 (start time), [21] field 24 (rss).
    None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields or None
