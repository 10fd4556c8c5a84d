"""The few calls of the Docker Engine API a worker needs to run container jobs.

httpx over the daemon's Unix socket (Docker's, or Podman's compatible one): async, so
a worker waits on many containers without a thread each. Errors of the daemon become
`DockerError` with the daemon's own message.
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_SOCKET = "/var/run/docker.sock"
# The labels every container of a job carries: what removes it when its worker is gone.
LABEL_WORKER = "pkbs.worker"
LABEL_JOB = "pkbs.job"
LABEL_RUN = "pkbs.run"


class DockerError(Exception):
    """The daemon refused or failed a request; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def socket_path(docker_host: str) -> str:
    """`unix:///path` (DOCKER_HOST's form) or a bare path -> the socket's path."""
    if docker_host.startswith("unix://"):
        return docker_host[len("unix://"):]
    if "://" in docker_host:
        raise ValueError(f"only a unix:// Docker host is supported, not {docker_host!r}")
    return docker_host


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or response.text)
    except (ValueError, AttributeError):
        return response.text.strip() or response.reason_phrase


class DockerAPI:
    """An async client of one daemon. Use as `async with DockerAPI(...)` or aclose()."""

    def __init__(self, docker_host: str = f"unix://{DEFAULT_SOCKET}") -> None:
        transport = httpx.AsyncHTTPTransport(uds=socket_path(docker_host))
        self._client = httpx.AsyncClient(
            transport=transport, base_url="http://docker", timeout=httpx.Timeout(60.0)
        )

    async def __aenter__(self) -> DockerAPI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(
        self, method: str, path: str, ok: tuple[int, ...] = (200, 201, 204), **kwargs: Any
    ) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise DockerError(0, f"Docker daemon unreachable: {exc or type(exc).__name__}") from exc
        if response.status_code not in ok:
            raise DockerError(response.status_code, _message(response))
        return response

    async def version(self) -> dict[str, Any]:
        return dict((await self._call("GET", "/version")).json())

    async def has_image(self, ref: str) -> bool:
        response = await self._call("GET", f"/images/{quote(ref, safe='')}/json", ok=(200, 404))
        return response.status_code == 200

    async def pull(self, ref: str) -> None:
        """Pull an image; the daemon reports a failure inside the progress stream."""
        name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
        params = {"fromImage": name, "tag": tag or "latest"}
        if "@" in ref:
            params = {"fromImage": ref}
        async with self._client.stream(
            "POST", "/images/create", params=params, timeout=httpx.Timeout(600.0)
        ) as response:
            if response.status_code != 200:
                await response.aread()
                raise DockerError(response.status_code, _message(response))
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if "error" in event:
                    raise DockerError(500, str(event["error"]))

    async def create(self, name: str, config: dict[str, Any]) -> str:
        response = await self._call("POST", "/containers/create", params={"name": name},
                                    json=config)
        return str(response.json()["Id"])

    async def start(self, container: str) -> None:
        await self._call("POST", f"/containers/{container}/start", ok=(204, 304))

    async def inspect(self, container: str) -> dict[str, Any]:
        return dict((await self._call("GET", f"/containers/{container}/json")).json())

    async def wait(self, container: str) -> int:
        """Until the container has stopped; its exit code."""
        response = await self._call("POST", f"/containers/{container}/wait",
                                    timeout=httpx.Timeout(None))
        return int(response.json()["StatusCode"])

    async def kill(self, container: str, signal: str | int) -> None:
        """Send a signal; a container that is not running (any more) is fine."""
        await self._call("POST", f"/containers/{container}/kill", params={"signal": str(signal)},
                         ok=(204, 404, 409))

    async def pause(self, container: str) -> None:
        """Freeze every process of the container (a stopped one is fine)."""
        await self._call("POST", f"/containers/{container}/pause", ok=(204, 404, 409))

    async def unpause(self, container: str) -> None:
        await self._call("POST", f"/containers/{container}/unpause", ok=(204, 404, 409))

    async def remove(self, container: str) -> None:
        await self._call("DELETE", f"/containers/{container}", params={"force": "1", "v": "1"},
                         ok=(204, 404, 409))

    async def stats(self, container: str) -> dict[str, Any]:
        response = await self._call("GET", f"/containers/{container}/stats",
                                    params={"stream": "0"})
        return dict(response.json())

    async def labelled(self, label: str, value: str) -> list[str]:
        """Ids of every container (running or not) with this label and value."""
        filters = json.dumps({"label": [f"{label}={value}"]})
        response = await self._call("GET", "/containers/json",
                                    params={"all": "1", "filters": filters})
        return [str(c["Id"]) for c in response.json()]

    async def remove_labelled(self, label: str, value: str) -> int:
        """Remove every container with this label and value; how many there were."""
        found = await self.labelled(label, value)
        for container in found:
            with contextlib.suppress(DockerError):
                await self.remove(container)
        return len(found)

    async def logs(self, container: str) -> AsyncIterator[tuple[int, bytes]]:
        """(stream, bytes) as the container writes them (1 stdout, 2 stderr), until it
        stops: the multiplexed stream of a container without a terminal."""
        params = {"follow": "1", "stdout": "1", "stderr": "1"}
        async with self._client.stream("GET", f"/containers/{container}/logs", params=params,
                                       timeout=httpx.Timeout(None)) as response:
            if response.status_code != 200:
                await response.aread()
                raise DockerError(response.status_code, _message(response))
            buffer = b""
            async for chunk in response.aiter_raw():
                buffer += chunk
                while len(buffer) >= 8:
                    stream, size = buffer[0], struct.unpack(">I", buffer[4:8])[0]
                    if len(buffer) < 8 + size:
                        break
                    yield stream, buffer[8:8 + size]
                    buffer = buffer[8 + size:]


def docker_answers(docker_host: str) -> bool:
    """Whether a daemon answers at this host (a quick, synchronous ping)."""
    transport = httpx.HTTPTransport(uds=socket_path(docker_host))
    try:
        with httpx.Client(transport=transport, base_url="http://docker", timeout=3) as client:
            return client.get("/_ping").status_code == 200
    except (httpx.TransportError, PermissionError):
        return False


def remove_labelled_now(docker_host: str, label: str, value: str) -> int:
    """Synchronously remove every container with this label (for the local stack's
    supervisor when a worker died); how many. A daemon that is gone removes none."""
    transport = httpx.HTTPTransport(uds=socket_path(docker_host))
    filters = json.dumps({"label": [f"{label}={value}"]})
    try:
        with httpx.Client(transport=transport, base_url="http://docker", timeout=30) as client:
            listed = client.get("/containers/json", params={"all": "1", "filters": filters})
            ids = [c["Id"] for c in listed.json()] if listed.status_code == 200 else []
            for container in ids:
                client.delete(f"/containers/{container}", params={"force": "1", "v": "1"})
    except httpx.TransportError:
        return 0
    return len(ids)
