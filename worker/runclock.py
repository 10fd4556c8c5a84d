"""A run's walltime: how long the job has run, not counting the time it was suspended
(as PBS's MoM stops and starts it: stop_walltime / start_walltime), against a limit
that may change while it runs (qalter -l walltime). Every runner waits for its job
through `ended_within_walltime`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class RunClock:
    """Monotonic running time of one run, paused while the job is suspended."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit  # seconds; None = unlimited
        self.started = time.monotonic()
        self._paused_at: float | None = None
        self._paused_for = 0.0
        self.changed = asyncio.Event()  # set at each pause, resume and new limit

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def used(self) -> float:
        """Seconds run so far, suspended time left out."""
        now = self._paused_at if self._paused_at is not None else time.monotonic()
        return now - self.started - self._paused_for

    def left(self) -> float | None:
        """Seconds until the limit; None while paused or without a limit."""
        if self.limit is None or self.paused:
            return None
        return max(0.0, self.limit - self.used())

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = time.monotonic()
            self.changed.set()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._paused_for += time.monotonic() - self._paused_at
            self._paused_at = None
            self.changed.set()

    def set_limit(self, limit: float | None) -> None:
        if limit != self.limit:
            self.limit = limit
            self.changed.set()


async def ended_within_walltime(
    ended: asyncio.Future[T],
    clock: RunClock,
    kill: Callable[[str], Awaitable[None]],
    note: Callable[[str], None],
) -> T:
    """What `ended` gives, waited for while the job's running time is within its
    limit (which may change meanwhile); past it the job is noted (PBS's line), killed
    and waited for."""
    while True:
        clock.changed.clear()
        left = clock.left()
        if left is not None and left <= 0:
            break
        changed: asyncio.Future[Any] = asyncio.ensure_future(clock.changed.wait())
        waited: set[asyncio.Future[Any]] = {ended, changed}
        try:
            await asyncio.wait(waited, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
        if ended.done():
            return ended.result()
    assert clock.limit is not None
    note(f"walltime {int(clock.used())} exceeded limit {int(clock.limit)}")
    await kill("walltime")
    return await ended
