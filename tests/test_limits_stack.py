"""max_run, max_run_res.ncpus and max_queued on a real stack, driven by the real CLI:
jobs over a run limit wait in Q with PBS's comment while other users' jobs run, and
start once their user is under the limit; qsub over max_queued is refused with PBS's
message and exit status; limits change live; a worker killed mid-job does not leave
its user blocked once the repair has run. The limits are set in the store as qmgr
sets them (tests/stackutil.change_config), on stacks of these tests' own."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pkbs.errors import exit_code
from pkbs.queues import QueueConfig
from pkbs.serverconfig import ServerConfig
from tests.apiutil import call, submit_body
from tests.stackutil import (
    BIN,
    Stack,
    api_endpoint,
    change_config,
    cli,
    poll,
    submit,
)

QUEUE_LIMIT = "Not Running: User has reached queue workq running job limit."
SERVER_LIMIT = "Not Running: User has reached server running job limit."


@pytest.fixture(scope="module")
def limits_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One worker with 4 slots: jobs wait for limits here, never for slots."""
    stack = Stack(
        tmp_path_factory.mktemp("limits-home"),
        extra_env={"PKBS_RECONCILE_SECONDS": "1", "PKBS_KILL_GRACE_SECONDS": "2"},
    )
    stack.up(workers=1, slots=4)
    yield stack
    stack.down()


@pytest.fixture
def limited(limits_stack: Stack) -> Iterator[Callable[[Callable[[ServerConfig], None]], None]]:
    """Set limits for one test; every limit and extra queue is gone after it."""

    def set_limits(edit: Callable[[ServerConfig], None]) -> None:
        def apply(config: ServerConfig) -> ServerConfig:
            edit(config)
            return config

        change_config(limits_stack, apply)

    yield set_limits

    def clear(config: ServerConfig) -> ServerConfig:
        config.server.max_run = config.server.max_queued = None
        config.server.max_run_res = {}
        config.queues = {"workq": QueueConfig()}
        return config

    change_config(limits_stack, clear)


def gated_job(log: Path, gate: Path) -> str:
    """A job that logs its start and end and runs until `gate` exists (bounded)."""
    return (
        f'echo "start $PBS_JOBID $EPOCHREALTIME" >> {log}\n'
        f"for i in $(seq 1 600); do [ -e {gate} ] && break; sleep 0.1; done\n"
        f'echo "end $PBS_JOBID $EPOCHREALTIME" >> {log}\n'
    )


def events(log: Path) -> dict[tuple[str, str], float]:
    """(start|end, job id) -> when, from a gated job's log."""
    found = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        what, job, when = line.split()
        found[(what, job)] = float(when)
    return found


def state(stack: Stack, job_id: str) -> str:
    return str(stack.job(job_id)["job_state"])


def wait_comment(stack: Stack, job_id: str, comment: str) -> None:
    def check() -> bool:
        job = stack.job(job_id)
        return job["job_state"] == "Q" and job.get("comment") == comment

    poll(check, 30, 0.1, f"{job_id} to wait with comment {comment!r}")


def test_max_run_per_user_runs_one_at_a_time_and_others_meanwhile(
    limits_stack: Stack, limited: Callable[[Callable[[ServerConfig], None]], None],
    tmp_path: Path,
) -> None:
    stack = limits_stack
    limited(lambda c: setattr(c.queues["workq"], "max_run", "[u:PBS_GENERIC=1]"))
    bob, amy = stack.as_user("bob"), stack.as_user("amy")
    log, gate = tmp_path / "log", tmp_path / "gate"
    first = submit(stack, "-N", "first", input=gated_job(log, gate), env=bob)
    poll(lambda: ("start", first) in events(log), 30, what="bob's first job to start")
    second = submit(stack, "-N", "second", input=gated_job(log, tmp_path / "open"), env=bob)
    (tmp_path / "open").touch()
    wait_comment(stack, second, QUEUE_LIMIT)
    qstat = cli(stack, "qstat", "-f", second)
    assert f"    comment = {QUEUE_LIMIT}\n" in qstat.stdout
    # Another user is not held up behind bob's waiting job.
    other = submit(stack, "-N", "other", input="echo other\n", env=amy)
    stack.wait_state(other, "F", timeout=30)
    assert state(stack, first) == "R" and state(stack, second) == "Q"
    gate.touch()
    done = stack.wait_state(second, "F", timeout=30)
    assert done["Exit_status"] == 0 and "comment" not in done
    seen = events(log)
    assert seen[("start", second)] >= seen[("end", first)]


