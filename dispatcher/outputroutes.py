"""A job's output (`pkbs logs`): what a running job has written so far and, with
`follow`, what it writes until it ends, relayed from the stream PKBS_OUTPUT (its
worker publishes there while someone watches: worker/outputfeed.py); a finished
job's stored .o/.e, read from WebDAV.

`GET /v1/jobs/{id}/output?stream=stdout|stderr&tail=N&follow=true` answers with
the output as it comes (chunked), as plain text, or with `Accept: text/event-stream`
as server-sent events: `output` (data: the text as a JSON string; id: where it is in
the stream), `end` (data: {"job_state", "Exit_status"}) once the job has finished,
`error` (data: {"message", "pbs_errno"}) when output cannot be had after all, and a comment
every KEEPALIVE_SECONDS while nothing happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Literal

import nats.errors
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from nats.aio.msg import Msg
from nats.js import api as jsapi
from nats.js import errors as jserr

from pkbs import constants as C
from pkbs.errors import PBSE_SYSTEM, InvalidRequest, NoOutput, PkbsError, UnknownJob
from pkbs.jobstore import JobStore, job_key, output_subject, watch_subject
from pkbs.models import JobRecord
from pkbs.results import ResultStore, job_results_path
from pkbs.settings import Settings
from pkbs.states import JobState, is_active, is_final, shown_state

from .context import Caller, Config, Results, Store
from .lookup import lookup, owned

router = APIRouter(prefix=C.API_PREFIX)

KEEPALIVE_SECONDS = 15.0
# How often a watcher renews its ask (the worker publishes for OUTPUT_WATCH_LEASE).
RENEW_SECONDS = C.OUTPUT_WATCH_LEASE / 4
# A worker answers a watch once it has published what the job wrote so far; none
# answers while the run is not in a worker's hands (just started, or just ended):
# then the watcher asks again after RETRY_SECONDS.
WATCH_REPLY_SECONDS = 2.0
RETRY_SECONDS = 0.5
BACKLOG_SECONDS = 5.0  # the longest wait for a message known to be in the stream
STREAM_DOC = "stdout or stderr (of a job that joins them, -j oe / eo, only the one they go to)"
TAIL_DOC = "only the last N lines of what the job has written so far"
FOLLOW_DOC = "keep going until the job ends (then an `end` event with its Exit_status)"


@dataclass(frozen=True)
class Chunk:
    data: bytes
    position: str | None = None  # the stream sequence of a live chunk


@dataclass(frozen=True)
class Ended:
    record: JobRecord


@dataclass(frozen=True)
class Failed:
    message: str
    pbs_errno: int = PBSE_SYSTEM


class Keepalive:
    pass


Event = Chunk | Ended | Failed | Keepalive


def last_lines(data: bytes, count: int) -> bytes:
    """The last `count` lines of `data` (an unfinished last line counts as one)."""
    if count <= 0:
        return b""
    return b"".join(data.splitlines(keepends=True)[-count:])


def is_end(msg: Msg) -> bool:
    """Whether a message of PKBS_OUTPUT is a run's end marker."""
    return bool(msg.headers and C.OUTPUT_END_HEADER in msg.headers)


def never_ran(record: JobRecord) -> bool:
    return is_final(record.state) and record.run_count == 0


def checked(record: JobRecord, stream: str) -> None:
    """Refuse what has no output to show: an array, a stream joined to the other, a job
    that never ran."""
    if record.is_array:
        raise InvalidRequest("Request invalid for an array: name one of its subjobs",
                             record.job_id)
    if stream not in record.output_streams:
        other = record.output_streams[0]
        raise InvalidRequest(f"the job's {stream} goes to its {other} (-j {record.spec.join})",
                             record.job_id)
    if never_ran(record):
        raise NoOutput(job_id=record.job_id)


