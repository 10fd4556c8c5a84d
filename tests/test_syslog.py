"""PKBS_SYSLOG_URL: setup_logging ships the stderr JSON line to syslog as well.

Real UDP and TCP listeners on free ports, the line checked byte for byte against the
one stderr got; the env wiring proven in fresh processes (a `python -c` that starts
logging as the dispatcher does, and a real `python -m pkbs.worker`) sending to the real
receiver of the logging component (manifests/components/logging/receiver.py). A
receiver that is down, comes back, or drops the connection costs lines, never the
process. Everything waits with a deadline on sockets or files, no sleeps.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkbs import logs
from pkbs.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
RECEIVER = ROOT / "manifests" / "components" / "logging" / "receiver.py"
# <PRI> for facility user (1): 8 + severity.
PRI = {"info": b"<14>", "warning": b"<12>", "error": b"<11>"}


class Listener:
    """A syslog listener for one test: UDP datagrams or TCP newline-framed lines."""

    def __init__(self, kind: str, port: int = 0) -> None:
        self.kind = kind
        stream = kind == "tcp"
        self.sock = socket.socket(
            socket.AF_INET, socket.SOCK_STREAM if stream else socket.SOCK_DGRAM
        )
        if stream:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        if stream:
            self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.url = f"{kind}://127.0.0.1:{self.port}"
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self.buffers: dict[socket.socket, bytes] = {}
        self.got: list[bytes] = []

    def poll(self, seconds: float) -> None:
        """Take in whatever arrives within `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            readable, _, _ = select.select([self.sock, *self.conns], [], [], left)
            if not readable:
                return
            for s in readable:
                if s is self.sock and self.kind == "tcp":
                    conn, _ = s.accept()
                    self.conns.append(conn)
                    self.buffers[conn] = b""
                    self.accepted += 1
                elif s is self.sock:
                    self.got.append(s.recv(70_000))
                else:
                    data = s.recv(70_000)
                    if not data:
                        self.conns.remove(s)
                        s.close()
                        continue
                    buf = self.buffers[s] + data
                    *lines, self.buffers[s] = buf.split(b"\n")
                    self.got.extend(line + b"\n" for line in lines)
            if self.got:
                return

    def lines(self, n: int, timeout: float = 5.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            self.poll(deadline - time.monotonic())
        return self.got

    def drop_connections(self) -> None:
        for c in self.conns:
            c.close()
        self.conns.clear()

    def close(self) -> None:
        self.drop_connections()
        self.sock.close()


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    made: list[Listener] = []
    yield made
    for listener in made:
        listener.close()


@pytest.fixture(autouse=True)
def clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.delenv("PKBS_SYSLOG_URL", raising=False)
    get_settings.cache_clear()
    yield
    logs.stop_syslog()
    root.handlers[:] = handlers
    root.setLevel(level)
    get_settings.cache_clear()


def stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_the_stderr_line_reaches_syslog(
    kind: str,
    listeners: list[Listener],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    listener = Listener(kind)
    listeners.append(listener)
    monkeypatch.setenv("PKBS_SYSLOG_URL", listener.url)
    logs.setup_logging("INFO", component="dispatcher")
    log = logging.getLogger("pkbs.dispatcher.app")
    log.debug("not at INFO")
    log.info("job %s queued", "1.pkbs", extra={"job": "1.pkbs"})
    log.warning("100% sure: a literal %s", extra={"job": "1.pkbs", "state": "Q"})
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("it broke", extra={"job": "1.pkbs"})

    got = listener.lines(3)
    err = stderr_lines(capsys)
    assert len(err) == 3, err
    end = b"\n" if kind == "tcp" else b""
    assert got == [
        PRI[level] + b"pkbs-dispatcher: " + line.encode() + end
        for level, line in zip(["info", "warning", "error"], err, strict=True)
    ]
    first = json.loads(err[0])
    assert (first["msg"], first["job"], first["level"]) == ("job 1.pkbs queued", "1.pkbs", "info")
    assert json.loads(err[1])["msg"] == "100% sure: a literal %s"
    assert "ZeroDivisionError" in json.loads(err[2])["exc"]
    assert all(line.count(b"\n") == (1 if kind == "tcp" else 0) for line in got)


def test_no_url_means_stderr_only(capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup_logging("INFO")
    assert [type(h) for h in logging.getLogger().handlers] == [logging.StreamHandler]
    logging.getLogger("pkbs").info("alone")
    assert json.loads(stderr_lines(capsys)[0])["msg"] == "alone"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKBS_")}
    env.update(extra)
    return env


# Starts logging exactly as pkbs.dispatcher's main does.
AS_THE_DISPATCHER = """
import logging
from pkbs.logs import setup_logging
from pkbs.settings import get_settings
setup_logging(get_settings().log_level)
logging.getLogger("pkbs.dispatcher").info("dispatcher up", extra={"job": "1.pkbs"})
logging.getLogger("pkbs.dispatcher").debug("not at INFO")
"""


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_env_wiring_in_a_fresh_process(kind: str, listeners: list[Listener]) -> None:
    listener = Listener(kind)
    listeners.append(listener)
    proc = subprocess.run(
        [sys.executable, "-c", AS_THE_DISPATCHER],
        env=_env(PKBS_SYSLOG_URL=listener.url, PKBS_LOG_LEVEL="INFO"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    got = listener.lines(1)
    (line,) = proc.stderr.splitlines()
    # Under `python -c` the component is "python"; `python -m pkbs.X` gives X.
    assert got == [b"<14>pkbs-python: " + line.encode() + (b"\n" if kind == "tcp" else b"")]
    assert json.loads(line)["job"] == "1.pkbs"


def test_component_name(monkeypatch: pytest.MonkeyPatch) -> None:
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="pkbs.worker.__main__")  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert logs.component_name() == "worker"
    main.__spec__ = None
    monkeypatch.setattr(sys, "argv", ["-c"])
    assert logs.component_name() == "python"
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/gunicorn", "app"])
    assert logs.component_name() == "gunicorn"


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("tcp://syslog.pkbs-system.svc.cluster.local:5514",
         (socket.SOCK_STREAM, "syslog.pkbs-system.svc.cluster.local", 5514)),
        ("udp://10.0.0.7", (socket.SOCK_DGRAM, "10.0.0.7", 514)),
        ("TCP://[::1]:6514/", (socket.SOCK_STREAM, "::1", 6514)),
    ],
)  # fmt: skip
def test_parse_syslog_url(url: str, parsed: tuple[socket.SocketKind, str, int]) -> None:
    assert logs.parse_syslog_url(url) == parsed


@pytest.mark.parametrize(
    "url",
    ["syslog://h:514", "tcp://:514", "tcp://h:99999", "udp://h:514/x", "h:514", "tcp://u@h:1"],
)
def test_bad_syslog_url_is_refused_at_start(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PKBS_SYSLOG_URL", url)
    with pytest.raises(ValueError, match="PKBS_SYSLOG_URL must be tcp://HOST:PORT or udp://"):
        logs.setup_logging("INFO")


def test_receiver_down_then_back(
    listeners: list[Listener], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(logs.SyslogSender, "retry_seconds", 0.05)
    probe = Listener("tcp")
    port = probe.port
    probe.close()  # nothing listens there now
    logs.setup_logging("INFO", component="worker", syslog_url=f"tcp://127.0.0.1:{port}")
    log = logging.getLogger("pkbs.worker")
    for i in range(3):
        log.warning("lost %d", i)  # the process goes on; stderr has them
    assert logs._listener is not None
    logs._listener.queue.join()  # the sender has been through them all (and failed)

    listener = Listener("tcp", port)
    listeners.append(listener)
    deadline = time.monotonic() + 10
    i = 0
    while not listener.got and time.monotonic() < deadline:
        i += 1
        log.warning("line %d", i)
        listener.poll(0.05)
    assert listener.got, "no line reached the receiver once it was back"
    assert re.fullmatch(rb'<12>pkbs-worker: \{.*"msg": "line \d+"\}\n', listener.got[0])
    logs.stop_syslog()
    notes = [json.loads(x) for x in stderr_lines(capsys) if '"logger": "pkbs.logs"' in x]
    assert [n["level"] for n in notes] == ["warning", "warning"], notes
    assert notes[0]["msg"].startswith(f"cannot send logs to syslog tcp://127.0.0.1:{port}: ")
    assert re.fullmatch(
        rf"syslog tcp://127\.0\.0\.1:{port} reached again \(\d+ lines not sent\)", notes[1]["msg"]
    )


def test_tcp_reconnects_when_the_receiver_drops_the_connection(
    listeners: list[Listener], capsys: pytest.CaptureFixture[str]
) -> None:
    listener = Listener("tcp")
    listeners.append(listener)
    logs.setup_logging("INFO", component="worker", syslog_url=listener.url)
    log = logging.getLogger("pkbs.worker")
    log.info("before")
    assert len(listener.lines(1)) == 1 and listener.accepted == 1
    listener.drop_connections()  # the receiver restarted
    deadline = time.monotonic() + 10
    sent = 0
    while len(listener.got) < 2 and time.monotonic() < deadline:
        sent += 1
        log.info("after %d", sent)
        listener.poll(0.1)
    assert len(listener.got) >= 2 and listener.accepted == 2
    assert sent <= 3, f"{sent} lines to get one through a new connection"
    assert b'"msg": "after ' in listener.got[1]
    assert "cannot send" not in capsys.readouterr().err


def test_an_oversized_line_is_cut_to_one_datagram(listeners: list[Listener]) -> None:
    listener = Listener("udp")
    listeners.append(listener)
    logs.setup_logging("INFO", component="worker", syslog_url=listener.url)
    logging.getLogger("pkbs.worker").info("x" * 100_000)
    (got,) = listener.lines(1)
    assert got.startswith(b'<14>pkbs-worker: {"ts": ') and got.endswith(b"xxx [...]")
    assert len(got) <= logs.SYSLOG_MAX_BYTES + 4


# --------------------------------------------------------------- the component's receiver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Output:
    """What a process writes to its stdout pipe, read as it comes (select, deadline)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.text = ""

    def wait_for(self, pattern: str, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text, re.M):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return []
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return []
            self.text += chunk.decode()
        return re.findall(pattern, self.text, re.M)


def test_real_worker_and_dispatcher_reach_the_logging_receiver(tmp_path: Path) -> None:
    port = _free_port()
    logdir = tmp_path / "syslog"
    receiver = subprocess.Popen(
        [sys.executable, str(RECEIVER)],
        env=_env(SYSLOG_HOST="127.0.0.1", SYSLOG_PORT=str(port), SYSLOG_DIR=str(logdir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    worker = None
    try:
        out = Output(receiver)  # the receiver echoes what it stores
        assert out.wait_for("listening on")
        dead_nats = _free_port()
        worker = subprocess.Popen(
            [sys.executable, "-m", "pkbs.worker"],
            env=_env(
                PKBS_SYSLOG_URL=f"tcp://127.0.0.1:{port}",
                PKBS_NATS_URL=f"nats://127.0.0.1:{dead_nats}",
                PKBS_HOME=str(tmp_path / "home"),
                PKBS_WORKER_DIR=str(tmp_path / "jobs"),
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        dispatcher_like = subprocess.run(
            [sys.executable, "-c", AS_THE_DISPATCHER],
            env=_env(PKBS_SYSLOG_URL=f"udp://127.0.0.1:{port}"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert dispatcher_like.returncode == 0, dispatcher_like.stderr
        stamp = r"^\S+ 127\.0\.0\.1 "
        from_worker = out.wait_for(stamp + r"user\.warning pkbs-worker: (\{.*\})$")
        from_python = out.wait_for(stamp + r"user\.info pkbs-python: (\{.*\})$")
    finally:
        if worker is not None:
            worker.kill()  # it cannot drain without NATS
            worker.wait(timeout=10)
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(timeout=10)
        if receiver.stdout:
            receiver.stdout.close()
    assert from_worker and from_python, out.text
    stored = (logdir / "pkbs.log").read_text()
    assert from_worker[0] in stored and from_python[0] in stored
    entry = json.loads(from_worker[0])
    assert entry["logger"].startswith("pkbs.") and entry["level"] == "warning"
    assert json.loads(from_python[0]) == json.loads(dispatcher_like.stderr.splitlines()[0])
