"""Job history retention against a real stack: a finished job is kept for the
server's job_history_duration, then its results, payload, index entries and record
are deleted; nothing a job that can still run needs goes; sweeps at once delete each
job once (pkbs/retention.py)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.js import errors as jserr

from pkbs import constants as C
from pkbs import lifecycle
from pkbs.errors import UnknownJob
from pkbs.jobstore import JobStore
from pkbs.models import JobRecord, JobSpec
from pkbs.orphans import ORPHAN_AGE, OrphanPayloads
from pkbs.results import ResultStore
from pkbs.retention import Sweep, expire_undelivered, history_seconds
from pkbs.serverconfig import ServerAttrs
from pkbs.states import JobState
from tests.stackutil import (
    BIN,
    Stack,
    job_number,
    poll,
    results_dir,
    set_server_attrs,
    store_settings,
)

SWEEP_SECONDS = "0.5"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Reconcile rounds far apart: a held job stays undecided long enough to watch
    # what it waits on being kept.
    s = Stack(
        tmp_path_factory.mktemp("retention"),
        extra_env={
            "PKBS_RETENTION_SWEEP_SECONDS": SWEEP_SECONDS,
            "PKBS_RECONCILE_SECONDS": "8",
            "PKBS_KILL_GRACE_SECONDS": "20",
        },
    )
    s.up(workers=1, slots=4)
    yield s
    s.down()


def history(stack: Stack, duration: str) -> None:
    set_server_attrs(stack, job_history_duration=duration)


class Probe:
    """What the stack keeps of a job, asked of its NATS directly."""

    def __init__(self, stack: Stack) -> None:
        self.settings = store_settings(stack)

    def _run(self, number: int, index: int | None, what: str) -> Any:
        async def ask() -> Any:
            store = await JobStore.open(self.settings, "test-probe")
            try:
                if what == "state":
                    try:
                        return (await store.get(number, index))[0].state
                    except UnknownJob:
                        return None
                if what == "record":
                    try:
                        await store.get(number, index)
                    except UnknownJob:
                        return False
                    return True
                try:
                    await store.js.get_msg(C.SUBMIT_STREAM, number)
                except jserr.NotFoundError:
                    return False
                return True
            finally:
                await store.close()

        return asyncio.run(ask())

    def record(self, number: int, index: int | None = None) -> bool:
        return bool(self._run(number, index, "record"))

    def payload(self, number: int) -> bool:
        return bool(self._run(number, None, "payload"))

    def state(self, number: int, index: int | None = None) -> JobState | None:
        """The job's state, None once its record is gone."""
        state: JobState | None = self._run(number, index, "state")
        return state


def listed(stack: Stack, job_id: str) -> bool:
    """Whether `qstat -x` (the job index's table) lists the job."""
    result = stack.run(str(BIN / "qstat"), "-x")
    assert result.returncode == 0, result.stderr
    return any(line.split()[0] == job_id for line in result.stdout.splitlines()[2:] if line)


def test_history_seconds_follow_the_server_attributes() -> None:
    assert history_seconds(ServerAttrs()) == 14 * 24 * 3600  # PBS's two weeks
    assert history_seconds(ServerAttrs(job_history_duration="00:01:30")) == 90
    assert history_seconds(ServerAttrs(job_history_duration="45")) == 45
    assert history_seconds(ServerAttrs(job_history_enable=False)) == 0


def test_an_expired_job_is_deleted_everywhere_and_kept_while_within_history(
    stack: Stack, tmp_path: Path
) -> None:
    history(stack, "00:00:06")
    probe = Probe(stack)
    job_id = stack.qsub("-N", "kept", input="echo hello > out.txt\necho done\n", cwd=tmp_path)
    number = job_number(job_id)
    job = stack.wait_state(job_id, "F")
    ended = time.time()
    results = results_dir(stack, job)
    # Within history: everything is there.
    assert (results / "out.txt").read_text() == "hello\n"
    assert probe.record(number) and probe.payload(number)
    assert listed(stack, job_id)
    assert time.time() - ended < 6, "the checks took longer than the history"

    poll(lambda: not listed(stack, job_id), 30, 0.2, "the job to leave qstat -x")
    assert time.time() - ended >= 5  # not before its history ran out (obittime + 6 s)
    poll(lambda: not probe.record(number), 10, 0.2, "the record to be deleted")
    assert not probe.payload(number)
    assert not results.exists() and not results.parent.exists()
    shown = stack.run(str(BIN / "qstat"), "-x", "-f", job_id)
    assert shown.returncode != 0 and "Unknown Job Id" in shown.stderr


