"""Structured (JSON lines) logging for the server-side components.

A line is `{"ts": "2026-12-03T10:24:43.123Z", "level": ..., "logger": ..., "msg": ...}`
plus the job, worker, state and exit status it concerns; `render` makes one readable
(`pkbs status --logs NAME`). Libraries' per-request lines (httpx, uvicorn's access log)
show only at DEBUG. Every line goes to stderr; with `PKBS_SYSLOG_URL` (tcp://HOST:PORT or udp://HOST:PORT)
the same line also goes to a syslog receiver (the `logging` component's), as
`<PRI>pkbs-<component>: {json}` with facility user.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import logging.handlers
import os
import queue
import re
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable

# The fields a line may carry besides ts, level, logger and msg, in the order shown.
FIELDS = ("job", "worker", "state", "exit_status", "hook")
# Loggers that write a line per request: shown only when the level is DEBUG.
CHATTY_LOGGERS = ("httpx", "httpcore", "uvicorn.access", "wsgidav", "cheroot")


def iso_utc(timestamp: float) -> str:
    """`2026-12-03T10:24:43.123Z` (UTC, milliseconds)."""
    whole = int(timestamp)
    millis = int((timestamp - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def render(line: str) -> str:
    """A JSON log line as a person reads it: `TS LEVEL logger: msg job=12.pkbs ...`;
    any other line as it is."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict) or "msg" not in entry:
        return line
    ts = entry.pop("ts", "")
    if isinstance(ts, (int, float)):
        ts = iso_utc(ts)
    head = f"{ts} {str(entry.pop('level', '')).upper():<7} {entry.pop('logger', '')}: "
    text = head + str(entry.pop("msg"))
    exc = entry.pop("exc", None)
    text += "".join(f" {key}={value}" for key, value in entry.items())
    return text + (f"\n{exc}" if exc else "")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


# One UDP datagram holds it, and it stays under the receiver's 64 KiB TCP frame.
SYSLOG_MAX_BYTES = 60_000
# Lines waiting for the syslog sender; beyond this they are dropped (stderr has them).
SYSLOG_QUEUE_LINES = 10_000


def parse_syslog_url(url: str) -> tuple[socket.SocketKind, str, int]:
    """`tcp://HOST:PORT` or `udp://HOST:PORT` (port 514 when left out)."""
    parts = urllib.parse.urlsplit(url.strip())
    kinds = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
    try:
        port = parts.port or 514
    except ValueError:
        port = 0
    if (
        parts.scheme not in kinds
        or not parts.hostname
        or not port
        or parts.path not in ("", "/")
        or parts.query
        or parts.username
    ):
        raise ValueError(f"PKBS_SYSLOG_URL must be tcp://HOST:PORT or udp://HOST:PORT, not {url!r}")
    return kinds[parts.scheme], parts.hostname, port


