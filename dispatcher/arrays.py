"""Array accounting: an array's record learns from the job index how many of its
subjobs have ended and how many run; an array with max_run_subjobs has its next
subjobs queued as earlier ones end (JobControl.top_up).

Workers only write subjob records; they never touch the array's record when a
subjob ends (two workers ending subjobs of one array would contend on that one
key, a read and a compare-and-set per subjob). The job index sees every subjob
record change anyway, so each dispatcher counts the ended subjobs there and writes
the totals into the array's record: at once when the last subjob has ended (the
array then ends too), else at most once per PROGRESS_INTERVAL while it runs, for
`array_state_count`. The totals are counted, not added up, so every replica may
write them and a write that is repeated or lost changes nothing; the periodic
repair and the end of the index's first load catch what a stopped dispatcher
missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from pkbs.control import JobControl

from .jobindex import JobIndex

log = logging.getLogger("pkbs.dispatcher.arrays")

PROGRESS_INTERVAL = 1.0  # seconds between two writes of a running array's counts


class ArrayAccounting:
    def __init__(self, control: JobControl, index: JobIndex) -> None:
        self.control = control
        self.index = index
        self._pending: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        index.on_subjob_ended = self.subjob_ended
        index.on_subjob_running = self.subjob_ended  # counts written the same way

    async def start(self) -> None:
        """After the index's first load: count the arrays whose last subjobs ended
        while no dispatcher was running."""
        self._spawn(self._after_load())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def subjob_ended(self, number: int) -> None:
        if self.index.max_run_subjobs(number) is not None:
            self._spawn(self._top_up(number))
        done, _, size = self.index.array_tally(number)
        if done >= size:
            self._spawn(self._write(number))  # the array's end: at once
        elif number not in self._pending:
            self._pending.add(number)
            self._spawn(self._write(number, PROGRESS_INTERVAL))

    def recount(self) -> None:
        """Count every unfinished array whose subjobs have all ended (the periodic
        repair calls it: a write that failed is tried again)."""
        for number in self.index.ended_arrays():
            self.subjob_ended(number)

    async def _after_load(self) -> None:
        await self.index.wait_loaded()
        self.recount()
        for number in self.index.limited_arrays():
            self._spawn(self._top_up(number))

    async def _top_up(self, number: int) -> None:
        """A subjob of an array with max_run_subjobs ended or stopped running: queue
        the next (JobControl.top_up), from what the index holds now."""
        try:
            array, _ = await self.control.store.get(number)
            await self.control.top_up(array, *self.index.subjob_load(number))
        except Exception:  # NATS away: the next subjob, or the periodic repair, retries
            log.exception("array %d: next subjobs not queued", number)

    async def _write(self, number: int, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
            # From here on a subjob that ends schedules a write of its own: none is missed.
            self._pending.discard(number)
        done, failed, _ = self.index.array_tally(number)
        running = self.index.array_running(number)
        try:
            await self.control.count_subjobs(number, done, failed, running)
        except Exception:  # NATS away: the next subjob, or the periodic repair, retries
            log.exception("array %d: counts not written", number)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