def test_a_deleted_arrays_payload_stays_while_a_subjob_still_runs(stack: Stack) -> None:
    history(stack, "1")
    probe = Probe(stack)
    # Each subjob ignores qdel's SIGTERM and ends by itself a few seconds later.
    script = "trap '' TERM\nfor i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.5; done\n"
    array_id = stack.qsub("-J", "1-2", "-N", "arr", input=script)
    number = int(array_id.split("[", 1)[0])

    def both_running() -> bool:
        return all(
            probe.record(number, i)
            and stack.job(array_id.replace("[]", f"[{i}]"))["job_state"] == "R"
            for i in (1, 2)
        )

    poll(both_running, 60, 0.2, "both subjobs to run")
    assert stack.run(str(BIN / "qdel"), array_id).returncode == 0
    assert stack.job(array_id)["job_state"] == "F"
    expired_at = time.time() + 1
    checked_expired = 0
    while True:
        states = [probe.state(number, i) for i in (1, 2)]
        if JobState.RUNNING not in states:
            break  # (a gone record: both had ended, and the sweep began)
        # The array's history has run out, but a subjob still runs: all is kept.
        assert probe.record(number) and probe.payload(number)
        assert probe.record(number, 1) and probe.record(number, 2)
        if time.time() > expired_at + 2 * float(SWEEP_SECONDS):
            checked_expired += 1
        time.sleep(0.2)
    assert checked_expired, "the subjobs ended before a sweep could have deleted the array"
    poll(lambda: not probe.record(number), 15, 0.2, "the array's record to be deleted")
    assert not probe.record(number, 1) and not probe.record(number, 2)
    assert not probe.payload(number)
    assert not listed(stack, array_id)


def test_a_finished_job_a_held_job_waits_on_is_kept_until_it_is_decided(
    stack: Stack,
) -> None:
    history(stack, "1")
    probe = Probe(stack)
    parent_id = stack.qsub("-N", "parent", input="sleep 1\n")
    parent = job_number(parent_id)
    stack.wait_state(parent_id, "R")

    # A child stored as a dispatcher stopped between storing it and judging its
    # dependencies would leave it: held, waiting on the parent, which does not know it.
    async def store_child() -> int:
        store = await JobStore.open(store_settings(stack), "test-child")
        try:
            spec = JobSpec(name="child", kind="stdin", entrypoint="STDIN", queue="workq",
                           depend=f"afterok:{parent_id}")

            def build(number: int) -> JobRecord:
                return lifecycle.submitted(number, "pkbs", os.environ.get("USER", "u"), spec,
                                           f"child-{time.time_ns()}", {"afterok": [parent]},
                                           time.time())

            record, _, _ = await store.create(b"echo child\n", f"child-{time.time_ns()}", build)
            assert record.state == JobState.HELD
            return record.number
        finally:
            await store.close()

    child = asyncio.run(store_child())
    child_id = f"{child}.pkbs"
    stack.wait_state(parent_id, "F")
    parent_expired = time.time() + 1
    kept_expired = 0
    while stack.job(child_id)["job_state"] == "H":
        assert probe.record(parent) and probe.payload(parent)
        if time.time() > parent_expired + 2 * float(SWEEP_SECONDS):
            kept_expired += 1
        time.sleep(0.2)
    assert kept_expired, "the child was decided before a sweep could have deleted the parent"
    # The periodic repair judged the child (the parent ended well: it runs) ...
    stack.wait_state(child_id, "F")
    # ... and then the parent's history, long expired, is deleted.
    poll(lambda: not probe.record(parent), 15, 0.2, "the parent's record to be deleted")
    assert not probe.payload(parent)


