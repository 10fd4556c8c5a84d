"""Central syslog receiver for pkbs (the `logging` component), standard library only.

Listens on UDP and TCP (SYSLOG_PORT, default 5514) and appends every message, one per
line, to SYSLOG_DIR/pkbs.log (rotated at SYSLOG_MAX_BYTES, SYSLOG_BACKUPS files kept)
and to stdout, so `kubectl logs` shows the same stream. TCP accepts newline- or
NUL-terminated frames (Python's SysLogHandler) and octet-counted frames (RFC 6587).

Plays the part of the seed's rsyslog; swap in rsyslog/syslog-ng with the same Service
if you need more (forwarding, filters).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import signal
import socket
import socketserver
import sys
import threading
from datetime import UTC, datetime

PRI_RE = re.compile(rb"^<(\d{1,3})>")
OCTET_RE = re.compile(rb"^(\d{1,6}) ")
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
FACILITIES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "audit",
    "alert",
    "clock",
    *(f"local{i}" for i in range(8)),
)
MAX_FRAME = 64 * 1024

_out = logging.getLogger("pkbs-syslog")


def render(raw: bytes, peer: str) -> str:
    """One stored line: receive time, peer, facility.severity, message."""
    raw = raw.rstrip(b"\r\n\x00")
    facility, severity = "user", "notice"
    m = PRI_RE.match(raw)
    if m:
        pri = int(m.group(1))
        fac = pri >> 3
        facility = FACILITIES[fac] if fac < len(FACILITIES) else str(fac)
        severity = SEVERITIES[pri & 7]
        raw = raw[m.end() :]
    text = raw.decode("utf-8", "replace").replace("\n", "\\n")
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    return f"{now} {peer} {facility}.{severity} {text}"


def split_frames(buf: bytearray) -> list[bytes]:
    """Take the complete frames off the front of a TCP buffer."""
    frames: list[bytes] = []
    while buf:
        m = OCTET_RE.match(buf)
        if m:
            size = int(m.group(1))
            end = m.end() + size
            if len(buf) < end:
                break
            frames.append(bytes(buf[m.end() : end]))
            del buf[:end]
            continue
        cut = min((i for i in (buf.find(b"\n"), buf.find(b"\x00")) if i >= 0), default=-1)
        if cut < 0:
            if len(buf) > MAX_FRAME:  # no terminator in sight: flush what we have
                frames.append(bytes(buf))
                buf.clear()
            break
        if cut:
            frames.append(bytes(buf[:cut]))
        del buf[: cut + 1]
    return frames


class UDPHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request[0]
        _out.info(render(data, self.client_address[0]))


class TCPHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        buf = bytearray()
        peer = self.client_address[0]
        while True:
            chunk = self.request.recv(65536)
            if not chunk:
                break
            buf += chunk
            for frame in split_frames(buf):
                _out.info(render(frame, peer))
        if buf.strip(b"\r\n\x00 "):
            _out.info(render(bytes(buf), peer))


class UDPServer(socketserver.ThreadingUDPServer):
    allow_reuse_address = True
    daemon_threads = True


class TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main() -> int:
    host = os.environ.get("SYSLOG_HOST", "0.0.0.0")
    port = int(os.environ.get("SYSLOG_PORT", "5514"))
    directory = os.environ.get("SYSLOG_DIR", "/var/log/pkbs")
    os.makedirs(directory, exist_ok=True)
    _out.setLevel(logging.INFO)
    _out.propagate = False
    fmt = logging.Formatter("%(message)s")
    file_handler = logging.handlers.RotatingFileHandler(
        os.path.join(directory, "pkbs.log"),
        maxBytes=int(os.environ.get("SYSLOG_MAX_BYTES", str(50 * 1024 * 1024))),
        backupCount=int(os.environ.get("SYSLOG_BACKUPS", "10")),
        encoding="utf-8",
    )
    for handler in (file_handler, logging.StreamHandler(sys.stdout)):
        handler.setFormatter(fmt)
        _out.addHandler(handler)

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    UDPServer.address_family = family
    TCPServer.address_family = family
    udp = UDPServer((host, port), UDPHandler)
    tcp = TCPServer((host, port), TCPHandler)
    for server in (udp, tcp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"pkbs-syslog: listening on {host}:{port} (udp, tcp), writing {directory}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for server in (udp, tcp):
        server.shutdown()
        server.server_close()
    file_handler.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
