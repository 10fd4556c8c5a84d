"""Ways of submitting jobs: the real qsub binary, and direct HTTP POSTs to the API."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pkbs.errors import UnknownJob

BIN = Path(sys.executable).parent
# The trivial job. It runs under /bin/sh, as the baselines' `/bin/sh -c true` and
# `/bin/sh run.sh` do: the comparison is of pkbs's own work, not of two shells (pkbs's
# default, as PBS's, is the login shell: bash here, +0.6 ms of CPU per job).
TRUE_SCRIPT = b"#PBS -S /bin/sh\ntrue\n"


def request_body(env: dict[str, str], script: bytes = TRUE_SCRIPT,
                 args: tuple[str, ...] = ()) -> dict[str, Any]:
    """The POST /v1/jobs body the real qsub sends for `script` on stdin: qsub is run
    once against a one-shot capture server, so the body is right for whatever version
    of qsub is being measured (no reliance on its internals)."""
    captured: dict[str, Any] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            captured["body"] = json.loads(self.rfile.read(length))
            self._reply(201, {"job_id": "1.pkbs", "duplicate": False})

        def do_GET(self) -> None:  # noqa: N802
            self._reply(404, {"error": UnknownJob("capture server").to_dict()})

        def _reply(self, status: int, data: dict[str, Any]) -> None:
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        run_env = {**env, "PKBS_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
                   "PKBS_TOKEN": "bench-capture"}
        result = subprocess.run([str(BIN / "qsub"), *args], input=script, env=run_env,
                                capture_output=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    if "body" not in captured:
        raise RuntimeError(f"qsub sent no job (exit {result.returncode}): "
                           f"{result.stderr.decode(errors='replace')[:300]}")
    body: dict[str, Any] = captured["body"]
    return body


def with_new_id(body: dict[str, Any]) -> bytes:
    fresh = dict(body)
    fresh["submit_id"] = os.urandom(16).hex()
    return json.dumps(fresh).encode()


def job_number(job_id: str) -> int:
    """12.pkbs, 12[].pkbs (an array) -> 12."""
    text = job_id.strip()
    digits = len(text) - len(text.lstrip("0123456789"))
    return int(text[:digits])


class Api:
    """One keep-alive connection to the dispatcher (http.client, like the CLI's)."""

    def __init__(self, endpoint: str, token: str, keep_alive: bool = True) -> None:
        url = urllib.parse.urlsplit(endpoint)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.token = token
        self.keep_alive = keep_alive
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        return self.conn

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(3):
            conn = self._connection()
            try:
                conn.request(method, "/v1" + path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                time.sleep(0.1)
                continue
            if not self.keep_alive:
                self.close()
            return response.status, data
        raise AssertionError("unreachable")

    def submit(self, body: bytes) -> int:
        status, data = self.request("POST", "/jobs", body)
        if status != 201:
            raise RuntimeError(f"submit failed ({status}): {data[:300]!r}")
        return job_number(json.loads(data)["job_id"])

    def submit_batch(self, body: bytes) -> list[int]:
        status, data = self.request("POST", "/jobs/batch", body)
        if status != 201:
            raise RuntimeError(f"batch submit failed ({status}): {data[:300]!r}")
        return [job_number(job["job_id"]) for job in json.loads(data)["jobs"]]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def submit_http(endpoint: str, token: str, body: dict[str, Any], n: int,
                threads: int, batch: int = 1) -> tuple[list[int], float, float]:
    """POST n jobs over `threads` keep-alive connections: one job per POST /v1/jobs
    (batch 1), else `batch` jobs per POST /v1/jobs/batch.
    Returns (job numbers, wall time of the first submit, wall time the last returned)."""
    bodies = [with_new_id(body) for _ in range(n)]
    if batch > 1:
        requests = [b'{"jobs":[' + b",".join(bodies[i:i + batch]) + b"]}"
                    for i in range(0, n, batch)]
    else:
        requests = bodies
    chunks = [requests[i::threads] for i in range(threads)]

    def work(chunk: list[bytes]) -> list[int]:
        api = Api(endpoint, token)
        try:
            if batch > 1:
                return [number for b in chunk for number in api.submit_batch(b)]
            return [api.submit(b) for b in chunk]
        finally:
            api.close()

    t_first = time.time()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(work, chunks))
    t_last = time.time()
    return [n for r in results for n in r], t_first, t_last


class QsubFailed(RuntimeError):
    def __init__(self, returncode: int, stderr: str) -> None:
        super().__init__(f"qsub failed ({returncode}): {stderr[:300]}")
        self.stderr = stderr


def run_qsub(env: dict[str, str], script: bytes = TRUE_SCRIPT,
             args: tuple[str, ...] = (), timeout: float = 120) -> tuple[int, float]:
    """One real `qsub` process; returns (job number, wall seconds)."""
    t0 = time.perf_counter()
    result = subprocess.run([str(BIN / "qsub"), *args], input=script, env=env,
                            capture_output=True, timeout=timeout)
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise QsubFailed(result.returncode, result.stderr.decode(errors="replace").strip())
    return job_number(result.stdout.decode()), elapsed


def submit_qsub(env: dict[str, str], n: int, threads: int) -> tuple[list[int], float, float]:
    """n separate `qsub` processes, `threads` at a time."""
    t_first = time.time()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda _: run_qsub(env)[0], range(n)))
    return results, t_first, time.time()