def component_name() -> str:
    """`dispatcher` under `python -m pkbs.dispatcher`, `worker` under `python -m
    pkbs.worker`, else the program's name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    parts = str(getattr(spec, "name", None) or "").split(".")
    if len(parts) > 1 and parts[0] == "pkbs":
        name = parts[1]
    else:
        prog = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-") else ""
        name = os.path.splitext(os.path.basename(prog))[0] or "python"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:32]


_Socket = socket.socket


class SyslogSender(logging.handlers.SysLogHandler):
    """A SysLogHandler (facility user) for a receiver that may come and go.

    It connects in the thread that sends (the QueueListener's, never the event loop's),
    resolves the name once per connection, waits at most `timeout` seconds, reconnects
    once when a TCP connection was dropped (the receiver restarted), and after a
    failure drops lines for `retry_seconds` before trying again, saying so once through
    `notify`. TCP frames end with a newline (the receiver, rsyslog and syslog-ng split on
    it; a JSON line holds none); UDP sends one datagram per line. Lines reach it already
    formatted (QueueHandler), so it adds only `<PRI>` and the ident `pkbs-<component>: `.
    """

    socket: _Socket | None
    timeout = 2.0
    retry_seconds = 5.0

    def __init__(self, url: str, ident: str, notify: Callable[[str], None]) -> None:
        socktype, self._host, self._port = parse_syslog_url(url)
        self.url = url
        self._notify = notify
        self._sockaddr: tuple[str, int] | None = None
        self._retry_at = 0.0
        self._down = False
        self._dropped = 0
        self._started = False
        super().__init__((self._host, self._port), self.LOG_USER, socktype)
        self._started = True
        self.ident = ident
        self.append_nul = False

    def createSocket(self) -> None:
        self.unixsocket = False
        if not self._started:  # the base class's __init__: connect on the first line
            return
        if self.socktype == socket.SOCK_STREAM:
            sock = socket.create_connection((self._host, self._port), timeout=self.timeout)
        else:
            family, kind, proto, _, addr = socket.getaddrinfo(
                self._host, self._port, 0, socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
            self._sockaddr = (str(addr[0]), int(addr[1]))
        sock.settimeout(self.timeout)
        self.socket = sock

    def _drop_socket(self) -> None:
        sock, self.socket = self.socket, None
        if sock is not None:
            sock.close()

    def _send(self, data: bytes) -> OSError | None:
        try:
            if self.socket is None:
                self.createSocket()
            assert self.socket is not None
            if self.socktype == socket.SOCK_STREAM:
                self.socket.sendall(data)
            else:
                assert self._sockaddr is not None
                self.socket.sendto(data, self._sockaddr)
        except OSError as exc:
            self._drop_socket()
            return exc
        return None

    def frame(self, record: logging.LogRecord) -> bytes:
        pri = self.encodePriority(self.facility, self.mapPriority(record.levelname))
        body = (self.ident + self.format(record)).encode("utf-8", "replace")
        if len(body) > SYSLOG_MAX_BYTES:
            body = body[: SYSLOG_MAX_BYTES - 8].decode("utf-8", "ignore").encode() + b" [...]"
        return f"<{pri}>".encode() + body + (b"\n" if self.socktype == socket.SOCK_STREAM else b"")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = self.frame(record)
        except Exception:
            self.handleError(record)
            return
        if self.socket is None and time.monotonic() < self._retry_at:
            self._dropped += 1
            return
        reused = self.socket is not None
        error = self._send(data)
        if error is not None and reused:
            error = self._send(data)  # the connection was dropped: once more, afresh
        if error is None:
            if self._down:
                self._down = False
                self._notify(f"syslog {self.url} reached again ({self._dropped} lines not sent)")
                self._dropped = 0
            return
        self._dropped += 1
        self._retry_at = time.monotonic() + self.retry_seconds
        if not self._down:
            self._down = True
            self._notify(
                f"cannot send logs to syslog {self.url}: {error}; "
                f"trying again every {self.retry_seconds:g} s, stderr has every line"
            )


class _QueueHandler(logging.handlers.QueueHandler):
    """Never blocks, never raises: lines the syslog side cannot keep up with are dropped."""

    def enqueue(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(record)


_listener: logging.handlers.QueueListener | None = None


def stop_syslog() -> None:
    """Send the lines still queued for syslog and close the connection (runs at exit)."""
    global _listener
    listener, _listener = _listener, None
    if listener is not None:
        listener.stop()
        for handler in listener.handlers:
            handler.close()


atexit.register(stop_syslog)


def setup_logging(
    level: str = "INFO", component: str | None = None, syslog_url: str | None = None
) -> None:
    """JSON lines on stderr, and to syslog when `syslog_url` (default: the setting
    PKBS_SYSLOG_URL) is set, as `pkbs-<component>: ` + the same line (component: see
    component_name). Network I/O happens in a background thread, never in the caller."""
    global _listener
    formatter = JsonFormatter()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(formatter)
    handlers: list[logging.Handler] = [stderr]
    if syslog_url is None:
        from pkbs.settings import get_settings

        syslog_url = get_settings().syslog_url
    old = _listener
    if syslog_url:

        def notify(msg: str) -> None:
            fields = {"name": __name__, "levelno": logging.WARNING, "levelname": "WARNING"}
            stderr.handle(logging.makeLogRecord({**fields, "msg": msg}))

        sender = SyslogSender(syslog_url, f"pkbs-{component or component_name()}: ", notify)
        lines: queue.Queue[logging.LogRecord] = queue.Queue(SYSLOG_QUEUE_LINES)
        front = _QueueHandler(lines)
        front.setFormatter(formatter)  # formats in the caller: the line stderr gets
        _listener = logging.handlers.QueueListener(lines, sender)
        _listener.start()
        handlers.append(front)
    else:
        _listener = None
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    chatty = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty)
    if old is not None:
        old.stop()
        for handler in old.handlers:
            handler.close()