def test_subjobs_count_one_run_each(
    limits_stack: Stack, limited: Callable[[Callable[[ServerConfig], None]], None],
    tmp_path: Path,
) -> None:
    stack = limits_stack
    limited(lambda c: setattr(c.queues["workq"], "max_run", "[u:PBS_GENERIC=1]"))
    log = tmp_path / "log"
    script = (f'echo "start $PBS_JOBID $EPOCHREALTIME" >> {log}; sleep 0.3; '
              f'echo "end $PBS_JOBID $EPOCHREALTIME" >> {log}\n')
    result = cli(stack, "qsub", "-J", "1-3", input=script, env=stack.as_user("bob"))
    assert result.returncode == 0, result.stderr
    stack.wait_state(result.stdout.strip(), "F", timeout=60)
    seen = sorted((when, what) for (what, _), when in events(log).items())
    assert [what for _, what in seen] == ["start", "end"] * 3  # one at a time


def test_a_user_entry_overrides_the_generic_one(
    limits_stack: Stack, limited: Callable[[Callable[[ServerConfig], None]], None],
    tmp_path: Path,
) -> None:
    stack = limits_stack
    limited(lambda c: setattr(c.queues["workq"], "max_run", "[u:PBS_GENERIC=1], [u:bob=2]"))
    bob, amy = stack.as_user("bob"), stack.as_user("amy")
    log, gate = tmp_path / "log", tmp_path / "gate"
    bobs = [submit(stack, input=gated_job(log, gate), env=bob) for _ in range(3)]
    amys = [submit(stack, input=gated_job(log, gate), env=amy) for _ in range(2)]
    poll(lambda: sum(("start", j) in events(log) for j in bobs + amys) == 3, 30,
         what="two of bob's jobs and one of amy's to start")
    wait_comment(stack, bobs[2], "Not Running: Queue workq job limit reached for user bob")
    wait_comment(stack, amys[1], QUEUE_LIMIT)
    gate.touch()
    for job_id in bobs + amys:
        stack.wait_state(job_id, "F", timeout=30)


def test_max_run_res_ncpus_sums_a_users_running_cpus(
    limits_stack: Stack, limited: Callable[[Callable[[ServerConfig], None]], None],
    tmp_path: Path,
) -> None:
    stack = limits_stack
    limited(lambda c: setattr(c.server, "max_run_res", {"ncpus": "[u:PBS_GENERIC=3]"}))
    bob = stack.as_user("bob")
    log, gate = tmp_path / "log", tmp_path / "gate"
    two = submit(stack, "-l", "ncpus=2", input=gated_job(log, gate), env=bob)
    poll(lambda: ("start", two) in events(log), 30, what="the 2-cpu job to start")
    one = submit(stack, "-l", "ncpus=1", input=gated_job(log, gate), env=bob)
    poll(lambda: ("start", one) in events(log), 30, what="a third cpu to be allowed")
    more = submit(stack, "-l", "ncpus=1", input=gated_job(log, gate), env=bob)
    wait_comment(stack, more, "Not Running: Server per-user limit reached on resource ncpus")
    gate.touch()
    assert stack.wait_state(more, "F", timeout=30)["Exit_status"] == 0


def test_queue_and_server_limits_both_hold(
    limits_stack: Stack, limited: Callable[[Callable[[ServerConfig], None]], None],
    tmp_path: Path,
) -> None:
    stack = limits_stack

    def limits(config: ServerConfig) -> None:
        config.server.max_run = "[u:PBS_GENERIC=2]"
        config.queues["workq"].max_run = "[u:PBS_GENERIC=1]"
        config.queues["short"] = QueueConfig()

    limited(limits)
    bob = stack.as_user("bob")
    log, gate = tmp_path / "log", tmp_path / "gate"
    work = [submit(stack, "-q", "workq", input=gated_job(log, gate), env=bob) for _ in range(2)]
    wait_comment(stack, work[1], QUEUE_LIMIT)
    short = [submit(stack, "-q", "short", input=gated_job(log, gate), env=bob) for _ in range(2)]
    wait_comment(stack, short[1], SERVER_LIMIT)
    started = events(log)
    assert ("start", work[0]) in started and ("start", short[0]) in started
    assert ("start", work[1]) not in started and ("start", short[1]) not in started
    gate.touch()
    for job_id in work + short:
        stack.wait_state(job_id, "F", timeout=30)


def test_a_changed_limit_applies_without_a_restart(
    limits_stack: Stack, limited: Callable[[Callable[[ServerConfig], None]], None],
    tmp_path: Path,
) -> None:
    stack = limits_stack
    bob = stack.as_user("bob")
    log, gate = tmp_path / "log", tmp_path / "gate"
    running = [submit(stack, input=gated_job(log, gate), env=bob) for _ in range(2)]
    poll(lambda: all(("start", j) in events(log) for j in running), 30,
         what="two jobs to run with no limit")
    # The jobs already running count as soon as the limit is set.
    limited(lambda c: setattr(c.server, "max_run", "[u:PBS_GENERIC=2]"))
    third = submit(stack, input=gated_job(log, gate), env=bob)
    wait_comment(stack, third, SERVER_LIMIT)
    limited(lambda c: setattr(c.server, "max_run", "[u:PBS_GENERIC=3]"))
    poll(lambda: ("start", third) in events(log), 30, what="the raised limit to let it start")
    gate.touch()
    for job_id in [*running, third]:
        stack.wait_state(job_id, "F", timeout=30)


