"""Job history retention: when a finished job's history has expired, and the sweep
that then deletes what the job left.

A finished job is kept for the server's `job_history_duration` (PBS's default two
weeks; none with `job_history_enable = False`) from its end (`obittime`), then its
history expires and a sweep deletes, in this order:

1. its results on WebDAV: the job's collection (every run's) and its subjobs';
2. its payload in the submit stream (the job number is the message's sequence);
3. its subjobs' records, then its own record, each with a compare-and-set on the
   revision the sweep judged (a purge marker, which every dispatcher's job index
   applies, then expires by itself).

The record goes last because it names everything else: a sweep stopped midway leaves
an expired record, and the next sweep finds it and does the rest again (each step is
idempotent). Two sweeps at once (two dispatchers) both try; the compare-and-set lets
one remove each record, and the other steps find nothing left to delete.

Nothing a job that can still run needs is deleted: an array is kept while any of its
subjobs has not ended (a deleted array's running subjobs end after it), and a
finished job that a held job still waits on (named in its pending dependencies) is
kept until that job is decided. Workers delete what they kept under
pkbs-undelivered/ on the same clock (`expire_undelivered`).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pkbs.errors import UnknownJob
from pkbs.jobstore import JobStore
from pkbs.models import JobRecord
from pkbs.pbsvalues import parse_duration
from pkbs.results import ResultStore, job_results_path
from pkbs.serverconfig import ServerAttrs
from pkbs.states import is_final

log = logging.getLogger(__name__)

# The longest a purged record's marker stays: long enough for every job index to
# apply it (a sweep also drops index entries whose record it finds gone).
MAX_MARKER_TTL = 600.0


def history_seconds(attrs: ServerAttrs) -> float:
    """How long a finished job is kept: job_history_duration (HH:MM:SS or seconds);
    0 when job_history_enable is false (PBS keeps no history then)."""
    if not attrs.job_history_enable:
        return 0.0
    return parse_duration(attrs.job_history_duration)


def marker_ttl(history: float) -> float:
    """How long a purged record's marker stays: as long as the history, at most
    MAX_MARKER_TTL (the markers of a day's jobs do not pile up)."""
    return min(MAX_MARKER_TTL, max(1.0, history))


def ended_at(record: JobRecord) -> float:
    return record.obittime if record.obittime is not None else record.mtime


def expired(record: JobRecord, history: float, now: float) -> bool:
    """The job has finished and its history has run out."""
    return is_final(record.state) and ended_at(record) + history <= now


def within_history(record: JobRecord, history: float, now: float) -> bool:
    """What qstat -x shows: jobs not finished, and finished ones within history."""
    return not expired(record, history, now)


def awaited(held: Iterable[JobRecord]) -> set[int]:
    """Numbers of the jobs the held jobs still wait on (their pending dependencies)."""
    return {number for record in held for numbers in record.depend_pending.values()
            for number in numbers}


@dataclass
class SweepResult:
    removed: list[int] = field(default_factory=list)  # jobs this sweep deleted
    gone: list[int] = field(default_factory=list)  # no record (deleted before)
    kept: list[int] = field(default_factory=list)  # not deletable yet


class Sweep:
    """Deletes expired jobs (see the module's doc). Safe to run anywhere, any number
    of times at once."""

    def __init__(self, store: JobStore, results: ResultStore) -> None:
        self.store = store
        self.results = results
        self.base = store.settings.webdav_base

    async def run(
        self, candidates: Iterable[int], held: Iterable[JobRecord], history: float, now: float
    ) -> SweepResult:
        """Delete those of the jobs `candidates` whose history expired by `now`, but
        those the `held` jobs wait on."""
        keep = awaited(held)
        result = SweepResult()
        for number in candidates:
            outcome = await self.expire(number, keep, history, now)
            {"removed": result.removed, "gone": result.gone, "kept": result.kept}[
                outcome
            ].append(number)
        return result

    async def expire(self, number: int, keep: set[int], history: float, now: float) -> str:
        """Delete job `number` if its history expired: "removed" (by this call), "gone"
        (no record) or "kept"."""
        try:
            record, revision = await self.store.get(number)
        except UnknownJob:
            return "gone"
        if number in keep or not expired(record, history, now):
            return "kept"
        subjobs: list[tuple[JobRecord, int]] = []
        if record.is_array:
            for index in sorted(await self.store.subjob_indices(number)):
                try:
                    subjobs.append(await self.store.get(number, index))
                except UnknownJob:
                    continue  # removed by another sweep meanwhile
            if not all(is_final(sub.state) for sub, _ in subjobs):
                return "kept"  # a subjob of a deleted array still runs
        for job in [record, *(sub for sub, _ in subjobs)]:
            await self.results.delete(job_results_path(self.base, job.owner, job.job_id))
        await self.store.delete_payload(number)
        ttl = marker_ttl(history)
        for sub, sub_revision in subjobs:
            await self.store.purge_record(number, sub.index, sub_revision, ttl)
        if not await self.store.purge_record(number, None, revision, ttl):
            return "kept"  # changed, or removed by another sweep meanwhile
        log.info("job history expired: deleted", extra={"job": record.job_id})
        return "removed"


def expire_undelivered(root: Path, history: float, now: float | None = None) -> list[Path]:
    """Delete what a worker kept under pkbs-undelivered/ (one directory per run, made
    when the job ended) once it is older than the history; what was deleted."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        kept = list(root.iterdir())
    except FileNotFoundError:
        return removed
    for path in kept:
        try:
            if path.stat().st_mtime + history > now:
                continue
        except FileNotFoundError:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
