"""Jobs: submit (one or a batch), list, read, wait for, and control (qdel, qhold,
qrls, qalter, qrerun, qsig)."""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from pkbs import constants as C
from pkbs.control import JobControl
from pkbs.errors import (
    BadState,
    FinishedJob,
    InvalidRequest,
    Unauthorized,
)
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
from pkbs.pbsattrs import job_attributes
from pkbs.pbsvalues import RESUME, SUSPEND, is_subjob_range, parse_job_id
from pkbs.queues import check_request
from pkbs.retention import history_seconds, within_history
from pkbs.settings import Settings
from pkbs.states import JobState, is_active, is_final

from . import jobhooks, metrics
from .auth import check_hold_types, check_owner
from .context import Caller, Config, Hooks, Index, ServerConf, Store
from .jobindex import COLUMNS, listing_body
from .lookup import owned, owned_all
from .submission import Submitting

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


def no_subjob(record: JobRecord) -> None:
    if record.index is not None:
        raise InvalidRequest(
            "Request invalid for a subjob: hold or release its array", record.job_id
        )


@router.post("/jobs", response_model=SubmitResponse, status_code=201)
async def submit(body: SubmitRequest, submitter: Submitting) -> SubmitResponse:
    return await submitter.submit(body)


@router.post("/jobs/batch", response_model=BatchSubmitResponse, status_code=201)
async def submit_batch(body: BatchSubmitRequest, submitter: Submitting) -> BatchSubmitResponse:
    """Many jobs in one request, numbered in order. Every job is checked first (its
    queuejob hooks run): if one is refused, none is submitted (the error names its
    position). A retry of the same batch (same submit ids) returns the same jobs."""
    return await submitter.submit_many(body.jobs)


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
    server: ServerConf,
    history: bool = False,
    subjobs: bool = False,
    user: Annotated[list[str] | None, Query()] = None,
    view: Annotated[ListView, Query(description=VIEW_DOC)] = "full",
) -> dict[str, Any] | Response:
    """The caller's jobs (an operator's: everybody's), finished ones with history,
    subjobs of arrays with `subjobs` (queued ones that have no record yet too).
    Finished jobs whose history has expired are not listed (pkbs/retention.py)."""
    now = time.time()
    kept_for = history_seconds(server.config.server)
    if view != "full":
        await index.sync()  # every change stored before this request is in
        rows = index.rows(
            view,
            owner=None if who.is_admin else who.user,
            users=user,
            history=history,
            subjobs=subjobs,
            since=now - kept_for,
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
    if subjobs:  # never started: queued, or ended with their array (history)
        for array in [r for r in records if r.is_array and (history or not is_final(r.state))]:
            have = started.get(array.number, set())
            state = array.state if is_final(array.state) else JobState.QUEUED
            records.extend(
                array.subjob(i).model_copy(update={"state": state})
                for i in array.spec.array_indices()
                if i not in have
            )
    if not history:
        records = [r for r in records if not is_final(r.state)]
    else:
        tops = (r for r in records if r.index is None)  # a subjob goes with its array
        gone = {r.number for r in tops if not within_history(r, kept_for, now)}
        records = [r for r in records if r.number not in gone]
    records.sort(key=lambda r: (r.number, -1 if r.index is None else r.index))
    return wire(settings, records)


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, who: Caller, st: Store, settings: Config) -> dict[str, Any]:
    """A job, or each subjob of a range (`12[2-5]`)."""
    return wire(settings, await owned_all(st, who, job_id))


@router.delete("/jobs/{job_id}", status_code=204)
async def delete_job(job_id: str, who: Caller, st: Store) -> Response:
    """qdel of a job, or of each subjob of a range that has not ended (the range is
    refused only if every one of them has)."""
    records = await owned_all(st, who, job_id)
    control = JobControl(st)
    finished: FinishedJob | None = None
    for record in records:
        try:
            await control.delete(record.number, who.user, record.index)
        except FinishedJob as exc:
            finished = exc
            continue
        metrics.DELETED.inc()
    if finished is not None and len(records) == 1:
        raise finished
    if finished is not None and all(is_final(r.state) for r in records):
        raise FinishedJob(job_id=job_id)
    return Response(status_code=204)


async def holdable(st: JobStore, who: Identity, job_id: str, types: str) -> JobRecord:
    """The job a qhold / qrls names, if the caller may set or clear these holds on it
    (not a subjob nor a range of them: PBS's PBSE_IVALREQ)."""
    records = await owned_all(st, who, job_id)
    for record in records:
        check_hold_types(who, types, record)
        no_subjob(record)
    return records[0]


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
    job_id: str,
    body: AlterRequest,
    who: Caller,
    st: Store,
    settings: Config,
    conf: ServerConf,
    hooks: Hooks,
) -> dict[str, Any]:
    record = await owned(st, who, job_id)
    no_subjob(record)
    body, comment = await jobhooks.modifyjob(hooks, who, record, body)

    def check(spec: JobSpec) -> None:
        check_request(
            spec.queue, conf.config.queue(spec.queue), spec.resources, settings.max_job_ncpus
        )

    altered = await JobControl(st).alter(
        record.number, body, check, comment, privileged=who.is_admin
    )
    return wire(settings, [altered])


async def each_running(records: list[JobRecord], act: Any, job_id: str) -> None:
    """`act` on each record of a job or range; of a range only on the subjobs that
    run, refused (PBSE_BADSTATE) if none does (PBS's req_signaljob, req_rerunjob). A
    job, or an array, that has finished: PBSE_HISTJOBID, as PBS's chk_job_request."""
    if not is_subjob_range(job_id):
        record = records[0]
        if record.index is None and is_final(record.state):
            raise FinishedJob(job_id=record.job_id)
        await act(record)
        return
    running = [r for r in records if is_active(r.state)]
    if not running:
        raise BadState(job_id=f"{job_id.split('.', 1)[0]}.{records[0].server}")
    for record in running:
        await act(record)


@router.post("/jobs/{job_id}/rerun", status_code=204)
async def rerun_job(job_id: str, who: Caller, st: Store) -> Response:
    control = JobControl(st)

    async def rerun(record: JobRecord) -> None:
        await control.rerun(record.number, record.index)

    await each_running(await owned_all(st, who, job_id), rerun, job_id)
    return Response(status_code=204)


@router.post("/jobs/{job_id}/signal", status_code=204)
async def signal_job(job_id: str, body: SignalRequest, who: Caller, st: Store) -> Response:
    """qsig. suspend and resume are the operators' (PBS: manager or operator)."""
    records = await owned_all(st, who, job_id)
    if body.signal in (SUSPEND, RESUME) and not who.is_admin:
        raise Unauthorized(job_id=records[0].job_id if len(records) == 1 else job_id)
    control = JobControl(st)

    async def send(record: JobRecord) -> None:
        await control.signal(record, body.signal)

    await each_running(records, send, job_id)
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
