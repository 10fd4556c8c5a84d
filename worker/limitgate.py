"""Run limits (max_run, max_run_res) where jobs start: a worker reserves a run in the
ledger (pkbs/runledger.py) before it takes a job of a limited queue, and releases it
when the run is over. A job over a limit goes back to the work queue with a delay
(a nak: other jobs behind it are not held up) and its comment says why, written
once per worker, not on every delivery. Jobs of queues without run limits cost
nothing here: the check is on the configuration in memory."""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict

from nats.aio.msg import Msg

from pkbs import lifecycle
from pkbs.configstore import ConfigStore
from pkbs.errors import UnknownJob
from pkbs.jobstore import JobStore
from pkbs.limits import ledger_key, run_limited, run_refusal
from pkbs.models import JobRecord, WorkItem
from pkbs.runledger import RunLedger, running_of

log = logging.getLogger("pkbs.worker")

# A job over a limit is offered again after RETRY_FIRST s, doubling per delivery up
# to RETRY_MAX s: it starts at most that long after its user is under the limit.
RETRY_FIRST = 0.5
RETRY_MAX = 5.0
NOTES_KEPT = 10_000  # jobs whose comment this worker remembers having written


def retry_delay(deliveries: int) -> float:
    return min(RETRY_MAX, RETRY_FIRST * 2.0 ** max(0, deliveries - 1))


class RunGate:
    def __init__(self, store: JobStore, ledger: RunLedger, config: ConfigStore) -> None:
        self.store = store
        self.ledger = ledger
        self.config = config
        self._noted: OrderedDict[str, str] = OrderedDict()  # run key -> comment written

    async def admit(self, msg: Msg, item: WorkItem, token: str) -> tuple[bool, str | None]:
        """Before a start: (True, the ledger the run is recorded in, or None when no run
        limit applies), or (False, None) when a limit keeps the job waiting (its message
        is handed back with a delay)."""
        config = self.config.config
        if not run_limited(config, item.queue):
            return True, None
        record = await self._record(item)
        if record is None:
            return True, None  # gone: the start finds out and drops the message
        run = running_of(record)
        key = ledger_key(config, record.owner)
        reason = await self.ledger.reserve(
            key, token, run, lambda runs: run_refusal(self.config.config, run, runs)
        )
        if reason is None:
            return True, key
        await self._note(item, run.job, reason)
        await msg.nak(delay=retry_delay(msg.metadata.num_delivered or 1))
        return False, None

    async def release(self, key: str, token: str) -> None:
        """The run is over (or never began): its place is free. A failure is left to
        the dispatchers' repair."""
        try:
            await self.ledger.release(key, token)
        except Exception:
            log.exception("run ledger %s: release failed; the repair will drop it", key)

    async def _record(self, item: WorkItem) -> JobRecord | None:
        """The job as the work message or the store has it; a subjob's, from its array."""
        if item.index is None and item.record is not None:
            return item.record
        try:
            record, _ = await self.store.get(item.number)
        except UnknownJob:
            return None
        return record if item.index is None else record.subjob(item.index)

    async def _note(self, item: WorkItem, job: str, reason: str) -> None:
        """The job's comment says why it waits, written once; a subjob's goes on its
        array until the array has begun (then subjobs are running: no comment)."""
        if self._noted.get(job) == reason:
            return
        self._noted[job] = reason
        self._noted.move_to_end(job)
        while len(self._noted) > NOTES_KEPT:
            self._noted.popitem(last=False)
        with contextlib.suppress(UnknownJob):
            await self.store.update(item.number, lambda r: lifecycle.not_run(r, reason))
