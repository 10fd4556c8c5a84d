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
import contextlib
import json
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, TypeVar

import nats

JOBS_BUCKET = "PKBS_JOBS"
WORK_STREAM = "PKBS_WORK"
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


class _Watch:
    """One wait_states call: the jobs not yet seen in `state`, emptied by the events."""

    def __init__(self, state: str, pending: set[int]) -> None:
        self.state = state
        self.pending = pending
        self.progress = 0
        self.done = threading.Event()
        self.finished_at = time.time()


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
        self._watches: list[_Watch] = []  # of wait_states calls, used on the loop thread
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
        await self._listen()

    async def _listen(self) -> None:
        self.sub = await self.nc.subscribe(CHANGES, cb=self._on_event,
                                           pending_msgs_limit=10_000_000,
                                           pending_bytes_limit=1024 * 1024 * 1024)
        await self.nc.flush()

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """No change events inside: three ~1.4 KB messages per job cost the harness (and
        nats-server, which sends them) CPU the stack under measurement would use. What
        happens meanwhile is read from the KV and the work queue instead
        (`wait_work_done`, `note_records`)."""
        self.call(self.sub.unsubscribe())
        try:
            yield
        finally:
            self.call(self._listen())

    def wait_work_done(self, timeout: float, poll: float = 0.02) -> float:
        """Block until the work queue holds no message (a worker acknowledges a job's
        message after storing its final record); the wall time that was seen. A poll
        of one small request every `poll` s: the figures come from the records' own
        times, so it only bounds how late the harness notices."""
        deadline = time.monotonic() + timeout
        while self.call(self._work_messages()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the work queue did not empty in {timeout}s")
            time.sleep(poll)
        return time.time()

    def wait_record_state(self, number: int, state: str, timeout: float,
                          poll: float = 0.02) -> float:
        """Block until job `number`'s record is in `state`, reading it every `poll` s
        (for use inside `quiet`); the wall time that was seen."""
        deadline = time.monotonic() + timeout
        while self.call(self._record_state(number)) != state:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {number} did not reach {state} in {timeout}s")
            time.sleep(poll)
        return time.time()

    async def _record_state(self, number: int) -> str | None:
        try:
            entry = await self.kv.get(f"{JOB_KEY_PREFIX}{number}")
        except Exception:
            return None
        return _state(entry.value) if entry.value else None

    async def _work_messages(self) -> int:
        info = await self.js.stream_info(WORK_STREAM)
        return int(info.state.messages)

    def note_records(self, records: dict[int, dict[str, Any]]) -> None:
        """Take the states of records read from the KV as seen now (after `quiet`)."""

        async def note() -> None:
            for number, record in records.items():
                if record.get("state"):
                    self._mark(number, str(record["state"]), time.time())

        self.call(note())

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
        self._mark(number, state, now)

    def _mark(self, number: int, state: str, when: float) -> None:
        """Note that job `number` was seen in `state` (on the loop's thread)."""
        states = self.seen.setdefault(number, {})
        if state in states:
            return
        states[state] = when
        for watch in self._watches:
            if watch.state == state and number in watch.pending:
                watch.pending.discard(number)
                watch.progress += 1
                if not watch.pending:
                    watch.finished_at = when
                    watch.done.set()

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
                    stall: float = 5.0) -> float:
        """Block until every job was seen in `state`; returns the wall time that happened.
        Woken by the change events themselves (no polling: the harness shares the CPUs
        it measures). Core NATS delivery is at most once, so if nothing moves for
        `stall` seconds the records are read from KV instead (nothing is lost, only a
        little later)."""
        watch = self.call(self._watch(list(numbers), state))
        deadline = time.monotonic() + timeout
        try:
            progress = watch.progress
            while not watch.done.wait(min(stall, max(deadline - time.monotonic(), 0))):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{len(watch.pending)} jobs did not reach {state} "
                                       f"in {timeout}s")
                if watch.progress == progress:
                    self.call(self._mark_from_kv(watch))
                progress = watch.progress
        finally:
            self.loop.call_soon_threadsafe(self._watches.remove, watch)
        return watch.finished_at

    async def _watch(self, numbers: list[int], state: str) -> _Watch:
        pending = {n for n in numbers if state not in self.seen.get(n, {})}
        watch = _Watch(state, pending)
        self._watches.append(watch)
        if not pending:
            watch.done.set()
        return watch

    async def _mark_from_kv(self, watch: _Watch) -> None:
        for number, record in (await self._records(sorted(watch.pending), 256)).items():
            if record and record.get("state") == watch.state:
                self._mark(number, watch.state, time.time())

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
