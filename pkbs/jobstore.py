"""The JetStream/KV access layer: submissions, the work queue and job records.

- PKBS_SUBMIT keeps each submission's payload; its sequence is the job number
  and `Nats-Msg-Id` (the client's submit id) makes retried submits idempotent.
- PKBS_WORK is a work queue of small WorkItem messages, one per runnable job (a
  large array's later subjobs wait in "span" messages until a worker expands them).
- PKBS_JOBS (KV) holds one JobRecord per job; every change is compare-and-set on
  the revision and runs through pkbs.states. Each change is a message on
  `$KV.PKBS_JOBS.j.<n>[.<i>]`: whoever wants to hear of changes (the dispatcher's
  job index, `wait`, the bench) listens there; nothing is published twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js import api as jsapi
from nats.js import errors as jserr
from nats.js.kv import KeyValue

from pkbs import constants as C
from pkbs.errors import Conflict, ServiceUnavailable, StoreFull, UnknownJob
from pkbs.models import JobRecord, WorkItem
from pkbs.pbsvalues import format_job_id
from pkbs.queues import QueueConfig, consumer_levels
from pkbs.serverconfig import ServerConfig
from pkbs.settings import Settings
from pkbs.storage import Capacity, is_store_full, stream_limit

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 50
PUBLISH_WINDOW = 4096  # async publishes in flight while queueing an array
DISCARD_MARKER_TTL = 600.0  # seconds the marker of a refused submission's record stays
INLINE_PAYLOAD_BYTES = 4096  # payloads up to this size travel in the work message too
# A retried submission (same submit id) within this many seconds finds its payload.
SUBMIT_DUPLICATE_WINDOW = 600.0
# PKBS_OUTPUT's bounds: chunks kept per job and stream, the largest chunk (a
# catch-up of what a job wrote before it was watched, plus a marker), their age.
OUTPUT_MSGS_PER_SUBJECT = 200
OUTPUT_MAX_MSG_BYTES = 512 * 1024
OUTPUT_MAX_AGE_SECONDS = 900.0
WRONG_LAST_SEQUENCE = 10071  # JetStream's err_code: the expected last sequence did not match
# JetStream's err_codes for a sequence that holds no message (any more).
NO_MESSAGE = (10037, 10043, 10057)
# A purged record's marker tells every job index that the record is gone, then
# expires by itself (a per-message TTL) so that no marker stays for ever.
PURGE_HEADERS = {"KV-Operation": "PURGE", jsapi.Header.ROLLUP: "sub"}


def _store_full(exc: BaseException) -> StoreFull:
    return StoreFull.because(getattr(exc, "description", None) or "JetStream refused a write")


def job_key(number: int, index: int | None = None) -> str:
    """KV key of a job (`j.12`) or of one subjob of an array (`j.12.7`)."""
    key = f"{C.JOB_KEY_PREFIX}{number}"
    return key if index is None else f"{key}.{index}"


def output_subject(number: int, index: int | None, stream: str) -> str:
    """Subject of a job's live stdout or stderr (`pkbs.output.12.stdout`,
    `pkbs.output.12.7.stderr`)."""
    key = number if index is None else f"{number}.{index}"
    return f"{C.OUTPUT_SUBJECT_PREFIX}.{key}.{stream}"


def watch_subject(number: int, index: int | None) -> str:
    """Subject of the request that asks a job's worker to publish its output."""
    key = number if index is None else f"{number}.{index}"
    return f"{C.OUTPUT_WATCH_PREFIX}.{key}"


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    user: str
    role: str = "user"  # "user" | "admin" | "job"
    job: int | None = None  # set for job-scoped tokens
    expires: float | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


async def connect_nats(settings: Settings, name: str) -> NATS:
    async def on_error(err: Exception) -> None:
        log.warning("nats error: %s", err)

    options: dict[str, Any] = {
        "servers": [settings.nats_url],
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "error_cb": on_error,
        "connect_timeout": 5,
        "ping_interval": settings.nats_ping_seconds,
        "max_outstanding_pings": 2,
    }
    if settings.nats_user and settings.nats_password:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password.get_secret_value()
    return await nats.connect(**options)


