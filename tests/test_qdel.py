"""qdel through the real CLI: a queued job never runs; a running one gets SIGTERM, keeps
its output, and is killed after the grace if it ignores it; another user's job, an
unknown id and a bare sequence number get PBS's answers."""

from __future__ import annotations

import time
from pathlib import Path

from tests.stackutil import (
    Stack,
    cli,
    fetch_results,
    files_under,
    job_number,
    poll,
    submit,
    wait_live_output,
    wait_state_as,
)

SLOTS = 4  # the session stack: 2 workers x 2 slots
EXIT_SIGTERM = 256 + 15
EXIT_SIGKILL = 256 + 9


def _qdel(stack: Stack, *ids: str, env: dict[str, str] | None = None) -> None:
    result = cli(stack, "qdel", *ids, env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_queued_job_never_runs(stack: Stack, tmp_path: Path) -> None:
    sleepers = [submit(stack, "-N", f"busy{i}", input="sleep 60\n") for i in range(SLOTS)]
    try:
        poll(lambda: all(stack.job(j)["job_state"] == "R" for j in sleepers), 30, 0.1,
             "all slots busy")
        victim = submit(stack, "-N", "victim", input="echo ran > marker\necho ran\n")
        assert stack.job(victim)["job_state"] == "Q"
        _qdel(stack, victim)
        job = stack.job(victim)
    finally:
        cli(stack, "qdel", *sleepers)
    assert job["job_state"] == "F"
    for sleeper in sleepers:
        assert stack.wait_state(sleeper, "F")["Exit_status"] == EXIT_SIGTERM
    # The victim's work item is still in the queue: let the freed workers drain it,
    # then make sure it was not run meanwhile.
    probe = submit(stack, "-N", "probe", input="true\n")
    assert stack.wait_state(probe, "F")["Exit_status"] == 0
    job = stack.job(victim)
    assert job["job_state"] == "F"
    assert "Exit_status" not in job and "run_count" not in job and "stime" not in job, job
    assert "exec_host" not in job
    fetched = fetch_results(stack, victim, tmp_path / "victim")
    assert fetched.stdout == ""
    assert files_under(tmp_path / "victim") == {}


def test_running_job_gets_sigterm_and_keeps_its_output(stack: Stack, tmp_path: Path) -> None:
    job_id = submit(
        stack, "-N", "victim", input="echo started $PBS_JOBID\nsleep 60\necho not reached\n"
    )
    stack.wait_state(job_id, "R")
    wait_live_output(stack, job_id, f"started {job_id}")
    _qdel(stack, job_id)
    job = stack.wait_state(job_id, "F", timeout=30)
    assert job["Exit_status"] == EXIT_SIGTERM
    assert job["run_count"] == 1
    fetch_results(stack, job_id, tmp_path)
    seq = job_number(job_id)
    assert (tmp_path / f"victim.o{seq}").read_text() == f"started {job_id}\n"
    assert (tmp_path / f"victim.e{seq}").read_bytes() == b""


def test_job_ignoring_sigterm_is_killed_after_grace(stack: Stack, tmp_path: Path) -> None:
    # The session stack runs with a kill grace of 3 s (tests/conftest.py).
    grace = 3.0
    job_id = submit(
        stack, "-N", "stubborn", input="trap '' TERM\necho started $PBS_JOBID\nsleep 60\n"
    )
    stack.wait_state(job_id, "R")
    wait_live_output(stack, job_id, f"started {job_id}")  # past its trap
    started = time.monotonic()
    _qdel(stack, job_id)
    job = stack.wait_state(job_id, "F", timeout=40)
    assert time.monotonic() - started >= grace  # SIGKILL only after the grace
    assert job["Exit_status"] == EXIT_SIGKILL
    fetch_results(stack, job_id, tmp_path)
    assert (tmp_path / f"stubborn.o{job_number(job_id)}").read_text() == f"started {job_id}\n"


def test_other_users_job_is_refused(stack: Stack) -> None:
    alice, bob = stack.as_user("alice"), stack.as_user("bob")
    job_id = submit(stack, "-h", "-N", "alicejob", input="echo mine\n", env=alice)
    refused = cli(stack, "qdel", job_id, env=bob)
    assert (refused.returncode, refused.stdout) == (15007 & 0xFF, "")
    assert refused.stderr == f"qdel: Unauthorized Request {job_id}\n"
    assert wait_state_as(stack, job_id, "H", alice)["Job_Owner"].startswith("alice@")
    # bob does not see alice's job at all.
    listing = cli(stack, "qstat", "-x", env=bob)
    assert (listing.returncode, listing.stdout, listing.stderr) == (0, "", "")
    _qdel(stack, job_id, env=alice)
    assert wait_state_as(stack, job_id, "F", alice)["job_state"] == "F"


def test_unknown_job_id(stack: Stack) -> None:
    result = cli(stack, "qdel", "99999.pkbs")
    assert (result.returncode, result.stdout) == (153, "")
    assert result.stderr == "qdel: Unknown Job Id 99999.pkbs\n"


def test_bare_sequence_number(stack: Stack) -> None:
    # dask-jobqueue cancels with `qdel 123`.
    job_id = submit(stack, "-h", "-N", "bare", input="echo never\n")
    assert stack.job(job_id)["job_state"] == "H"
    _qdel(stack, str(job_number(job_id)))
    job = stack.job(job_id)
    assert job["job_state"] == "F" and "Exit_status" not in job
