"""A finished job's result files (`pkbs fetch`): listed from its record, streamed
from WebDAV."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from pkbs import constants as C
from pkbs.errors import UnknownJob
from pkbs.results import job_results_path
from pkbs.stdpaths import std_outputs

from .context import Caller, Config, Results, Store
from .lookup import owned

router = APIRouter(prefix=C.API_PREFIX)


@router.get("/jobs/{job_id}/files")
async def list_files(job_id: str, who: Caller, st: Store) -> dict[str, Any]:
    record = await owned(st, who, job_id)
    return {
        "job_id": record.job_id,
        "results_url": record.results_url,
        "files": [f.model_dump() for f in record.results],
        # The stdout/stderr among them, each with its Output_Path / Error_Path.
        "outputs": dict(std_outputs(record)),
    }


@router.get("/jobs/{job_id}/files/{name:path}")
async def get_file(
    job_id: str, name: str, who: Caller, st: Store, settings: Config, results: Results
) -> Response:
    record = await owned(st, who, job_id)
    if name not in {f.name for f in record.results}:
        raise UnknownJob(f"No result file {name!r} for job", job_id=record.job_id)
    # The finishing run's collection; a record older than per-run collections
    # has none: its results are in the job's collection itself.
    base = record.results_path or job_results_path(
        settings.webdav_base, record.owner, record.job_id
    )
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
