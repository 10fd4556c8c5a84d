"""The read-only web dashboard at /ui: one static page and its script and style,
shipped in the package (dispatcher/ui/), which read the JSON API with the token the
user pastes on the page (kept in the tab's sessionStorage, sent as a bearer header,
never in a URL and never in a cookie: so no request can be forged from another site).
Not in the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

ASSETS = Path(__file__).with_name("ui")
# What a page of the dashboard may load and talk to: only this server.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The page's assets: nothing else under ui/ is served.
ASSET_TYPES = {"app.js": "text/javascript", "style.css": "text/css"}

router = APIRouter(include_in_schema=False)


@router.get("/ui")
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/")
async def ui_page() -> FileResponse:
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return FileResponse(ASSETS / "index.html", media_type="text/html", headers=headers)


@router.get("/ui/assets/{name}")
async def ui_asset(name: str) -> FileResponse:
    media_type = ASSET_TYPES.get(name)
    if media_type is None:
        raise HTTPException(404)
    return FileResponse(ASSETS / name, media_type=media_type,
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})