def test_max_queued_refuses_qsub_as_pbs_does(
    limits_stack: Stack, limited: Callable[[Callable[[ServerConfig], None]], None],
) -> None:
    stack = limits_stack
    limited(lambda c: setattr(c.queues["workq"], "max_queued", "[u:PBS_GENERIC=3]"))
    bob, amy = stack.as_user("bob"), stack.as_user("amy")
    held = [submit(stack, "-h", input="true\n", env=bob) for _ in range(2)]
    # An array counts its subjobs: two more do not fit beside two jobs.
    refused = cli(stack, "qsub", "-h", "-J", "1-2", input="true\n", env=bob)
    assert refused.returncode == exit_code(15142) == 38
    assert refused.stderr == "qsub: would exceed queue generic's per-user limit\n"
    assert refused.stdout == ""
    held.append(submit(stack, "-h", input="true\n", env=bob))
    assert cli(stack, "qsub", "-h", input="true\n", env=bob).returncode == 38
    submit(stack, "-h", input="true\n", env=amy)  # amy has her own count
    # A batch is refused as a whole, naming the job that would pass the limit.
    endpoint, _ = api_endpoint(stack)
    amy_token = amy["PKBS_TOKEN"]
    bodies = [submit_body("true\n", name=f"b{k}") for k in range(3)]
    status, reply = call(endpoint, "POST", "/v1/jobs/batch", amy_token, {"jobs": bodies})
    assert status == 409, reply
    assert reply["error"]["message"] == "batch job 2: would exceed queue generic's per-user limit"
    assert reply["error"]["pbs_errno"] == 15142
    # Deleting jobs makes room again.
    for job_id in held:
        assert cli(stack, "qdel", job_id, env=bob).returncode == 0
    array = cli(stack, "qsub", "-h", "-J", "1-3", input="true\n", env=bob)
    assert array.returncode == 0 and array.stdout.endswith("[].pkbs\n"), array.stderr
    assert cli(stack, "qdel", array.stdout.strip(), env=bob).returncode == 0


def test_server_max_queued_names_the_user(
    limits_stack: Stack, limited: Callable[[Callable[[ServerConfig], None]], None],
    tmp_path: Path,
) -> None:
    stack = limits_stack
    limited(lambda c: setattr(c.server, "max_queued", "[u:dan=1]"))
    dan = stack.as_user("dan")
    job_id = submit(stack, "-h", input="true\n", env=dan)
    refused = cli(stack, "qsub", "-h", input="true\n", env=dan)
    assert refused.stderr == "qsub: Maximum number of jobs for user dan already in complex\n"
    assert refused.returncode == 38
    # A job of a definition (`pkbs run`) counts as a qsub does.
    definition = tmp_path / "limited.yaml"
    definition.write_text("name: limited\ncommand: 'true'\n")
    assert cli(stack, "pkbs", "def", "apply", str(definition)).returncode == 0
    by_definition = cli(stack, "pkbs", "run", "limited", "--", "-h", env=dan)
    assert by_definition.returncode == 38, by_definition.stdout
    assert "Maximum number of jobs for user dan already in complex" in by_definition.stderr
    assert cli(stack, "qdel", job_id, env=dan).returncode == 0


def test_a_worker_killed_mid_job_does_not_block_its_user(
    fresh_stack: Stack, tmp_path: Path
) -> None:
    stack = fresh_stack
    stack.extra_env.update({"PKBS_RECONCILE_SECONDS": "1", "PKBS_ACK_WAIT_SECONDS": "4"})
    stack.up(workers=1, slots=2)

    def limit(config: ServerConfig) -> ServerConfig:
        config.queues["workq"].max_run = "[u:PBS_GENERIC=1]"
        return config

    change_config(stack, limit)
    bob = stack.as_user("bob")
    log, gate = tmp_path / "log", tmp_path / "gate"
    first = submit(stack, input=gated_job(log, gate), env=bob)
    poll(lambda: ("start", first) in events(log), 30, what="the first job to start")
    second = submit(stack, input="echo second\n", env=bob)
    wait_comment(stack, second, QUEUE_LIMIT)
    worker = stack.pid_of("worker-1")
    os.kill(worker, signal.SIGKILL)
    # The supervisor starts the worker again; the job is run again after the ack wait,
    # with a new run token: the lost run's place in the ledger is a leak now.
    poll(lambda: stack.job(first).get("run_count") == 2 and state(stack, first) == "R", 60,
         0.2, "the first job to run again")
    gate.touch()
    stack.wait_state(first, "F", timeout=30)
    stack.wait_state(second, "F", timeout=30)
    result = stack.run(str(BIN / "qstat"), "-f", second)
    assert "comment" not in result.stdout
