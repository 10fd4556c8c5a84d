"""The harness's own view of the stack, straight from NATS (not through the API).

- Every change of a job record is a message on `$KV.PKBS_JOBS.j.<n>[.<i>]`; the
  harness subscribes there once (core NATS) and notes when it first saw each job in
  each state. That is how it knows, without polling, when the last job has finished.
- Exact times come from the job records in KV `PKBS_JOBS` (JobRecord: float epoch
  seconds for ctime/stime/obittime), read once per job after it finished.
- `inject_history` writes finished records straight into the KV bucket: it bypasses
  the queue entirely and exists only to give `qstat -x` many records to list.

All network work runs on an asyncio loop in a background thread; the methods are
synchronous for the harness's threads.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

import nats

JOBS_BUCKET = "PKBS_JOBS"
JOB_KEY_PREFIX = "j."
CHANGES = f"$KV.{JOBS_BUCKET}.{JOB_KEY_PREFIX}>"

T = TypeVar("T")


STATE_FIELD = b'"state":"'


def _state(record: bytes) -> str:
    """The state letter of a JobRecord's JSON, without parsing all of it (the harness
    shares the CPUs it measures). The record's own `state` is the last key of that
    name: only `spec`, before it, holds user-named keys (-v variables)."""
    at = record.rfind(STATE_FIELD)
    if at < 0:
        return str(json.loads(record)["state"])
    return record[at + len(STATE_FIELD):at + len(STATE_FIELD) + 1].decode()


class NatsView:
    def __init__(self, url: str, user: str, password: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="bench-nats")
        self.thread.start()
        # number -> {state letter: wall time first seen} (jobs and whole arrays)
        self.seen: dict[int, dict[str, float]] = {}
        # array number -> indices of subjobs seen finished
        self.subjobs_finished: dict[int, set[int]] = {}
        self.events = 0
        self.call(self._connect(url, user, password))

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 600) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _connect(self, url: str, user: str, password: str) -> None:
        self.nc = await nats.connect(servers=[url], user=user, password=password,
                                     name="pkbs-bench", max_reconnect_attempts=-1,
                                     pending_size=64 * 1024 * 1024)
        self.js = self.nc.jetstream(timeout=30)
        self.kv = await self.js.key_value(JOBS_BUCKET)
        await self.nc.subscribe(CHANGES, cb=self._on_event,
                                pending_msgs_limit=10_000_000,
                                pending_bytes_limit=1024 * 1024 * 1024)
        await self.nc.flush()

    async def _on_event(self, msg: Any) -> None:
        now = time.time()
        self.events += 1
        if not msg.data:
            return  # a delete or purge marker
        try:
            # $KV.PKBS_JOBS.j.<number>[.<index>]
            key = msg.subject.split(".")[3:]
            number = int(key[0])
            state = _state(msg.data)
        except (ValueError, KeyError, TypeError, IndexError):
            return
        if len(key) > 1:
            if state == "F":
                self.subjobs_finished.setdefault(number, set()).add(int(key[1]))
            return
        states = self.seen.setdefault(number, {})
        states.setdefault(state, now)

    def close(self) -> None:
        try:
            self.call(self.nc.close(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)

    # -- waiting for jobs ----------------------------------------------------------

    def seen_in(self, number: int, state: str) -> float | None:
        states = self.seen.get(number)
        return None if states is None else states.get(state)

    def wait_states(self, numbers: Iterable[int], state: str = "F", timeout: float = 600,
                    stall: float = 5.0, poll: float = 0.01) -> float:
        """Block until every job was seen in `state`; returns the wall time that happened.
        Core NATS delivery is at most once, so if nothing moves for `stall` seconds the
        records are read from KV instead (nothing is lost, only a little later)."""
        pending = set(numbers)
        deadline = time.monotonic() + timeout
        last_progress = time.monotonic()
        while pending:
            done = {n for n in pending if self.seen_in(n, state) is not None}
            if done:
                pending -= done
                last_progress = time.monotonic()
                continue
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"{len(pending)} jobs did not reach {state} in {timeout}s")
            if now - last_progress > stall:
                records = self.records(pending)
                for number, record in records.items():
                    if record and record.get("state") == state:
                        self.seen.setdefault(number, {}).setdefault(state, time.time())
                last_progress = now
            time.sleep(poll)
        return time.time()

    # -- records ---------------------------------------------------------------------

    def records(self, numbers: Iterable[int], concurrency: int = 256) -> dict[int, dict[str, Any]]:
        return self.call(self._records(list(numbers), concurrency))

    async def _records(self, numbers: list[int], concurrency: int) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}

        async def one(number: int) -> None:
            try:
                entry = await self.kv.get(f"{JOB_KEY_PREFIX}{number}")
            except Exception:
                return
            if entry.value:
                out[number] = json.loads(entry.value)

        for i in range(0, len(numbers), concurrency):
            await asyncio.gather(*(one(n) for n in numbers[i:i + concurrency]))
        return out

    def scan(self) -> tuple[int, float]:
        """Read every record in the bucket (as the listing endpoint does, but without
        parsing): (count, seconds). A lower bound for any listing over the KV."""
        return self.call(self._scan())

    async def _scan(self) -> tuple[int, float]:
        t0 = time.perf_counter()
        count = 0
        watcher = await self.kv.watch(f"{JOB_KEY_PREFIX}>", ignore_deletes=True)
        try:
            while True:
                entry = await watcher.updates(timeout=30)  # type: ignore[no-untyped-call]
                if entry is None:
                    break
                if entry.value:
                    count += 1
                if entry.delta == 0:
                    break
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return count, time.perf_counter() - t0

    def key_count(self) -> int:
        return self.call(self._key_count())

    async def _key_count(self) -> int:
        info = await self.js.stream_info(f"KV_{JOBS_BUCKET}")
        return int(info.state.messages)

    # -- history injection (bypasses the queue) -------------------------------------

    def inject_history(self, template: dict[str, Any], count: int, first: int) -> float:
        """Write `count` finished JobRecords (copies of `template`, a real finished
        record) under keys j.<first>.. j.<first+count-1>, with JetStream acks.
        Returns the seconds it took."""
        return self.call(self._inject(template, count, first), timeout=3600)

    async def _inject(self, template: dict[str, Any], count: int, first: int) -> float:
        t0 = time.perf_counter()
        inbox = f"_INBOX.bench.{time.monotonic_ns()}"
        acked: set[int] = set()
        failed: list[str] = []
        all_acked = asyncio.Event()

        async def on_ack(msg: Any) -> None:
            index = int(msg.subject.rsplit(".", 1)[1])
            data = json.loads(msg.data)
            if "error" in data:
                failed.append(str(data["error"]))
            else:
                acked.add(index)
            if len(acked) + len(failed) >= count:
                all_acked.set()

        sub = await self.nc.subscribe(f"{inbox}.*", cb=on_ack,
                                      pending_msgs_limit=10_000_000,
                                      pending_bytes_limit=1024 * 1024 * 1024)
        server = template.get("server", "pkbs")
        base = dict(template)
        window = 2000  # outstanding publishes before waiting for acks to catch up
        for i in range(count):
            number = first + i
            record = dict(base)
            record["number"] = number
            record["submit_id"] = f"bench-history-{number}"
            if "job_id" in record:
                record["job_id"] = f"{number}.{server}"
            await self.nc.publish(f"$KV.{JOBS_BUCKET}.{JOB_KEY_PREFIX}{number}",
                                  json.dumps(record).encode(), reply=f"{inbox}.{i}")
            if i - len(acked) > window:
                await self.nc.flush()
                while i - len(acked) - len(failed) > window // 2:
                    await asyncio.sleep(0.001)
        await self.nc.flush()
        try:
            await asyncio.wait_for(all_acked.wait(), timeout=120)
        finally:
            await sub.unsubscribe()
        if failed:
            raise RuntimeError(f"{len(failed)} history records not stored: {failed[0]}")
        return time.perf_counter() - t0
