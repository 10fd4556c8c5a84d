"""A worker cut off from the network while its job runs: the job is rerun elsewhere and
finishes; when the cut-off worker is back, the results it then stores never become
the job's. Each run stores its results in a collection of its own
(`<base>/<user>/<job id>/run-<run_count>/`); the job's record names the run that
finished it (its final compare-and-set won), and a run that lost removes its own.

The local stack's test runs a worker of its own through two TCP proxies (NATS and
WebDAV) that the test cuts and heals: the worker lives on and reaches WebDAV again
while another worker reruns the job, which SIGSTOP cannot show.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from nats.aio.msg import Msg
from pkbs.worker.delivery import Delivery
from pkbs.worker.runner import RunOutcome
from pkbs.worker.service import Run, Worker
from pkbs.worker.slots import Grant

from bench.runlog import job_runs
from pkbs.hookstore import HookTable
from pkbs.jobstore import JobStore
from pkbs.models import JobRecord, JobSpec, ResultFile
from pkbs.settings import Settings
from pkbs.states import JobState
from tests.stackutil import (
    BIN,
    Stack,
    audit_jobs,
    poll,
    results_dir,
    start_worker,
    stop_worker,
)
from tests.tcpproxy import TcpProxy
from tests.test_results import PASSWORD, USER, DavServer

pytestmark = pytest.mark.timeout(120)


def test_proxy_cut_refuses_and_heal_forwards_again(tmp_path: Path) -> None:
    """The proxy the partition test relies on: forwards, refuses once cut (and drops
    what it forwarded), forwards again once healed."""
    with socket.create_server(("127.0.0.1", 0)) as echo:
        port = echo.getsockname()[1]

        def serve() -> None:
            with contextlib.suppress(OSError):
                while True:
                    conn, _ = echo.accept()
                    with conn:
                        while data := conn.recv(1024):
                            conn.sendall(data)

        threading.Thread(target=serve, daemon=True).start()
        with TcpProxy.to_port(port) as proxy:
            first = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            first.sendall(b"ping")
            assert first.recv(4) == b"ping"
            proxy.cut()
            assert first.recv(4) == b""  # dropped
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            proxy.heal()
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as again:
                again.sendall(b"pong")
                assert again.recv(4) == b"pong"
            first.close()


def job_script(log: Path, flag: Path) -> str:
    """Logs its start as tests.stackutil.logged_job does, waits (at most 30 s) for
    `flag`, prints `out <id>` and which run of the job it is, logs its end."""
    return (
        f'LOG="{log}"\n'
        'echo "start $PBS_JOBID $$ $EPOCHREALTIME" >> "$LOG"\n'
        'run=$(grep -cF "start $PBS_JOBID " "$LOG")\n'
        f'for i in $(seq 600); do [ -e "{flag}" ] && break; sleep 0.05; done\n'
        'echo "out $PBS_JOBID"\n'
        'echo "run $run"\n'
        'echo "end $PBS_JOBID $$ $EPOCHREALTIME" >> "$LOG"\n'
    )


def test_cut_off_worker_never_replaces_the_rerun_s_results(
    fresh_stack: Stack, tmp_path: Path
) -> None:
    """Worker A runs the job and is cut off (NATS and WebDAV) as it ends; B reruns it
    after ack_wait and the job is F with run_count 2. A reaches WebDAV again and stores
    its run's output while B's results are the job's, then NATS: its end is refused.
    `pkbs fetch` and qstat -f's results_url give the rerun's results, and A's run
    collection is gone."""
    fresh_stack.extra_env.update(
        {"PKBS_ACK_WAIT_SECONDS": "2", "PKBS_RESULTS_RETRY_SECONDS": "120"}
    )
    fresh_stack.up(workers=0, slots=1)
    ports = {proc["name"]: proc["port"] for proc in fresh_stack.state()["processes"]}
    log, flag = tmp_path / "runs.log", tmp_path / "go"
    a_log = fresh_stack.home / "logs" / "cut-off.log"
    workers = []
    with TcpProxy.to_port(ports["nats-server"]) as nats, TcpProxy.to_port(ports["webdav"]) as dav:
        try:
            workers.append(start_worker(
                fresh_stack, "cut-off", nats_url=f"nats://127.0.0.1:{nats.port}",
                webdav_url=f"http://127.0.0.1:{dav.port}",
            ))
            job_id = fresh_stack.qsub("-N", "split", input=job_script(log, flag))
            # A is the only worker: the run that starts is its.
            poll(lambda: len(job_runs(log).get(job_id, [])) == 1, 30, 0.02, "the first run")
            nats.cut()
            dav.cut()
            flag.touch()
            poll(lambda: job_runs(log)[job_id][0].ended, 10, 0.02, "the first run to end")
            workers.append(start_worker(fresh_stack, "rerun"))
            job = fresh_stack.wait_state(job_id, "F", timeout=60)
            assert job["run_count"] == 2 and job["Exit_status"] == 0, job
            owner = str(job["Job_Owner"]).split("@", 1)[0]
            collection = fresh_stack.home / "webdav" / "pkbs" / owner / job_id

            def stale_output() -> list[Path]:
                return [p for p in collection.rglob("split.o*")
                        if p.is_file() and "run 1\n" in p.read_text(errors="replace")]

            assert not stale_output()
            dav.heal()  # A stores its run's output, the job being F with B's results
            stored = poll(stale_output, 40, 0.02, "the cut-off worker's upload")
            nats.heal()  # A's end is refused now
            poll(lambda: "run was superseded" in a_log.read_text(), 30, 0.05,
                 "the cut-off worker to find its run superseded")

            fetched = tmp_path / "fetched"
            got = fresh_stack.run(str(BIN / "pkbs"), "fetch", job_id, str(fetched))
            assert got.returncode == 0, got.stderr
            out_name = str(job["Output_Path"]).rsplit("/", 1)[-1]
            assert (fetched / out_name).read_text() == f"out {job_id}\nrun 2\n"
            final = fresh_stack.job(job_id)
            assert final["results_url"].endswith(f"/pkbs/{owner}/{job_id}/run-2/"), final
            assert results_dir(fresh_stack, final) == collection / "run-2"
            # A removes what it stored: its run's collection goes, the rerun's stays.
            assert [p.parent for p in stored] == [collection / "run-1"]
            poll(lambda: not (collection / "run-1").exists(), 30, 0.05,
                 "the superseded run's collection to be removed")
            assert f"removed: /pkbs/{owner}/{job_id}/run-1/" in a_log.read_text()
            assert sorted(p.name for p in collection.iterdir()) == ["run-2"]
            audit = audit_jobs(fresh_stack, [job_id], log, timeout=30)
            audit.check()
            assert audit.reruns == 1
        finally:
            for proc in workers:
                stop_worker(proc)


# -- the worker's final compare-and-set and the run collections, without a stack --------


class OneRecord:
    """JobStore.cas on one record in memory."""

    def __init__(self, record: JobRecord) -> None:
        self.record, self.revision = record, 1

    async def cas(self, number: int, change: Any, index: int | None = None,
                  known: Any = None) -> tuple[JobRecord, int] | None:
        new = change(self.record)
        if new is None:
            return None
        self.record, self.revision = new, self.revision + 1
        return new, self.revision


class Message:
    acked = False

    async def ack(self) -> None:
        self.acked = True


def record(run_count: int, token: str) -> JobRecord:
    spec = JobSpec(name="unit", kind="stdin", entrypoint="STDIN", queue="workq")
    return JobRecord(number=7, server="pkbs", owner="alice", spec=spec, state=JobState.RUNNING,
                     submit_id="unit-partition", run_count=run_count, run_token=token)


@pytest.fixture
def dav_worker(tmp_path: Path) -> Iterator[tuple[Worker, DavServer]]:
    dav = DavServer(tmp_path)
    dav.start()
    settings = Settings(webdav_url=dav.url, webdav_user=USER, webdav_password=PASSWORD,
                        worker_dir=tmp_path / "jobs", worker_name="unit")
    yield Worker(settings), dav
    dav.stop()


class NoHooks:
    """A worker's hook table with no hooks (the worker is not started here)."""

    def for_event(self, event: str) -> list[object]:
        return []


