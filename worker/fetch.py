"""How a worker takes work from the work queue.

A worker asks a consumer for at most as many messages as it has free slots, and
never stops listening to a pull request the server may still answer: every message
the server hands it is one it runs (or gives back). That rules out a message
delivered into a queue nobody reads, redelivered to another worker after the ack
wait while the stale copy waits here to be started a second time.

- One queue priority level (the default): one consumer, one pull request at a time.
  Its messages are passed on as they arrive (not when the batch is full); a new
  request is made once the server has ended the last one (all delivered, or the
  408 at its expiry) or it is certainly over (expiry plus a margin: a NATS restart).
- Several levels (pkbs.queues.consumer_levels): each pass asks every level's
  consumer, highest first, for what it has right now (`no_wait`: answered at once),
  and an idle worker waits for the next work message to be published.
- No level (every queue stopped): nothing to ask; the worker waits.

`wake()` ends a fetch that is waiting (with TimeoutError), without losing a message:
the worker calls it when qmgr changed the levels, then opens a new source.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from typing import Protocol

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api as jsapi

from pkbs import constants as C
from pkbs.queues import QueueConfig, consumer_levels

# A pull request's lifetime on the server; how long past it a request that got no
# answer is taken for lost (the server restarted, the connection dropped).
REQUEST_EXPIRES = 5.0
LOST_MARGIN = 2.0
# How long one no_wait request may take to be answered.
REPLY_TIMEOUT = 5.0
# Statuses that end a pull request (no messages, expired, conflict, bad request).
ENDS_REQUEST = frozenset({"404", "408", "409", "400"})
# After a publish rang the bell, the stream may not have stored the message yet.
SETTLE_DELAYS = (0.002, 0.01)


class WorkSource(Protocol):
    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """At least one and at most `batch` messages; nats.errors.TimeoutError if none
        came within `timeout`."""

    async def finish(self) -> list[Msg]:
        """Stop asking; the messages already delivered for requests made."""

    def wake(self) -> None:
        """End a waiting fetch soon (TimeoutError if it has no message)."""


def _api(consumer: str) -> str:
    return f"$JS.API.CONSUMER.MSG.NEXT.{C.WORK_STREAM}.{consumer}"


def _status(msg: Msg) -> str | None:
    return msg.headers.get(jsapi.Header.STATUS) if msg.headers else None


class _Inbox:
    """A private reply subject for pull requests, read through a local queue."""

    def __init__(self, nc: NATS, inbox: str) -> None:
        self.nc = nc
        self.inbox = inbox
        self.queue: asyncio.Queue[Msg | None] = asyncio.Queue()  # None: woken
        self.sub: Subscription | None = None

    @classmethod
    async def open(cls, nc: NATS) -> _Inbox:
        box = cls(nc, nc.new_inbox())

        async def arrived(msg: Msg) -> None:
            box.queue.put_nowait(msg)

        box.sub = await nc.subscribe(box.inbox, cb=arrived)
        return box

    async def ask(self, consumer: str, request: dict[str, object]) -> None:
        await self.nc.publish(_api(consumer), json.dumps(request).encode(), reply=self.inbox)

    async def next(self, wait: float) -> Msg | None:
        """The next message: one already here, else the first within `wait` s (None:
        none, or woken)."""
        if not self.queue.empty() or wait <= 0:
            return None if self.queue.empty() else self.queue.get_nowait()
        try:
            return await asyncio.wait_for(self.queue.get(), wait)
        except TimeoutError:
            return None

    def wake(self) -> None:
        self.queue.put_nowait(None)

    async def close(self) -> None:
        sub, self.sub = self.sub, None
        if sub is not None:
            await sub.unsubscribe()


class OneConsumer:
    """Pull requests for at most the free slots, each read until the server ends it.
    The server answers requests in order, so a delivery counts against the oldest
    open one, and a request's end (408 at expiry) ends the oldest too."""

    def __init__(self, inbox: _Inbox, consumer: str) -> None:
        self.inbox = inbox
        self.consumer = consumer
        self.requests: deque[list[float]] = deque()  # [messages still due, lost after]
        self.woken = False

    def _open_for(self) -> int:
        return int(sum(due for due, _ in self.requests))

    def _drop_lost(self, now: float) -> None:
        while self.requests and (self.requests[0][0] <= 0 or self.requests[0][1] <= now):
            self.requests.popleft()

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            now = loop.time()
            self._drop_lost(now)
            want = batch - self._open_for()
            if want > 0:
                expires = int(REQUEST_EXPIRES * 1e9)
                await self.inbox.ask(self.consumer, {"batch": want, "expires": expires})
                self.requests.append([want, now + REQUEST_EXPIRES + LOST_MARGIN])
            lost_at = min(lost for _, lost in self.requests)
            msgs = await self._read(min(deadline, lost_at) - loop.time())
            if msgs:
                return msgs
            if self.woken or loop.time() >= deadline:
                self.woken = False
                raise nats.errors.TimeoutError

    def wake(self) -> None:
        self.woken = True
        self.inbox.wake()

    async def _read(self, wait: float) -> list[Msg]:
        """What has arrived, else what comes first within `wait` seconds."""
        msgs: list[Msg] = []
        while not self.woken and (msg := await self.inbox.next(0 if msgs else wait)) is not None:
            status = _status(msg)
            if status is None:
                msgs.append(msg)
                self._settle(1)
            elif status in ENDS_REQUEST:
                self._settle(None)
        return msgs

    def _settle(self, delivered: int | None) -> None:
        """Count a delivery (or, with None, the end) against the oldest open request."""
        for request in self.requests:
            if request[0] > 0:
                request[0] = 0 if delivered is None else request[0] - delivered
                return

    async def finish(self) -> list[Msg]:
        """What has arrived; then the inbox closes, and the server drops the requests
        still open (nobody listens to their reply subject any more)."""
        msgs = self._drain()
        await self.inbox.close()
        return msgs + self._drain()

    def _drain(self) -> list[Msg]:
        msgs = []
        while not self.inbox.queue.empty():
            msg = self.inbox.queue.get_nowait()
            if msg is not None and _status(msg) is None:
                msgs.append(msg)
        return msgs


