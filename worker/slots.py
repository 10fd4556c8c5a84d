"""CPU slots of one worker: a job asking ncpus=N holds N of them."""

from __future__ import annotations

import asyncio


class Slots:
    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._changed = asyncio.Event()  # set on every release (and by wake)

    @property
    def free(self) -> int:
        return self.total - self.used

    async def acquire(self, count: int) -> None:
        while self.free < count:
            self._changed.clear()
            await self._changed.wait()
        self.used += count

    def try_acquire(self, count: int) -> bool:
        if self.free < count:
            return False
        self.used += count
        return True

    def release(self, count: int) -> None:
        self.used -= count
        self._changed.set()

    async def wait_free(self) -> None:
        """Return once a slot is free, or when `wake` is called."""
        if self.free == 0:
            self._changed.clear()
            await self._changed.wait()

    def wake(self) -> None:
        """Let a `wait_free` return early (the worker is draining)."""
        self._changed.set()
