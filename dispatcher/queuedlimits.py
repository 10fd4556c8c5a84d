"""max_queued at submit: a submission that would take its user (or everybody) past the
server's or the queue's limit is refused with PBS's message, counted from the job
index (jobs not finished; an array counts its subjobs not ended, as PBS counts an
array's queued subjobs).

Within one dispatcher the check is exact: one user's submissions are checked and
stored one at a time, and the next check waits until the index holds what the last
one stored. Across dispatchers it is not: two replicas admitting the same user at
the same instant may each let one submission (or batch) past the limit, which PBS's
single server cannot. max_queued guards against flooding the queue; max_run, which
bounds what runs, is exact everywhere (pkbs/runledger.py).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from pkbs.errors import PkbsError
from pkbs.limits import QueuedCounts, overall_limit, parse_limits, queued_limited, queued_refusal
from pkbs.models import JobSpec
from pkbs.serverconfig import ServerConfig

from .jobindex import JobIndex


class QueuedLimits:
    def __init__(self, index: JobIndex) -> None:
        self.index = index
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def admit(
        self, config: ServerConfig, owner: str, specs: Sequence[JobSpec], batch: bool = False
    ) -> AsyncIterator[None]:
        """Check `specs` (in order) against max_queued, then let the caller store them
        before the next check of `owner`'s. Nothing to do (no round trip) when no
        limit applies."""
        if not any(queued_limited(config, spec.queue) for spec in specs):
            yield
            return
        lock = self._locks.setdefault(owner, asyncio.Lock())
        async with lock:
            await self.index.sync()
            self._check(config, owner, specs, batch)
            try:
                yield
            finally:
                await self.index.sync()  # the next check counts what was stored

    def _check(
        self, config: ServerConfig, owner: str, specs: Sequence[JobSpec], batch: bool
    ) -> None:
        totals = _has_overall(config, {spec.queue for spec in specs})
        added_all = 0
        added: Counter[str] = Counter()
        for position, spec in enumerate(specs):
            have = self.index.queued_counts(owner, spec.queue, totals)
            have = QueuedCounts(
                have.server_total + added_all,
                have.server_user + added_all,
                have.queue_total + added[spec.queue],
                have.queue_user + added[spec.queue],
            )
            adding = len(spec.array_indices()) if spec.array is not None else 1
            refusal: PkbsError | None = queued_refusal(config, spec.queue, owner, have, adding)
            if refusal is not None:
                if batch:
                    refusal.message = f"batch job {position}: {refusal.message}"
                raise refusal
            added_all += adding
            added[spec.queue] += adding


def _has_overall(config: ServerConfig, queues: set[str]) -> bool:
    """Whether an overall max_queued applies (everybody's jobs must be counted)."""
    texts = [config.server.max_queued] + [
        config.queues[q].max_queued for q in queues if q in config.queues
    ]
    return any(text and overall_limit(parse_limits(text)) is not None for text in texts)