class OutputRelay:
    """The events of one request: see the module's doc."""

    def __init__(self, st: JobStore, results: ResultStore, settings: Settings, job_id: str,
                 stream: str, tail: int | None, follow: bool) -> None:
        self.st, self.results, self.settings = st, results, settings
        self.job_id, self.stream, self.tail, self.follow = job_id, stream, tail, follow
        self.changed = asyncio.Event()

    async def watch(self, record: JobRecord) -> dict[str, object] | None:
        """Ask the job's worker to publish its output; its answer, None if no worker
        answers (the run has ended or moved on)."""
        try:
            reply = await self.st.nc.request(watch_subject(record.number, record.index), b"",
                                             timeout=WATCH_REPLY_SECONDS)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            return None
        answer: dict[str, object] = json.loads(reply.data)
        return answer

    async def events(self, record: JobRecord) -> AsyncIterator[Event]:
        """From the job's record as the request found it to its end (or, without
        follow, to what it has written so far)."""
        subjects = {C.JOBS_SUBJECT_PREFIX + job_key(record.number),
                    C.JOBS_SUBJECT_PREFIX + job_key(record.number, record.index)}
        subs = [await self.st.nc.subscribe(s, cb=self._on_change) for s in subjects]
        try:
            relayed: int | None = None  # the run whose output was relayed to its end
            while True:
                if never_ran(record):
                    yield Failed(str(NoOutput(job_id=record.job_id)), NoOutput.pbs_errno)
                    return
                if is_final(record.state):
                    if relayed is None:
                        async for event in self.stored(record):
                            yield event
                    yield Ended(record)
                    return
                if is_active(record.state) and record.run_count != relayed:
                    answer = await self.watch(record)
                    if answer is not None and "error" in answer:
                        yield Failed(str(answer["error"]))
                        return
                    if answer is not None:
                        async for event in self.live(record):
                            yield event
                        relayed = record.run_count
                        if not self.follow:
                            return
                elif not self.follow and not is_active(record.state):
                    return  # queued or held: nothing written yet
                retry = is_active(record.state) and record.run_count != relayed
                async for change in self.next_record(record, retry):
                    if isinstance(change, Keepalive):
                        yield change
                    else:
                        record = change
        finally:
            for sub in subs:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()

    async def _on_change(self, msg: object) -> None:
        self.changed.set()

    async def next_record(self, record: JobRecord, retry: bool
                          ) -> AsyncIterator[JobRecord | Keepalive]:
        """The job's record once it has changed (keepalives meanwhile); with `retry`,
        after RETRY_SECONDS anyway (its worker did not answer: it may not have the run
        in hand yet)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(),
                                       RETRY_SECONDS if retry else KEEPALIVE_SECONDS)
            self.changed.clear()
            try:
                fresh = await lookup(self.st, self.job_id)
            except UnknownJob:  # purged (qdel -x): as if it had never run
                fresh = record.model_copy(update={"state": JobState.FINISHED, "run_count": 0})
            if fresh != record or retry:
                yield Keepalive()
                yield fresh
                return
            yield Keepalive()

    async def live(self, record: JobRecord) -> AsyncIterator[Event]:
        """The run's output in PKBS_OUTPUT: what is there (its last `tail` lines), then,
        with follow, each new chunk until the run's end marker (or the record says the
        run has ended: its worker was lost)."""
        subject = output_subject(record.number, record.index, self.stream)
        try:
            last = (await self.st.js.get_last_msg(C.OUTPUT_STREAM, subject)).seq or 0
        except jserr.NotFoundError:
            last = 0
        sub = await self.st.js.subscribe(subject, ordered_consumer=True,
                                         deliver_policy=jsapi.DeliverPolicy.ALL)
        try:
            backlog: list[bytes] = []
            seq, complete = 0, False
            while seq < last and not complete:
                msg = await sub.next_msg(timeout=BACKLOG_SECONDS)
                seq = msg.metadata.sequence.stream
                complete = is_end(msg)
                backlog.append(msg.data)
            data = b"".join(backlog)
            if self.tail is not None:
                data = last_lines(data, self.tail)
            if data:
                yield Chunk(data, str(seq))
            if complete or not self.follow:
                return
            loop = asyncio.get_running_loop()
            renewed = loop.time()
            while True:
                new: Msg | None = None
                with contextlib.suppress(nats.errors.TimeoutError):
                    new = await sub.next_msg(timeout=RENEW_SECONDS)
                if new is not None:
                    if is_end(new):
                        return
                    yield Chunk(new.data, str(new.metadata.sequence.stream))
                if loop.time() - renewed >= RENEW_SECONDS:
                    renewed = loop.time()
                    if await self.watch(record) is None and await self._run_over(record):
                        return
                    if new is None:
                        yield Keepalive()
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _run_over(self, record: JobRecord) -> bool:
        try:
            fresh = await lookup(self.st, self.job_id)
        except UnknownJob:
            return True
        return not is_active(fresh.state) or fresh.run_count != record.run_count

    async def stored(self, record: JobRecord) -> AsyncIterator[Event]:
        """A finished job's .o or .e from its results (the last `tail` lines)."""
        name = record.output_name if self.stream == "stdout" else record.error_name
        size = {f.name: f.size for f in record.results}.get(name)
        if size is None:
            yield Failed(f"Job's {self.stream} was not stored (see its comment) {record.job_id}")
            return
        if size == 0:
            return
        base = record.results_path or job_results_path(
            self.settings.webdav_base, record.owner, record.job_id)
        upstream = await self.results.open_read(base + name)
        try:
            kept = b""
            async for data in upstream.aiter_bytes(256 * 1024):
                if self.tail is None:
                    yield Chunk(data)
                    continue
                kept = last_lines(kept + data, self.tail + 1)
            if self.tail is not None:
                yield Chunk(last_lines(kept, self.tail))
        finally:
            await upstream.aclose()


