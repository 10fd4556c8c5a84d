"""pkbs.results against a real WsgiDAV server (python -m pkbs.webdav): where a job's and
a run's results go (URLs quoted once, never climbing out), uploads and downloads with
odd names, progress and missing parents, deletes, which failures are retried with
backoff (a server down, dying mid-upload or back during it; not a wrong password)."""

from __future__ import annotations

import asyncio
import random
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from pkbs import servers
from pkbs.errors import InvalidRequest, ServiceUnavailable
from pkbs.results import RemoteFile, ResultStore, job_results_path, run_results_path
from pkbs.settings import Settings

T = TypeVar("T")
USER, PASSWORD = "worker", "s3cret pässword"
MiB = 1024 * 1024


class DavServer:
    """One `python -m pkbs.webdav` on a fixed port; can be stopped and started again."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.log = base / "webdav.log"
        self.port = servers.free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            "PKBS_WEBDAV_ROOT": str(self.root),
            "PKBS_WEBDAV_LISTEN_HOST": "127.0.0.1",
            "PKBS_WEBDAV_LISTEN_PORT": str(self.port),
            "PKBS_WEBDAV_USER": USER,
            "PKBS_WEBDAV_PASSWORD": PASSWORD,
        }
        self.proc = servers.start_python_module("pkbs.webdav", env, self.log)
        servers.wait_for_port("127.0.0.1", self.port, 20.0, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            servers.stop(self.proc, timeout=3.0)

    def crash(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def store(self, **kwargs: Any) -> ResultStore:
        kwargs.setdefault("user", USER)
        kwargs.setdefault("password", PASSWORD)
        return ResultStore(self.url, **kwargs)


@pytest.fixture(scope="module")
def dav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    server = DavServer(tmp_path_factory.mktemp("dav"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_dav(tmp_path: Path) -> Iterator[DavServer]:
    """A server of the test's own, to stop and start at will."""
    server = DavServer(tmp_path)
    server.start()
    yield server
    server.stop()


def run(store: ResultStore, work: Callable[[ResultStore], Awaitable[T]]) -> T:
    async def main() -> T:
        async with store:
            return await work(store)

    return asyncio.run(main())


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))

    def check(self, size: int) -> None:
        assert self.calls[0] == (0, size) and self.calls[-1] == (size, size)
        assert [d for d, _ in self.calls] == sorted(d for d, _ in self.calls)
        assert len(self.calls) > 3  # really streamed, in chunks


def random_file(path: Path, size: int, seed: int = 0) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


# ----------------------------------------------------------------------------- paths


def test_job_results_path() -> None:
    assert job_results_path("/pkbs", "alice", "12.pkbs") == "/pkbs/alice/12.pkbs/"
    assert job_results_path("pkbs/", "al ice", "13[2].pkbs") == "/pkbs/al ice/13[2].pkbs/"
    assert job_results_path("/", "u", "1.pkbs") == "/u/1.pkbs/"
    for user, job in [("..", "1.pkbs"), ("a/b", "1.pkbs"), ("u", "."), ("", "1"), ("u", "a\nb")]:
        with pytest.raises(InvalidRequest, match="results path"):
            job_results_path("/pkbs", user, job)


def test_run_results_path() -> None:
    """Each run of a job has its own collection inside the job's."""
    assert run_results_path("/pkbs", "alice", "12.pkbs", 1) == "/pkbs/alice/12.pkbs/run-1/"
    assert run_results_path("pkbs", "bob", "13[2].pkbs", 3) == "/pkbs/bob/13[2].pkbs/run-3/"
    with pytest.raises(ValueError, match="run_count"):
        run_results_path("/pkbs", "alice", "12.pkbs", 0)
    with pytest.raises(InvalidRequest, match="results path"):
        run_results_path("/pkbs", "..", "12.pkbs", 1)


def test_urls_are_quoted_once_and_cannot_climb() -> None:
    store = ResultStore("http://dav.example/remote.php/dav/files/w/")
    assert store._url("/pkbs/a b/13[2].pkbs/ü%.txt") == (
        "http://dav.example/remote.php/dav/files/w/pkbs/a%20b/13%5B2%5D.pkbs/%C3%BC%25.txt"
    )
    assert store._url("pkbs//x/", collection=True).endswith("/w/pkbs/x/")
    assert store._url("/pkbs/%2e%2e/x").endswith("/pkbs/%252e%252e/x")
    for bad in ["/pkbs/../etc", "/pkbs/./x", ".."]:
        with pytest.raises(InvalidRequest, match="not allowed"):
            store._url(bad)
    asyncio.run(store.aclose())


