"""An in-memory index of every job, fed by the KV bucket's change stream.

Each dispatcher process follows the stream behind KV `PKBS_JOBS` (`KV_PKBS_JOBS`)
with an ordered push consumer: first the last message of every key, then every
change as it is stored. For each job it keeps only what qstat's tables and their
filters need - owner, state, queue, and the table's columns already encoded as
JSON - never the record itself (no Variable_List): ~0.4 KB per job. It also
counts unfinished jobs per queue and state (qstat -Q/-q/-B).

It cannot go stale: it is nothing but the change stream applied in order. A listing
first asks the stream for its last sequence and waits until the index has applied
that far (`sync`), so a job stored through any dispatcher (or worker) before the
listing began is in it: read-your-writes across replicas. nats-py's ordered consumer
recreates itself after a gap or a lost server (missed heartbeats) from the last
stream sequence it delivered; a gap it cannot see (a message dropped as a slow
consumer) is caught here by the consumer sequence and the subscription is made
again from the last applied sequence.

The JSON of each row is built once, when the job changes; a listing only filters,
orders and joins bytes. Columns (`TABLE_COLUMNS`, `SUMMARY_COLUMNS`) are the
attributes of `pkbs.pbsattrs.SUMMARY_ATTRIBUTES`, with the values `job_attributes`
gives them (tests compare the two, field by field).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any, Literal, NamedTuple

import nats.errors
import pydantic_core
from nats.js import api as jsapi
from nats.js import errors as jserr

from pkbs import constants as C
from pkbs.errors import ServiceUnavailable
from pkbs.jobstore import JobStore
from pkbs.limits import QueuedCounts
from pkbs.pbsattrs import _exec_host, resource_list
from pkbs.pbsvalues import format_job_id, normalize_resource
from pkbs.states import ACTIVE_STATES, FINAL_STATES, JobState, shown_state

log = logging.getLogger("pkbs.dispatcher.jobindex")

STREAM = f"KV_{C.JOBS_BUCKET}"
SUBJECT_PREFIX = C.JOBS_SUBJECT_PREFIX
KEY_PREFIX = SUBJECT_PREFIX + C.JOB_KEY_PREFIX
SYNC_TIMEOUT = 5.0  # seconds a listing waits for the index to catch up, then 503
HEARTBEAT = 1.0  # ordered consumer idle heartbeat: a lost consumer is remade in ~2-3 s
CHECK_INTERVAL = 0.5  # while waiting, ask the consumer itself this often (see _caught_up)

View = Literal["table", "summary"]
# Columns of the compact views: "table" is what the default qstat table prints,
# "summary" adds what the alternate tables (-a -n -s -1 ...) print.
TABLE_COLUMNS: tuple[str, ...] = (
    "id",
    "Job_Name",
    "Job_Owner",
    "resources_used.cput",
    "job_state",
    "queue",
)
EXTRA_COLUMNS: tuple[str, ...] = (
    "session_id",
    "Resource_List.nodect",
    "Resource_List.ncpus",
    "Resource_List.mem",
    "Resource_List.cput",
    "Resource_List.walltime",
    "resources_used.walltime",
    "exec_host",
    "comment",
)
SUMMARY_COLUMNS = TABLE_COLUMNS + EXTRA_COLUMNS
COLUMNS: dict[str, tuple[str, ...]] = {"table": TABLE_COLUMNS, "summary": SUMMARY_COLUMNS}

_FINAL = frozenset(s.value for s in FINAL_STATES)
_ACTIVE = frozenset(s.value for s in ACTIVE_STATES)
_DELETES = frozenset({"DEL", "PURGE"})
_MARKER_DELETES = frozenset({"MaxAge", "Purge", "Remove"})  # nats-server 2.11+ markers
_INDEX_SHIFT = 32  # entry key: number << 32 | (index + 1); 0 for a job or an array
_INDEX_MASK = (1 << _INDEX_SHIFT) - 1


class Entry(NamedTuple):
    """One job as the index keeps it. `head` / `tail` are the JSON of the row's
    table columns and of its extra columns, without brackets."""

    owner: str
    state: str
    queue: str
    head: bytes
    tail: bytes


class Array(NamedTuple):
    """What the subjobs of an array that have no record (never started) are rendered
    from: the array's row with state Q (X once the array has ended: deleted, they
    never will) and no comment, the id cut around the index."""

    indices: range
    id_prefix: bytes  # `"12[`
    head_rest: bytes  # `].pkbs","name","owner",...`
    tail: bytes
    head_rest_ended: bytes  # the same with state X
    max_run: int | None  # its max_run_subjobs


def _subjob_template(
    spec_array: str, head: list[Any], tail: list[Any], max_run: int | None
) -> Array:
    """What JobRecord.subjob gives a queued subjob: the array's values, state Q, no
    comment; its id `<n>[<index>].<server>`."""
    id_prefix, _, id_suffix = pydantic_core.to_json(head[0]).partition(b"[]")

    def rest(state: JobState) -> bytes:
        return b"]" + id_suffix + b"," + _dumps([*head[1:4], state.value, head[5]])

    return Array(
        _array_range(spec_array),
        id_prefix + b"[",
        rest(JobState.QUEUED),
        _dumps([*tail[:-1], None]),
        rest(JobState.EXPIRED),
        max_run,
    )


def _dumps(values: Iterable[Any]) -> bytes:
    """JSON items without the brackets."""
    return pydantic_core.to_json(list(values))[1:-1]


def _array_range(text: str) -> range:
    """JobSpec.array_indices of `start-end[:step]`."""
    bounds, _, step = text.partition(":")
    start, _, end = bounds.partition("-")
    return range(int(start), int(end) + 1, int(step or 1) or 1)


_REQUESTED = ("nodect", "ncpus", "mem", "cput", "walltime")
# resources_used values and exec_host as job_attributes shows them: also pure, and
# with few distinct values.
_normalized = lru_cache(maxsize=8192)(normalize_resource)
_exec_host_text = lru_cache(maxsize=8192)(_exec_host)


@lru_cache(maxsize=4096)
def _requested(resources: tuple[tuple[str, str], ...]) -> tuple[tuple[str | None, ...], str]:
    """nodect, ncpus, mem, cput, walltime of Resource_List (pbsattrs.resource_list),
    and the ncpus exec_host is written with. A pure function of the job's
    resources, which jobs mostly share."""
    res = resource_list(dict(resources))
    return tuple(res.get(k) for k in _REQUESTED), res.get("ncpus", "1")


def summarise(data: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    """A record (the KV value, parsed JSON) -> its table and extra column values, as
    pkbs.pbsattrs.job_attributes gives them (None: not set)."""
    spec = data["spec"]
    owner = data["owner"]
    index = data.get("index")
    state = data["state"]
    server = data["server"]
    host = spec.get("submit_host", "localhost")
    extras = spec.get("attributes") or {}
    array = spec.get("array") is not None
    job_id = format_job_id(data["number"], server, index=index, array=array)
    if index is not None:
        state = shown_state(JobState(state), subjob=True).value
    used = data.get("resources_used") or {}
    cput = used.get("cput")
    walltime_used = used.get("walltime")
    requested, slot_ncpus = _requested(tuple((spec.get("resources") or {}).items()))
    exec_host = data.get("exec_host")
    exec_host = _exec_host_text(exec_host, slot_ncpus) if exec_host else extras.get("exec_host")
    head = [
        job_id,
        spec["name"],
        owner if "@" in owner else f"{owner}@{host}",
        None if cput is None else _normalized("cput", cput),
        state,
        spec.get("queue", C.DEFAULT_QUEUE),
    ]
    tail = [
        data.get("session_id"),
        *requested,
        None if walltime_used is None else _normalized("walltime", walltime_used),
        exec_host,
        data.get("comment"),
    ]
    return head, tail


def parse_key(key: str) -> tuple[int, int | None] | None:
    """`12` -> (12, None), `12.3` -> (12, 3) (after the `j.` prefix); None otherwise."""
    number, dot, index = key.partition(".")
    if not _digits(number) or (dot and not (_digits(index) and int(index) < _INDEX_MASK)):
        return None
    return int(number), (int(index) if dot else None)


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def entry_key(number: int, index: int | None) -> int:
    return number << _INDEX_SHIFT | (0 if index is None else index + 1)


class JobIndex:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.js = store.js
        self._jobs: dict[int, Entry] = {}
        self._arrays: dict[int, Array] = {}
        self._subjobs: dict[int, set[int]] = {}  # array number -> indices with a record
        # Unfinished array number -> {index of an ended subjob: it did not exit 0}.
        self._ended: dict[int, dict[int, bool]] = {}
        # Called with an unfinished array's number when one of its subjobs has ended,
        # or started or stopped running otherwise (see dispatcher/arrays.py, which keeps
        # the array's record up to date).
        self.on_subjob_ended: Callable[[int], None] | None = None
        self.on_subjob_running: Callable[[int], None] | None = None
        # Unfinished array number -> {index: state} of its subjobs whose record is not
        # finished (running, or queued again).
        self._live: dict[int, dict[int, str]] = {}
        self._counts: dict[str, Counter[str]] = {}  # unfinished jobs: queue -> state -> n
        # Unfinished jobs and arrays (not subjobs) per owner: number -> queue (max_queued).
        self._owned: dict[str, dict[int, str]] = {}
        # Finished jobs and arrays (not subjobs): number -> when they ended (obittime),
        # for history's expiry (pkbs/retention.py).
        self._ended_at: dict[int, float] = {}
        self._applied = 0  # stream sequence of the last message applied
        self._dseq = 0  # consumer sequence of the last message applied
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tie = itertools.count()
        self._sub: Any = None
        self._replacing = False  # a lost message was seen: a new subscription is coming
        self._loaded = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- life cycle ------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """The initial load is done (every record stored before start is in)."""
        return self._loaded.is_set()

    @property
    def applied(self) -> int:
        return self._applied

    def __len__(self) -> int:
        return len(self._jobs)

    async def start(self) -> None:
        """Subscribe (last message per key, then live) and load in the background."""
        info = await self.js.stream_info(STREAM)
        await self._subscribe(None)
        self._spawn(self._load(int(info.state.last_seq)))

    async def stop(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # connection closing already
                log.debug("unsubscribe failed", exc_info=True)
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters.clear()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load(self, last_seq: int) -> None:
        started = time.monotonic()
        while not self._loaded.is_set():
            try:
                await self.wait_applied(last_seq, 60.0)
            except ServiceUnavailable:
                log.warning("job index still loading: %d jobs so far", len(self._jobs))
                continue
            self._loaded.set()
        log.info(
            "job index loaded: %d jobs in %.2f s",
            len(self._jobs),
            time.monotonic() - started,
            extra={"jobs": len(self._jobs)},
        )

    async def _subscribe(self, start_seq: int | None) -> None:
        """The ordered consumer: from `start_seq` on, or the last message of each key."""
        config = jsapi.ConsumerConfig(inactive_threshold=60.0)
        if start_seq is None:
            config.deliver_policy = jsapi.DeliverPolicy.LAST_PER_SUBJECT
        else:
            config.deliver_policy = jsapi.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start_seq
        # The whole bucket, not only `j.>`: the stream's last sequence may belong to
        # any key, and `sync` waits for it.
        self._sub = await self.js.subscribe(
            SUBJECT_PREFIX + ">",
            stream=STREAM,
            cb=self._on_msg,
            config=config,
            ordered_consumer=True,
            idle_heartbeat=HEARTBEAT,
        )
        self._dseq = 0
        self._replacing = False

    async def _resubscribe(self, old: Any) -> None:
        """A message was lost between the server and us: start again after the last
        message applied (the index is kept; every later change is replayed)."""
        try:
            await old.unsubscribe()
        except Exception:
            log.debug("unsubscribe failed", exc_info=True)
        delay = 0.1
        while not self._closing:
            try:
                await self._subscribe(self._applied + 1)
                return
            except Exception:  # NATS away: the client reconnects meanwhile
                log.warning("job index: subscribe failed, retrying", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- applying changes ------------------------------------------------------------

    async def _on_msg(self, msg: Any) -> None:
        if self._replacing:
            return  # the new subscription delivers it again
        if not msg.reply:
            return  # not a message of the stream
        tokens = msg.reply.split(".")
        if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<n>.<sseq>.<dseq>.<ts>.<pending>
            sseq, dseq = int(tokens[5]), int(tokens[6])
        else:  # the longer form with domain and account: let nats-py read it
            meta = msg.metadata
            sseq, dseq = meta.sequence.stream, meta.sequence.consumer
        if dseq != 1 and dseq != self._dseq + 1:
            # nats-py recreates its consumer (dseq restarts at 1) after gaps it sees;
            # this one it did not (a dropped message): subscribe again.
            log.warning("job index: consumer sequence %d after %d, resubscribing", dseq, self._dseq)
            self._replacing = True
            self._spawn(self._resubscribe(self._sub))
            return
        self._dseq = dseq
        if sseq <= self._applied:
            return  # already applied (a consumer recreated from an earlier sequence)
        headers = msg.headers
        op = None
        if headers:
            op = headers.get("KV-Operation")
            if op is None and headers.get("Nats-Marker-Reason") in _MARKER_DELETES:
                op = "DEL"
        self.apply(msg.subject, msg.data if op not in _DELETES else None)
        self._applied = sseq
        if self._waiters:
            self._wake()

    def apply(self, subject: str, value: bytes | None) -> None:
        """Store the new value of a key (None: deleted or purged)."""
        if not subject.startswith(KEY_PREFIX):
            return
        parsed = parse_key(subject[len(KEY_PREFIX) :])
        if parsed is None:
            return
        number, index = parsed
        key = entry_key(number, index)
        old = self._jobs.pop(key, None)
        if old is not None:
            self._count(old, -1)
            if index is None:
                self._disown(old.owner, number)
        was_running = False
        if index is None:
            self._arrays.pop(number, None)
            self._ended_at.pop(number, None)
            if value is None:
                self._ended.pop(number, None)
                self._live.pop(number, None)
        else:
            self._ended.get(number, {}).pop(index, None)
            was_running = self._live.get(number, {}).pop(index, None) in _ACTIVE
            if value is None:
                have = self._subjobs.get(number)
                if have is not None:
                    have.discard(index)
                    if not have:
                        del self._subjobs[number]
        if not value:
            return
        try:
            data = pydantic_core.from_json(value)
            head, tail = summarise(data)
            entry = Entry(
                sys.intern(str(data["owner"])),
                sys.intern(str(data["state"])),
                sys.intern(str(head[5])),
                _dumps(head),
                _dumps(tail),
            )
            array = None
            if index is None and data["spec"].get("array") is not None:
                limit = str((data["spec"].get("attributes") or {}).get("max_run_subjobs", ""))
                max_run = int(limit) if limit.isdigit() and int(limit) > 0 else None
                array = _subjob_template(data["spec"]["array"], head, tail, max_run)
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("job index: unreadable record %s", subject, exc_info=True)
            return
        self._jobs[key] = entry
        self._count(entry, 1)
        if index is None and entry.state not in _FINAL:
            self._owned.setdefault(entry.owner, {})[number] = entry.queue
        if index is None and entry.state in _FINAL:
            self._ended_at[number] = float(data.get("obittime") or data.get("mtime") or 0.0)
        if index is not None:
            self._subjobs.setdefault(number, set()).add(index)
            parent = self._jobs.get(entry_key(number, None))
            unfinished = parent is None or parent.state not in _FINAL
            running = entry.state in _ACTIVE and unfinished
            if entry.state not in _FINAL and unfinished:
                self._live.setdefault(number, {})[index] = entry.state
            # Kept even before the array's own record is applied (the initial load
            # delivers keys in the order of their last change).
            if entry.state in _FINAL and unfinished:
                self._ended.setdefault(number, {})[index] = data.get("exit_status") != 0
                if parent is not None and self.on_subjob_ended is not None:
                    self.on_subjob_ended(number)
            elif running != was_running and parent is not None and unfinished and (
                self.on_subjob_running is not None
            ):
                self.on_subjob_running(number)
        elif array is not None:
            self._arrays[number] = array
            if entry.state in _FINAL:
                self._ended.pop(number, None)
                self._live.pop(number, None)

    def _unfinished_array(self, number: int) -> bool:
        entry = self._jobs.get(entry_key(number, None))
        return entry is not None and number in self._arrays and entry.state not in _FINAL

    def array_tally(self, number: int) -> tuple[int, int, int]:
        """(subjobs ended, of which not with exit status 0, subjobs in all) of an
        unfinished array, from the subjob records applied so far."""
        ended = self._ended.get(number, {})
        template = self._arrays.get(number)
        size = len(template.indices) if template is not None else 0
        return len(ended), sum(ended.values()), size

    def array_running(self, number: int) -> int:
        """Subjobs of an unfinished array running (R, S or E) now."""
        return sum(state in _ACTIVE for state in self._live.get(number, {}).values())

    def subjob_load(self, number: int) -> tuple[set[int], int]:
        """(indices of the array's subjobs that have a record, how many of those are
        not finished): what JobControl.top_up needs."""
        return set(self._subjobs.get(number, ())), len(self._live.get(number, {}))

    def max_run_subjobs(self, number: int) -> int | None:
        template = self._arrays.get(number)
        return None if template is None else template.max_run

    def limited_arrays(self) -> list[int]:
        """Unfinished arrays with max_run_subjobs."""
        return [n for n, a in self._arrays.items() if a.max_run and self._unfinished_array(n)]

    def ended_arrays(self) -> list[int]:
        """Unfinished arrays whose every subjob has ended (their records say otherwise
        until someone counts them: dispatcher/arrays.py)."""
        return [
            number
            for number in self._ended
            if self._unfinished_array(number)
            and self.array_tally(number)[0] >= self.array_tally(number)[2]
        ]

    def _disown(self, owner: str, number: int) -> None:
        owned = self._owned.get(owner)
        if owned is not None:
            owned.pop(number, None)
            if not owned:
                del self._owned[owner]

    async def wait_loaded(self) -> None:
        await self._loaded.wait()

    def _count(self, entry: Entry, delta: int) -> None:
        if entry.state in _FINAL:
            return
        counts = self._counts.setdefault(entry.queue, Counter())
        counts[entry.state] += delta
        if counts[entry.state] <= 0:
            del counts[entry.state]

    # -- read-your-writes ------------------------------------------------------------

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._applied:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    async def sync(self, timeout: float = SYNC_TIMEOUT) -> None:
        """Return once the index holds every change stored before this call (the
        stream's last sequence now); ServiceUnavailable after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        try:
            info = await asyncio.wait_for(self.js.stream_info(STREAM), timeout)
        except (nats.errors.Error, jserr.Error, TimeoutError) as exc:
            raise ServiceUnavailable("job store unavailable, retry") from exc
        await self.wait_applied(int(info.state.last_seq), deadline - time.monotonic())
        if not self._loaded.is_set():
            await self._wait_loaded(deadline)

    async def _wait_loaded(self, deadline: float) -> None:
        try:
            await asyncio.wait_for(self._loaded.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise ServiceUnavailable("job index is loading, retry") from None

    async def wait_applied(self, target: int, timeout: float) -> None:
        """Wait (an event per target, no polling of the index) until the stream
        sequence `target` is applied."""
        deadline = time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        while self._applied < target:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServiceUnavailable(
                    f"job index at sequence {self._applied} of {target}, retry"
                )
            fut: asyncio.Future[None] = loop.create_future()
            heapq.heappush(self._waiters, (target, next(self._tie), fut))
            try:
                await asyncio.wait_for(fut, min(left, CHECK_INTERVAL))
            except TimeoutError:
                if await self._caught_up():
                    return

    async def _caught_up(self) -> bool:
        """The consumer has nothing left to deliver and everything it delivered is
        applied: true even when the stream's last message is gone (e.g. a delete
        marker purged), which the sequence alone never reaches."""
        sub = self._sub
        if sub is None:
            return False
        try:
            info = await sub.consumer_info()
        except Exception:  # being recreated, or NATS away
            return False
        delivered = int(info.delivered.stream_seq or 0) if info.delivered else 0
        return (
            int(info.num_pending or 0) == 0
            and sub.pending_msgs == 0  # nothing delivered waits in the client's queue
            and delivered <= self._applied
            and not self._replacing
        )

    # -- reading ---------------------------------------------------------------------

    def unfinished(self) -> list[tuple[int, int | None]]:
        """(number, index) of every job, array and subjob record not finished."""
        return [
            (key >> _INDEX_SHIFT, (key & _INDEX_MASK) - 1 if key & _INDEX_MASK else None)
            for key, entry in self._jobs.items()
            if entry.state not in _FINAL
        ]

    def running(self) -> list[tuple[int, int | None]]:
        """(number, index) of every job and subjob running (R, E)."""
        return [
            (key >> _INDEX_SHIFT, (key & _INDEX_MASK) - 1 if key & _INDEX_MASK else None)
            for key, entry in self._jobs.items()
            if entry.state in _ACTIVE
        ]

    def _weight(self, number: int) -> int:
        """What a job counts for max_queued: 1, or an array its subjobs not ended."""
        array = self._arrays.get(number)
        if array is None:
            return 1
        return max(0, len(array.indices) - len(self._ended.get(number, {})))

    def queued_counts(self, owner: str, queue: str, totals: bool) -> QueuedCounts:
        """Jobs not finished for a max_queued check (pkbs/limits.py); everybody's
        only with `totals` (they take a pass over every unfinished job)."""
        mine = self._owned.get(owner, {})
        user_all = sum(self._weight(n) for n in mine)
        user_queue = sum(self._weight(n) for n, q in mine.items() if q == queue)
        every_all = every_queue = 0
        if totals:
            for owned in self._owned.values():
                for number, where in owned.items():
                    weight = self._weight(number)
                    every_all += weight
                    every_queue += weight if where == queue else 0
        return QueuedCounts(every_all, user_all, every_queue, user_queue)

    def ended_before(self, cutoff: float) -> list[int]:
        """Numbers of the finished jobs and arrays that ended before `cutoff`."""
        return sorted(number for number, ended in self._ended_at.items() if ended < cutoff)

    def has(self, number: int) -> bool:
        """Whether job or array `number` has a record."""
        return entry_key(number, None) in self._jobs

    def held(self) -> list[int]:
        """Numbers of the held jobs and arrays."""
        return [
            key >> _INDEX_SHIFT
            for key, entry in self._jobs.items()
            if entry.state == JobState.HELD.value and not key & _INDEX_MASK
        ]

    def forget(self, number: int) -> None:
        """Drop a job whose record is gone (its purge marker missed: the sweep saw
        it gone), and its subjobs."""
        for index in list(self._subjobs.get(number, ())):
            self.apply(f"{KEY_PREFIX}{number}.{index}", None)
        self.apply(f"{KEY_PREFIX}{number}", None)

    def counts(self) -> dict[str, Counter[str]]:
        """Unfinished jobs (subjobs with a record included) per queue and state."""
        return {queue: Counter(counts) for queue, counts in self._counts.items()}

    def rows(
        self,
        view: View,
        *,
        owner: str | None,
        users: Iterable[str] | None,
        history: bool,
        subjobs: bool,
        since: float | None = None,
    ) -> list[bytes]:
        """The JSON rows (`[...]`) of a listing, ordered by number and index: jobs of
        `owner` (None: everybody's) among `users`, finished ones with `history` (those
        that ended at `since` or later), subjobs with `subjobs` - an array's subjobs
        without a record (never started) as rows made from the array's: queued, or with
        `history` of an ended array, expired (X)."""
        wanted = set(users) if users else None
        expired = set(self.ended_before(since)) if since is not None and history else set()
        full = view == "summary"
        out: list[bytes] = []
        jobs = self._jobs
        expanded: dict[int, range] = {}  # arrays whose subjobs are listed already
        for key in sorted(jobs):
            entry = jobs[key]
            if (owner is not None and entry.owner != owner) or (
                wanted is not None and entry.owner not in wanted
            ):
                continue
            number, sub = key >> _INDEX_SHIFT, key & _INDEX_MASK
            if number in expired:
                continue
            if sub:  # a subjob's record, unless listed with its array already
                span = expanded.get(number)
                listed = span is not None and sub - 1 in span
                if subjobs and not listed and (history or entry.state not in _FINAL):
                    out.append(_row(entry, full))
                continue
            if history or entry.state not in _FINAL:
                out.append(_row(entry, full))
            array = self._arrays.get(number) if subjobs else None
            ended = entry.state in _FINAL
            if array is not None and (history or not ended):
                expanded[number] = array.indices
                self._subjob_rows(number, array, out, full, history, ended)
        return out

    def _subjob_rows(
        self, number: int, array: Array, out: list[bytes], full: bool, history: bool,
        ended: bool,
    ) -> None:
        """The subjobs of an array in index order: its record where a subjob has one,
        else a queued row (an expired one if the array has `ended`)."""
        have = self._subjobs.get(number, set())
        jobs = self._jobs
        prefix = b"[" + array.id_prefix
        head_rest = array.head_rest_ended if ended else array.head_rest
        rest = head_rest + (b"," + array.tail + b"]" if full else b"]")
        for index in array.indices:
            if index not in have:
                out.append(prefix + str(index).encode() + rest)
                continue
            entry = jobs.get(entry_key(number, index))
            if entry is not None and (history or entry.state not in _FINAL):
                out.append(_row(entry, full))


def _row(entry: Entry, full: bool) -> bytes:
    if full:
        return b"[" + entry.head + b"," + entry.tail + b"]"
    return b"[" + entry.head + b"]"


def listing_body(server: str, view: View, rows: list[bytes]) -> bytes:
    """GET /v1/jobs?view=...: `{"server", "timestamp", "columns", "rows"}`."""
    head = json.dumps(
        {"server": server, "timestamp": int(time.time()), "columns": list(COLUMNS[view])}
    ).encode()
    return head[:-1] + b',"rows":[' + b",".join(rows) + b"]}"
