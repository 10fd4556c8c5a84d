"""The CLI's HTTP client: standard library only, so qsub starts fast.

http:// endpoints use a small HTTP/1.1 client on ``_socket`` (keep-alive, Content-Length
request bodies, Content-Length / chunked / read-to-close responses): ``http.client``
would import email.parser, email.utils and ssl, about as long as qsub's own work, and
the ``socket`` module wrapping ``_socket`` builds four enums at import (3-5 ms of a
qsub's start).
https:// endpoints use ``http.client``, imported only then.
"""

from __future__ import annotations

import _socket
import io
import os
import time

from pkbs import clientconfig, wirejson
from pkbs.constants import MAX_BATCH_JOBS, MAX_SUBMIT_BODY_BYTES
from pkbs.errors import PBSE_SYSTEM, PkbsError, Unreachable, from_reply

TYPE_CHECKING = False  # typing is not imported at run time: it costs milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from typing import Any, Protocol

    class _Response(Protocol):
        status: int

        def read(self, amt: int | None = None, /) -> bytes: ...

    class _Connection(Protocol):
        def request(
            self, method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] = ...
        ) -> None: ...

        def getresponse(self) -> _Response: ...

        def close(self) -> None: ...


RETRY_STATUSES = {502, 503, 504}
TIMEOUT = 600.0  # seconds without progress on a connection (qsub -W block waits 300 s)
_MAX_LINE = 65536
_MAX_HEADERS = 100
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.x as expected (retried like a connection failure)."""


# --------------------------------------------------------------------------- URLs

_URL_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote_plus(value: str | bytes) -> str:
    """``urllib.parse.quote_plus(value, safe="")``: UTF-8, unreserved kept, space as +."""
    data = value.encode() if isinstance(value, str) else value
    return "".join(
        chr(byte) if byte in _URL_SAFE else "+" if byte == 0x20 else f"%{byte:02X}" for byte in data
    )


def urlencode(query: Mapping[str, Any]) -> str:
    """``urllib.parse.urlencode(query, doseq=True)`` for the values the CLI passes: a
    str / bytes / scalar is one item, any other sized iterable gives one item per element."""
    items: list[str] = []
    for key, value in query.items():
        name = quote_plus(key if isinstance(key, str | bytes) else str(key))
        if isinstance(value, str | bytes):
            items.append(f"{name}={quote_plus(value)}")
            continue
        try:
            len(value)
        except TypeError:
            items.append(f"{name}={quote_plus(str(value))}")
            continue
        for element in value:
            text = element if isinstance(element, str | bytes) else str(element)
            items.append(f"{name}={quote_plus(text)}")
    return "&".join(items)


def split_endpoint(endpoint: str) -> tuple[bool, str, int, str]:
    """``http[s]://[user@]host[:port][/base]`` to (https, host, port, base without a
    trailing /), as urllib.parse.urlsplit reads it (host lower-cased, [v6] unbracketed)."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        scheme, rest = "", endpoint
    https = scheme.lower() == "https"
    for stop in "?#":
        rest = rest.partition(stop)[0]
    netloc, slash, path = rest.partition("/")
    netloc = netloc.rpartition("@")[2]
    if netloc.startswith("["):
        host, _, tail = netloc[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = netloc.partition(":")
    port = 443 if https else 80
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
            raise ValueError(f"bad port in endpoint {endpoint!r}")
        port = int(port_text)
    base = (slash + path).rstrip("/")
    return https, host.lower() or "127.0.0.1", port, base


# --------------------------------------------------------------------------- plain HTTP/1.1


class _SocketReader(io.RawIOBase):
    """The raw side of ``socket.makefile("rb")`` (socket.SocketIO) for a blocking socket
    with a timeout: recv_into raises TimeoutError after it, returns 0 at end of stream."""

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._sock.recv_into(buffer)


class _PlainResponse:
    """One response of a _PlainConnection; ``read`` as http.client.HTTPResponse.read."""

    def __init__(self, conn: _PlainConnection, head_only: bool) -> None:
        self._conn = conn
        fp = conn.rfile
        assert fp is not None
        self._fp = fp
        while True:  # 1xx interim responses carry no body
            version, self.status = self._status_line()
            self.headers = self._headers()
            if self.status >= 200:
                break
        connection = self.headers.get("connection", "").lower()
        self.will_close = "close" in connection or (
            version == "HTTP/1.0" and "keep-alive" not in connection
        )
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self._chunk_left = 0
        self._length: int | None = None
        self._done = False
        if head_only or self.status in (204, 304):
            self._length = 0
        elif not self._chunked and "content-length" in self.headers:
            text = self.headers["content-length"].split(",")[0].strip()
            if not text.isdigit():
                raise ProtocolError(f"bad Content-Length {text!r}")
            self._length = int(text)
        elif not self._chunked:
            self.will_close = True  # the body runs to the end of the connection

    def _line(self) -> bytes:
        line = self._fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise ProtocolError("header line too long")
        return line

    def _status_line(self) -> tuple[str, int]:
        line = self._line()
        if not line:
            raise ConnectionResetError("the server closed the connection without a response")
        parts = line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {line[:80]!r}")
        return parts[0], int(parts[1])

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                return headers
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise ProtocolError(f"bad header line {line[:80]!r}")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        raise ProtocolError("too many headers")

    @property
    def empty(self) -> bool:
        return self._length == 0

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def _finish(self) -> None:
        self._done = True
        self._conn.released(self)

    def _exact(self, size: int) -> bytes:
        data = self._fp.read(size)
        if len(data) < size:
            raise ProtocolError(f"connection closed {size - len(data)} bytes before the end")
        return data

    def _next_chunk(self) -> None:
        line = self._line()
        try:
            self._chunk_left = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size line {line[:80]!r}") from None
        if self._chunk_left < 0:
            raise ProtocolError(f"bad chunk size line {line[:80]!r}")
        if self._chunk_left == 0:
            while self._line() not in (b"\r\n", b"\n"):  # trailers, up to the blank line
                pass

    def read(self, amt: int | None = None, /) -> bytes:
        if self._done:
            return b""
        if self._length == 0:
            self._finish()
            return b""
        if amt is None:
            parts = []
            while part := self.read(1 << 20):
                parts.append(part)
            return b"".join(parts)
        if self._chunked:
            if self._chunk_left == 0:
                self._next_chunk()
                if self._chunk_left == 0:
                    self._finish()
                    return b""
            data = self._exact(min(amt, self._chunk_left))
            self._chunk_left -= len(data)
            if self._chunk_left == 0:
                self._exact(2)  # the CRLF after the chunk data
            return data
        if self._length is None:  # read to end of connection
            data = self._fp.read(amt)
            if not data:
                self._finish()
            return data
        data = self._exact(min(amt, self._length))
        self._length -= len(data)
        if self._length == 0:
            self._finish()
        return data


class _PlainConnection:
    """A persistent HTTP/1.1 connection with http.client.HTTPConnection's request /
    getresponse / close. A request on a reused connection that the server has closed
    meanwhile (idle timeout, or a close it did not announce) is sent again at once on a
    fresh connection: every request the CLI makes is idempotent."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: _socket.socket | None = None
        self.rfile: io.BufferedReader | None = None
        self._host_header = f"[{host}]" if ":" in host else host
        if port != 80:
            self._host_header += f":{port}"
        self._pending: bytes | None = None
        self._head_only = False
        self._reused = False
        self._response: _PlainResponse | None = None

    def _open(self) -> None:
        # socket.create_connection, but an ASCII host goes to getaddrinfo as bytes: a str
        # host makes it load the idna codec (encodings.idna, stringprep, unicodedata).
        host = self.host.encode() if self.host.isascii() else self.host
        error: OSError | None = None
        for family, kind, proto, _, address in _socket.getaddrinfo(
            host, self.port, 0, _socket.SOCK_STREAM
        ):
            sock = _socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.timeout)
                sock.connect(address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            self.sock = sock
            break
        else:
            raise error or OSError(f"getaddrinfo returned no address for {self.host}")
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        self.rfile = io.BufferedReader(_SocketReader(sock))
        self._reused = False

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if any(c <= " " or c == "\x7f" for c in url):
            raise ValueError(f"URL can't contain control characters or spaces: {url!r}")
        if self._response is not None:  # the previous response was not read to its end
            self.close()
        lines = [f"{method} {url} HTTP/1.1", f"Host: {self._host_header}"]
        lines.append("Accept-Encoding: identity")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body is not None or method not in _NO_BODY_METHODS:
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._pending = head + (body or b"")
        self._head_only = method == "HEAD"
        self._send()

    def _send(self) -> None:
        assert self._pending is not None
        if self.sock is None:
            self._open()
        assert self.sock is not None
        try:
            self.sock.sendall(self._pending)
        except OSError:
            if not self._reused:
                raise
            self.close()
            self._open()
            assert self.sock is not None
            self.sock.sendall(self._pending)

    def getresponse(self) -> _PlainResponse:
        if self._pending is None:
            raise ProtocolError("getresponse() without a request")
        try:
            response = self._receive()
        except (ConnectionResetError, BrokenPipeError):
            if not self._reused:
                raise
            self.close()  # a stale keep-alive connection: once more on a new one
            self._send()
            response = self._receive()
        self._pending = None
        return response

    def _receive(self) -> _PlainResponse:
        response = _PlainResponse(self, self._head_only)
        self._response = response
        if response.empty:
            response.read()  # nothing to read: release the connection now
        return response

    def released(self, response: _PlainResponse) -> None:
        """The response has been read to its end: the connection can serve the next one."""
        if response is not self._response:
            return
        self._response = None
        if response.will_close:
            self.close()
        else:
            self._reused = True

    def close(self) -> None:
        self._response = None
        self._reused = False
        rfile, sock, self.rfile, self.sock = self.rfile, self.sock, None, None
        if rfile is not None:
            rfile.close()
        if sock is not None:
            sock.close()


# --------------------------------------------------------------------------- the API client


class Client:
    def __init__(self, config: clientconfig.ClientConfig | None = None) -> None:
        self.config = config or clientconfig.load()
        self.https, self.host, self.port, self.base = split_endpoint(self.config.endpoint)
        self._conn: _Connection | None = None
        self._errors: tuple[type[Exception], ...] = (OSError,)

    def _connection(self) -> _Connection:
        if self._conn is None:
            if self.https:
                import http.client

                self._errors = (OSError, http.client.HTTPException)
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=TIMEOUT)
            else:
                self._conn = _PlainConnection(self.host, self.port, TIMEOUT)
        return self._conn

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        retries: int = 3,
    ) -> Any:
        """JSON in, JSON out. Connection failures and 503s are retried: every call
        the CLI makes is idempotent (submits carry a client submit id). An error reply
        raises the dispatcher's error (see reply_error); no connection, Unreachable."""
        url = self.base + "/v1" + path
        if query:
            url += "?" + urlencode(query)
        data = body if isinstance(body, bytes) or body is None else wirejson.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.config.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        delay = 0.2
        for attempt in range(retries + 1):
            try:
                conn = self._connection()
                conn.request(method, url, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
            except self._errors as exc:
                self.close()
                if attempt == retries:
                    raise Unreachable.connecting(self.config.endpoint, exc) from None
                time.sleep(delay)
                delay *= 2
                continue
            if response.status in RETRY_STATUSES and attempt < retries:
                time.sleep(delay)
                delay *= 2
                continue
            if response.status >= 400:
                raise reply_error(response.status, raw)
            try:
                return wirejson.loads(raw) if raw else None
            except ValueError:
                raise from_reply(
                    PBSE_SYSTEM, "the server's reply is not JSON", None, response.status
                ) from None
        raise AssertionError("unreachable")

    def submit_many(
        self,
        bodies: Sequence[Mapping[str, Any]],
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Submit many jobs (bodies as qsub sends them to POST /v1/jobs) through
        POST /v1/jobs/batch, as few requests as the server's limits allow; their job
        ids, in order. Calling it again with the same bodies (after a failure
        part-way) submits nothing twice: each body's submit_id names its job.
        `progress` gets the number of jobs submitted so far after each request."""
        limit = MAX_SUBMIT_BODY_BYTES - 1024
        job_ids: list[str] = []
        batch: list[bytes] = []
        size = 0

        def send() -> None:
            nonlocal size
            data = b'{"jobs":[' + b",".join(batch) + b"]}"
            result = self.request("POST", "/jobs/batch", data)
            job_ids.extend(str(job["job_id"]) for job in result["jobs"])
            batch.clear()
            size = 0
            if progress is not None:
                progress(len(job_ids))

        for body in bodies:
            encoded = wirejson.dumps(body).encode()
            if batch and (len(batch) == MAX_BATCH_JOBS or size + len(encoded) + 1 > limit):
                send()
            batch.append(encoded)
            size += len(encoded) + 1
        if batch:
            send()
        return job_ids

    def download(
        self, path: str, target: os.PathLike[str], progress: Callable[[int], None] | None
    ) -> None:
        """Stream GET `path` into `target` (via a temporary file)."""
        conn = self._connection()
        conn.request(
            "GET",
            self.base + "/v1" + path,
            headers={"Authorization": f"Bearer {self.config.token}"},
        )
        response = conn.getresponse()
        if response.status != 200:
            raise reply_error(response.status, response.read())
        tmp = os.fspath(target) + ".part"
        with open(tmp, "wb") as out:
            while chunk := response.read(256 * 1024):
                out.write(chunk)
                if progress is not None:
                    progress(len(chunk))
        os.replace(tmp, target)

    def stream(
        self, path: str, query: dict[str, Any] | None = None, accept: str = "text/event-stream"
    ) -> Iterator[bytes]:
        """GET `path` and give its body as it comes (a long-lived answer: no retries
        once it has begun). An error reply raises the dispatcher's error."""
        url = self.base + "/v1" + path + ("?" + urlencode(query) if query else "")
        headers = {"Authorization": f"Bearer {self.config.token}", "Accept": accept}
        answered = False
        try:
            conn = self._connection()
            conn.request("GET", url, headers=headers)
            response = conn.getresponse()
            answered = True
            if response.status >= 400:
                raise reply_error(response.status, response.read())
            while chunk := response.read(64 * 1024):
                yield chunk
        except self._errors as exc:
            self.close()
            endpoint = self.config.endpoint
            raise (Unreachable.lost if answered else Unreachable.connecting)(
                endpoint, exc
            ) from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def reply_error(status: int, raw: bytes) -> PkbsError:
    """The error of an error reply: the class the dispatcher raised (errors.from_reply),
    or a clear line for anything else (a proxy's HTML page, a plain-text 500)."""
    try:
        payload = wirejson.loads(raw) if raw else None
    except ValueError:
        payload = None
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        detail = payload.get("detail") if isinstance(payload, dict) else None
        text = f": {detail}" if detail else ""
        return from_reply(PBSE_SYSTEM, f"Request failed ({status}){text}", None, status)
    return from_reply(
        int(err.get("pbs_errno") or PBSE_SYSTEM),
        str(err.get("message") or f"Request failed ({status})"),
        err.get("job_id") or None,
        status,
    )
