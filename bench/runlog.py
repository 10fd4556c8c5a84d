"""The run log that fault tests and the soak give their jobs: each run writes
`start <job> <pid> <time>`, `tick ...` lines and `end ...`; from it, each job's runs
and whether two of them overlapped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunSpan:
    """One run of a job, as its log lines show it."""

    pid: str
    first: float
    last: float
    ended: bool


def job_runs(log: Path) -> dict[str, list[RunSpan]]:
    """The runs of each job (keyed by job id and pid), ordered by start time. Lines
    cut short by a killed run are skipped."""
    runs: dict[tuple[str, str], RunSpan] = {}
    text = log.read_text(errors="replace") if log.exists() else ""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        kind, job, pid, stamp = parts
        try:
            t = float(stamp)
        except ValueError:
            continue
        span = runs.setdefault((job, pid), RunSpan(pid, t, t, False))
        span.first, span.last = min(span.first, t), max(span.last, t)
        span.ended = span.ended or kind == "end"
    by_job: dict[str, list[RunSpan]] = {}
    for (job, _), span in runs.items():
        by_job.setdefault(job, []).append(span)
    for spans in by_job.values():
        spans.sort(key=lambda s: s.first)
    return by_job