def test_two_sweeps_at_once_delete_each_expired_job_once_and_nothing_else(
    stack: Stack,
) -> None:
    history(stack, "336:00:00")  # the dispatcher's own sweep deletes nothing
    finished = [stack.qsub("-N", f"done{i}", input=f"echo {i} > f.txt\n") for i in range(6)]
    jobs = {job_id: stack.wait_state(job_id, "F") for job_id in finished}
    held = stack.qsub("-h", "-N", "held", input="true\n")
    running = stack.qsub("-N", "running", input="sleep 60\n")
    stack.wait_state(running, "R")
    numbers = [job_number(j) for j in [*finished, held, running]]
    settings = store_settings(stack)

    async def sweep_twice() -> tuple[list[int], list[int], list[int]]:
        store = await JobStore.open(settings, "test-sweeps")
        try:
            async with ResultStore.from_settings(settings) as dav1, ResultStore.from_settings(
                settings
            ) as dav2:
                now = time.time()
                one, two = await asyncio.gather(
                    Sweep(store, dav1).run(numbers, [], 0.0, now),
                    Sweep(store, dav2).run(numbers, [], 0.0, now),
                )
                again = await Sweep(store, dav1).run(numbers, [], 0.0, time.time())
                assert not again.removed
                return one.removed, two.removed, sorted(one.kept + two.kept)
        finally:
            await store.close()

    one, two, kept = asyncio.run(sweep_twice())
    assert not set(one) & set(two), "a job was deleted by both sweeps"
    assert sorted(one + two) == sorted(job_number(j) for j in finished)
    # Each sweep kept the held and the running job (and the other's deletions lost
    # their compare-and-set, counted as kept by the loser).
    assert kept.count(job_number(held)) == 2 and kept.count(job_number(running)) == 2
    probe = Probe(stack)
    for job_id, job in jobs.items():
        assert not probe.record(job_number(job_id)) and not probe.payload(job_number(job_id))
        assert not results_dir(stack, job).parent.exists()
    for job_id in (held, running):
        assert probe.record(job_number(job_id)) and probe.payload(job_number(job_id))
        assert stack.run(str(BIN / "qdel"), job_id).returncode == 0


def test_a_payload_that_never_became_a_job_is_deleted_after_the_duplicate_window(
    stack: Stack,
) -> None:
    """A submission's payload stored with no record made after it (its dispatcher
    stopped in between) is deleted once no retry can make the record any more; jobs'
    payloads stay, and a sweep stops at a payload too young to judge."""
    history(stack, "336:00:00")
    held = stack.qsub("-h", "-N", "kept", input="true\n")
    settings = store_settings(stack)

    async def orphan_then_sweep() -> tuple[int, int, list[int], list[int]]:
        store = await JobStore.open(settings, "test-orphans")
        try:
            ack = await store.js.publish(
                C.SUBMIT_SUBJECT, b"payload", headers={C.MSG_ID_HEADER: os.urandom(8).hex()}
            )
            young = OrphanPayloads(store)
            too_early = await young.sweep(lambda _: False, time.time())
            later = time.time() + ORPHAN_AGE + 1
            swept = await OrphanPayloads(store).sweep(lambda _: False, later)
            return ack.seq, young.next_number, too_early, swept
        finally:
            await store.close()

    orphan, stopped_at, too_early, swept = asyncio.run(orphan_then_sweep())
    assert too_early == [] and stopped_at <= orphan
    assert swept == [orphan]
    probe = Probe(stack)
    assert not probe.payload(orphan)
    assert probe.payload(job_number(held)) and probe.record(job_number(held))
    assert stack.run(str(BIN / "qdel"), held).returncode == 0


def test_undelivered_results_expire_on_the_same_clock(stack: Stack) -> None:
    history(stack, "00:00:30")
    root = stack.home / "jobs" / "pkbs-undelivered"
    old, new = root / "7.pkbs.1", root / "8.pkbs.1"
    for path in (old, new):
        path.mkdir(parents=True)
        (path / "kept.o7").write_text("output\n")
    long_ago = time.time() - 60
    os.utime(old, (long_ago, long_ago))
    poll(lambda: not old.exists(), 15, 0.2, "the worker to delete the expired results")
    assert (new / "kept.o7").read_text() == "output\n"
    assert expire_undelivered(root, 30.0, time.time() + 31) == [new]
    assert not new.exists()
