"""How the API answers a PkbsError: its HTTP status, and `{"error": {"pbs_errno",
"message", "job_id"}}`, from which the CLI makes the same error again
(pkbs.errors.from_reply)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from pkbs.errors import PkbsError

from . import metrics


def error_reply(error: PkbsError) -> JSONResponse:
    return JSONResponse({"error": error.to_dict()}, status_code=error.http_status)


async def refuse(request: Request, error: PkbsError) -> JSONResponse:
    """The exception handler of every route: the refusal, counted by its kind."""
    metrics.REJECTED.labels(type(error).__name__).inc()
    return error_reply(error)
