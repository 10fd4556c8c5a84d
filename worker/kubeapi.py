"""The pod runner's calls on the Kubernetes API (the interface in worker/podapi.py),
made with the `kubernetes` client: the `k8s` extra, which the worker image has. It is
imported here only, when a worker runs jobs as pods.

The client is synchronous: its calls run in a thread pool of their own, so the
worker's event loop never waits on one. One watch (a thread) follows every pod of
this worker, found by its label, and hands each change to the event loop; a pod that
nothing was heard of for a while is read afresh, so a broken watch slows the worker
down but never stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from .podapi import PodAPIError

log = logging.getLogger("pkbs.worker.pods")

T = TypeVar("T")
TIMEOUT = (5.0, 30.0)  # connect, read: every call but the watch, logs and exec
WATCH_SECONDS = 60  # one watch request, then another from where it stopped
WATCH_RETRY_SECONDS = 2.0
EXEC_IDLE_SECONDS = 300.0  # an exec that says nothing this long is given up
THREADS = 32


def api_error(exc: BaseException) -> PodAPIError:
    """A failed call as PodAPIError: the API's status and message, or 0 and why it
    could not be asked."""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status:
        try:
            message = str(json.loads(exc.body)["message"])  # type: ignore[attr-defined]
        except (TypeError, ValueError, KeyError, AttributeError):
            message = str(getattr(exc, "reason", "") or exc)
        return PodAPIError(status, message)
    return PodAPIError(0, f"Kubernetes API unreachable: {getattr(exc, 'reason', None) or exc}")


def from_the_client(exc: BaseException) -> bool:
    """Whether the Kubernetes client (or urllib3, websocket-client, the OS under them)
    raised `exc`."""
    module = type(exc).__module__
    return isinstance(exc, OSError) or module.split(".")[0] in ("kubernetes", "urllib3",
                                                                  "websocket")


class Feed:
    """A pod as the watch (or a read) last showed it."""

    def __init__(self, api: KubePodAPI, name: str) -> None:
        self.api = api
        self.name = name
        self.created = False
        self.updates = 0  # counts the watch's changes: a slower read does not undo them
        self._pod: dict[str, Any] | None = None
        self._gone = False
        self._event = asyncio.Event()

    @property
    def pod(self) -> dict[str, Any] | None:
        return self._pod

    @property
    def gone(self) -> bool:
        return self._gone

    def show(self, pod: dict[str, Any] | None) -> None:
        """The pod as it is now; None: deleted (once it has been seen or made)."""
        if pod is None:
            self._gone = self._gone or self.created or self._pod is not None
        else:
            self._pod = pod
        self._event.set()

    async def changed(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            await self.api.refresh(self)
        self._event.clear()

    def close(self) -> None:
        self.api.feeds.pop(self.name, None)


class ExecStdout(io.RawIOBase):
    """The stdout of a command run through the exec API (a websocket), as it comes;
    its stderr is kept for the error message."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.pending = b""
        self.stderr: list[str] = []

    def readable(self) -> bool:
        return True

    def _take(self) -> None:
        out = self.ws.read_stdout(timeout=0)
        if out:
            self.pending += out.encode() if isinstance(out, str) else out
        err = self.ws.read_stderr(timeout=0)
        if err:
            self.stderr.append(err if isinstance(err, str) else err.decode(errors="replace"))

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        heard = time.monotonic()
        while not self.pending:
            if not self.ws.is_open():
                self._take()
                if not self.pending:
                    return 0
                break
            self.ws.update(timeout=5)
            self._take()
            if self.pending:
                break
            if time.monotonic() - heard > EXEC_IDLE_SECONDS:
                raise PodAPIError(0, f"exec silent for {EXEC_IDLE_SECONDS:g} s")
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


