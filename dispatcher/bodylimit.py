"""The limit on request bodies, as ASGI middleware: a submission's JSON, its payload
inside, may be at most constants.MAX_SUBMIT_BODY_BYTES."""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pkbs import constants as C
from pkbs.errors import PayloadTooLarge
from pkbs.pbsvalues import format_size

from .errors import error_reply

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
            f"job payloads may be at most {format_size(C.MAX_PAYLOAD_BYTES, 'iec')} zipped"
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
            await error_reply(error)(scope, receive, send)
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
                await error_reply(refused)(scope, receive, send)

        await self.app(scope, limited, reply)
