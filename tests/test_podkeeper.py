"""The keeper container of a job's pod (worker/podkeeper.py): it finds the job's
processes (another container's cgroup, not the pod's PID 1), signals them, samples
what they use, and leaves once they have been gone long enough. Here a child process
stands in for the job, "in another container" by its cgroup as the keeper reads it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkbs.worker import podkeeper
from pkbs.worker.podfiles import USAGE


@pytest.fixture
def job(monkeypatch: pytest.MonkeyPatch) -> Iterator[subprocess.Popen[bytes]]:
    busy = "x = bytearray(16 << 20)\nprint('ready', flush=True)\nwhile True: sum(range(9999))"
    proc = subprocess.Popen([sys.executable, "-c", busy], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    real = podkeeper._cgroup

    def cgroup(pid: int | str) -> str | None:
        # Only the child is "another container": every other process on this host
        # reads as the keeper's own (else send() would signal the whole machine).
        return "0::/../job-container\n" if str(pid) == str(proc.pid) else real("self")

    monkeypatch.setattr(podkeeper, "_cgroup", cgroup)
    yield proc
    proc.kill()
    proc.wait()
    if proc.stdout:
        proc.stdout.close()


def test_the_job_processes_are_those_of_other_containers(
    job: subprocess.Popen[bytes],
) -> None:
    found = podkeeper.job_processes()
    assert job.pid in found
    assert 1 not in found


def test_signals_reach_the_job(job: subprocess.Popen[bytes]) -> None:
    assert podkeeper.send(signal.SIGTERM) >= 1
    assert job.wait(timeout=10) == -signal.SIGTERM


def test_usage_is_sampled_and_the_keeper_leaves_after_the_job(
    job: subprocess.Popen[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(podkeeper, "SAMPLE_SECONDS", 0.05)
    cpu, rss = podkeeper.sample([job.pid])
    assert rss > 16 << 20
    calls = 0

    def processes() -> list[int]:  # the job runs for a few samples, then is gone
        nonlocal calls
        calls += 1
        if calls == 10:
            job.kill()
            job.wait()
        return [job.pid] if job.returncode is None else []

    monkeypatch.setattr(podkeeper, "job_processes", processes)
    assert podkeeper.keep(tmp_path, linger=0.3) == 0
    usage = json.loads((tmp_path / USAGE).read_text())
    assert usage["max_rss_bytes"] > 16 << 20 and usage["cpu_seconds"] >= cpu


def test_usage_of_the_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "pkbs.worker.podkeeper", "nonsense"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 64 and "podkeeper keep" in proc.stderr