class KubePodAPI:
    """The pods of one namespace; the watch follows those with `selector`'s labels.
    Answers are read as the JSON they are (`_preload_content=False`), not as the
    client's models: the pod runner reads plain dicts (worker/podstatus.py)."""

    def __init__(self, api_client: Any, namespace: str, selector: str) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.core: Any = client.CoreV1Api(api_client)  # responses are read raw
        self.namespace = namespace
        self.selector = selector
        self.feeds: dict[str, Feed] = {}
        self.pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="pkbs-kube")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()

        def call() -> T:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not from_the_client(exc):
                    raise  # PodAPIError, or what a consumer of exec output raised
                raise api_error(exc) from exc

        return await loop.run_in_executor(self.pool, call)

    @staticmethod
    def _json(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One call, its answer as JSON (None when empty), its connection given back."""
        response = method(*args, _preload_content=False, _request_timeout=TIMEOUT, **kwargs)
        try:
            return json.loads(response.data) if response.data else None
        finally:
            response.release_conn()

    # -- following pods ---------------------------------------------------------

    def follow(self, name: str) -> Feed:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            threading.Thread(target=self._watch, name="pkbs-pod-watch", daemon=True).start()
        feed = self.feeds.get(name) or Feed(self, name)
        self.feeds[name] = feed
        return feed

    async def refresh(self, feed: Feed) -> None:
        """Read one pod afresh (when the watch was silent about it)."""
        updates = feed.updates
        try:
            pod: dict[str, Any] | None = await self._call(
                self._json, self.core.read_namespaced_pod, feed.name, self.namespace)
        except PodAPIError as exc:
            if exc.status != 404:
                log.warning("pod %s not read: %s", feed.name, exc.message)
                return
            pod = None
        if feed.updates == updates:
            feed.show(pod)

    def _show(self, name: str, pod: dict[str, Any] | None) -> None:
        feed = self.feeds.get(name)
        if feed is not None:
            feed.updates += 1
            feed.show(pod)

    def _show_all(self, pods: list[dict[str, Any]]) -> None:
        listed = {p["metadata"]["name"]: p for p in pods}
        for name, feed in list(self.feeds.items()):
            if name in listed:
                self._show(name, listed[name])
            elif feed.pod is not None:  # seen before, not listed now: deleted meanwhile
                self._show(name, None)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: the worker ends
            self._loop.call_soon_threadsafe(fn, *args)

    def _watch(self) -> None:
        """List the worker's pods, then follow their changes; again after any trouble."""
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    data = self._json(self.core.list_namespaced_pod, self.namespace,
                                      label_selector=self.selector)
                    version = data["metadata"]["resourceVersion"]
                    self._post(self._show_all, data.get("items") or [])
                version = self._follow(version)
            except Exception as exc:
                log.warning("pod watch: %s", api_error(exc).message)
                version = None
                self._stop.wait(WATCH_RETRY_SECONDS)

    def _follow(self, version: str) -> str | None:
        """One watch request from `version`; the version to go on from (None: list
        again, the server no longer has it)."""
        response = self.core.list_namespaced_pod(
            self.namespace, label_selector=self.selector, watch=True,
            resource_version=version, allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS, _preload_content=False,
            _request_timeout=(TIMEOUT[0], WATCH_SECONDS + 30))
        try:
            pending = b""
            for chunk in response.stream(64 * 1024):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    pod = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        if pod.get("code") == 410:
                            return None
                        raise PodAPIError(int(pod.get("code") or 0), str(pod.get("message")))
                    version = pod.get("metadata", {}).get("resourceVersion") or version
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._post(self._show, pod["metadata"]["name"], pod)
                    elif event.get("type") == "DELETED":
                        self._post(self._show, pod["metadata"]["name"], None)
        finally:
            response.release_conn()
        return version

    def close(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- calls ----------------------------------------------------------------------

    async def create(self, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        await self._call(self._json, self.core.create_namespaced_pod, self.namespace, manifest)
        if name in self.feeds:
            self.feeds[name].created = True

    async def delete(self, name: str, grace_seconds: int = 0) -> None:
        try:
            await self._call(self._json, self.core.delete_namespaced_pod, name, self.namespace,
                             grace_period_seconds=grace_seconds)
        except PodAPIError as exc:
            if exc.status != 404:
                raise

    async def delete_labelled(self, selector: str) -> int:
        listed = await self._call(self._json, self.core.list_namespaced_pod, self.namespace,
                                  label_selector=selector)
        names = [p["metadata"]["name"] for p in (listed or {}).get("items") or []]
        for name in names:
            await self.delete(name)
        return len(names)

    async def append_log(self, name: str, container: str, path: Path) -> int:
        def copy() -> int:
            response = self.core.read_namespaced_pod_log(
                name, self.namespace, container=container, _preload_content=False,
                _request_timeout=(TIMEOUT[0], 300))
            written = 0
            try:
                with open(path, "ab") as out:
                    for chunk in response.stream(256 * 1024):
                        out.write(chunk)
                        written += len(chunk)
            finally:
                response.release_conn()
            return written

        return await self._call(copy)

    async def exec_stdout(
        self, name: str, container: str, command: list[str], consume: Callable[[IO[bytes]], T]
    ) -> T:
        def run() -> T:
            from kubernetes import client
            from kubernetes.stream import stream

            # stream() swaps its client's request function while it connects: one of
            # its own, so no other call of this worker goes through the websocket.
            core: Any = client.CoreV1Api(client.ApiClient(self.api_client.configuration))
            ws = stream(core.connect_get_namespaced_pod_exec, name, self.namespace,
                        container=container, command=command, stdin=False, stdout=True,
                        stderr=True, tty=False, _preload_content=False)
            # The client keeps a copy of all output unless told otherwise, which
            # stream() cannot be: large results would sit in memory twice.
            if hasattr(ws, "_all"):
                ws._all = _Discard()
            stdout = ExecStdout(ws)
            reader = io.BufferedReader(stdout, buffer_size=256 * 1024)
            try:
                result = consume(reader)
                while reader.read(256 * 1024):  # to its end, for the exit status
                    pass
                try:
                    code = ws.returncode
                except Exception:  # no status came
                    code = None
            finally:
                ws.close()
            if code != 0:
                said = "".join(stdout.stderr).strip()[-2000:]
                raise PodAPIError(0, f"{' '.join(command[:4])}… exited {code}: {said}")
            return result

        return await self._call(run)


class _Discard:
    def write(self, data: object) -> None:
        pass

    def getvalue(self) -> str:
        return ""
