"""CPU slots of one worker: a job asking ncpus=N holds N of them."""

from __future__ import annotations

import asyncio


class Slots:
    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._changed = asyncio.Condition()

    @property
    def free(self) -> int:
        return self.total - self.used

    async def acquire(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.free >= count)
            self.used += count

    def try_acquire(self, count: int) -> bool:
        if self.free < count:
            return False
        self.used += count
        return True

    async def release(self, count: int) -> None:
        async with self._changed:
            self.used -= count
            self._changed.notify_all()

    async def wait_free(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.free > 0)
