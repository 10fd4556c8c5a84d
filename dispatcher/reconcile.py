"""The dispatchers' periodic repair of jobs a crash left between two steps
(JobControl.reconcile) and of the run ledgers (runlimits.py), every
PKBS_RECONCILE_SECONDS."""

from __future__ import annotations

import asyncio
import logging
import random

from pkbs.control import JobControl
from pkbs.jobstore import JobStore
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