# ----------------------------------------------------------------------------- round trips


def test_round_trip_with_progress(dav: DavServer, tmp_path: Path) -> None:
    job = job_results_path("/pkbs", "alice", "12.pkbs")
    big = random_file(tmp_path / "big.bin", 5 * MiB)
    up, down = Recorder(), Recorder()

    async def work(store: ResultStore) -> list[RemoteFile]:
        await store.ensure_collection(job)
        await store.ensure_collection(job)  # again: 405 means it exists
        await store.upload_bytes(job + "12.pkbs.o", b"hello\n")
        assert await store.upload_file(job + "big.bin", tmp_path / "big.bin", up) == 5 * MiB
        await store.ensure_collection(job + "out")
        await store.upload_bytes(job + "out/empty", b"")
        got = await store.download(job + "big.bin", tmp_path / "back.bin", down)
        assert got == 5 * MiB
        await store.download(job + "12.pkbs.o", tmp_path / "o")
        return await store.list(job)

    listing = run(dav.store(), work)
    assert listing == [
        RemoteFile("12.pkbs.o", 6),
        RemoteFile("big.bin", 5 * MiB),
        RemoteFile("out", 0, is_dir=True),
    ]
    assert (tmp_path / "back.bin").read_bytes() == big
    assert (tmp_path / "o").read_bytes() == b"hello\n"
    assert (dav.root / "pkbs/alice/12.pkbs/big.bin").read_bytes() == big
    up.check(5 * MiB)
    down.check(5 * MiB)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".part-")] == []


ODD_NAMES = [
    "out put.txt",
    "résultat ü.csv",
    "日本語.txt",
    "100%.txt",
    "a#b?c&d=e+f.txt",
    "semi;colon,comma'quote\"",
    "%2e%2e",
    "x%2Fy",
    "~tilde",
]


def test_odd_names(dav: DavServer, tmp_path: Path) -> None:
    job = job_results_path("/pkbs", "bob smith", "13[2].pkbs")

    async def work(store: ResultStore) -> list[RemoteFile]:
        await store.ensure_collection(job)
        for name in ODD_NAMES:
            await store.upload_bytes(job + name, name.encode())
        for name in ODD_NAMES:
            await store.download(job + name, tmp_path / "f")
            assert (tmp_path / "f").read_bytes() == name.encode()
        return await store.list(job)

    listing = run(dav.store(), work)
    assert sorted(f.name for f in listing) == sorted(ODD_NAMES)
    on_disk = dav.root / "pkbs" / "bob smith" / "13[2].pkbs"
    assert sorted(p.name for p in on_disk.iterdir()) == sorted(ODD_NAMES)  # nothing escaped


def test_upload_makes_missing_parents(dav: DavServer, tmp_path: Path) -> None:
    random_file(tmp_path / "f", 1000)

    async def work(store: ResultStore) -> list[RemoteFile]:
        await store.upload_bytes("/pkbs/carol/1.pkbs/deep/er/a", b"a")
        await store.upload_file("/pkbs/carol/2.pkbs/b", tmp_path / "f")
        return await store.list("/pkbs/carol")

    assert [f.name for f in run(dav.store(), work)] == ["1.pkbs", "2.pkbs"]
    assert (dav.root / "pkbs/carol/1.pkbs/deep/er/a").read_bytes() == b"a"


def test_delete_and_missing(dav: DavServer, tmp_path: Path) -> None:
    job = job_results_path("/pkbs", "dave", "7.pkbs")

    async def work(store: ResultStore) -> None:
        await store.upload_bytes(job + "x", b"x")
        assert await store.delete(job) is True
        assert await store.delete(job) is False  # already gone: fine
        with pytest.raises(InvalidRequest, match="404"):
            await store.list(job)
        with pytest.raises(InvalidRequest, match="not found"):
            await store.download(job + "x", tmp_path / "x")
        await store.upload_bytes(job + "y", b"y")  # parents known-gone: made again

    run(dav.store(), work)
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []
    assert (dav.root / "pkbs/dave/7.pkbs/y").exists()


