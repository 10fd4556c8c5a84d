"""The keeper container of a job's pod, and what the worker runs in it through exec:

    python -m pkbs.worker.podkeeper keep CONTROL_DIR [LINGER_SECONDS]
    python -m pkbs.worker.podkeeper pack JOB_DIR CONTROL_DIR    (the results, base64)
    python -m pkbs.worker.podkeeper signal SIGNO                (to every job process)

The pod shares one process namespace, so the keeper sees the job's processes: those
of another container than its own (their cgroup differs), except the pod's PID 1 (its
pause process). `keep` samples them every second for resources_used (peak resident
memory, CPU time) into the control directory, and keeps the pod, with the job's
files, after the job's container has ended, until the worker has taken the results
and deleted the pod, or LINGER_SECONDS after the job's processes are gone. Standard
library only, and a few MiB: it is there for the whole job.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from pkbs.procs import stat_fields

from .podfiles import USAGE

LINGER_SECONDS = 3600.0
SAMPLE_SECONDS = 1.0


def _cgroup(pid: int | str) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            return fh.read()
    except OSError:
        return None


def job_processes() -> list[int]:
    """The processes of the pod outside this container (and not its PID 1)."""
    own = _cgroup("self")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or entry == "1":
            continue
        group = _cgroup(entry)
        if group is not None and group != own:
            found.append(int(entry))
    return found


def sample(pids: list[int]) -> tuple[float, int]:
    """(CPU seconds, resident bytes) of these processes together; CPU time counts the
    children each has waited for."""
    ticks, pages = 0, 0
    for pid in pids:
        fields = stat_fields(pid)
        if fields is None:
            continue
        ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
        pages += int(fields[21])
    return ticks / os.sysconf("SC_CLK_TCK"), pages * os.sysconf("SC_PAGE_SIZE")


def write_usage(control_dir: Path, cpu_seconds: float, max_rss_bytes: int) -> None:
    path = control_dir / USAGE
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"cpu_seconds": cpu_seconds, "max_rss_bytes": max_rss_bytes}))
    partial.replace(path)


def keep(control_dir: Path, linger: float = LINGER_SECONDS) -> int:
    cpu, rss = 0.0, 0
    idle_since = time.monotonic()
    while True:
        pids = job_processes()
        if pids:
            idle_since = time.monotonic()
            now_cpu, now_rss = sample(pids)
            if now_cpu > cpu or now_rss > rss:
                cpu, rss = max(cpu, now_cpu), max(rss, now_rss)
                with contextlib.suppress(OSError):
                    write_usage(control_dir, cpu, rss)
        elif time.monotonic() - idle_since > linger:
            return 0
        time.sleep(SAMPLE_SECONDS)


def send(signo: int) -> int:
    """`signo` to every process of the job; how many got it."""
    sent = 0
    for pid in job_processes():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signo)
            sent += 1
    return sent


def main(argv: list[str]) -> int:
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command == "keep" and len(args) in (1, 2):
        return keep(Path(args[0]), float(args[1]) if len(args) == 2 else LINGER_SECONDS)
    if command == "pack" and len(args) == 2:
        from .podarchive import write_results

        write_results(sys.stdout.buffer, Path(args[0]), Path(args[1]))
        return 0
    if command == "signal" and len(args) == 1 and args[0].isdigit():
        print(send(int(args[0])))
        return 0
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
