"""The dispatchers' care of the run ledgers (pkbs/runledger.py): a repair with every
periodic reconcile (leaked runs of lost workers dropped), and one right after each
configuration change (running jobs that a new limit counts are added at once)."""

from __future__ import annotations

import asyncio
import logging

from pkbs.configstore import ConfigStore
from pkbs.errors import UnknownJob
from pkbs.jobstore import JobStore
from pkbs.limits import any_run_limit
from pkbs.models import JobRecord
from pkbs.runledger import RunLedger

from .jobindex import JobIndex

log = logging.getLogger("pkbs.dispatcher")


class LedgerRepair:
    def __init__(
        self, store: JobStore, ledger: RunLedger, config: ConfigStore, index: JobIndex
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.config = config
        self.index = index
        self._stale: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        config.on_change(self._config_changed)

    async def periodic(self) -> None:
        """Drop what two passes in a row found without a running job; add what is missing."""
        try:
            self._stale = await self.ledger.repair(
                self.store, self.config.config, await self._running(), self._stale
            )
        except Exception:  # NATS away, a ledger mid-change: next round
            log.exception("run ledger repair failed")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _config_changed(self, _: ConfigStore) -> None:
        task = asyncio.create_task(self._after_change())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_change(self) -> None:
        try:
            await self.index.wait_loaded()
            await self.index.sync()
            await self.ledger.repair(self.store, self.config.config, await self._running())
        except Exception:
            log.exception("run ledger repair after a configuration change failed")

    async def _running(self) -> list[JobRecord]:
        """The running jobs' records; none to read while no run limit is set (then
        every run left in a ledger is stale)."""
        if not any_run_limit(self.config.config):
            return []
        records = []
        for number, index in self.index.running():
            try:
                record, _ = await self.store.get(number, index)
            except UnknownJob:
                continue
            records.append(record)
        return records
