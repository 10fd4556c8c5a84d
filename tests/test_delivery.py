"""A run's results delivered (worker/delivery.py) without a stack: stored in the run's
own collection, or, WebDAV unreachable past PKBS_RESULTS_RETRY_SECONDS, not stored,
saying why, and kept on the worker under pkbs-undelivered/."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pkbs.worker.delivery import Delivery, ResultsNotStored

from pkbs import servers
from pkbs.models import JobRecord, JobSpec, ResultFile
from pkbs.settings import Settings
from pkbs.states import JobState
from tests.test_results import PASSWORD, USER, DavServer

T = TypeVar("T")


class Files:
    """What a delivery reads of a run directory (worker/rundir.py RunDir)."""

    def __init__(self, root: Path) -> None:
        self.job = root / "job"
        (self.job / "sub").mkdir(parents=True)
        self.outputs = [("unit.o7", root / "out"), ("unit.e7", root / "err")]
        self.outputs[0][1].write_text("out\n")
        self.outputs[1][1].write_text("")  # empty: listed, not uploaded
        (self.job / "sub" / "data.txt").write_text("data\n")


def record() -> JobRecord:
    spec = JobSpec(name="unit", kind="stdin", entrypoint="STDIN", queue="workq")
    return JobRecord(number=7, server="pkbs", owner="alice", spec=spec, state=JobState.RUNNING,
                     submit_id="unit-delivery", run_count=2, run_token="t")


def deliver(settings: Settings, work: Callable[[Delivery], Awaitable[T]]) -> T:
    async def main() -> T:
        delivery = Delivery(settings)
        try:
            return await work(delivery)
        finally:
            await delivery.aclose()

    return asyncio.run(main())


@pytest.fixture
def dav(tmp_path: Path) -> Iterator[DavServer]:
    server = DavServer(tmp_path)
    server.start()
    yield server
    server.stop()


def settings(tmp_path: Path, url: str, **fields: Any) -> Settings:
    return Settings(webdav_url=url, webdav_user=USER, webdav_password=PASSWORD,
                    worker_dir=tmp_path / "worker", worker_name="unit", **fields)


def test_results_stored_in_the_run_collection(dav: DavServer, tmp_path: Path) -> None:
    files = Files(tmp_path / "run")
    stored = deliver(settings(tmp_path, dav.url),
                     lambda d: d.store(record(), files, ["sub/data.txt"]))  # type: ignore[arg-type]
    assert stored == [ResultFile(name="unit.o7", size=4), ResultFile(name="unit.e7", size=0),
                      ResultFile(name="sub/data.txt", size=5)]
    run = dav.root / "pkbs" / "alice" / "7.pkbs" / "run-2"
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()) == [
        "sub/data.txt", "unit.o7"
    ]


def test_unreachable_past_the_limit_not_stored_and_kept(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{servers.free_port()}"  # nothing listens: refused
    files = Files(tmp_path / "run")
    config = settings(tmp_path, url, results_retry_seconds=1.0)

    async def work(delivery: Delivery) -> tuple[str, str]:
        with pytest.raises(ResultsNotStored) as err:
            await delivery.store(record(), files, ["sub/data.txt"])  # type: ignore[arg-type]
        return str(err.value), delivery.keep_undelivered(record(), files, ["sub/data.txt"])  # type: ignore[arg-type]

    reason, kept = deliver(config, work)
    assert reason.startswith(f"Results not stored: WebDAV at {url} unreachable for 1 s "
                             "(limit PKBS_RESULTS_RETRY_SECONDS=1); last error: MKCOL"), reason
    assert "ConnectError" in reason
    where = tmp_path / "worker" / "pkbs-undelivered" / "7.pkbs.2"
    assert kept == f"its 3 result files are kept on worker unit in {where}"
    assert (where / "unit.o7").read_text() == "out\n"
    assert (where / "sub" / "data.txt").read_text() == "data\n"
