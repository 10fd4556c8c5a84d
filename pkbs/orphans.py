"""Payloads without a job. A dispatcher that stops between storing a submission's
payload and creating its record leaves the payload in the submit stream. A retry of
the same submission within the stream's duplicate window finds it and makes the
record then; after the window nothing will, and the sweep here deletes it, so that a
bounded store (pkbs/storage.py) does not fill with such payloads.

Each dispatcher sweeps the stream in order from where its last sweep stopped: numbers
its job index knows are jobs; any other payload older than the window (plus a margin)
whose record is not in the store either is deleted."""

from __future__ import annotations

import logging
from collections.abc import Callable

from nats.js import errors as jserr

from pkbs import constants as C
from pkbs.errors import UnknownJob
from pkbs.jobstore import NO_MESSAGE, SUBMIT_DUPLICATE_WINDOW, JobStore

log = logging.getLogger(__name__)

ORPHAN_AGE = SUBMIT_DUPLICATE_WINDOW + 60.0
# Payloads looked at per sweep at most (the first sweep of a long stream goes on in
# the next ones).
SWEEP_LIMIT = 20_000


class OrphanPayloads:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.next_number = 0  # every payload below it has been judged

    async def sweep(self, has_record: Callable[[int], bool], now: float) -> list[int]:
        """Delete the payloads stored before `now - ORPHAN_AGE` that no record names
        (`has_record`: the job index's knowledge, checked against the store); their
        numbers."""
        state = (await self.store.js.stream_info(C.SUBMIT_STREAM)).state
        number = max(self.next_number, state.first_seq)
        last = min(state.last_seq, number + SWEEP_LIMIT - 1)
        deleted = []
        while number <= last:
            if not has_record(number):
                try:
                    stored = await self.store.js.get_msg(C.SUBMIT_STREAM, number)
                except jserr.NotFoundError:
                    stored = None  # deleted with its job, or refused
                except jserr.APIError as exc:
                    if exc.err_code not in NO_MESSAGE:
                        raise
                    stored = None
                if stored is not None and stored.time is not None:
                    if stored.time.timestamp() > now - ORPHAN_AGE:
                        break  # too young to judge, and so is every later one
                    if await self._orphan(number) and await self.store.delete_payload(number):
                        deleted.append(number)
            number += 1
        self.next_number = number
        if deleted:
            log.warning("payloads of %d submissions that never became jobs deleted",
                        len(deleted))
        return deleted

    async def _orphan(self, number: int) -> bool:
        try:
            await self.store.get(number)
        except UnknownJob:
            return True
        return False