class PriorityConsumers:
    """Several consumers, asked in order with `no_wait`. Work published anywhere in
    the work queue wakes an idle worker; work that comes back after an ack wait is
    not published again, so an idle worker also looks every `timeout` seconds."""

    def __init__(self, inbox: _Inbox, consumers: list[str]) -> None:
        self.inbox = inbox
        self.consumers = consumers
        self.new_work = asyncio.Event()
        self.bell: Subscription | None = None
        self.woken = False

    @classmethod
    async def open(cls, nc: NATS, consumers: list[str]) -> PriorityConsumers:
        source = cls(await _Inbox.open(nc), consumers)

        async def ring(msg: Msg) -> None:
            source.new_work.set()

        source.bell = await nc.subscribe(f"{C.WORK_SUBJECT_PREFIX}.>", cb=ring)
        return source

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        rang = False
        while True:
            self.new_work.clear()
            for pause in (0.0, *(SETTLE_DELAYS if rang else ())):
                await asyncio.sleep(pause)
                msgs = await self._pass(batch)
                if msgs:
                    return msgs
            try:
                await asyncio.wait_for(self.new_work.wait(), deadline - loop.time())
            except TimeoutError:
                raise nats.errors.TimeoutError from None
            if self.woken:
                self.woken = False
                raise nats.errors.TimeoutError
            rang = True

    def wake(self) -> None:
        self.woken = True
        self.new_work.set()

    async def _pass(self, batch: int) -> list[Msg]:
        for consumer in self.consumers:
            msgs = await self._take(consumer, batch)
            if msgs:
                return msgs
        return []

    async def _take(self, consumer: str, batch: int) -> list[Msg]:
        """What the consumer has now, up to `batch`; the answer ends with a status
        unless all `batch` came."""
        await self.inbox.ask(consumer, {"batch": batch, "no_wait": True})
        msgs: list[Msg] = []
        while len(msgs) < batch:
            msg = await self.inbox.next(REPLY_TIMEOUT)
            if msg is None:
                break
            status = _status(msg)
            if status is None:
                msgs.append(msg)
            elif status in ENDS_REQUEST:
                break
        return msgs

    async def finish(self) -> list[Msg]:
        if self.bell is not None:
            await self.bell.unsubscribe()
        await self.inbox.close()
        return []  # every no_wait request was read to its end


class NoConsumer:
    """Every queue is stopped: no work to take until the levels change."""

    def __init__(self) -> None:
        self.woken = asyncio.Event()

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.woken.wait(), timeout)
        self.woken.clear()
        raise nats.errors.TimeoutError

    async def finish(self) -> list[Msg]:
        return []

    def wake(self) -> None:
        self.woken.set()


def source_levels(queues: dict[str, QueueConfig]) -> list[str]:
    """The consumers a worker asks, in order, for these queues."""
    return [name for name, _ in consumer_levels(queues)]


async def open_work_source(nc: NATS, queues: dict[str, QueueConfig]) -> WorkSource:
    levels = source_levels(queues)
    if not levels:
        return NoConsumer()
    if len(levels) == 1:
        return OneConsumer(await _Inbox.open(nc), levels[0])
    return await PriorityConsumers.open(nc, levels)
