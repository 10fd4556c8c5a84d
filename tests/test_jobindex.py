"""The dispatcher's job index (dispatcher/jobindex.py) and the compact job listing
(GET /v1/jobs?view=table|summary), against a real nats-server and real dispatchers.

- the summary of a record equals pkbs.pbsattrs.job_attributes, field by field;
- the index loads the records that exist, follows creates, updates, deletes and
  purges, and survives nats-server restarting under it;
- a job submitted through one dispatcher is listed at once by another;
- compact and full views agree (ids, order, values; queued subjob rows of arrays),
  and so do the queue counts;
- with the session stack's workers: real finished jobs and arrays, and qstat's
  printed tables equal to the ones made from the full attributes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pkbs.cli import formats
from pkbs.dispatcher.jobindex import (
    COLUMNS,
    SUBJECT_PREFIX,
    SUMMARY_COLUMNS,
    JobIndex,
    entry_key,
    summarise,
)

from pkbs import servers
from pkbs.jobstore import JobStore, job_key
from pkbs.models import JobRecord, JobSpec
from pkbs.pbsattrs import SUMMARY_ATTRIBUTES, job_attributes, state_count
from pkbs.settings import Settings
from pkbs.states import JobState
from tests.apiutil import call, submit_body
from tests.stackutil import BIN, Stack, cli, poll, submit

T = TypeVar("T")
ADMIN = "index-admin-token"


# -- fixtures ---------------------------------------------------------------------------


@dataclass
class Nats:
    """A nats-server of this module's own, which a test may restart."""

    dir: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = servers.start_nats(self.dir / "nats.conf", self.dir / "nats.log")
        servers.wait_for_port("127.0.0.1", self.port, 20, self.proc)

    def restart(self) -> None:
        servers.stop(self.proc)
        self.start()


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nats]:
    root = tmp_path_factory.mktemp("jobindex-nats")
    port = servers.free_port()
    servers.write_nats_config(
        root / "nats.conf", port=port, store_dir=root / "js", user=None, password=None
    )
    server = Nats(root, port, servers.start_nats(root / "nats.conf", root / "nats.log"))
    servers.wait_for_port("127.0.0.1", port, 20, server.proc)
    yield server
    servers.stop(server.proc)


@dataclass
class Dispatchers:
    endpoints: list[str]
    procs: list[subprocess.Popen[bytes]]


@pytest.fixture(scope="module")
def dispatchers(
    nats_server: Nats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dispatchers]:
    """Two dispatchers on the module's nats-server (no workers: jobs stay queued)."""
    home = tmp_path_factory.mktemp("jobindex-home")
    procs: list[subprocess.Popen[bytes]] = []
    endpoints = []
    try:
        for i in range(2):
            port = servers.free_port()
            env = {
                "PKBS_NATS_URL": nats_server.url,
                "PKBS_ADMIN_TOKEN": ADMIN,
                "PKBS_DISPATCHER_PORT": str(port),
                "PKBS_HOME": str(home),
                "PKBS_RECONCILE_SECONDS": "0",
            }
            env = {k: v for k, v in os.environ.items() if not k.startswith("PKBS_")} | env
            procs.append(servers.start_python_module("pkbs.dispatcher", env, home / f"d{i}.log"))
            endpoints.append(f"http://127.0.0.1:{port}")
            servers.wait_for_port("127.0.0.1", port, 30, procs[-1])
        for endpoint in endpoints:
            poll(lambda e=endpoint: call(e, "GET", "/readyz", None)[0] == 200, 30, what="ready")
        yield Dispatchers(endpoints, procs)
    finally:
        for proc in procs:
            servers.stop(proc)


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    return asyncio.run(main())


# -- helpers ----------------------------------------------------------------------------


def record(number: int, state: JobState = JobState.QUEUED, **fields: Any) -> JobRecord:
    spec = fields.pop("spec", None) or JobSpec(
        name=f"job{number}", kind="stdin", entrypoint="STDIN", submit_host="login1",
        queue="workq",
    )
    fields.setdefault("owner", "alice")
    return JobRecord(
        number=number, server="pkbs", spec=spec, state=state, submit_id="s" * 16, **fields
    )


def expected_summary(rec: JobRecord) -> list[Any]:
    attrs = job_attributes(rec)
    return [rec.job_id, *(attrs.get(name) for name in SUMMARY_COLUMNS[1:])]


def listing(endpoint: str, token: str, view: str, **query: Any) -> dict[str, Any]:
    parts = [f"view={view}"]
    for key, value in query.items():
        values = value if isinstance(value, list) else [value]
        parts += [f"{key}={str(v).lower() if isinstance(v, bool) else v}" for v in values]
    status, body = call(endpoint, "GET", "/v1/jobs?" + "&".join(parts), token)
    assert status == 200, body
    return dict(body)


