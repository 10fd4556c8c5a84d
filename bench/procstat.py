"""Resource readings from /proc: RSS and CPU time of the stack's processes."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading
import time
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB, None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process itself (not of its reaped children: the jobs)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the ")": state is field 3, utime 14 and stime 15 (1-based) -> index 11, 12.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        value = cpu_seconds(pid)
        if value is not None:
            out[name] = value
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after if name in before}


class RssSampler:
    """Samples VmRSS of the given processes in a thread; keeps the maximum of each."""

    def __init__(self, pids: dict[str, int], interval: float = 0.25) -> None:
        self.pids = pids
        self.interval = interval
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            value = rss_kib(pid)
            if value is not None and value > self.peak.get(name, 0):
                self.peak[name] = value

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_facts() -> dict[str, Any]:
    model = None
    mem_total = None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem_total = int(line.split()[1]) // 1024
                    break
    except OSError:
        pass
    facts: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "mem_total_mib": mem_total,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_start": loadavg(),
    }
    binary = os.path.join(os.path.dirname(sys.executable), "nats-server")
    try:
        facts["nats_server"] = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        facts["nats_server"] = None
    return facts


def wait_quiet(pids: dict[str, int], cpu_fraction: float = 0.15, window: float = 0.5,
               timeout: float = 20.0) -> float:
    """Wait until the stack's processes together use less than `cpu_fraction` of one
    core over `window` seconds (so the next measurement starts from idle)."""
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    while time.monotonic() < deadline:
        before = cpu_snapshot(pids)
        time.sleep(window)
        used = sum(cpu_delta(before, cpu_snapshot(pids)).values())
        if used < cpu_fraction * window:
            break
    return time.monotonic() - start
