"""The CLI's HTTP client: standard library only, so qsub starts fast."""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from collections.abc import Callable

from pkbs import clientconfig
from pkbs.errors import PBSE_SYSTEM, exit_code

RETRY_STATUSES = {502, 503, 504}


class ApiError(Exception):
    def __init__(self, status: int, pbs_errno: int, message: str, job_id: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.pbs_errno = pbs_errno
        self.message = message
        self.job_id = job_id

    def text(self) -> str:
        return f"{self.message} {self.job_id}" if self.job_id else self.message


class Client:
    def __init__(self, config: clientconfig.ClientConfig | None = None) -> None:
        self.config = config or clientconfig.load()
        url = urllib.parse.urlsplit(self.config.endpoint)
        self.https = url.scheme == "https"
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (443 if self.https else 80)
        self.base = url.path.rstrip("/")
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self._conn = cls(self.host, self.port, timeout=600)
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
        the CLI makes is idempotent (submits carry a client submit id)."""
        url = self.base + "/v1" + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        data = None if body is None else json.dumps(body).encode()
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
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == retries:
                    raise ApiError(
                        0,
                        PBSE_SYSTEM,
                        f"cannot connect to server {self.config.endpoint} ({exc})",
                        None,
                    ) from None
                time.sleep(delay)
                delay *= 2
                continue
            if response.status in RETRY_STATUSES and attempt < retries:
                time.sleep(delay)
                delay *= 2
                continue
            payload = json.loads(raw) if raw else None
            if response.status >= 400:
                err = (payload or {}).get("error") if isinstance(payload, dict) else None
                if not err:
                    detail = payload.get("detail") if isinstance(payload, dict) else None
                    raise ApiError(
                        response.status,
                        PBSE_SYSTEM,
                        f"Request failed ({response.status}): {detail}",
                        None,
                    )
                raise ApiError(
                    response.status,
                    int(err.get("pbs_errno") or PBSE_SYSTEM),
                    str(err.get("message")),
                    err.get("job_id"),
                )
            return payload
        raise AssertionError("unreachable")

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
            raw = response.read()
            err = json.loads(raw).get("error", {}) if raw else {}
            raise ApiError(
                response.status,
                int(err.get("pbs_errno") or PBSE_SYSTEM),
                str(err.get("message") or f"download failed ({response.status})"),
                err.get("job_id"),
            )
        tmp = os.fspath(target) + ".part"
        with open(tmp, "wb") as out:
            while chunk := response.read(256 * 1024):
                out.write(chunk)
                if progress is not None:
                    progress(len(chunk))
        os.replace(tmp, target)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def fail(command: str, message: str, status: int) -> NoReturn:
    """Print `<command>: <message>` and exit with `status` (see errors.exit_code)."""
    sys.stderr.write(f"{command}: {message}\n")
    sys.exit(status)


def connect(command: str) -> Client:
    try:
        return Client()
    except clientconfig.NoConfig as exc:
        fail(command, str(exc), exit_code(PBSE_SYSTEM))
