"""The dispatchers' periodic work: the repair of jobs a crash left between two steps
(JobControl.reconcile) and of the run ledgers (runlimits.py), every
PKBS_RECONCILE_SECONDS, and the deletion of jobs whose history has expired
(pkbs/retention.py) and of payloads that never became jobs (pkbs/orphans.py), every
PKBS_RETENTION_SWEEP_SECONDS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from pkbs.configstore import ConfigStore
from pkbs.control import JobControl
from pkbs.errors import UnknownJob
from pkbs.jobstore import JobStore
from pkbs.orphans import OrphanPayloads
from pkbs.results import ResultStore
from pkbs.retention import Sweep, SweepResult, history_seconds
from pkbs.settings import Settings

from .arrays import ArrayAccounting
from .jobindex import JobIndex
from .runlimits import LedgerRepair

log = logging.getLogger("pkbs.dispatcher")


async def reconcile_forever(
    store: JobStore,
    index: JobIndex,
    arrays: ArrayAccounting,
    ledgers: LedgerRepair,
    settings: Settings,
) -> None:
    """Periodically repair jobs a crash left between two steps (see JobControl) and
    the run ledgers (runlimits.py). The job index names the unfinished jobs, so
    finished ones (history) are not read."""
    interval = settings.reconcile_seconds
    if interval <= 0:
        return
    control = JobControl(store)
    while True:
        await asyncio.sleep(interval * random.uniform(0.8, 1.2))
        if not index.ready:
            continue
        arrays.recount()
        try:
            repaired = await control.reconcile(grace=interval, unfinished=index.unfinished())
        except Exception:  # NATS away, a record mid-change: try again next round
            log.exception("reconcile failed")
            continue
        if repaired:
            log.warning("reconcile queued %d jobs again", repaired)
        await ledgers.periodic()


async def expire_forever(
    store: JobStore, index: JobIndex, results: ResultStore, config: ConfigStore, settings: Settings
) -> None:
    """Every PKBS_RETENTION_SWEEP_SECONDS, delete the finished jobs whose history has
    expired (pkbs/retention.py). The job index names the candidates: finished jobs that
    ended before the server's job_history_duration, read live from the configuration."""
    interval = settings.retention_sweep_seconds
    if interval <= 0:
        return
    sweep = Sweep(store, results)
    orphans = OrphanPayloads(store)
    while True:
        await asyncio.sleep(interval * random.uniform(0.8, 1.2))
        if not index.ready:
            continue
        try:
            await expire_once(sweep, index, history_seconds(config.config.server))
            await orphans.sweep(index.has, time.time())
        except Exception:  # NATS or WebDAV away: try again next round
            log.exception("history retention sweep failed")


async def expire_once(sweep: Sweep, index: JobIndex, history: float) -> SweepResult:
    now = time.time()
    candidates = index.ended_before(now - history)
    if not candidates:
        return SweepResult()
    held = []
    for number in index.held():
        with contextlib.suppress(UnknownJob):
            held.append((await sweep.store.get(number))[0])
    result = await sweep.run(candidates, held, history, now)
    for number in result.gone:
        index.forget(number)
    if result.removed:
        log.info("job history expired: %d jobs deleted", len(result.removed))
    return result