def test_concurrent_uploads_share_one_client(dav: DavServer) -> None:
    job = job_results_path("/pkbs", "erin", "8.pkbs")

    async def work(store: ResultStore) -> list[RemoteFile]:
        await store.ensure_collection(job)
        await asyncio.gather(*(store.upload_bytes(f"{job}f{i}", b"x" * i) for i in range(30)))
        return await store.list(job)

    listing = run(dav.store(), work)
    assert sorted((f.name, f.size) for f in listing) == sorted((f"f{i}", i) for i in range(30))


def test_from_settings(dav: DavServer) -> None:
    settings = Settings(
        webdav_url=dav.url + "/",
        webdav_user=USER,
        webdav_password=PASSWORD,
        webdav_base="/results",
    )
    store = ResultStore.from_settings(settings, attempts=2)

    async def work(store: ResultStore) -> list[RemoteFile]:
        await store.upload_bytes(store.job_path("frank", "9.pkbs") + "o", b"o")
        return await store.list(store.job_path("frank", "9.pkbs"))

    assert run(store, work) == [RemoteFile("o", 1)]
    assert store.attempts == 2


# ----------------------------------------------------------------------------- failures


def test_wrong_password_is_not_retried(dav: DavServer) -> None:
    retries: list[tuple[int, float, str]] = []
    store = dav.store(password="wrong", on_retry=lambda *a: retries.append(a), backoff=5.0)
    started = time.monotonic()
    with pytest.raises(InvalidRequest) as err:
        run(store, lambda s: s.upload_bytes("/pkbs/x", b"x"))
    assert "HTTP 401" in str(err.value) and f"user {USER!r}" in str(err.value)
    assert "PKBS_WEBDAV_PASSWORD" in str(err.value)
    assert retries == [] and time.monotonic() - started < 5


def test_server_down_retries_then_gives_up(own_dav: DavServer) -> None:
    own_dav.stop()
    retries: list[tuple[int, float, str]] = []
    store = own_dav.store(attempts=4, backoff=0.01, on_retry=lambda *a: retries.append(a))
    with pytest.raises(ServiceUnavailable, match="after 4 attempts: ConnectError") as err:
        run(store, lambda s: s.upload_bytes("/pkbs/x", b"x"))
    assert own_dav.url in str(err.value)
    assert [r[0] for r in retries] == [1, 2, 3]
    delays = [r[1] for r in retries]
    assert 0.008 <= delays[0] <= 0.012 and 0.032 <= delays[2] <= 0.048  # doubling, jittered


def test_server_dies_mid_upload(own_dav: DavServer, tmp_path: Path) -> None:
    random_file(tmp_path / "big", 20 * MiB)
    retries: list[tuple[int, float, str]] = []

    def progress(done: int, total: int | None) -> None:
        if done > 0 and own_dav.proc is not None and own_dav.proc.poll() is None:
            own_dav.crash()  # after the first chunk went out

    store = own_dav.store(attempts=3, backoff=0.01, on_retry=lambda *a: retries.append(a))
    with pytest.raises(ServiceUnavailable, match="PUT '/pkbs/big' .* after 3 attempts"):
        run(store, lambda s: s.upload_file("/pkbs/big", tmp_path / "big", progress))
    assert len(retries) == 2
    assert "Error" in retries[0][2]  # a write/read/protocol error, not an HTTP status


def test_server_back_during_backoff(own_dav: DavServer, tmp_path: Path) -> None:
    data = random_file(tmp_path / "big", 8 * MiB, seed=3)
    run(own_dav.store(), lambda s: s.ensure_collection("/pkbs/g/1.pkbs"))
    crashed = threading.Event()
    restart_wanted = threading.Event()
    errors: list[BaseException] = []

    def progress(done: int, total: int | None) -> None:
        if done > 0 and not crashed.is_set():
            crashed.set()
            own_dav.crash()

    def restarter() -> None:
        try:
            if restart_wanted.wait(timeout=30):
                own_dav.start()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=restarter)
    thread.start()
    retries: list[tuple[int, float, str]] = []

    def on_retry(attempt: int, delay: float, reason: str) -> None:
        retries.append((attempt, delay, reason))
        restart_wanted.set()

    store = own_dav.store(attempts=60, backoff=0.05, max_backoff=0.25, on_retry=on_retry)
    try:
        sent = run(store, lambda s: s.upload_file("/pkbs/g/1.pkbs/big", tmp_path / "big", progress))
    finally:
        restart_wanted.set()
        thread.join()
    assert not errors
    assert crashed.is_set() and retries and sent == len(data)
    assert (own_dav.root / "pkbs/g/1.pkbs/big").read_bytes() == data


