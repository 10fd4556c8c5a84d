"""The WebDAV results layer: where workers put job outputs and users fetch them.

One `httpx.AsyncClient` per store (connections are reused), basic auth sent up
front. Paths are plain, unquoted server paths such as "/pkbs/alice/12.pkbs/out 1.txt":
the store percent-encodes every segment itself (exactly once), and refuses "." and
".." segments, so a job name can neither break a URL nor climb out of the base.

Connection errors, timeouts, 5xx and 423 (Locked) are retried with exponential
backoff and jitter; after the last attempt they raise `ServiceUnavailable` (a store
made with `attempts=None` retries until its caller gives up: the worker's, within
its deadline for a run's results). Any other 4xx fails at once as `InvalidRequest`
naming the status, method and path (401/403 also name the user: wrong WebDAV
credentials are not worth a retry).
"""

from __future__ import annotations

import asyncio
import builtins
import os
import random
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import httpx

from pkbs.errors import InvalidRequest, ServiceUnavailable

if TYPE_CHECKING:
    from pkbs.settings import Settings

__all__ = [
    "Progress",
    "RemoteFile",
    "ResultStore",
    "RetryHook",
    "job_results_path",
    "run_results_path",
]

T = TypeVar("T")
Progress = Callable[[int, int | None], None]
"""Called with (bytes done, total bytes or None) as a transfer goes on."""
RetryHook = Callable[[int, float, str], None]
"""Called before each backoff with (failed attempt number, delay in s, reason)."""

_DAV = "{DAV:}"
_CHUNK = 256 * 1024
_PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<d:propfind xmlns:d="DAV:"><d:prop>'
    b"<d:resourcetype/><d:getcontentlength/>"
    b"</d:prop></d:propfind>"
)


@dataclass(frozen=True)
class RemoteFile:
    name: str  # the last path segment, unquoted
    size: int
    is_dir: bool = False


class _Retry(Exception):
    """A response worth another attempt (5xx, 423)."""


class _ParentMissing(InvalidRequest):
    """409 on PUT: the parent collection does not exist (yet)."""


def _check_segment(segment: str, what: str) -> None:
    if segment in ("", ".", "..") or "/" in segment or any(ord(c) < 32 for c in segment):
        raise InvalidRequest(f"Invalid {what} for a results path: {segment!r}")


def job_results_path(base: str, user: str, job_id: str) -> str:
    """`<base>/<user>/<job_id>/`, unquoted; user and job id must be single, safe
    segments (ResultStore does the percent-encoding)."""
    _check_segment(user, "user name")
    _check_segment(job_id, "job id")
    return "/" + "/".join([*(s for s in base.split("/") if s), user, job_id]) + "/"


def run_results_path(base: str, user: str, job_id: str, run_count: int) -> str:
    """`<base>/<user>/<job_id>/run-<run_count>/`: where one run of a job stores its
    outputs. `run_count` is the job record's, which the compare-and-set starting a run
    increments (a record is never reset), so no two runs of a job share a collection;
    the job's results are those of the run that finished it, named in its record."""
    if run_count < 1:
        raise ValueError(f"run_count must be >= 1, not {run_count}")
    return f"{job_results_path(base, user, job_id)}run-{run_count}/"


def _segments(path: str) -> list[str]:
    parts = [s for s in path.split("/") if s]
    for part in parts:
        if part in (".", ".."):
            raise InvalidRequest(f"Invalid WebDAV path {path!r}: '.' and '..' are not allowed")
    return parts


