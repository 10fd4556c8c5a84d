"""The pod runner's Kubernetes calls (worker/kubeapi.py) with the real `kubernetes`
client against a stand-in API server (plain HTTP): create, read, delete, list by
label, the log, and the watch (a chunked stream of events, as the API server sends
it) that keeps each pod's feed current, with a read of the pod when the watch is
silent. Exec is a websocket: only a cluster exercises it (scripts/e2e-kind.sh)."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

pytest.importorskip("kubernetes", reason="the kubernetes client: pip install -e '.[k8s]'")

from pkbs.worker.kubeapi import KubePodAPI  # noqa: E402
from pkbs.worker.podapi import PodAPIError  # noqa: E402

NAMESPACE = "pkbs-jobs"
SELECTOR = "app.kubernetes.io/managed-by=pkbs,pkbs.worker=worker-0"


class FakeApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.pods: dict[str, dict[str, Any]] = {}
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.version = 1
        self.forbid_create = False
        self.logs: dict[str, bytes] = {}
        self.seen: list[tuple[str, str, dict[str, list[str]]]] = []
        self.lock = threading.Lock()

    def change(self, kind: str, pod: dict[str, Any]) -> None:
        with self.lock:
            self.version += 1
            pod["metadata"]["resourceVersion"] = str(self.version)
            if kind == "DELETED":
                self.pods.pop(pod["metadata"]["name"], None)
            else:
                self.pods[pod["metadata"]["name"]] = pod
        self.events.put({"type": kind, "object": pod})


class Handler(BaseHTTPRequestHandler):
    server: FakeApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def route(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.server.seen.append((method, url.path, query))
        parts = url.path.strip("/").split("/")  # api v1 namespaces NS pods [NAME [log]]
        assert parts[:4] == ["api", "v1", "namespaces", NAMESPACE] and parts[4] == "pods"
        name = parts[5] if len(parts) > 5 else None
        pods = self.server.pods
        if method == "POST":
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.server.forbid_create:
                return self.reply(403, failure('pods is forbidden: User "w" cannot create'))
            self.server.change("ADDED", body)
            return self.reply(201, body)
        if name is None and query.get("watch") == ["true"]:
            return self.watch()
        if name is None:
            return self.reply(200, {"kind": "PodList", "apiVersion": "v1",
                                    "metadata": {"resourceVersion": str(self.server.version)},
                                    "items": list(pods.values())})
        if name not in pods:
            return self.reply(404, failure(f'pods "{name}" not found'))
        if len(parts) > 6 and parts[6] == "log":
            return self.reply_bytes(200, self.server.logs.get(name, b""), "text/plain")
        found = pods[name]
        if method == "DELETE":
            self.server.change("DELETED", found)
        return self.reply(200, found)

    def do_GET(self) -> None:  # noqa: N802
        self.route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self.route("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self.route("DELETE")

    def watch(self) -> None:
        """Events as they happen, one JSON line per chunk, for a second."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            try:
                event = self.server.events.get(timeout=0.05)
            except queue.Empty:
                continue
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def reply(self, code: int, body: Any) -> None:
        self.reply_bytes(code, json.dumps(body).encode(), "application/json")

    def reply_bytes(self, code: int, data: bytes, kind: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def failure(message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message}


def pod(name: str, phase: str = "Pending") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE,
                         "labels": {"app.kubernetes.io/managed-by": "pkbs",
                                    "pkbs.worker": "worker-0"}},
            "spec": {"containers": [{"name": "job", "image": "x:1"}]},
            "status": {"phase": phase}}


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    s = FakeApiServer()
    threading.Thread(target=s.serve_forever, daemon=True).start()
    yield s
    s.shutdown()
    s.server_close()


def client(server: FakeApiServer) -> KubePodAPI:
    from kubernetes import client as k8s

    configuration = k8s.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    return KubePodAPI(k8s.ApiClient(configuration), NAMESPACE, SELECTOR)


async def until(check: Any, feed: Any) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "the feed never showed it"
        await feed.changed(1.0)


def test_a_pod_is_followed_from_creation_to_deletion(server: FakeApiServer,
                                                      tmp_path: Path) -> None:
    api = client(server)

    async def scenario() -> None:
        feed = api.follow("pkbs-1")
        await api.create(pod("pkbs-1"))
        await until(lambda: feed.pod is not None, feed)
        running = pod("pkbs-1", "Running")
        server.change("MODIFIED", running)
        await until(lambda: (feed.pod or {}).get("status", {}).get("phase") == "Running", feed)
        server.logs["pkbs-1"] = b"hello from the log\n"
        assert await api.append_log("pkbs-1", "job", tmp_path / "out") == 19
        assert (tmp_path / "out").read_bytes() == b"hello from the log\n"
        await api.delete("pkbs-1", 7)
        await until(lambda: feed.gone, feed)
        await api.delete("pkbs-1")  # gone already: fine
        feed.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        api.close()
    watches = [q for method, _, q in server.seen if q.get("watch") == ["true"]]
    assert watches and all(q["labelSelector"] == [SELECTOR] for q in watches)
    deletes = [q for method, _, q in server.seen if method == "DELETE"]
    assert deletes[0].get("gracePeriodSeconds") == ["7"]


def test_a_silent_watch_is_made_up_for_by_reading_the_pod(server: FakeApiServer) -> None:
    api = client(server)

    async def scenario() -> None:
        feed = api.follow("pkbs-2")
        feed.created = True
        server.pods["pkbs-2"] = pod("pkbs-2", "Running")  # no event for it
        await feed.changed(0.2)
        assert (feed.pod or {})["status"]["phase"] == "Running"
        del server.pods["pkbs-2"]
        await feed.changed(0.2)
        assert feed.gone

    try:
        asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        api.close()


def test_refusals_and_labelled_deletes(server: FakeApiServer) -> None:
    api = client(server)

    async def scenario() -> None:
        server.forbid_create = True
        with pytest.raises(PodAPIError) as refused:
            await api.create(pod("pkbs-3"))
        assert refused.value.status == 403 and "cannot create" in refused.value.message
        for name in ("pkbs-4", "pkbs-5"):
            server.change("ADDED", pod(name))
        assert await api.delete_labelled(SELECTOR) == 2
        assert server.pods == {}

    try:
        asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        api.close()
    lists = [q for method, path, q in server.seen
             if method == "GET" and path.endswith("/pods") and "watch" not in q]
    assert lists[-1]["labelSelector"] == [SELECTOR]


def test_an_api_that_is_not_there() -> None:
    from kubernetes import client as k8s

    configuration = k8s.Configuration()
    configuration.host = "http://127.0.0.1:9"
    configuration.retries = 0
    api = KubePodAPI(k8s.ApiClient(configuration), NAMESPACE, SELECTOR)

    async def scenario() -> None:
        with pytest.raises(PodAPIError) as unreachable:
            await api.create(pod("pkbs-6"))
        assert unreachable.value.status == 0
        assert "unreachable" in unreachable.value.message

    try:
        asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        api.close()
