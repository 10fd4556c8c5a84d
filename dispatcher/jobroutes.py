"""Jobs: submit (one or a batch), list, read, wait for, and control (qdel, qhold,
qrls, qalter, qrerun, qsig)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from contextlib import suppress
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from pkbs import constants as C
from pkbs.control import JobControl
from pkbs.errors import InvalidRequest, PkbsError, QueueDisabled, UnknownQueue
from pkbs.jobstore import Identity, JobStore, job_key
from pkbs.models import (
    AlterRequest,
    BatchSubmitRequest,
    BatchSubmitResponse,
    HoldRequest,
    JobRecord,
    JobSpec,
    SignalRequest,
    SubmitRequest,
    SubmitResponse,
)
from pkbs.payload import check_size
from pkbs.pbsattrs import job_attributes
from pkbs.pbsvalues import parse_job_id
from pkbs.queues import QueueConfig, admit_image, check_request
from pkbs.settings import Settings
from pkbs.states import JobState, is_final

from . import metrics
from .auth import check_hold_types, check_owner
from .context import Caller, Config, Index, Store
from .jobindex import COLUMNS, listing_body
from .lookup import owned

router = APIRouter(prefix=C.API_PREFIX)

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


def wire(settings: Settings, records: list[JobRecord]) -> dict[str, Any]:
    """Jobs as the API shows them: each one's PBS attributes."""
    return {
        "server": settings.server_name,
        "timestamp": int(time.time()),
        "jobs": [{"id": r.job_id, "attributes": job_attributes(r)} for r in records],
    }


def queue_of(settings: Settings, spec: JobSpec) -> QueueConfig:
    queue = settings.queues.get(spec.queue)
    if queue is None:
        raise UnknownQueue()
    return queue


def admitted(settings: Settings, body: SubmitRequest) -> bytes:
    """Check a submission against its queue; its payload."""
    queue = queue_of(settings, body.spec)
    if not queue.enabled:
        raise QueueDisabled()
    if queue.default_walltime and "walltime" not in body.spec.resources:
        body.spec.resources["walltime"] = queue.default_walltime
    check_request(body.spec.queue, queue, body.spec.resources, settings.max_job_ncpus)
    admit_image(body.spec.queue, queue, body.spec)
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


def no_subjob(record: JobRecord) -> None:
    if record.index is not None:
        raise InvalidRequest(
            "Request invalid for a subjob: hold or release its array", record.job_id
        )


@router.post("/jobs", response_model=SubmitResponse, status_code=201)
async def submit(body: SubmitRequest, who: Caller, st: Store, settings: Config) -> SubmitResponse:
    payload = admitted(settings, body)
    record, duplicate = await JobControl(st).submit(who.user, body.spec, payload, body.submit_id)
    return submitted(record, duplicate)


@router.post("/jobs/batch", response_model=BatchSubmitResponse, status_code=201)
async def submit_batch(
    body: BatchSubmitRequest, who: Caller, st: Store, settings: Config
) -> BatchSubmitResponse:
    """Many jobs in one request, numbered in order. Every job is checked first: if
    one is refused, none is submitted (the error names its position). A retry of
    the same batch (same submit ids) returns the same jobs."""
    jobs = []
    for position, item in enumerate(body.jobs):
        try:
            jobs.append((item.spec, admitted(settings, item), item.submit_id))
        except PkbsError as exc:
            exc.message = f"batch job {position}: {exc.message}"
            raise
    done = await JobControl(st).submit_many(who.user, jobs)
    return BatchSubmitResponse(jobs=[submitted(*job) for job in done])


@router.get(
    "/jobs",
    response_model=None,
    responses={200: {"description": LISTING_DOC, "content": {"application/json": {}}}},
)
async def list_jobs(
    who: Caller,
    st: Store,
    settings: Config,
    index: Index,
    history: bool = False,
    subjobs: bool = False,
    user: Annotated[list[str] | None, Query()] = None,
    view: Annotated[ListView, Query(description=VIEW_DOC)] = "full",
) -> dict[str, Any] | Response:
    """The caller's jobs (an operator's: everybody's), finished ones with history,
    subjobs of arrays with `subjobs` (queued ones that have no record yet too)."""
    if view != "full":
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
    return wire(settings, records)


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, who: Caller, st: Store, settings: Config) -> dict[str, Any]:
    return wire(settings, [await owned(st, who, job_id)])


@router.delete("/jobs/{job_id}", status_code=204)
async def delete_job(job_id: str, who: Caller, st: Store) -> Response:
    record = await owned(st, who, job_id)
    await JobControl(st).delete(record.number, who.user, record.index)
    metrics.DELETED.inc()
    return Response(status_code=204)


async def holdable(st: JobStore, who: Identity, job_id: str, types: str) -> JobRecord:
    """The job a qhold / qrls names, if the caller may set or clear these holds on it."""
    record = await owned(st, who, job_id)
    check_hold_types(who, types, record)
    no_subjob(record)
    return record


@router.post("/jobs/{job_id}/hold")
async def hold_job(
    job_id: str, body: HoldRequest, who: Caller, st: Store, settings: Config
) -> dict[str, Any]:
    record = await holdable(st, who, job_id, body.types)
    return wire(settings, [await JobControl(st).hold(record.number, body.types)])


@router.post("/jobs/{job_id}/release")
async def release_job(
    job_id: str, body: HoldRequest, who: Caller, st: Store, settings: Config
) -> dict[str, Any]:
    record = await holdable(st, who, job_id, body.types)
    return wire(settings, [await JobControl(st).release(record.number, body.types)])


@router.patch("/jobs/{job_id}")
async def alter_job(
    job_id: str, body: AlterRequest, who: Caller, st: Store, settings: Config
) -> dict[str, Any]:
    record = await owned(st, who, job_id)
    no_subjob(record)

    def check(spec: JobSpec) -> None:
        queue = queue_of(settings, spec)
        check_request(spec.queue, queue, spec.resources, settings.max_job_ncpus)

    return wire(settings, [await JobControl(st).alter(record.number, body, check)])


@router.post("/jobs/{job_id}/rerun", status_code=204)
async def rerun_job(job_id: str, who: Caller, st: Store) -> Response:
    record = await owned(st, who, job_id)
    await JobControl(st).rerun(record.number, record.index)
    return Response(status_code=204)


@router.post("/jobs/{job_id}/signal", status_code=204)
async def signal_job(job_id: str, body: SignalRequest, who: Caller, st: Store) -> Response:
    record = await owned(st, who, job_id)
    await JobControl(st).signal(record, body.signal)
    return Response(status_code=204)


@router.get("/jobs/{job_id}/wait")
async def wait_job(
    job_id: str,
    who: Caller,
    st: Store,
    settings: Config,
    timeout: float = Query(60.0, gt=0, le=3600),
) -> dict[str, Any]:
    """Return once the job is finished or after `timeout` seconds (long poll)."""
    number = parse_job_id(job_id, settings.server_name).number
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
                return wire(settings, [record])
            done.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=min(left, 5.0))
    finally:
        await sub.unsubscribe()
