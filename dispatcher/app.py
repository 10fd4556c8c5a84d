"""The dispatcher's HTTP API. Stateless: every replica serves every request from
JetStream/KV; OpenAPI at /openapi.json is the contract with the CLI."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import random
import secrets
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.background import BackgroundTask
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import pkbs
from pkbs import constants as C
from pkbs.control import JobControl
from pkbs.errors import (
    InvalidRequest,
    PayloadTooLarge,
    PkbsError,
    QueueDisabled,
    Unauthorized,
    UnknownJob,
    UnknownQueue,
)
from pkbs.jobstore import Identity, JobStore, job_key
from pkbs.models import (
    AlterRequest,
    BatchSubmitRequest,
    BatchSubmitResponse,
    HoldRequest,
    JobRecord,
    JobSpec,
    ServerInfo,
    SignalRequest,
    SubmitRequest,
    SubmitResponse,
    TokenRequest,
    TokenResponse,
)
from pkbs.payload import check_size, format_size
from pkbs.pbs import parse_job_id
from pkbs.pbsattrs import job_attributes, queue_attributes, server_attributes
from pkbs.queues import QueueConfig, check_request
from pkbs.results import ResultStore, job_results_path
from pkbs.settings import Settings, get_settings
from pkbs.states import JobState, is_final

from . import metrics
from .arrays import ArrayAccounting
from .auth import authenticate, bearer_token, check_hold_types, check_owner
from .jobindex import COLUMNS, JobIndex, listing_body

log = logging.getLogger("pkbs.dispatcher")


async def _store(request: Request) -> JobStore:  # async: no thread-pool hop per request
    result: JobStore = request.app.state.store
    return result


async def _identity(request: Request) -> Identity:
    settings: Settings = request.app.state.settings
    return await authenticate(bearer_token(request), settings, request.app.state.store)


# Module level: FastAPI resolves these annotations by name.
Caller = Annotated[Identity, Depends(_identity)]
Store = Annotated[JobStore, Depends(_store)]


ListView = Literal["full", "table", "summary"]
VIEW_DOC = (
    "full: each job's PBS attributes (qstat -f). table / summary: only the columns of "
    f"qstat's default table ({', '.join(COLUMNS['table'])}) / of its alternate tables "
    f"(and {', '.join(COLUMNS['summary'][len(COLUMNS['table']) :])}), "
    "from the dispatcher's job index."
)
LISTING_DOC = (
    'view=full: {"server", "timestamp", "jobs": [{"id", "attributes": {...}}]}. '
    'view=table|summary: {"server", "timestamp", "columns": [names], "rows": [[values]]}, '
    "null for an attribute that is not set."
)


DISCARD_LIMIT = 32 * 1024 * 1024  # bytes of an oversize body read before answering
DISCARD_WAIT = 1.0  # seconds to wait for more of it


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, whether they announce their
    length or arrive chunked (then as soon as the limit is passed)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"Request body of {size} bytes or more exceeds the limit; "
            f"job payloads may be at most {format_size(C.MAX_PAYLOAD_BYTES)} zipped"
        )

    async def _discard_body(self, receive: Receive) -> None:
        """Read (and drop) what the client is sending, up to a cap and while it keeps
        coming, so that it reads the 413 instead of a connection reset (and a client
        that sends only headers is not kept waiting)."""
        left = DISCARD_LIMIT
        while left > 0:
            try:
                message = await asyncio.wait_for(receive(), DISCARD_WAIT)
            except TimeoutError:
                return
            if message["type"] != "http.request":
                return
            left -= len(message.get("body", b""))
            if not message.get("more_body"):
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            error = self.too_large(int(length))
            await self._discard_body(receive)
            response = JSONResponse({"error": error.to_dict()}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0
        refused: PayloadTooLarge | None = None

        async def limited() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = self.too_large(received)
                    raise refused
            return message

        async def reply(message: Message) -> None:
            # Whatever the app makes of the cut-off body, the client hears 413.
            if refused is None:
                await send(message)
            elif message["type"] == "http.response.start":
                response = JSONResponse({"error": refused.to_dict()}, status_code=413)
                await response(scope, receive, send)

        await self.app(scope, limited, reply)


async def reconcile_forever(
    store: JobStore, index: JobIndex, arrays: ArrayAccounting, settings: Settings
) -> None:
    """Periodically repair jobs a crash left between two steps (see JobControl). The
    job index names the unfinished jobs, so finished ones (history) are not read."""
    interval = settings.reconcile_seconds
    if interval <= 0:
        return
    control = JobControl(store)
    while True:
        await asyncio.sleep(interval * random.uniform(0.8, 1.2))
        if not index.ready:
            continue
        arrays.recount()
        try:
            repaired = await control.reconcile(grace=interval, unfinished=index.unfinished())
        except Exception:  # NATS away, a record mid-change: try again next round
            log.exception("reconcile failed")
            continue
        if repaired:
            log.warning("reconcile queued %d jobs again", repaired)


def no_subjob(record: JobRecord) -> None:
    if record.index is not None:
        raise InvalidRequest(
            "Request invalid for a subjob: hold or release its array", record.job_id
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = await JobStore.open(
            settings, f"dispatcher-{settings.dispatcher_port}", arrange=True
        )
        app.state.results = ResultStore.from_settings(settings)
        # Follows the job records from now on; loads them in the background (/readyz).
        app.state.index = JobIndex(app.state.store)
        arrays = ArrayAccounting(JobControl(app.state.store), app.state.index)
        await app.state.index.start()
        await arrays.start()
        repair = asyncio.create_task(
            reconcile_forever(app.state.store, app.state.index, arrays, settings)
        )
        yield
        repair.cancel()
        await arrays.stop()
        await app.state.index.stop()
        await app.state.results.aclose()
        await app.state.store.close()

    app = FastAPI(
        title="pkbs dispatcher",
        version=pkbs.__version__,
        description="PBS-compatible batch queue: submit, query and control jobs.",
        lifespan=lifespan,
    )
    app.state.settings = settings

    @app.exception_handler(PkbsError)
    async def pkbs_error(request: Request, exc: PkbsError) -> JSONResponse:
        metrics.REJECTED.labels(type(exc).__name__).inc()
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status)

    app.add_middleware(BodyLimit, limit=C.MAX_SUBMIT_BODY_BYTES)

    def queue_of(spec: JobSpec) -> QueueConfig:
        queue = settings.queues.get(spec.queue)
        if queue is None:
            raise UnknownQueue()
        return queue

    def number_of(job_id: str) -> int:
        return parse_job_id(job_id, settings.server_name).number

    async def lookup(st: JobStore, job_id: str) -> JobRecord:
        """A job, an array (`12[]`) or a subjob (`12[3]`, queued ones included)."""
        jid = parse_job_id(job_id, settings.server_name)
        record, _ = await st.get(jid.number)
        if jid.is_array and not record.is_array:
            raise UnknownJob(job_id=jid.format(settings.server_name))
        if jid.index is None:
            return record
        if not record.is_array or jid.index not in record.spec.array_indices():
            raise UnknownJob(job_id=jid.format(settings.server_name))
        try:
            subjob, _ = await st.get(jid.number, jid.index)
        except UnknownJob:
            subjob = record.subjob(jid.index)
            if is_final(record.state):
                subjob = subjob.model_copy(update={"state": record.state})
        return subjob

    async def owned(st: JobStore, who: Identity, job_id: str) -> JobRecord:
        record = await lookup(st, job_id)
        check_owner(who, record)
        return record

    def wire(records: list[JobRecord]) -> dict[str, Any]:
        return {
            "server": settings.server_name,
            "timestamp": int(time.time()),
            "jobs": [{"id": r.job_id, "attributes": job_attributes(r)} for r in records],
        }

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request, st: Store) -> JSONResponse:
        index: JobIndex = request.app.state.index
        ok = st.nc.is_connected and index.ready  # not before the job index has loaded
        return JSONResponse({"ok": ok}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get(f"{C.API_PREFIX}/server", response_model=ServerInfo)
    async def server_info(who: Caller) -> ServerInfo:
        return ServerInfo(
            name=settings.server_name, version=pkbs.__version__, queues=list(settings.queues)
        )

    def admitted(body: SubmitRequest) -> bytes:
        """Check a submission against its queue; its payload."""
        queue = queue_of(body.spec)
        if not queue.enabled:
            raise QueueDisabled()
        if queue.default_walltime and "walltime" not in body.spec.resources:
            body.spec.resources["walltime"] = queue.default_walltime
        check_request(queue, body.spec.resources, settings.max_job_ncpus)
        try:
            payload = base64.b64decode(body.payload_b64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("payload_b64 is not valid base64") from None
        check_size(payload)
        return payload

    def submitted(record: JobRecord, duplicate: bool) -> SubmitResponse:
        if not duplicate:
            metrics.SUBMITTED.labels(record.spec.queue).inc()
        return SubmitResponse(job_id=record.job_id, duplicate=duplicate)

    @app.post(f"{C.API_PREFIX}/jobs", response_model=SubmitResponse, status_code=201)
    async def submit(body: SubmitRequest, who: Caller, st: Store) -> SubmitResponse:
        payload = admitted(body)
        record, duplicate = await JobControl(st).submit(
            who.user, body.spec, payload, body.submit_id
        )
        return submitted(record, duplicate)

    @app.post(
        f"{C.API_PREFIX}/jobs/batch", response_model=BatchSubmitResponse, status_code=201
    )
    async def submit_batch(
        body: BatchSubmitRequest, who: Caller, st: Store
    ) -> BatchSubmitResponse:
        """Many jobs in one request, numbered in order. Every job is checked first: if
        one is refused, none is submitted (the error names its position). A retry of
        the same batch (same submit ids) returns the same jobs."""
        jobs = []
        for position, item in enumerate(body.jobs):
            try:
                jobs.append((item.spec, admitted(item), item.submit_id))
            except PkbsError as exc:
                exc.message = f"batch job {position}: {exc.message}"
                raise
        done = await JobControl(st).submit_many(who.user, jobs)
        return BatchSubmitResponse(jobs=[submitted(*job) for job in done])

    @app.get(
        f"{C.API_PREFIX}/jobs",
        response_model=None,
        responses={200: {"description": LISTING_DOC, "content": {"application/json": {}}}},
    )
    async def list_jobs(
        request: Request,
        who: Caller,
        st: Store,
        history: bool = False,
        subjobs: bool = False,
        user: Annotated[list[str] | None, Query()] = None,
        view: Annotated[ListView, Query(description=VIEW_DOC)] = "full",
    ) -> dict[str, Any] | Response:
        """The caller's jobs (an operator's: everybody's), finished ones with history,
        subjobs of arrays with `subjobs` (queued ones that have no record yet too)."""
        if view != "full":
            index: JobIndex = request.app.state.index
            await index.sync()  # every change stored before this request is in
            rows = index.rows(
                view,
                owner=None if who.is_admin else who.user,
                users=user,
                history=history,
                subjobs=subjobs,
            )
            body = listing_body(settings.server_name, view, rows)
            return Response(body, media_type="application/json")
        records: list[JobRecord] = []
        started: dict[int, set[int]] = {}
        async for record in st.iter_records():
            if user and record.owner not in user:
                continue
            if not who.is_admin and record.owner != who.user:
                continue
            if record.index is not None:
                started.setdefault(record.number, set()).add(record.index)
                if not subjobs:
                    continue
            records.append(record)
        if subjobs:
            for array in [r for r in records if r.is_array and not is_final(r.state)]:
                have = started.get(array.number, set())
                records.extend(array.subjob(i) for i in array.spec.array_indices() if i not in have)
        if not history:
            records = [r for r in records if not is_final(r.state)]
        records.sort(key=lambda r: (r.number, -1 if r.index is None else r.index))
        return wire(records)

    @app.get(f"{C.API_PREFIX}/jobs/{{job_id}}")
    async def get_job(job_id: str, who: Caller, st: Store) -> dict[str, Any]:
        return wire([await owned(st, who, job_id)])

    @app.get(f"{C.API_PREFIX}/queues")
    async def list_queues(request: Request, who: Caller) -> dict[str, Any]:
        """Queues with their job counts, and the server's attributes (qstat -Q/-q/-B)."""
        index: JobIndex = request.app.state.index
        await index.sync()
        known = index.counts()  # unfinished jobs, subjobs with a record included
        counts: dict[str, Counter[str]] = {q: known.get(q, Counter()) for q in settings.queues}
        total: Counter[str] = sum(counts.values(), Counter())
        return {
            "server": settings.server_name,
            "timestamp": int(time.time()),
            "queues": [
                {
                    "name": name,
                    "attributes": queue_attributes(
                        name,
                        counts[name],
                        enabled=queue.enabled,
                        started=queue.started,
                        resources_max=queue.resources_max(),
                        priority=queue.priority,
                    ),
                }
                for name, queue in settings.queues.items()
            ],
            "server_attributes": server_attributes(
                settings.server_name, settings.queues, total, host=socket.gethostname()
            ),
        }

    @app.delete(f"{C.API_PREFIX}/jobs/{{job_id}}", status_code=204)
    async def delete_job(job_id: str, who: Caller, st: Store) -> Response:
        record = await owned(st, who, job_id)
        await JobControl(st).delete(record.number, who.user, record.index)
        metrics.DELETED.inc()
        return Response(status_code=204)

    @app.post(f"{C.API_PREFIX}/jobs/{{job_id}}/hold")
    async def hold_job(job_id: str, body: HoldRequest, who: Caller, st: Store) -> dict[str, Any]:
        record = await owned(st, who, job_id)
        check_hold_types(who, body.types, record)
        no_subjob(record)
        return wire([await JobControl(st).hold(record.number, body.types)])

    @app.post(f"{C.API_PREFIX}/jobs/{{job_id}}/release")
    async def release_job(job_id: str, body: HoldRequest, who: Caller, st: Store) -> dict[str, Any]:
        record = await owned(st, who, job_id)
        check_hold_types(who, body.types, record)
        no_subjob(record)
        return wire([await JobControl(st).release(record.number, body.types)])

    @app.patch(f"{C.API_PREFIX}/jobs/{{job_id}}")
    async def alter_job(job_id: str, body: AlterRequest, who: Caller, st: Store) -> dict[str, Any]:
        record = await owned(st, who, job_id)
        no_subjob(record)

        def check(spec: JobSpec) -> None:
            check_request(queue_of(spec), spec.resources, settings.max_job_ncpus)

        return wire([await JobControl(st).alter(record.number, body, check)])

    @app.post(f"{C.API_PREFIX}/jobs/{{job_id}}/rerun", status_code=204)
    async def rerun_job(job_id: str, who: Caller, st: Store) -> Response:
        record = await owned(st, who, job_id)
        await JobControl(st).rerun(record.number, record.index)
        return Response(status_code=204)

    @app.post(f"{C.API_PREFIX}/jobs/{{job_id}}/signal", status_code=204)
    async def signal_job(job_id: str, body: SignalRequest, who: Caller, st: Store) -> Response:
        record = await owned(st, who, job_id)
        await JobControl(st).signal(record, body.signal)
        return Response(status_code=204)

    @app.post(f"{C.API_PREFIX}/tokens", response_model=TokenResponse, status_code=201)
    async def create_token(body: TokenRequest, who: Caller, st: Store) -> TokenResponse:
        if not who.is_admin:
            raise Unauthorized("Only operators create tokens")
        token = secrets.token_urlsafe(32)
        await st.add_token(token, Identity(body.user, body.role))
        return TokenResponse(user=body.user, role=body.role, token=token)

    @app.get(f"{C.API_PREFIX}/jobs/{{job_id}}/files")
    async def list_files(job_id: str, who: Caller, st: Store) -> dict[str, Any]:
        record = await owned(st, who, job_id)
        return {
            "job_id": record.job_id,
            "results_url": record.results_url,
            "files": [f.model_dump() for f in record.results],
        }

    @app.get(f"{C.API_PREFIX}/jobs/{{job_id}}/files/{{name:path}}")
    async def get_file(job_id: str, name: str, who: Caller, st: Store) -> Response:
        record = await owned(st, who, job_id)
        if name not in {f.name for f in record.results}:
            raise UnknownJob(f"No result file {name!r} for job", job_id=record.job_id)
        # The finishing run's collection; a record older than per-run collections
        # has none: its results are in the job's collection itself.
        base = record.results_path or job_results_path(
            settings.webdav_base, record.owner, record.job_id
        )
        results: ResultStore = app.state.results
        upstream = await results.open_read(base + name)
        headers = {}
        if "content-length" in upstream.headers:
            headers["Content-Length"] = upstream.headers["content-length"]
        return StreamingResponse(
            upstream.aiter_bytes(256 * 1024),
            media_type="application/octet-stream",
            headers=headers,
            background=BackgroundTask(upstream.aclose),
        )

    @app.get(f"{C.API_PREFIX}/jobs/{{job_id}}/wait")
    async def wait_job(
        job_id: str, who: Caller, st: Store, timeout: float = Query(60.0, gt=0, le=3600)
    ) -> dict[str, Any]:
        """Return once the job is finished or after `timeout` seconds (long poll)."""
        number = number_of(job_id)
        done = asyncio.Event()

        async def on_event(msg: Any) -> None:
            done.set()

        # Each change of its record.
        sub = await st.nc.subscribe(C.JOBS_SUBJECT_PREFIX + job_key(number), cb=on_event)
        try:
            deadline = time.monotonic() + timeout
            while True:
                record, _ = await st.get(number)
                check_owner(who, record)
                left = deadline - time.monotonic()
                if record.state == JobState.FINISHED or left <= 0:
                    return wire([record])
                done.clear()
                with suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), timeout=min(left, 5.0))
        finally:
            await sub.unsubscribe()

    return app
