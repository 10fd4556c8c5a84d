"""Run and queued-job limits in PBS's syntax: which limit a job meets and PBS's exact
words for it (OpenPBS src/scheduler/job_info.cpp, src/lib/Liblog/pbs_messages.c), and
the run ledger's compare-and-set against a real nats-server: racing reservations
never pass a limit, and the repair drops what lost workers leaked."""

from __future__ import annotations

import asyncio

import pytest

from pkbs.errors import PBSE_ENTLIMCT, EntityLimitReached, exit_code
from pkbs.jobstore import JobStore
from pkbs.lifecycle import RunStart, started, submitted
from pkbs.limits import (
    ALL_LEDGER,
    QueuedCounts,
    Running,
    any_run_limit,
    ledger_key,
    queued_refusal,
    run_limited,
    run_refusal,
)
from pkbs.models import JobSpec
from pkbs.queues import QueueConfig
from pkbs.runledger import RunLedger, running_of
from pkbs.serverconfig import ServerAttrs, ServerConfig
from pkbs.settings import Settings


def config(
    server: dict[str, object] | None = None, **queues: dict[str, object]
) -> ServerConfig:
    return ServerConfig(
        server=ServerAttrs.model_validate(server or {}),
        queues={name: QueueConfig.model_validate(attrs) for name, attrs in
                {"workq": {}, **queues}.items()},
    )


def runs(*specs: tuple[str, str, int]) -> list[Running]:
    return [Running(str(n), owner, queue, ncpus)
            for n, (owner, queue, ncpus) in enumerate(specs, start=100)]


BOB = Running("1", "bob", "workq", 1)


def test_no_limits_no_ledger() -> None:
    plain = config()
    assert not run_limited(plain, "workq") and not any_run_limit(plain)
    assert run_refusal(plain, BOB, runs(*[("bob", "workq", 1)] * 50)) is None
    assert run_limited(config(workq={"max_run": "[u:PBS_GENERIC=1]"}), "workq")
    assert not run_limited(config(short={"max_run": "[u:PBS_GENERIC=1]"}), "workq")
    assert any_run_limit(config(short={"max_run": "[u:PBS_GENERIC=1]"}))
    assert run_limited(config({"max_run_res": {"ncpus": "[u:PBS_GENERIC=4]"}}), "workq")


@pytest.mark.parametrize(
    ("conf", "running", "comment"),
    [
        (config(workq={"max_run": "[u:PBS_GENERIC=1]"}), [("bob", "workq", 1)],
         "Not Running: User has reached queue workq running job limit."),
        (config({"max_run": "[u:PBS_GENERIC=2]"}), [("bob", "workq", 1), ("bob", "short", 1)],
         "Not Running: User has reached server running job limit."),
        (config(workq={"max_run": "[u:PBS_GENERIC=5], [u:bob=1]"}), [("bob", "workq", 1)],
         "Not Running: Queue workq job limit reached for user bob"),
        (config({"max_run": "[u:bob=1]"}), [("bob", "workq", 1)],
         "Not Running: Server job limit reached for user bob"),
        (config(workq={"max_run": "2"}), [("amy", "workq", 1), ("cat", "workq", 1)],
         "Not Running: Queue workq job limit has been reached."),
        (config({"max_run": "[o:PBS_ALL=1]"}), [("amy", "short", 1)],
         "Not Running: Server job limit has been reached."),
        (config(workq={"max_run_res": {"ncpus": "[u:PBS_GENERIC=2]"}}), [("bob", "workq", 2)],
         "Not Running: Queue workq per-user limit reached on resource ncpus"),
        (config({"max_run_res": {"ncpus": "[u:PBS_GENERIC=2]"}}), [("bob", "short", 2)],
         "Not Running: Server per-user limit reached on resource ncpus"),
        (config({"max_run_res": {"ncpus": "[u:bob=1]"}}), [("bob", "workq", 1)],
         "Not Running: would exceed user bob's limit on resource ncpus in complex"),
        (config(workq={"max_run_res": {"ncpus": "[u:bob=1]"}}), [("bob", "workq", 1)],
         "Not Running: would exceed user bob's limit on resource ncpus in queue workq"),
        (config(workq={"max_run_res": {"ncpus": "[o:PBS_ALL=3]"}}), [("amy", "workq", 3)],
         "Not Running: would exceed overall limit on resource ncpus in queue workq"),
        (config({"max_run_res": {"ncpus": "3"}}), [("amy", "workq", 3)],
         "Not Running: would exceed overall limit on resource ncpus in complex"),
    ],
)
def test_run_refusal_as_pbs_words_it(
    conf: ServerConfig, running: list[tuple[str, str, int]], comment: str
) -> None:
    assert run_refusal(conf, BOB, runs(*running)) == comment