def summary_rows(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    assert body["columns"] == list(SUMMARY_COLUMNS)
    return [(row[0], dict(zip(SUMMARY_COLUMNS[1:], row[1:], strict=True))) for row in body["rows"]]


def full_rows(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (job["id"], {name: job["attributes"].get(name) for name in SUMMARY_COLUMNS[1:]})
        for job in body["jobs"]
    ]


def assert_views_agree(endpoint: str, token: str, **query: Any) -> list[str]:
    """view=summary and view=table give the full view's ids, order and values."""
    full = full_rows(listing(endpoint, token, "full", **query))
    compact = summary_rows(listing(endpoint, token, "summary", **query))
    assert [i for i, _ in compact] == [i for i, _ in full], query
    for (job_id, got), (_, want) in zip(compact, full, strict=True):
        assert got == want, (job_id, query)
    table = listing(endpoint, token, "table", **query)
    assert table["columns"] == list(COLUMNS["table"])
    width = len(COLUMNS["table"])
    assert table["rows"] == [[i, *list(a.values())[: width - 1]] for i, a in compact]
    return [i for i, _ in full]


# -- the summary of one record ------------------------------------------------------------


def test_summary_equals_job_attributes() -> None:
    spec = JobSpec(
        name="x", kind="stdin", entrypoint="STDIN", submit_host="h.example", queue="workq"
    )
    select = spec.model_copy(
        update={"resources": {"select": "2:ncpus=3:mem=1gb", "walltime": "90", "cput": "1:0"}}
    )
    plain = spec.model_copy(update={"resources": {"mem": "2GB", "ncpus": "4", "nodect": "2"}})
    odd = spec.model_copy(update={"attributes": {"exec_host": "given", "comment": "no"}})
    array = spec.model_copy(update={"array": "1-9:2", "queue": "other"})
    cases = [
        record(1),
        record(2, JobState.HELD, spec=select, hold_types="u"),
        record(3, JobState.RUNNING, spec=plain, exec_host="n1+n2", session_id=42,
               resources_used={"cput": "65", "walltime": "3:05"}),
        record(4, JobState.FINISHED, spec=select, exec_host="n1/0*3", exit_status=1,
               comment="Job deleted by bob", resources_used={"cput": "00:00:01"}),
        record(5, JobState.QUEUED, spec=odd, owner="carol@elsewhere"),
        record(6, JobState.BEGUN, spec=array),
        record(6, JobState.FINISHED, spec=array, index=3, exec_host="n3"),
        record(6, JobState.RUNNING, spec=array, index=5, session_id=7),
        record(7, JobState.WAITING, spec=spec.model_copy(update={"exec_time": 4e9})),
    ]
    for rec in cases:
        head, tail = summarise(json.loads(rec.model_dump_json()))
        assert [*head, *tail] == expected_summary(rec), rec.job_id
        assert set(SUMMARY_COLUMNS[1:]) == SUMMARY_ATTRIBUTES


def test_index_counts_ended_subjobs_of_unfinished_arrays() -> None:
    """What dispatcher/arrays.py writes into an array's record: its subjobs that have
    ended, counted from their records in whatever order they come."""
    index = JobIndex(Stub())  # type: ignore[arg-type]
    called: list[int] = []
    index.on_subjob_ended = called.append
    spec = JobSpec(name="arr", kind="stdin", entrypoint="STDIN", array="1-4", queue="workq")

    def apply(rec: JobRecord) -> None:
        index.apply(SUBJECT_PREFIX + job_key(rec.number, rec.index), rec.model_dump_json().encode())

    # The first load gives keys in the order of their last change: subjobs first.
    apply(record(5, JobState.FINISHED, spec=spec, index=2, exit_status=0))
    apply(record(5, JobState.FINISHED, spec=spec, index=3, exit_status=1))
    assert called == []  # no array record yet: the end of the load counts these
    apply(record(5, JobState.BEGUN, spec=spec))
    assert index.array_tally(5) == (2, 1, 4) and index.ended_arrays() == []
    apply(record(5, JobState.RUNNING, spec=spec, index=4))
    apply(record(5, JobState.FINISHED, spec=spec, index=1, exit_status=0))
    assert called == [5] and index.array_tally(5) == (3, 1, 4)
    apply(record(5, JobState.QUEUED, spec=spec, index=3))  # qrerun of an ended subjob
    assert index.array_tally(5) == (2, 0, 4)
    apply(record(5, JobState.FINISHED, spec=spec, index=3, exit_status=0))
    apply(record(5, JobState.FINISHED, spec=spec, index=4, exit_status=271))
    assert index.array_tally(5) == (4, 1, 4) and index.ended_arrays() == [5]
    apply(record(5, JobState.FINISHED, spec=spec, array_done=4, array_failed=1))
    assert index.array_tally(5) == (0, 0, 4) and index.ended_arrays() == []
    apply(record(5, JobState.FINISHED, spec=spec, index=4, exit_status=0))  # after the end
    assert index.array_tally(5) == (0, 0, 4) and called == [5, 5, 5]


class Stub:
    js = None


# -- the index against nats-server ----------------------------------------------------------


def test_index_loads_follows_and_survives_a_restart(nats_server: Nats) -> None:
    settings = Settings(nats_url=nats_server.url, server_name="pkbs")
    spec = JobSpec(name="arr", kind="stdin", entrypoint="STDIN", array="1-4", queue="workq")

    async def put(store: JobStore, rec: JobRecord) -> None:
        await store.jobs.put(job_key(rec.number, rec.index), rec.model_dump_json().encode())

    def rows(index: JobIndex, **kw: Any) -> list[str]:
        got = index.rows("table", owner=None, users=None, **kw)
        return [json.loads(row)[0] for row in got]

    async def scenario() -> None:
        store = await JobStore.open(settings, "test-jobindex")
        try:
            for rec in (
                record(900001),
                record(900002, JobState.FINISHED),
                record(900003, spec=spec),
                record(900003, JobState.RUNNING, spec=spec, index=2),
            ):
                await put(store, rec)
            index = JobIndex(store)
            await index.start()
            try:
                await index.sync()  # the initial load: every record above
                assert index.ready
                assert rows(index, history=False, subjobs=False) == ["900001.pkbs", "900003[].pkbs"]
                assert rows(index, history=True, subjobs=True) == [
                    "900001.pkbs", "900002.pkbs", "900003[].pkbs",
                    *(f"900003[{i}].pkbs" for i in range(1, 5)),
                ]
                assert index.counts()["workq"] == {"Q": 2, "R": 1}
                # what the reconciler reads instead of every record
                assert sorted(index.unfinished(), key=str) == [
                    (900001, None), (900003, 2), (900003, None)]
                # created, updated, deleted, purged: each seen by the next listing
                await put(store, record(900004, JobState.HELD))
                await put(store, record(900001, JobState.RUNNING, session_id=5))
                await store.jobs.delete(job_key(900002))
                await store.jobs.purge(job_key(900003, 2))
                await index.sync()
                assert rows(index, history=True, subjobs=False) == [
                    "900001.pkbs", "900003[].pkbs", "900004.pkbs"]
                assert index.counts()["workq"] == {"R": 1, "Q": 1, "H": 1}
                summary = index.rows("summary", owner=None, users=None, history=True,
                                     subjobs=True)
                assert json.loads(summary[0])[6] == 5  # session_id
                assert json.loads(summary[3]) == [
                    "900003[2].pkbs", *expected_summary(record(900003, spec=spec).subjob(2))[1:]]
                # nats-server restarts: the ordered consumer is made again and catches up
                seq = index.applied
                await asyncio.to_thread(nats_server.restart)
                deadline = time.monotonic() + 30
                while True:
                    try:
                        await put(store, record(900005))
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.1)
                while True:
                    try:
                        await index.sync(timeout=2)
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                assert index.applied > seq
                assert "900005.pkbs" in rows(index, history=False, subjobs=False)
                await put(store, record(900005, JobState.FINISHED))
                await index.sync()
                assert "900005.pkbs" not in rows(index, history=False, subjobs=False)
                assert entry_key(900005, None) in index._jobs
                # a message lost on the way (as a slow consumer drops one): the next
                # one's consumer sequence shows the gap, the index subscribes again
                # from the last sequence it applied and gets the change all the same
                index._dseq -= 1
                await put(store, record(900006, JobState.HELD))
                await index.sync()
                assert "900006.pkbs" in rows(index, history=False, subjobs=False)
            finally:
                await index.stop()
        finally:
            await store.close()

    run(scenario)