def _split_chunk(indices: Iterable[int], size: int) -> tuple[Sequence[int], Sequence[int]]:
    if isinstance(indices, range):
        return indices[:size], indices[size:]
    listed = list(indices)
    return listed[:size], listed[size:]


def spans(indices: Sequence[int], step: int) -> list[tuple[int, int]]:
    """Runs of consecutive indices (in steps of `step`) as (first, last) pairs."""
    if isinstance(indices, range) and indices.step == step:
        return [(indices[0], indices[-1])] if indices else []
    runs: list[tuple[int, int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + step:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


class JobStore:
    def __init__(
        self, nc: NATS, js: JetStreamContext, jobs: KeyValue, tokens: KeyValue, settings: Settings
    ) -> None:
        self.nc = nc
        self.js = js
        self.jobs = jobs
        self.tokens = tokens
        self.settings = settings
        # What a submission must fit in (pkbs/storage.py).
        self.capacity = Capacity(js, settings.max_store_bytes)

    @classmethod
    async def open(cls, settings: Settings, name: str, arrange: bool = False) -> JobStore:
        """Connect and make sure the streams and buckets exist. `arrange`: also make
        the workers' consumers match the queues' priorities (the dispatcher's job)."""
        nc = await connect_nats(settings, name)
        js = nc.jetstream(timeout=10)
        jobs, tokens = await ensure_layout(js, settings, arrange)
        return cls(nc, js, jobs, tokens, settings)

    async def close(self) -> None:
        await self.nc.drain()

    # -- records -----------------------------------------------------------

    async def get(self, number: int, index: int | None = None) -> tuple[JobRecord, int]:
        try:
            entry = await self.jobs.get(job_key(number, index))
        except (jserr.KeyNotFoundError, jserr.KeyDeletedError):
            job_id = format_job_id(number, self.settings.server_name, index=index)
            raise UnknownJob(job_id=job_id) from None
        assert entry.value is not None and entry.revision is not None
        return JobRecord.model_validate_json(entry.value), entry.revision

    async def update(
        self,
        number: int,
        change: Callable[[JobRecord], JobRecord | None],
        index: int | None = None,
    ) -> JobRecord | None:
        """Compare-and-set loop. `change` returns the new record, or None to leave it."""
        result = await self.cas(number, change, index)
        return None if result is None else result[0]

    async def cas(
        self,
        number: int,
        change: Callable[[JobRecord], JobRecord | None],
        index: int | None = None,
        known: tuple[JobRecord, int] | None = None,
    ) -> tuple[JobRecord, int] | None:
        """`update`, returning the new revision too. With `known` (a record and its
        revision, e.g. from this process's last write) the first try reads nothing;
        `change` declining to change is only final on the stored record."""
        for _ in range(CAS_ATTEMPTS):
            fresh = known is None
            record, revision = known if known is not None else await self.get(number, index)
            known = None
            new = change(record)
            if new is None:
                if not fresh:
                    continue  # decided on a copy that may be stale: decide on the stored one
                return None
            new = new.model_copy(update={"mtime": time.time()})
            try:
                new_revision = await self.jobs.update(
                    job_key(number, index), new.model_dump_json().encode(), last=revision
                )
            except jserr.KeyWrongLastSequenceError:
                continue
            return new, int(new_revision)
        raise Conflict(job_id=format_job_id(number, self.settings.server_name))

    async def create_subjob(self, record: JobRecord) -> int | None:
        """Store a subjob's first record; its revision, or None if it exists already."""
        assert record.index is not None
        try:
            revision = await self.jobs.create(
                job_key(record.number, record.index), record.model_dump_json().encode()
            )
        except jserr.KeyWrongLastSequenceError:
            return None
        return int(revision)

    async def iter_records(self) -> AsyncIterator[JobRecord]:
        """Latest value of every job record: one ordered pass over the KV (a consumer
        delivering the last message per key), no replay of history."""
        info = await self.js.stream_info(f"KV_{C.JOBS_BUCKET}")
        if not info.state.messages:
            return
        watcher = await self.jobs.watch(f"{C.JOB_KEY_PREFIX}>")
        try:
            while True:
                entry = await watcher.updates(timeout=10)  # type: ignore[no-untyped-call]
                # The "initial values done" marker (None) can come early; the pending
                # count of the last delivered entry is what ends the pass.
                if entry is None:
                    continue
                if entry.value and entry.operation is None:
                    yield JobRecord.model_validate_json(entry.value)
                if entry.delta == 0:
                    return
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    # -- submission ----------------------------------------------------------

    async def create(
        self, payload: bytes, submit_id: str, build: Callable[[int], JobRecord]
    ) -> tuple[JobRecord, int, bool]:
        """Store the payload and create the record `build(number)`: (record, its
        revision, duplicate). Idempotent per submit_id: a retry returns the record
        made the first time (duplicate=True)."""
        try:
            ack = await self.js.publish(
                C.SUBMIT_SUBJECT, payload, headers={C.MSG_ID_HEADER: submit_id}
            )
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise ServiceUnavailable("job store unavailable, retry") from exc
        except jserr.APIError as exc:
            if is_store_full(exc):
                self.capacity.forget()
                raise _store_full(exc) from exc
            raise
        if ack.duplicate:
            await self._payload_kept(ack.seq)
        record = build(ack.seq)
        try:
            revision = await self.jobs.create(job_key(ack.seq), record.model_dump_json().encode())
        except jserr.KeyWrongLastSequenceError:
            return await self._made_before(ack.seq, submit_id)
        except jserr.APIError as exc:
            if not is_store_full(exc):
                raise
            if not ack.duplicate:
                await self.delete_payload(ack.seq)
            self.capacity.forget()
            raise _store_full(exc) from exc
        return record, int(revision), bool(ack.duplicate)

    async def _payload_kept(self, number: int) -> None:
        """A retried submission's payload is stored, unless it was refused and removed
        the first time: then StoreFull again (its submit id is spent for the submit
        stream's duplicate window)."""
        try:
            await self.js.get_msg(C.SUBMIT_STREAM, number)
        except jserr.NotFoundError:
            raise StoreFull.because("this submission was refused before") from None

    async def _made_before(self, number: int, submit_id: str) -> tuple[JobRecord, int, bool]:
        """The record of job `number` exists already: this submission's, made by an
        earlier try (returned as a duplicate), else a Conflict."""
        record, revision = await self.get(number)
        if record.submit_id != submit_id:
            raise Conflict("job number already taken")
        return record, revision, True

    async def create_many(
        self, submissions: Sequence[tuple[bytes, str]], build: Callable[[int, int], JobRecord]
    ) -> list[tuple[JobRecord, int, bool]]:
        """`create` for many (payload, submit_id) at once, `build(position, number)`
        making each record. The payload publishes are pipelined, then the record
        creates: two round trips for the lot instead of two per job. One connection
        keeps the publishes in order, so the numbers ascend with the positions."""
        published = await self._pipelined(
            (C.SUBMIT_SUBJECT, payload, {C.MSG_ID_HEADER: submit_id})
            for payload, submit_id in submissions
        )
        # (None only for an expected sequence, which these do not set; zip checks it)
        stored = [ack for ack in published if isinstance(ack, jsapi.PubAck)]
        fresh = [ack.seq for ack in stored if not ack.duplicate]
        refused = next((a for a in published if isinstance(a, BaseException)), None)
        if refused is not None:  # the store is full: the batch leaves nothing
            await self.discard([], fresh)
            raise _store_full(refused)
        for ack in stored:
            if ack.duplicate:
                await self._payload_kept(ack.seq)
        acks = stored
        records = [build(position, ack.seq) for position, ack in enumerate(acks)]
        created = await self._pipelined(
            (
                f"{C.JOBS_SUBJECT_PREFIX}{job_key(record.number)}",
                record.model_dump_json().encode(),
                {jsapi.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: "0"},
            )
            for record in records
        )
        refused = next((a for a in created if isinstance(a, BaseException)), None)
        if refused is not None:
            made = [
                (record.number, None, int(pub.seq))
                for record, ack, pub in zip(records, acks, created, strict=True)
                if isinstance(pub, jsapi.PubAck) and not ack.duplicate
            ]
            await self.discard(made, fresh)
            raise _store_full(refused)
        results = []
        rows = zip(records, acks, submissions, created, strict=True)
        for record, ack, (_, submit_id), pub in rows:
            if pub is None:  # the record exists: a retry of this submission
                results.append(await self._made_before(record.number, submit_id))
            else:
                assert isinstance(pub, jsapi.PubAck)
                results.append((record, int(pub.seq), bool(ack.duplicate)))
        return results

    async def _pipelined(
        self, messages: Iterable[tuple[str, bytes, dict[str, str]]]
    ) -> list[jsapi.PubAck | jserr.APIError | None]:
        """Publish to JetStream without waiting for each ack before the next publish;
        the acks in order, None for a message refused because its expected last
        sequence did not match, the error for one refused for want of room (the
        caller removes what the others stored). Any other failure: ServiceUnavailable.
        Concurrent `publish` calls, not nats-py's publish_async: its futures never
        complete when the server refuses a message (the error is raised in the reply
        handler)."""
        publishes = [self.js.publish(subj, data, headers=hdrs) for subj, data, hdrs in messages]
        acks: list[jsapi.PubAck | jserr.APIError | None] = []
        for ack in await asyncio.gather(*publishes, return_exceptions=True):
            if isinstance(ack, jserr.APIError) and ack.err_code == WRONG_LAST_SEQUENCE:
                acks.append(None)
            elif isinstance(ack, jserr.APIError) and is_store_full(ack):
                self.capacity.forget()
                acks.append(ack)
            elif isinstance(ack, BaseException):
                raise ServiceUnavailable("job store unavailable, retry") from ack
            else:
                acks.append(ack)
        return acks

    # -- removal -------------------------------------------------------------------

    async def delete_payload(self, number: int) -> bool:
        """Remove job `number`'s payload from the submit stream; whether it was there."""
        try:
            return bool(await self.js.delete_msg(C.SUBMIT_STREAM, number))
        except jserr.NotFoundError:
            return False
        except jserr.APIError as exc:
            if exc.err_code in NO_MESSAGE:
                return False
            raise

    async def purge_record(
        self, number: int, index: int | None, revision: int, marker_ttl: float
    ) -> bool:
        """Remove a record if it is still at `revision` (compare-and-set: of two that
        try, one does); whether this call removed it. Its purge marker (which every
        job index applies) expires after `marker_ttl` seconds."""
        headers = {**PURGE_HEADERS, jsapi.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(revision)}
        try:
            await self.js.publish(
                f"{C.JOBS_SUBJECT_PREFIX}{job_key(number, index)}",
                b"",
                headers=headers,
                msg_ttl=max(1.0, marker_ttl),
            )
        except jserr.APIError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                return False  # changed or removed meanwhile
            raise
        return True

    async def discard(
        self, records: Sequence[tuple[int, int | None, int]], payloads: Iterable[int]
    ) -> None:
        """Take back a refused submission: its records (number, index, revision) first,
        then its payloads, so that nothing of it is left to become a job."""
        for number, index, revision in records:
            await self.purge_record(number, index, revision, DISCARD_MARKER_TTL)
        for number in payloads:
            await self.delete_payload(number)

    async def enqueue(
        self,
        record: JobRecord,
        indices: Iterable[int] | None = None,
        payload: bytes | None = None,
        revision: int | None = None,
    ) -> None:
        """Publish the work items of the record's current enqueue: one, or for an array
        one per subjob index of its first `array_chunk` indices and spans for the rest
        (a worker expands a span when it takes it, so a huge array costs the submitter
        one chunk). Re-publishing the same enqueue (a retried request, a redelivered
        span) is deduplicated by the message ids."""
        if indices is None and record.index is not None:
            indices = [record.index]  # a subjob queued again
        if indices is None:
            subject, data, headers = _work_message(record, payload, revision)
            try:
                await self.js.publish(subject, data, headers=headers)
            except jserr.APIError as exc:
                if is_store_full(exc):
                    raise _store_full(exc) from exc
                raise
            return
        subject = f"{C.WORK_SUBJECT_PREFIX}.{record.spec.queue}.{record.number}"
        now, later = _split_chunk(indices, self.settings.array_chunk)
        pending = []
        for index in now:
            item = WorkItem(number=record.number, queue=record.spec.queue, index=index)
            msg_id = f"{record.number}[{index}]-{record.enqueue_count}"
            pending.append(
                await self.js.publish_async(
                    f"{subject}.{index}",
                    item.model_dump_json().encode(),
                    headers={C.MSG_ID_HEADER: msg_id},
                )
            )
            if len(pending) >= PUBLISH_WINDOW:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        for first, last in spans(later, record.spec.array_indices().step):
            item = WorkItem(
                number=record.number,
                queue=record.spec.queue,
                index=first,
                last=last,
                enqueue_count=record.enqueue_count,
            )
            msg_id = f"{record.number}[{first}-{last}]-{record.enqueue_count}"
            await self.js.publish(
                f"{subject}.{first}-{last}",
                item.model_dump_json().encode(),
                headers={C.MSG_ID_HEADER: msg_id},
            )

    async def enqueue_many(self, jobs: Sequence[tuple[JobRecord, bytes, int]]) -> None:
        """`enqueue` of many single jobs (record, payload, revision), pipelined."""
        acks = await self._pipelined(
            _work_message(record, payload, revision) for record, payload, revision in jobs
        )
        refused = next((a for a in acks if isinstance(a, BaseException)), None)
        if refused is not None:
            raise _store_full(refused)

    async def subjob_indices(self, number: int) -> set[int]:
        """Indices of an array's subjobs that have a record (started or deleted): one
        stream-info request listing the bucket's subjects under `j.<number>.`."""
        prefix = f"{C.JOBS_SUBJECT_PREFIX}{job_key(number)}."
        info = await self.js.stream_info(f"KV_{C.JOBS_BUCKET}", subjects_filter=f"{prefix}*")
        subjects = info.state.subjects or {}
        return {int(subject[len(prefix) :]) for subject in subjects}

    async def queued_work(self) -> set[str]:
        """Run keys (`12`, `12.3`) and array spans (`12.1025-99999`) that have a
        message in the work queue, delivered or not: a work queue keeps a message
        until it is acknowledged."""
        info = await self.js.stream_info(
            C.WORK_STREAM, subjects_filter=f"{C.WORK_SUBJECT_PREFIX}.>"
        )
        keys = set()
        for subject in info.state.subjects or {}:
            # pkbs.work.<queue>.<number>[.<index>[-<last>]]
            parts = subject.split(".")
            keys.add(".".join(parts[3:]))
        return keys

    async def payload(self, number: int) -> bytes:
        msg = await self.js.get_msg(C.SUBMIT_STREAM, number)
        return bytes(msg.data or b"")

    # -- tokens --------------------------------------------------------------

    async def add_token(self, token: str, identity: Identity) -> None:
        data = {
            "user": identity.user,
            "role": identity.role,
            "job": identity.job,
            "expires": identity.expires,
        }
        await self.tokens.put(token_key(token), json.dumps(data).encode())

    async def identity(self, token: str) -> Identity | None:
        try:
            entry = await self.tokens.get(token_key(token))
        except (jserr.KeyNotFoundError, jserr.KeyDeletedError):
            return None
        if not entry.value:
            return None
        data = json.loads(entry.value)
        ident = Identity(
            data["user"], data.get("role", "user"), data.get("job"), data.get("expires")
        )
        if ident.expires is not None and ident.expires < time.time():
            return None
        return ident


def _work_message(
    record: JobRecord, payload: bytes | None, revision: int | None
) -> tuple[str, bytes, dict[str, str]]:
    """(subject, body, headers) of a single job's work message. Small payloads ride
    along; with the revision the worker's first compare-and-set reads nothing."""
    item = WorkItem(number=record.number, queue=record.spec.queue)
    if payload is not None and len(payload) <= INLINE_PAYLOAD_BYTES:
        item.payload = base64.b64encode(payload).decode()
    if revision is not None:
        item.record, item.revision = record, revision
    return (
        f"{C.WORK_SUBJECT_PREFIX}.{record.spec.queue}.{record.number}",
        item.model_dump_json().encode(),
        {C.MSG_ID_HEADER: f"{record.number}-{record.enqueue_count}"},
    )


async def ensure_layout(
    js: JetStreamContext, settings: Settings, arrange: bool = False
) -> tuple[KeyValue, KeyValue]:
    """Create the streams, buckets and the workers' consumers; with `arrange` (the
    dispatcher) also bring existing ones to this configuration: their limits
    (pkbs/storage.py) included. The job definitions' and configuration's buckets are
    made here too; pkbs/defstore.py and pkbs/configstore.py open them."""
    replicas = settings.stream_replicas
    total = settings.max_store_bytes
    streams = [
        jsapi.StreamConfig(
            name=C.SUBMIT_STREAM,
            subjects=[C.SUBMIT_SUBJECT],
            retention=jsapi.RetentionPolicy.LIMITS,
            storage=jsapi.StorageType.FILE,
            max_msg_size=C.MAX_PAYLOAD_BYTES + 64 * 1024,
            duplicate_window=SUBMIT_DUPLICATE_WINDOW,
            num_replicas=replicas,
        ),
        jsapi.StreamConfig(
            name=C.WORK_STREAM,
            subjects=[f"{C.WORK_SUBJECT_PREFIX}.>"],
            retention=jsapi.RetentionPolicy.WORK_QUEUE,
            storage=jsapi.StorageType.FILE,
            duplicate_window=120.0,
            num_replicas=replicas,
        ),
        # Live output: in memory and bounded per job (the last OUTPUT_MSGS_PER_SUBJECT
        # chunks of each stream) and in all (oldest dropped first); gone after a while.
        jsapi.StreamConfig(
            name=C.OUTPUT_STREAM,
            subjects=[f"{C.OUTPUT_SUBJECT_PREFIX}.>"],
            retention=jsapi.RetentionPolicy.LIMITS,
            storage=jsapi.StorageType.MEMORY,
            discard=jsapi.DiscardPolicy.OLD,
            max_msgs_per_subject=OUTPUT_MSGS_PER_SUBJECT,
            max_msg_size=OUTPUT_MAX_MSG_BYTES,
            max_bytes=settings.output_stream_bytes,
            max_age=OUTPUT_MAX_AGE_SECONDS,
            duplicate_window=0,
            num_replicas=replicas,
        ),
    ]
    for config in streams:
        limit = stream_limit(total, config.name or "")
        if limit is not None:
            config.max_bytes, config.discard = limit, jsapi.DiscardPolicy.NEW
        await _add_or_update_stream(js, config, arrange)
    jobs = await _bucket(js, C.JOBS_BUCKET, settings, arrange, marker_ttls=True)
    tokens = await _bucket(js, C.TOKENS_BUCKET, settings, arrange)
    await _bucket(js, C.DEFINITIONS_BUCKET, settings, arrange)
    configuration = await _bucket(js, C.CONFIG_BUCKET, settings, arrange)
    await _bucket(js, C.RUNNING_BUCKET, settings, arrange)
    queues = await _configured_queues(configuration, settings)
    await ensure_consumers(js, queues, settings.ack_wait_seconds, arrange)
    return jobs, tokens


async def _configured_queues(config: KeyValue, settings: Settings) -> dict[str, QueueConfig]:
    """The queues of the stored server configuration (pkbs/configstore.py), else of
    the settings that will seed it."""
    try:
        entry = await config.get(C.CONFIG_SERVER_KEY)
    except (jserr.KeyNotFoundError, jserr.KeyDeletedError):
        return settings.queues
    if entry.value is None:
        return settings.queues
    try:
        return ServerConfig.model_validate_json(entry.value).queues
    except ValueError:
        return settings.queues


def _filters(info: jsapi.ConsumerInfo) -> list[str]:
    config = info.config
    if config.filter_subjects:
        return list(config.filter_subjects)
    return [config.filter_subject] if config.filter_subject else []


async def ensure_consumers(
    js: JetStreamContext, queues: dict[str, QueueConfig], ack_wait: float, arrange: bool
) -> None:
    """One durable pull consumer per queue priority level (pkbs.queues.consumer_levels).
    Consumers of a work queue may not overlap, so arranging first deletes the workers'
    consumers that do not match the levels (their unacknowledged messages are
    delivered again by the new ones: a worker whose job's message that is hands it
    to the worker running the job, worker/service.py). Without `arrange`, only
    missing ones are added. The dispatchers arrange them at start and after a qmgr
    change of the queues."""
    levels = consumer_levels(queues)
    wanted = dict(levels)
    existing = set()
    for info in await js.consumers_info(C.WORK_STREAM):
        name = info.name
        existing.add(name)
        is_workers = name == C.WORKER_CONSUMER or name.startswith(f"{C.WORKER_CONSUMER}-")
        if arrange and is_workers and sorted(_filters(info)) != sorted(wanted.get(name, [])):
            log.warning("replacing workers consumer %s (queue priorities changed)", name)
            await js.delete_consumer(C.WORK_STREAM, name)
            existing.discard(name)
    for name, filters in levels:
        if name in existing and not arrange:
            continue
        consumer = jsapi.ConsumerConfig(
            durable_name=name,
            ack_policy=jsapi.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=-1,
            max_ack_pending=-1,
            filter_subject=filters[0] if len(filters) == 1 else None,
            filter_subjects=filters if len(filters) > 1 else None,
        )
        try:
            await js.add_consumer(C.WORK_STREAM, consumer)
        except jserr.BadRequestError as exc:
            log.info("workers consumer %s not added (%s); keeping what exists", name, exc)


async def _add_or_update_stream(
    js: JetStreamContext, config: jsapi.StreamConfig, arrange: bool
) -> None:
    """Add the stream, or (`arrange`) update the one there. (Adding one that exists
    again is not harmless: with a limit, the server would reserve its bytes twice.)"""
    try:
        await js.stream_info(config.name or "")
    except jserr.NotFoundError:
        try:
            await js.add_stream(config)
            return
        except jserr.BadRequestError:  # made meanwhile by another process
            pass
    if arrange:
        await js.update_stream(config)


async def _bucket(
    js: JetStreamContext, name: str, settings: Settings, arrange: bool, marker_ttls: bool = False
) -> KeyValue:
    """A KV bucket with direct gets: a read is answered with the stored message itself,
    not with an API reply carrying it as base64 in JSON (measured: ~25 % less CPU per
    read in the server and in the client). A bucket made without them gets them.
    `marker_ttls`: purge markers may carry a TTL (JobStore.purge_record). Its limit is
    its share of PKBS_MAX_STORE_BYTES (pkbs/storage.py)."""
    stream = f"KV_{name}"
    limit = stream_limit(settings.max_store_bytes, stream)
    try:
        info = await js.stream_info(stream)
    except jserr.NotFoundError:
        with contextlib.suppress(jserr.BadRequestError):  # made meanwhile by another
            await js.create_key_value(
                bucket=name,
                history=1,
                replicas=settings.stream_replicas,
                storage=jsapi.StorageType.FILE,
                direct=True,
                max_bytes=-1 if limit is None else limit,
            )
        info = await js.stream_info(stream)
        arrange = True  # (its TTL setting is not one create_key_value makes)
    config = info.config
    wanted: dict[str, object] = {
        "allow_direct": True,
        "allow_msg_ttl": True if marker_ttls else config.allow_msg_ttl,
    }
    if arrange:
        wanted["max_bytes"] = -1 if limit is None else limit
    if any(getattr(config, key) != value for key, value in wanted.items()):
        for key, value in wanted.items():
            setattr(config, key, value)
        await js.update_stream(config)
    return await js.key_value(name)
