"""A running job's payload, for the init container of its pod (worker/podinit.py):
given only to that job's own job-scoped token, and only while the job runs."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from pkbs import constants as C
from pkbs.errors import Unauthorized
from pkbs.states import JobState

from .context import Caller, Store
from .lookup import lookup

router = APIRouter(prefix=C.API_PREFIX)


@router.get(
    "/jobs/{job_id}/payload",
    response_class=Response,
    responses={
        200: {
            "description": "The payload as submitted: a zip, or the one file itself; "
            f"{C.PAYLOAD_FORMAT_HEADER} says which, {C.ENTRYPOINT_HEADER} names the file.",
            "content": {"application/octet-stream": {}},
        },
        403: {"description": "Not the running job's own job-scoped token."},
    },
)
async def job_payload(job_id: str, who: Caller, st: Store) -> Response:
    """The payload of a running job (or subjob), to its own job token only (a job
    token stands for its job, or for every subjob of its array). Nobody else gets a
    payload through the API: users and operators submitted it."""
    record = await lookup(st, job_id)
    if who.role != "job" or who.job != record.number or who.user != record.owner:
        raise Unauthorized("Payload only for the job's own token", job_id=record.job_id)
    if record.state != JobState.RUNNING:
        raise Unauthorized("Payload only while the job runs", job_id=record.job_id)
    data = await st.payload(record.number)
    return Response(
        content=data,
        media_type="application/octet-stream",
        headers={
            C.PAYLOAD_FORMAT_HEADER: record.spec.payload_format,
            C.ENTRYPOINT_HEADER: record.spec.entrypoint,
        },
    )