# -- two dispatchers ------------------------------------------------------------------------


def test_read_your_writes_across_dispatchers(dispatchers: Dispatchers) -> None:
    a, b = dispatchers.endpoints
    for i in range(20):
        first, second = (a, b) if i % 2 else (b, a)
        status, body = call(first, "POST", "/v1/jobs", ADMIN, submit_body(name=f"ryw{i}"))
        assert status == 201, body
        ids = [row[0] for row in listing(second, ADMIN, "table")["rows"]]
        assert body["job_id"] in ids
    status, _ = call(a, "DELETE", f"/v1/jobs/{body['job_id']}", ADMIN)
    assert status == 204
    rows = listing(b, ADMIN, "table", history=True)["rows"]
    assert [r[4] for r in rows if r[0] == body["job_id"]] == ["F"]


def test_compact_views_subjob_rows_and_queue_counts(dispatchers: Dispatchers) -> None:
    a, b = dispatchers.endpoints
    status, created = call(a, "POST", "/v1/tokens", ADMIN, {"user": "idxuser"})
    assert status == 201
    token = created["token"]

    def sub(endpoint: str, who: str, **spec: Any) -> str:
        body = submit_body(name=spec.pop("name", "views"))
        body["spec"].update(spec)
        status, answer = call(endpoint, "POST", "/v1/jobs", who, body)
        assert status == 201, answer
        return str(answer["job_id"])

    held = sub(a, token, hold=True, resources={"select": "2:ncpus=2:mem=1gb"})
    waiting = sub(b, token, exec_time=time.time() + 3600, resources={"walltime": "1:00"})
    array = sub(a, token, name="arr", array="1-5:2")  # 1, 3, 5
    gone = sub(b, token)
    number = array.split("[")[0]
    assert call(b, "DELETE", f"/v1/jobs/{number}[3].pkbs", token)[0] == 204
    assert call(a, "DELETE", f"/v1/jobs/{gone}", token)[0] == 204
    mine = {held, waiting, array, gone}
    for endpoint in (a, b):
        for history in (False, True):
            for subjobs in (False, True):
                ids = assert_views_agree(endpoint, token, history=history, subjobs=subjobs)
                assert set(ids) >= mine - (set() if history else {gone})
        ids = assert_views_agree(endpoint, token, history=True, subjobs=True)
        assert ids[ids.index(array) :][:4] == [array, f"{number}[1].pkbs", f"{number}[3].pkbs",
                                               f"{number}[5].pkbs"]
        # the operator sees everybody's; user= narrows it
        assert_views_agree(endpoint, ADMIN, history=True, subjobs=True)
        only = assert_views_agree(endpoint, ADMIN, history=True, user=["idxuser"])
        assert set(only) == mine
    # queue counts from the index equal those made from the records
    full = listing(a, ADMIN, "full", history=True, subjobs=False)["jobs"]
    counts: dict[str, int] = {}
    for job in full:
        state = job["attributes"]["job_state"]
        if state not in ("F", "X"):
            counts[state] = counts.get(state, 0) + 1
    counts["Q"] = counts.get("Q", 0)  # the deleted subjob's record is X: not counted
    status, queues = call(b, "GET", "/v1/queues", ADMIN)
    assert status == 200
    workq = next(q for q in queues["queues"] if q["name"] == "workq")
    assert workq["attributes"]["state_count"] == state_count(counts)
    assert queues["server_attributes"]["state_count"] == state_count(counts)


