"""A run's results: its stdout/stderr and the files its job created or changed,
uploaded into the run's own WebDAV collection (`pkbs.results.run_results_path`), or
kept on the worker under pkbs-undelivered/ when they cannot be; and the collections
of runs that lost the job, removed.

One retry policy: the worker's WebDAV client retries every request with backoff
(refused, no answer, 5xx) for as long as its caller lets it, and a delivery lets it
for PKBS_RESULTS_RETRY_SECONDS in all, the files waiting in the run directory
meanwhile; then ResultsNotStored, saying why. A refusal retrying cannot mend (another
4xx, a local file that cannot be read) ends a delivery at once.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from pkbs.errors import InvalidRequest, PkbsError, ServiceUnavailable
from pkbs.models import JobRecord, ResultFile
from pkbs.procs import jobs_root
from pkbs.results import ResultStore, run_results_path
from pkbs.settings import Settings
from pkbs.stdpaths import local_target, std_outputs, this_host

from . import metrics
from .rundir import RunDir

log = logging.getLogger("pkbs.worker")


class ResultsNotStored(Exception):
    """A finished job's results could not be stored on WebDAV; says why."""


def _log_retry(attempt: int, delay: float, reason: str) -> None:
    metrics.UPLOAD_RETRIES.inc()
    log.warning("WebDAV request failed, retrying in %.1f s: %s", delay, reason)


def undelivered_root(settings: Settings) -> Path:
    """Where a worker keeps results it could not store (pkbs-undelivered/, beside the
    job directories), each run's in `<job id>.<run>/`."""
    return jobs_root(settings.worker_dir).parent / "pkbs-undelivered"


def result_files(files: RunDir, changed: list[str]) -> list[tuple[str, Path]]:
    """(name in the run's collection, local path) of each result file of a run: its
    stdout/stderr, then what its job created or changed."""
    local = [(name, path) for name, path in files.outputs if path.exists()]
    return local + [(rel, files.job / rel) for rel in changed]


class Delivery:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limit = settings.results_retry_seconds
        self.webdav = ResultStore.from_settings(settings, attempts=None, on_retry=_log_retry)

    async def aclose(self) -> None:
        await self.webdav.aclose()

    def run_path(self, record: JobRecord, run_count: int | None = None) -> str:
        """The WebDAV collection of a run of the job: by default, of the run whose
        start wrote `record`."""
        count = record.run_count if run_count is None else run_count
        return run_results_path(self.settings.webdav_base, record.owner, record.job_id, count)

    def url(self, path: str) -> str:
        return self.settings.webdav_url.rstrip("/") + path

    async def store(self, record: JobRecord, files: RunDir, changed: list[str]) -> list[ResultFile]:
        """Upload the run's result files (empty ones are listed, not uploaded) into
        its collection, within PKBS_RESULTS_RETRY_SECONDS, the heartbeat keeping the
        job ours meanwhile; else ResultsNotStored."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.limit):
                return await self._upload(record, files, changed)
        except InvalidRequest as exc:
            metrics.UPLOAD_FAILURES.inc()
            raise ResultsNotStored(f"Results not stored: {exc.message}.") from exc
        except (TimeoutError, ServiceUnavailable):
            reason = self.webdav.last_error or "no answer"
        waited = time.monotonic() - started
        metrics.UPLOAD_FAILURES.inc()
        log.error("results not stored", extra={"job": record.job_id, "reason": reason})
        raise ResultsNotStored(
            f"Results not stored: WebDAV at {self.settings.webdav_url} unreachable "
            f"for {waited:.0f} s (limit PKBS_RESULTS_RETRY_SECONDS={self.limit:g}); "
            f"last error: {reason}."
        )

    async def _upload(
        self, record: JobRecord, files: RunDir, changed: list[str]
    ) -> list[ResultFile]:
        base = self.run_path(record)
        sizes = [(name, path, path.stat().st_size) for name, path in result_files(files, changed)]
        to_upload = [(name, path) for name, path, size in sizes if size > 0]
        if to_upload:
            await self.webdav.ensure_collection(base)
            for name, path in to_upload:
                parent = name.rpartition("/")[0]
                if parent:
                    await self.webdav.ensure_collection(f"{base}{parent}/")
                await self.webdav.upload_file(f"{base}{name}", path)
        return [ResultFile(name=name, size=size) for name, _, size in sizes]

    def deliver_locally(self, record: JobRecord, files: RunDir) -> list[str]:
        """A local stack's worker (PKBS_DELIVER_LOCAL: the submitters' host and account)
        also copies stdout/stderr to their Output_Path / Error_Path when those are on
        this host, as PBS's MoM does; the WebDAV copy stays. Notes on what failed."""
        hosts = this_host()
        workdir = record.spec.variables.get("PBS_O_WORKDIR")
        produced = dict(files.outputs)
        notes = []
        for name, path in std_outputs(record):
            target = local_target(path, name, hosts, workdir)
            source = produced.get(name)
            if target is None or source is None or not source.exists():
                continue
            try:
                shutil.copyfile(source, target)
            except OSError as exc:
                notes.append(f"{name} not delivered to {target}: {exc.strerror or exc}")
        return notes

    def keep_undelivered(self, record: JobRecord, files: RunDir, changed: list[str]) -> str:
        """Move the results that could not be stored out of the run directory (which
        goes next) to <worker dir>/pkbs-undelivered/<job id>.<run>/, as PBS keeps
        output it cannot deliver; say where, for the job's comment."""
        local = result_files(files, changed)
        if not local:
            return "it left no files"
        dest = undelivered_root(self.settings) / f"{record.job_id}.{record.run_count}"
        try:
            for name, path in local:
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(path, target)
        except OSError as exc:
            return f"its files could not be kept either: {exc}"
        where = f"on worker {self.settings.worker_name} in {dest}"
        count = f"{len(local)} result files are" if len(local) > 1 else "result file is"
        return f"its {count} kept {where}"

    async def remove_runs(self, record: JobRecord, run_counts: Iterable[int]) -> None:
        """Best effort, within PKBS_RESULTS_RETRY_SECONDS: remove what these runs of
        the job stored. Only the run that finished the job stored the job's results."""
        try:
            async with asyncio.timeout(self.limit):
                for count in run_counts:
                    await self._remove(record, self.run_path(record, count))
        except TimeoutError:
            log.warning("results of superseded runs not removed: %s",
                        self.webdav.last_error or "no answer", extra={"job": record.job_id})

    async def _remove(self, record: JobRecord, path: str) -> None:
        try:
            removed = await self.webdav.delete(path)
        except PkbsError as exc:
            log.warning("results of a superseded run not removed: %s: %s", path, exc.message,
                        extra={"job": record.job_id})
            return
        if removed:
            log.info("results of a superseded run removed: %s", path, extra={"job": record.job_id})
