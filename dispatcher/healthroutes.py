"""Liveness, readiness and Prometheus metrics: for probes and scrapers, not in the
OpenAPI document."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .context import Index, Store

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@router.get("/readyz")
async def readyz(st: Store, index: Index) -> JSONResponse:
    ok = st.nc.is_connected and index.ready  # not before the job index has loaded
    return JSONResponse({"ok": ok}, status_code=200 if ok else 503)


@router.get("/metrics")
async def prometheus() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
