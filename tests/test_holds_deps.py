"""Holds, dependencies and execution times through the real CLI: qsub -h, qhold/qrls
[-h u|o|s] (an operator hold is not the user's), qsub -W depend=after/afterok/afternotok/
afterany on jobs and arrays (one that can never be met ends the dependant unrun, one on
an unknown job is refused), qsub -a (W until then; a time of day past means tomorrow)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.stackutil import Stack, cli, submit

EXIT_PERM = 15007 & 0xFF  # PBSE_PERM, "Unauthorized Request"
EXIT_UNKJOBID = 15001 & 0xFF  # PBSE_UNKJOBID


def _ok(stack: Stack, command: str, *args: str, env: dict[str, str] | None = None) -> None:
    """qhold/qrls/qdel: silent on success (PBS.md §4)."""
    result = cli(stack, command, *args, env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result


def _append(log: Path, text: str) -> str:
    """A job script line appending `text` to `log` (jobs run on this machine)."""
    return f'echo "{text}" >> "{log}"\n'


def _gate(path: Path, timeout: int = 30) -> str:
    """A job script line that waits (at most `timeout` s) until `path` exists."""
    return f'for i in $(seq 1 {timeout * 20}); do [ -e "{path}" ] && break; sleep 0.05; done\n'


def _drain(stack: Stack) -> None:
    """A probe job runs to F: the workers have had their chance at what is queued."""
    probe = submit(stack, "-N", "probe", input="true\n")
    assert stack.wait_state(probe, "F")["Exit_status"] == 0


def _full_text(stack: Stack, job_id: str) -> str:
    result = cli(stack, "qstat", "-f", job_id)
    assert (result.returncode, result.stderr) == (0, ""), result
    return result.stdout


# -- holds -----------------------------------------------------------------------


def test_qsub_h_holds_until_qrls(stack: Stack, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    job_id = submit(stack, "-h", "-N", "held", input=_append(marker, "ran"))
    job = stack.job(job_id)
    assert (job["job_state"], job["Hold_Types"]) == ("H", "u")
    _drain(stack)
    job = stack.job(job_id)
    assert (job["job_state"], job["Hold_Types"]) == ("H", "u")
    assert "stime" not in job and not marker.exists()
    _ok(stack, "qrls", job_id)
    job = stack.wait_state(job_id, "F")
    assert (job["Exit_status"], job["Hold_Types"]) == (0, "n")
    assert marker.read_text() == "ran\n"


def test_qhold_waiting_job_then_qrls_returns_to_w(stack: Stack) -> None:
    ahead = (datetime.now() + timedelta(hours=2)).replace(second=0, microsecond=0)
    job_id = submit(stack, "-a", ahead.strftime("%Y%m%d%H%M"), "-N", "later", input="true\n")
    try:
        assert stack.job(job_id)["job_state"] == "W"
        _ok(stack, "qhold", job_id)
        job = stack.job(job_id)
        assert (job["job_state"], job["Hold_Types"]) == ("H", "u")
        _ok(stack, "qrls", job_id)
        job = stack.job(job_id)
        # Execution_Time is still ahead: back to W, not Q (qrls.1B).
        assert (job["job_state"], job["Hold_Types"]) == ("W", "n")
        assert job["Execution_Time"] == time.ctime(ahead.timestamp())
    finally:
        cli(stack, "qdel", job_id)
    assert stack.job(job_id)["job_state"] == "F"


def test_user_cannot_set_or_release_operator_hold(stack: Stack) -> None:
    alice = stack.as_user("holdalice")
    job_id = submit(stack, "-h", "-N", "uhold", input="true\n", env=alice)
    for command in ("qhold", "qrls"):
        result = cli(stack, command, "-h", "o", job_id, env=alice)
        assert (result.returncode, result.stdout) == (EXIT_PERM, ""), result
        assert result.stderr.startswith(f"{command}: ") and result.stderr.endswith(
            f" {job_id}\n"
        ), result.stderr
    assert stack.job(job_id)["Hold_Types"] == "u"
    _ok(stack, "qhold", "-h", "o", job_id)  # the operator may
    assert stack.job(job_id)["Hold_Types"] == "uo"
    _ok(stack, "qrls", job_id, env=alice)  # her own u hold she may release
    job = stack.job(job_id)
    assert (job["job_state"], job["Hold_Types"]) == ("H", "o")
    _ok(stack, "qrls", "-h", "o", job_id)
    assert stack.wait_state(job_id, "F")["Exit_status"] == 0


def test_operator_hold_refusal_says_unauthorized_request(stack: Stack) -> None:
    bob = stack.as_user("holdbob")
    job_id = submit(stack, "-h", "-N", "uhold", input="true\n", env=bob)
    try:
        result = cli(stack, "qhold", "-h", "o", job_id, env=bob)
        assert result.stderr == f"qhold: Unauthorized Request {job_id}\n"
    finally:
        cli(stack, "qdel", job_id)


# -- dependencies -----------------------------------------------------------------


def test_afterok_chain_runs_in_order(stack: Stack, tmp_path: Path) -> None:
    log, go = tmp_path / "order", tmp_path / "go"
    a = submit(stack, "-N", "A", input=_gate(go) + _append(log, "A"))
    b = submit(stack, "-N", "B", "-W", f"depend=afterok:{a}", input=_append(log, "B"))
    c = submit(stack, "-N", "C", "-W", f"depend=afterok:{b}", input=_append(log, "C"))
    try:
        for job_id in (b, c):  # a dependency is a system hold (qhold.1B)
            job = stack.job(job_id)
            assert (job["job_state"], job["Hold_Types"]) == ("H", "s")
    finally:
        go.touch()
    for job_id in (a, b, c):
        assert stack.wait_state(job_id, "F")["Exit_status"] == 0
    assert log.read_text() == "A\nB\nC\n"


def test_afterok_on_failed_parent_deletes_dependents(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "ran"
    a = submit(stack, "-N", "fails", input=_append(log, "A") + "exit 3\n")
    b = submit(stack, "-N", "child", "-W", f"depend=afterok:{a}", input=_append(log, "B"))
    c = submit(stack, "-N", "grandchild", "-W", f"depend=afterok:{b}", input=_append(log, "C"))
    assert stack.wait_state(a, "F")["Exit_status"] == 3
    for job_id, parent in ((b, a), (c, b)):
        job = stack.wait_state(job_id, "F")
        assert "can never be met" in job["comment"] and parent in job["comment"], job
        assert "Exit_status" not in job and "stime" not in job, job
    _drain(stack)
    assert log.read_text() == "A\n"


def test_afternotok_runs_only_after_a_failure(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "ran"
    bad = submit(stack, "-N", "bad", input="exit 1\n")
    good = submit(stack, "-N", "good", input="exit 0\n")
    on_bad = submit(stack, "-W", f"depend=afternotok:{bad}", input=_append(log, "on_bad"))
    on_good = submit(stack, "-W", f"depend=afternotok:{good}", input=_append(log, "on_good"))
    assert stack.wait_state(on_bad, "F")["Exit_status"] == 0
    job = stack.wait_state(on_good, "F")
    assert "can never be met" in job["comment"] and "Exit_status" not in job, job
    _drain(stack)
    assert log.read_text() == "on_bad\n"


def test_afterany_runs_after_a_failure(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "ran"
    bad = submit(stack, "-N", "bad", input=_append(log, "bad") + "exit 2\n")
    after = submit(stack, "-W", f"depend=afterany:{bad}", input=_append(log, "after"))
    assert stack.wait_state(after, "F")["Exit_status"] == 0
    assert stack.job(bad)["Exit_status"] == 2
    assert log.read_text() == "bad\nafter\n"


@pytest.mark.parametrize("given", ["999999.pkbs", "999999"])
def test_dependency_on_unknown_job_is_refused(stack: Stack, given: str) -> None:
    result = cli(stack, "qsub", "-W", f"depend=afterok:{given}", input="true\n")
    assert (result.returncode, result.stdout, result.stderr) == (
        EXIT_UNKJOBID,
        "",
        "qsub: Unknown Job Id 999999.pkbs\n",
    )


def test_after_runs_once_the_parent_started(stack: Stack, tmp_path: Path) -> None:
    log, go = tmp_path / "ran", tmp_path / "go"
    parent = submit(
        stack,
        "-N",
        "parent",
        input=_append(log, "parent started") + _gate(go) + _append(log, "parent done"),
    )
    child = submit(
        stack, "-N", "child", "-W", f"depend=after:{parent}", input=_append(log, "child")
    )
    try:
        assert stack.wait_state(child, "F")["Exit_status"] == 0
        assert stack.job(parent)["job_state"] == "R"
        assert log.read_text() == "parent started\nchild\n"
    finally:
        go.touch()
    assert stack.wait_state(parent, "F")["Exit_status"] == 0
    assert log.read_text() == "parent started\nchild\nparent done\n"


def test_dependency_on_array_waits_for_every_subjob(stack: Stack, tmp_path: Path) -> None:
    log, go = tmp_path / "ran", tmp_path / "go"
    result = cli(
        stack,
        "qsub",
        "-J",
        "1-3",
        "-N",
        "arr",
        input=_gate(go) + _append(log, "sub $PBS_ARRAY_INDEX"),
    )
    assert (result.returncode, result.stderr) == (0, ""), result
    array = result.stdout.strip()
    assert array.endswith("[].pkbs"), array
    child = submit(stack, "-W", f"depend=afterok:{array}", input=_append(log, "child"))
    try:
        stack.wait_state(array, "B")
        job = stack.job(child)
        assert (job["job_state"], job["Hold_Types"]) == ("H", "s")
    finally:
        go.touch()
    assert stack.wait_state(child, "F")["Exit_status"] == 0
    assert stack.job(array)["job_state"] == "F"
    lines = log.read_text().splitlines()
    assert sorted(lines[:3]) == ["sub 1", "sub 2", "sub 3"] and lines[3:] == ["child"], lines


# -- execution time (-a) -----------------------------------------------------------


def test_exec_time_ahead_waits_in_w(stack: Stack, tmp_path: Path) -> None:
    now = datetime.now()
    ahead = now.replace(second=0, microsecond=0) + timedelta(minutes=2)
    marker = tmp_path / "ran"
    job_id = submit(
        stack, "-a", ahead.strftime("%H%M"), "-N", "later", input=_append(marker, "ran")
    )
    try:
        assert stack.job(job_id)["job_state"] == "W"
        assert f"    Execution_Time = {time.ctime(ahead.timestamp())}\n" in _full_text(
            stack, job_id
        )
        table = cli(stack, "qstat", job_id).stdout
        assert table.splitlines()[2].split()[4] == "W", table
    finally:
        _ok(stack, "qdel", job_id)
    job = stack.job(job_id)
    assert job["job_state"] == "F" and "stime" not in job
    assert not marker.exists()


def test_exec_time_of_day_already_past_means_tomorrow(stack: Stack) -> None:
    # cvtdate.c: hhmm not after the current hh:mm is that time tomorrow.
    this_minute = datetime.now().replace(second=0, microsecond=0)
    job_id = submit(stack, "-a", this_minute.strftime("%H%M.00"), input="true\n")
    try:
        job = stack.job(job_id)
        assert job["job_state"] == "W"
        tomorrow = this_minute + timedelta(days=1)
        assert job["Execution_Time"] == time.ctime(tomorrow.timestamp())
    finally:
        _ok(stack, "qdel", job_id)


def test_exec_time_seconds_ahead_runs_after_it(stack: Stack, tmp_path: Path) -> None:
    at = (datetime.now() + timedelta(seconds=5)).replace(microsecond=0)
    stamp = tmp_path / "ran_at"
    job_id = submit(
        stack, "-a", at.strftime("%Y%m%d%H%M.%S"), "-N", "soon", input=f'date +%s.%N > "{stamp}"\n'
    )
    assert stack.job(job_id)["job_state"] == "W"
    job = stack.wait_state(job_id, "F", timeout=30)
    assert job["Exit_status"] == 0
    ran_at = float(stamp.read_text())
    assert at.timestamp() <= ran_at < at.timestamp() + 10, (at, ran_at)
    assert job["Execution_Time"] == time.ctime(at.timestamp())