class ResultStore:
    """Async WebDAV client for job results. Use as `async with ResultStore(...)`
    or call `aclose()`."""

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        base: str = "/pkbs",
        attempts: int | None = 8,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        timeout: float = 30.0,
        on_retry: RetryHook | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`attempts` tries with delays backoff, 2*backoff, ... capped at
        max_backoff (x0.8-1.2 jitter): the defaults ride out ~35 s of outage.
        `attempts=None`: tries go on until the caller cancels (asyncio.timeout)."""
        if attempts is not None and attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.url = url.rstrip("/")
        self.base = base
        self.user = user
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.on_retry = on_retry
        # Why the latest attempt of any operation failed; None once one succeeds.
        self.last_error: str | None = None
        auth = httpx.BasicAuth(user, password or "") if user else None
        self._client = httpx.AsyncClient(
            auth=auth,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
            follow_redirects=False,
        )
        self._known_collections: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> ResultStore:
        password = settings.webdav_password
        return cls(
            settings.webdav_url,
            user=settings.webdav_user,
            password=password.get_secret_value() if password else None,
            base=settings.webdav_base,
            **kwargs,
        )

    async def __aenter__(self) -> ResultStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def job_path(self, user: str, job_id: str) -> str:
        return job_results_path(self.base, user, job_id)

    # ------------------------------------------------------------------ plumbing

    def _url(self, path: str, collection: bool = False) -> str:
        segments = _segments(path)
        quoted = "/".join(quote(s, safe="") for s in segments)
        tail = "/" if (collection or path.endswith("/")) and segments else ""
        return f"{self.url}/{quoted}{tail}"

    def _fail(self, method: str, path: str, response: httpx.Response) -> InvalidRequest:
        status = response.status_code
        if status in (401, 403):
            return InvalidRequest(
                f"WebDAV {method} {path!r} refused (HTTP {status}): check the credentials "
                f"of WebDAV user {self.user!r} (PKBS_WEBDAV_USER / PKBS_WEBDAV_PASSWORD)"
            )
        if status == 404:
            return InvalidRequest(f"WebDAV {method} {path!r}: not found (HTTP 404)")
        if status == 409:
            cls = _ParentMissing if method == "PUT" else InvalidRequest
            return cls(f"WebDAV {method} {path!r}: conflict (HTTP 409), parent collection missing?")
        return InvalidRequest(
            f"WebDAV {method} {path!r} failed: HTTP {status} {response.reason_phrase}"
        )

    def _check(self, method: str, path: str, response: httpx.Response, ok: tuple[int, ...]) -> None:
        status = response.status_code
        if status in ok:
            return
        if status >= 500 or status == 423:
            raise _Retry(f"HTTP {status} {response.reason_phrase}")
        raise self._fail(method, path, response)

    async def _retrying(self, method: str, path: str, op: Callable[[], Awaitable[T]]) -> T:
        delay = self.backoff
        reason = ""
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await op()
            except _Retry as exc:
                reason = str(exc)
            except httpx.UnsupportedProtocol as exc:
                raise InvalidRequest(f"WebDAV URL {self.url!r}: {exc}") from exc
            except httpx.TransportError as exc:  # connect/read/write errors, timeouts
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                self.last_error = None
                return result
            self.last_error = f"{method} {path!r}: {reason}"
            if attempt == self.attempts:
                break
            pause = min(delay, self.max_backoff) * random.uniform(0.8, 1.2)
            if self.on_retry is not None:
                self.on_retry(attempt, pause, reason)
            await asyncio.sleep(pause)
            delay = min(delay * 2, self.max_backoff)
        raise ServiceUnavailable(
            f"WebDAV {method} {path!r} at {self.url} failed after {attempt} "
            f"attempt{'s' if attempt > 1 else ''}: {reason}"
        )

    async def _simple(
        self,
        method: str,
        path: str,
        ok: tuple[int, ...],
        *,
        collection: bool = False,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        url = self._url(path, collection)

        async def op() -> httpx.Response:
            response = await self._client.request(method, url, content=content, headers=headers)
            self._check(method, path, response, ok)
            return response

        return await self._retrying(method, path, op)

    # ------------------------------------------------------------------ operations

    async def ensure_collection(self, path: str) -> None:
        """MKCOL every level of `path` that is missing (405: exists already)."""
        segments = _segments(path)
        for i in range(1, len(segments) + 1):
            prefix = "/" + "/".join(segments[:i]) + "/"
            if prefix in self._known_collections:
                continue
            await self._simple("MKCOL", prefix, (200, 201, 405), collection=True)
            self._known_collections.add(prefix)

    async def _put(self, remote_path: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run a PUT; on 409 (parent missing) make the parents and try once more."""
        try:
            return await make()
        except _ParentMissing:
            pass
        self._known_collections.clear()
        await self.ensure_collection("/".join(_segments(remote_path)[:-1]))
        try:
            return await make()
        except _ParentMissing as exc:
            raise InvalidRequest(exc.message) from exc

    async def upload_bytes(self, remote_path: str, data: bytes) -> None:
        async def make() -> None:
            await self._simple("PUT", remote_path, (200, 201, 204), content=data)

        await self._put(remote_path, make)

    async def upload_file(
        self, remote_path: str, local_path: str | os.PathLike[str], progress: Progress | None = None
    ) -> int:
        """Streaming PUT of a local file (parents are created when missing).
        Returns the bytes sent; progress restarts from 0 on a retry."""
        local = os.fspath(local_path)
        url = self._url(remote_path)

        def local_error(exc: OSError) -> InvalidRequest:
            return InvalidRequest(f"Cannot upload {local!r}: {exc.strerror or exc}")

        async def body(size: int) -> AsyncIterator[bytes]:
            sent = 0
            try:
                with open(local, "rb") as f:
                    while sent < size:
                        chunk = await asyncio.to_thread(f.read, min(_CHUNK, size - sent))
                        if not chunk:
                            raise OSError(f"file shrank while being uploaded ({sent} of {size})")
                        sent += len(chunk)
                        yield chunk
                        if progress is not None:
                            progress(sent, size)
            except OSError as exc:
                raise local_error(exc) from exc

        async def op() -> int:
            try:
                size = os.stat(local).st_size
            except OSError as exc:
                raise local_error(exc) from exc
            if progress is not None:
                progress(0, size)
            response = await self._client.put(
                url, content=body(size), headers={"Content-Length": str(size)}
            )
            self._check("PUT", remote_path, response, (200, 201, 204))
            return size

        async def make() -> int:
            return await self._retrying("PUT", remote_path, op)

        return await self._put(remote_path, make)

    async def list(self, path: str) -> builtins.list[RemoteFile]:
        """The members of a collection (PROPFIND Depth 1), sorted by name."""
        response = await self._simple(
            "PROPFIND",
            path,
            (207,),
            collection=True,
            content=_PROPFIND_BODY,
            headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
        )
        try:
            root = ET.fromstring(response.content)
        except ET.ParseError as exc:
            raise ServiceUnavailable(f"WebDAV PROPFIND {path!r}: unreadable reply: {exc}") from exc
        own = "/".join(unquote(s) for s in urlsplit(self._url(path)).path.split("/") if s)
        found: list[RemoteFile] = []
        for resp in root.iter(f"{_DAV}response"):
            href = resp.findtext(f"{_DAV}href") or ""
            segments = [unquote(s) for s in urlsplit(href).path.split("/") if s]
            if "/".join(segments) == own or not segments:
                continue
            size, is_dir = 0, False
            for propstat in resp.iter(f"{_DAV}propstat"):
                if " 200 " not in (propstat.findtext(f"{_DAV}status") or "") + " ":
                    continue
                prop = propstat.find(f"{_DAV}prop")
                if prop is None:
                    continue
                rtype = prop.find(f"{_DAV}resourcetype")
                if rtype is not None and rtype.find(f"{_DAV}collection") is not None:
                    is_dir = True
                length = prop.findtext(f"{_DAV}getcontentlength")
                if length and length.strip().isdigit():
                    size = int(length)
            found.append(RemoteFile(segments[-1], size, is_dir))
        return sorted(found, key=lambda f: f.name)

    async def download(
        self,
        remote_path: str,
        dest_file: str | os.PathLike[str],
        progress: Progress | None = None,
    ) -> int:
        """Streaming GET into `dest_file`, written to a temporary file beside it
        and renamed at the end (a failed download leaves nothing). Returns bytes."""
        dest = os.fspath(dest_file)
        url = self._url(remote_path)

        async def op() -> int:
            try:
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest) or ".", prefix=".part-")
            except OSError as exc:
                raise InvalidRequest(f"Cannot write {dest!r}: {exc.strerror or exc}") from exc
            try:
                with os.fdopen(fd, "wb") as out:
                    async with self._client.stream("GET", url) as response:
                        self._check("GET", remote_path, response, (200,))
                        total_header = response.headers.get("Content-Length")
                        total = int(total_header) if total_header else None
                        done = 0
                        if progress is not None:
                            progress(0, total)
                        async for chunk in response.aiter_bytes(_CHUNK):
                            await asyncio.to_thread(out.write, chunk)
                            done += len(chunk)
                            if progress is not None:
                                progress(done, total)
                if total is not None and done != total:
                    raise _Retry(f"short read: {done} of {total} bytes")
                os.replace(tmp, dest)
                return done
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise

        return await self._retrying("GET", remote_path, op)

    async def open_read(self, remote_path: str) -> httpx.Response:
        """A streaming GET whose status is already checked (retried like the rest).
        The caller iterates `aiter_bytes()` and must `aclose()` the response."""
        url = self._url(remote_path)

        async def op() -> httpx.Response:
            response = await self._client.send(self._client.build_request("GET", url), stream=True)
            try:
                self._check("GET", remote_path, response, (200,))
            except BaseException:
                await response.aclose()
                raise
            return response

        return await self._retrying("GET", remote_path, op)

    async def delete(self, path: str) -> bool:
        """DELETE a file or a whole collection; a missing one is fine. Whether there
        was one to delete."""
        response = await self._simple("DELETE", path, (200, 204, 404))
        prefix = "/" + "/".join(_segments(path)) + "/"
        self._known_collections = {c for c in self._known_collections if not c.startswith(prefix)}
        return response.status_code != 404