def as_text(event: Event) -> bytes:
    if isinstance(event, Chunk):
        return event.data
    if isinstance(event, Failed):
        return f"=>> pkbs: {event.message}\n".encode()
    return b""


def as_sse(event: Event) -> bytes:
    if isinstance(event, Chunk):
        text = json.dumps(event.data.decode(errors="replace"))
        position = f"id: {event.position}\n" if event.position else ""
        return f"event: output\n{position}data: {text}\n\n".encode()
    if isinstance(event, Ended):
        record = event.record
        state = shown_state(record.state, record.index is not None).value
        body = json.dumps({"job_state": state, "Exit_status": record.exit_status})
        return f"event: end\ndata: {body}\n\n".encode()
    if isinstance(event, Failed):
        body = json.dumps({"message": event.message, "pbs_errno": event.pbs_errno})
        return f"event: error\ndata: {body}\n\n".encode()
    return b": keepalive\n\n"


async def rendered(relay: OutputRelay, record: JobRecord, sse: bool) -> AsyncIterator[bytes]:
    render = as_sse if sse else as_text
    try:
        async for event in relay.events(record):
            data = render(event)
            if data:
                yield data
    except (PkbsError, nats.errors.Error, OSError) as exc:  # after the answer began
        yield render(Failed(f"output cut off: {exc}"))


@router.get(
    "/jobs/{job_id}/output",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}, "text/event-stream": {}},
                     "description": "The job's output as it comes (see the module's doc)."}},
)
async def job_output(
    job_id: str,
    request: Request,
    who: Caller,
    st: Store,
    settings: Config,
    results: Results,
    stream: Annotated[Literal["stdout", "stderr"], Query(description=STREAM_DOC)] = "stdout",
    tail: Annotated[int | None, Query(ge=0, description=TAIL_DOC)] = None,
    follow: Annotated[bool, Query(description=FOLLOW_DOC)] = False,
) -> StreamingResponse:
    """What the job has written to its stdout (or stderr) so far; with `follow`, until
    it ends. The caller's own jobs only (an operator's: any)."""
    record = await owned(st, who, job_id)
    checked(record, stream)
    relay = OutputRelay(st, results, settings, job_id, stream, tail, follow)
    if is_active(record.state):
        answer = await relay.watch(record)  # an error is still an error status here
        if answer is not None and "error" in answer:
            raise InvalidRequest(str(answer["error"]), record.job_id)
    sse = "text/event-stream" in request.headers.get("accept", "")
    return StreamingResponse(
        rendered(relay, record, sse),
        media_type="text/event-stream" if sse else "text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