def test_run_limits_count_what_they_should() -> None:
    generic = config(workq={"max_run": "[u:PBS_GENERIC=1], [u:bob=3]"})
    # bob's own entry overrides the generic one; others' jobs do not count for bob.
    assert run_refusal(generic, BOB, runs(("bob", "workq", 1), ("bob", "workq", 1))) is None
    assert run_refusal(generic, BOB, runs(*[("bob", "workq", 1)] * 3)) is not None
    amy = BOB._replace(owner="amy")
    assert run_refusal(generic, amy, runs(*[("bob", "workq", 1)] * 3)) is None
    assert run_refusal(generic, amy, runs(("amy", "workq", 1))) is not None
    # A queue limit counts that queue only; a job counted already (a restarted run) once.
    assert run_refusal(generic, amy, runs(("amy", "short", 1))) is None
    assert run_refusal(generic, amy, [Running("1", "amy", "workq", 1)]) is None
    # max_run_res sums ncpus with the job's own.
    res = config({"max_run_res": {"ncpus": "[u:PBS_GENERIC=4]"}})
    assert run_refusal(res, BOB._replace(ncpus=2), runs(("bob", "workq", 2))) is None
    assert run_refusal(res, BOB._replace(ncpus=3), runs(("bob", "workq", 2))) is not None
    # Group and project entries are not enforced; resources other than ncpus neither.
    ignored = config({"max_run": "[g:staff=0], [p:p1=0]",
                      "max_run_res": {"mem": "[u:PBS_GENERIC=1]"}})
    assert run_refusal(ignored, BOB, runs(*[("bob", "workq", 4)] * 3)) is None


def test_ledger_per_user_unless_an_overall_limit_is_set() -> None:
    assert ledger_key(config({"max_run": "[u:PBS_GENERIC=1]"}), "bob") == "u.bob"
    assert ledger_key(config({"max_run": "[u:PBS_GENERIC=1]"}), "a@b c") == "x." + (
        b"a@b c".hex()
    )
    assert ledger_key(config(short={"max_run": "4"}), "bob") == ALL_LEDGER
    assert ledger_key(config({"max_run_res": {"ncpus": "[o:PBS_ALL=8]"}}), "bob") == ALL_LEDGER


@pytest.mark.parametrize(
    ("conf", "have", "adding", "message"),
    [
        (config({"max_queued": "[u:PBS_GENERIC=2]"}), QueuedCounts(9, 2, 9, 2), 1,
         "would exceed complex's per-user limit"),
        (config(workq={"max_queued": "[u:PBS_GENERIC=2]"}), QueuedCounts(9, 1, 9, 1), 2,
         "would exceed queue generic's per-user limit"),
        (config({"max_queued": "[u:bob=2]"}), QueuedCounts(9, 2, 9, 2), 1,
         "Maximum number of jobs for user bob already in complex"),
        (config(workq={"max_queued": "[u:bob=2]"}), QueuedCounts(9, 2, 9, 2), 1,
         "Maximum number of jobs for user bob already in queue workq"),
        (config({"max_queued": "[o:PBS_ALL=9]"}), QueuedCounts(9, 0, 9, 0), 1,
         "Maximum number of jobs already in complex"),
        (config(workq={"max_queued": "3"}), QueuedCounts(9, 0, 3, 0), 1,
         "Maximum number of jobs already in queue workq"),
    ],
)
def test_queued_refusal_as_pbs_words_it(
    conf: ServerConfig, have: QueuedCounts, adding: int, message: str
) -> None:
    refusal = queued_refusal(conf, "workq", "bob", have, adding)
    assert isinstance(refusal, EntityLimitReached)
    assert refusal.message == message
    assert refusal.pbs_errno == PBSE_ENTLIMCT and refusal.exit_status == exit_code(15142) == 38