# -- real jobs (the session stack) ----------------------------------------------------------


def test_finished_jobs_and_printed_tables_match_the_full_view(stack: Stack) -> None:
    env = stack.as_user("idxreal")
    job = submit(stack, "-N", "idxdone", "-l", "walltime=00:05:00", input="echo hi\n", env=env)
    result = cli(stack, "qsub", "-J", "1-3", "-N", "idxarr", input="true\n", env=env)
    assert result.returncode == 0, result.stderr
    array = result.stdout.strip()
    for job_id in (job, array):
        poll(lambda j=job_id: stack.run(str(BIN / "qstat"), "-x", j, env=env).stdout.split()[-2:-1]
             == ["F"], 60, 0.1, f"{job_id} finished")
    endpoint, token = env["PKBS_ENDPOINT"], env["PKBS_TOKEN"]
    ids = assert_views_agree(endpoint, token, history=True, subjobs=True)
    number = array.split("[")[0]
    assert ids == [job, array, *(f"{number}[{i}].pkbs" for i in range(1, 4))]
    full = formats.jobs_from_wire(listing(endpoint, token, "full", history=True, subjobs=True))
    server = "pkbs"
    for args, text in (
        (("-x",), formats.default_table(full[:2])),
        (("-x", "-t"), formats.default_table(full)),
        (("-x", "-a"), formats.alternate(full[:2], server)),
        (("-x", "-t", "-n", "-s", "-w"),
         formats.alternate(full, server, show_nodes=True, show_comment=True, wide=True)),
    ):
        got = cli(stack, "qstat", *args, env=env)
        assert (got.returncode, got.stderr) == (0, ""), args
        assert got.stdout == text, args