def scripted(statuses: list[int], seen: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return httpx.Response(statuses.pop(0) if len(statuses) > 1 else statuses[0])

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("statuses", "attempts_made", "outcome"),
    [
        ([503, 423, 502, 201], 4, None),
        ([500], 3, ServiceUnavailable),
        ([400], 1, InvalidRequest),
        ([403], 1, InvalidRequest),
        ([503, 413], 2, InvalidRequest),
    ],
)
def test_which_statuses_are_retried(
    statuses: list[int], attempts_made: int, outcome: type[Exception] | None
) -> None:
    seen: list[str] = []
    store = ResultStore(
        "http://dav.invalid",
        attempts=3 if outcome else 5,
        backoff=0.001,
        transport=scripted(statuses, seen),
    )
    if outcome is None:
        run(store, lambda s: s.upload_bytes("/a", b"a"))
    else:
        with pytest.raises(outcome, match=r"HTTP \d{3}"):
            run(store, lambda s: s.upload_bytes("/a", b"a"))
    assert seen == ["PUT"] * attempts_made


def test_without_an_attempt_limit_retries_go_on_until_the_caller_gives_up() -> None:
    seen: list[str] = []
    store = ResultStore("http://dav.invalid", attempts=None, backoff=0.001, max_backoff=0.002,
                        transport=scripted([503] * 12 + [201], seen))
    run(store, lambda s: s.upload_bytes("/a", b"a"))
    assert seen == ["PUT"] * 13

    async def within(store: ResultStore) -> None:
        async with asyncio.timeout(0.2):
            await store.upload_bytes("/a", b"a")

    store = ResultStore("http://dav.invalid", attempts=None, backoff=0.001, max_backoff=0.002,
                        transport=scripted([503], seen))
    with pytest.raises(TimeoutError):
        run(store, within)
    assert store.last_error == "PUT '/a': HTTP 503 Service Unavailable"


def test_propfind_parsing_tolerates_other_servers() -> None:
    # Nextcloud-style: full URLs in href, a URL prefix, 404 propstats, odd quoting.
    body = b"""<?xml version="1.0"?>
<d:multistatus xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">
 <d:response><d:href>/remote.php/dav/files/w/pkbs/u/1.pkbs/</d:href>
  <d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop>
   <d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
 <d:response><d:href>https://cloud.example/remote.php/dav/files/w/pkbs/u/1.pkbs/a%20b.txt</d:href>
  <d:propstat><d:prop><d:resourcetype/><d:getcontentlength>12</d:getcontentlength></d:prop>
   <d:status>HTTP/1.1 200 OK</d:status></d:propstat>
  <d:propstat><d:prop><oc:size/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat>
 </d:response>
 <d:response><d:href>/remote.php/dav/files/w/pkbs/u/1.pkbs/sub/</d:href>
  <d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype>
   <d:getcontentlength/></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>
</d:multistatus>"""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "PROPFIND" and request.headers["Depth"] == "1"
        assert request.url.raw_path == b"/remote.php/dav/files/w/pkbs/u/1.pkbs/"
        return httpx.Response(207, content=body)

    store = ResultStore(
        "https://cloud.example/remote.php/dav/files/w", transport=httpx.MockTransport(handler)
    )
    assert run(store, lambda s: s.list("/pkbs/u/1.pkbs")) == [
        RemoteFile("a b.txt", 12),
        RemoteFile("sub", 0, is_dir=True),
    ]


def test_local_file_missing_is_a_clear_error(dav: DavServer, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="Cannot upload .*nope"):
        run(dav.store(), lambda s: s.upload_file("/pkbs/x", tmp_path / "nope"))


def test_webdav_server_stops_promptly_on_sigterm(tmp_path: Path) -> None:
    server = DavServer(tmp_path)
    server.start()
    assert server.proc is not None
    # One request first, so the signal lands while the serve loop runs (the
    # deadlock needs that; a signal during start-up slips through).
    assert httpx.request("PROPFIND", server.url + "/", auth=(USER, PASSWORD)).status_code == 207
    server.proc.terminate()
    try:
        # A deadline for a hang (the serve loop once waited for itself for ever), not a
        # measure of speed: a loaded machine may take seconds to stop it.
        server.proc.wait(timeout=30)
    finally:
        server.crash()
    assert server.proc.returncode == 0