def test_queued_limit_leaves_room_up_to_the_limit() -> None:
    conf = config(workq={"max_queued": "[u:PBS_GENERIC=3], [u:amy=10]"})
    assert queued_refusal(conf, "workq", "bob", QueuedCounts(0, 1, 0, 1), 2) is None
    assert queued_refusal(conf, "workq", "bob", QueuedCounts(0, 1, 0, 1), 3) is not None
    assert queued_refusal(conf, "workq", "amy", QueuedCounts(0, 8, 0, 8), 2) is None
    assert queued_refusal(conf, "short", "bob", QueuedCounts(0, 9, 0, 9), 1) is None


# -- the ledger in KV ---------------------------------------------------------------------


def test_racing_reservations_never_pass_the_limit(nats_url: str) -> None:
    asyncio.run(_racing_reservations(nats_url))


async def _racing_reservations(nats_url: str) -> None:
    settings = Settings(nats_url=nats_url)
    store = await JobStore.open(settings, "limits-test")
    try:
        ledger = await RunLedger.open(store.js)
        conf = config({"max_run": "[u:PBS_GENERIC=3]"})
        key = "u.racer"
        jobs = [Running(f"{n}", "racer", "workq", 1) for n in range(20)]

        async def reserve(run: Running) -> str | None:
            return await ledger.reserve(
                key, f"t{run.job}", run, lambda others: run_refusal(conf, run, others)
            )

        reasons = await asyncio.gather(*(reserve(run) for run in jobs))
        assert sum(reason is None for reason in reasons) == 3
        assert set(reasons) - {None} == {"Not Running: User has reached server running job limit."}
        entries, _ = await ledger.read(key)
        assert len(entries) == 3
        # A release frees one place, which exactly one of the others then gets.
        await ledger.release(key, next(iter(entries)))
        waiting = [run for run in jobs if f"t{run.job}" not in entries]
        again = await asyncio.gather(*(reserve(run) for run in waiting))
        assert sum(reason is None for reason in again) == 1
    finally:
        await store.close()


def test_repair_drops_leaks_after_two_passes_and_adds_what_is_missing(nats_url: str) -> None:
    asyncio.run(_repair(nats_url))


async def _repair(nats_url: str) -> None:
    settings = Settings(nats_url=nats_url)
    store = await JobStore.open(settings, "limits-repair-test")
    try:
        ledger = await RunLedger.open(store.js)
        conf = config(workq={"max_run": "[u:PBS_GENERIC=1]"})
        spec = JobSpec(name="j", kind="file", entrypoint="run.sh", queue="workq")

        def build(number: int):  # type: ignore[no-untyped-def]
            return submitted(number, "pkbs", "mender", spec, f"sid-{number}", {}, 0.0)

        record, _, _ = await store.create(b"x", "repair-test-1", build)
        run = RunStart("live-token", 1, "w1", "h/0*1")
        running, _ = await store.cas(record.number, lambda r: started(r, run, 1.0)) or (None, 0)
        assert running is not None
        key = ledger_key(conf, "mender")
        leaked = Running("999999", "mender", "workq", 1)
        await ledger.reserve(key, "leaked-token", leaked, lambda _: None)
        # Pass 1 (after a configuration change: drops nothing) adds the running job.
        await ledger.repair(store, conf, [running])
        entries, _ = await ledger.read(key)
        assert set(entries) == {"leaked-token", "live-token"}
        assert entries["live-token"] == running_of(running)
        stale = await ledger.repair(store, conf, [running], set())
        assert {pair for pair in stale if pair[0] == key} == {(key, "leaked-token")}
        entries, _ = await ledger.read(key)
        assert "leaked-token" in entries  # once stale is not yet leaked
        stale = await ledger.repair(store, conf, [running], stale)
        entries, _ = await ledger.read(key)
        assert set(entries) == {"live-token"}
        assert not {pair for pair in stale if pair[0] == key}
    finally:
        await store.close()
