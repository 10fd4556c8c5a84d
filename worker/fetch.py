"""How a worker takes work from the work queue.

With one queue priority level (the default) there is one consumer and a fetch is a
long poll on it. With several levels (pkbs.queues.consumer_levels) each pass asks
every level's consumer, highest first, for what it has right now (`no_wait`: no
request lingers on the server, so nothing is delivered to a worker that stopped
asking), and an idle worker waits for the next work message to be published.
"""

from __future__ import annotations

import asyncio
import json
from typing import Protocol

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js import api as jsapi

from pkbs import constants as C
from pkbs.queues import QueueConfig, consumer_levels

# How long one no_wait request may take to be answered.
REPLY_TIMEOUT = 5.0


class WorkSource(Protocol):
    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to `batch` messages; nats.errors.TimeoutError if none came in `timeout`."""

    async def close(self) -> None: ...


class OneConsumer:
    def __init__(self, sub: JetStreamContext.PullSubscription) -> None:
        self.sub = sub

    @classmethod
    async def open(cls, js: JetStreamContext, name: str) -> OneConsumer:
        return cls(await js.pull_subscribe_bind(durable=name, stream=C.WORK_STREAM))

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        return await self.sub.fetch(batch=batch, timeout=timeout)

    async def close(self) -> None:
        await self.sub.unsubscribe()


class PriorityConsumers:
    """Several consumers, asked in order. Work published anywhere in the work queue
    wakes an idle worker; work that comes back after an ack wait is not published
    again, so an idle worker also looks every `timeout` seconds."""

    def __init__(self, nc: NATS, names: list[str], replies: Subscription, inbox: str) -> None:
        self.nc = nc
        self.names = names
        self.replies = replies
        self.inbox = inbox
        self.new_work = asyncio.Event()
        self.bell: Subscription | None = None

    @classmethod
    async def open(cls, nc: NATS, names: list[str]) -> PriorityConsumers:
        inbox = nc.new_inbox()
        source = cls(nc, names, await nc.subscribe(inbox), inbox)

        async def ring(msg: Msg) -> None:
            source.new_work.set()

        source.bell = await nc.subscribe(f"{C.WORK_SUBJECT_PREFIX}.>", cb=ring)
        return source

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.new_work.clear()
            for name in self.names:
                msgs = await self._take(name, batch)
                if msgs:
                    return msgs
            try:
                await asyncio.wait_for(self.new_work.wait(), deadline - loop.time())
            except TimeoutError:
                raise nats.errors.TimeoutError from None

    async def _take(self, name: str, batch: int) -> list[Msg]:
        """What the consumer has now, up to `batch`. A late answer to an earlier
        request may be waiting first: its messages are real deliveries, taken too."""
        request = json.dumps({"batch": batch, "no_wait": True}).encode()
        api = f"$JS.API.CONSUMER.MSG.NEXT.{C.WORK_STREAM}.{name}"
        await self.nc.publish(api, request, reply=self.inbox)
        msgs: list[Msg] = []
        while len(msgs) < batch:
            try:
                msg = await self.replies.next_msg(timeout=REPLY_TIMEOUT)
            except TimeoutError:
                break
            status = msg.headers.get(jsapi.Header.STATUS) if msg.headers else None
            if status is None:
                msgs.append(msg)
            elif status not in ("404", "408", "409", "100"):
                raise nats.errors.Error(f"consumer {name}: status {status}")
            else:
                break
        return msgs

    async def close(self) -> None:
        for sub in (self.bell, self.replies):
            if sub is not None:
                await sub.unsubscribe()


async def open_work_source(
    nc: NATS, js: JetStreamContext, queues: dict[str, QueueConfig]
) -> WorkSource:
    levels = [name for name, _ in consumer_levels(queues)]
    if len(levels) == 1:
        return await OneConsumer.open(js, levels[0])
    return await PriorityConsumers.open(nc, levels)