def finish(worker: Worker, stored: JobRecord, started: JobRecord) -> tuple[JobRecord, bool]:
    """Runs 1 and 2 of job 7 have stored an output; the run that `started` describes
    ends while the store holds `stored`. The record after, and whether it was acked."""
    store, msg = OneRecord(stored), Message()
    run = Run(number=7, index=None, token=str(started.run_token), msg=cast(Msg, msg), ncpus=1,
              record=started, revision=1, grant=Grant(1))
    outcome = RunOutcome(exit_status=0, walltime=1.0, cput=0.5, max_rss_kb=1000, session_id=1)

    async def main() -> None:
        worker.store = cast(JobStore, store)
        worker.delivery = Delivery(worker.settings)
        worker.hooks = cast(HookTable, NoHooks())
        try:
            for count in (1, 2):
                path = worker.delivery.run_path(started, count)
                output = f"run {count}\n".encode()
                await worker.delivery.webdav.upload_bytes(f"{path}unit.o7", output)
            await worker._finish(run, outcome, [ResultFile(name="unit.o7", size=6)], None)
        finally:
            await worker.delivery.aclose()

    asyncio.run(main())
    return store.record, msg.acked


def test_run_that_lost_removes_its_own_results(dav_worker: tuple[Worker, DavServer]) -> None:
    worker, dav = dav_worker
    rerun = record(2, "rerun")
    after, acked = finish(worker, rerun, record(1, "stale"))
    assert after == rerun and not acked  # the record is the rerun's, untouched
    job = dav.root / "pkbs" / "alice" / "7.pkbs"
    assert sorted(p.name for p in job.iterdir()) == ["run-2"]
    assert (job / "run-2" / "unit.o7").read_text() == "run 2\n"


def test_run_that_won_names_its_results_and_removes_earlier_runs(
    dav_worker: tuple[Worker, DavServer],
) -> None:
    worker, dav = dav_worker
    after, acked = finish(worker, record(2, "rerun"), record(2, "rerun"))
    assert acked and after.state == JobState.FINISHED and after.run_token is None
    assert after.results_path == "/pkbs/alice/7.pkbs/run-2/"
    assert after.results_url == f"{dav.url}/pkbs/alice/7.pkbs/run-2/"
    job = dav.root / "pkbs" / "alice" / "7.pkbs"
    assert sorted(p.name for p in job.iterdir()) == ["run-2"]
    assert (job / "run-2" / "unit.o7").read_text() == "run 2\n"
