"""qsig beyond plain signals, through the real CLI: an unknown signal refused, suspend
and resume (state S, the job's processes stopped, its walltime not counting the
suspended time), who may suspend and when, and qdel's one SIGTERM (of a suspended job
too)."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.stackutil import Stack, cli, job_processes, poll, submit

EXIT_UNKSIG = 15013 & 0xFF  # PBSE_UNKSIG
EXIT_BADSTATE = 15016 & 0xFF  # PBSE_BADSTATE
EXIT_PERM = 15007 & 0xFF  # PBSE_PERM
EXIT_SIGKILL = 256 + 9


def _ticker(ready: Path, ticks: Path, count: int) -> str:
    """A job that appends a line to `ticks` every 0.1 s, `count` times (each sleep
    short, so time spent stopped is not slept off), after touching `ready`."""
    return (
        f'touch "{ready}"\n'
        f'for i in $(seq 1 {count}); do echo "$i" >> "{ticks}"; sleep 0.1; done\n'
    )


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _states(stack: Stack, job_id: str) -> set[str]:
    """The /proc state letters of the job's processes (T: stopped)."""
    found = set()
    for pid in job_processes(stack, job_id):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                found.add(fh.read().rsplit(")", 1)[1].split()[0])
        except OSError:
            continue
    return found


def _table_state(stack: Stack, job_id: str) -> str:
    """The S column of the job's row in qstat's default table."""
    result = cli(stack, "qstat", job_id)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[2].split()[4]


def test_qsig_of_an_unknown_signal_is_refused(stack: Stack, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    job_id = submit(stack, input=f'touch "{ready}"\nsleep 30\n')
    try:
        poll(ready.exists, 30, 0.05, "the job to start")
        for name in ("BOGUS", "SIGBOGUS", "usr1", "999"):
            result = cli(stack, "qsig", "-s", name, job_id)
            assert (result.returncode, result.stdout, result.stderr) == (
                EXIT_UNKSIG,
                "",
                f"qsig: Unknown/illegal signal name {job_id}\n",
            ), name
        assert stack.job(job_id)["job_state"] == "R"
    finally:
        cli(stack, "qdel", job_id)


def test_suspend_stops_the_job_and_its_walltime(stack: Stack, tmp_path: Path) -> None:
    """Suspended for longer than its walltime allows, the job still ends by itself: PBS
    counts only running time (MoM's stop_walltime / start_walltime), in the limit and
    in resources_used.walltime."""
    ready, ticks = tmp_path / "ready", tmp_path / "ticks"
    script = "#PBS -l walltime=00:00:06\n" + _ticker(ready, ticks, 25)
    job_id = submit(stack, "-N", "suspended", input=script)
    poll(ready.exists, 30, 0.05, "the job to start")
    result = cli(stack, "qsig", "-s", "suspend", job_id)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    job = stack.job(job_id)
    assert (job["job_state"], job["substate"]) == ("S", 43)
    assert _table_state(stack, job_id) == "S"
    poll(lambda: _states(stack, job_id) == {"T"}, 10, 0.05, "the job's processes to stop")
    stopped_at = _lines(ticks)
    since = time.monotonic()

    def suspended_past_its_walltime() -> bool:
        assert stack.job(job_id)["job_state"] == "S"
        return time.monotonic() - since >= 7

    poll(suspended_past_its_walltime, 15, 0.5, "7 s suspended (its walltime is 6 s)")
    assert _lines(ticks) == stopped_at  # nothing ran meanwhile
    assert _lines(ticks) < 25
    again = cli(stack, "qsig", "-s", "suspend", job_id)
    assert (again.returncode, again.stderr) == (
        EXIT_BADSTATE,
        f"qsig: Request invalid for state of job {job_id}\n",
    )
    usr1 = cli(stack, "qsig", "-s", "USR1", job_id)  # a suspended job takes only SIGKILL
    assert usr1.returncode == EXIT_BADSTATE, usr1.stderr
    result = cli(stack, "qsig", "-s", "resume", job_id)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert stack.job(job_id)["job_state"] in ("R", "F")
    job = stack.wait_state(job_id, "F", timeout=30)
    assert job["Exit_status"] == 0, job
    assert _lines(ticks) == 25
    used = job["resources_used"]["walltime"]
    assert re.fullmatch(r"00:00:0[0-5]", used), used


def test_suspend_and_resume_are_refused_when_they_do_not_apply(
    stack: Stack, tmp_path: Path
) -> None:
    held = submit(stack, "-h", input="true\n")
    ready = tmp_path / "ready"
    running = submit(stack, input=f'touch "{ready}"\nsleep 30\n')
    alice = stack.as_user("alice")
    mine = submit(stack, "-h", input="true\n", env=alice)
    try:
        for name in ("suspend", "resume"):
            result = cli(stack, "qsig", "-s", name, held)
            assert (result.returncode, result.stderr) == (
                EXIT_BADSTATE,
                f"qsig: Request invalid for state of job {held}\n",
            )
        poll(ready.exists, 30, 0.05, "the job to start")
        result = cli(stack, "qsig", "-s", "resume", running)  # not suspended
        assert (result.returncode, result.stderr) == (
            EXIT_BADSTATE,
            f"qsig: Request invalid for state of job {running}\n",
        )
        # Suspending is the operators' (PBS: manager or operator), even of one's own job.
        result = cli(stack, "qsig", "-s", "suspend", mine, env=alice)
        assert (result.returncode, result.stderr) == (
            EXIT_PERM,
            f"qsig: Unauthorized Request {mine}\n",
        )
        assert stack.job(running)["job_state"] == "R"
    finally:
        cli(stack, "qdel", held, running, mine)


def test_a_suspended_job_that_is_deleted_sees_its_sigterm(stack: Stack, tmp_path: Path) -> None:
    """qdel of a suspended job: SIGTERM, then SIGCONT so that it runs to handle it."""
    ready, got = tmp_path / "ready", tmp_path / "got"
    script = f'trap \'echo TERM >> "{got}"; exit 3\' TERM\ntouch "{ready}"\n' + (
        "while true; do sleep 0.1; done\n"
    )
    job_id = submit(stack, input=script)
    poll(ready.exists, 30, 0.05, "the job to start")
    assert cli(stack, "qsig", "-s", "suspend", job_id).returncode == 0
    poll(lambda: _states(stack, job_id) == {"T"}, 10, 0.05, "the job's processes to stop")
    result = cli(stack, "qdel", job_id)
    assert (result.returncode, result.stderr) == (0, "")
    job = stack.wait_state(job_id, "F", timeout=20)
    assert got.read_text() == "TERM\n"
    assert job["Exit_status"] == 3, job


def test_qdel_sends_sigterm_once_then_sigkill(fresh_stack: Stack, tmp_path: Path) -> None:
    """A job that ignores SIGTERM gets exactly one (not one more at each heartbeat
    that sees the qdel in its record: every second here), then SIGKILL after the
    kill grace."""
    fresh_stack.extra_env.update({"PKBS_ACK_WAIT_SECONDS": "3", "PKBS_KILL_GRACE_SECONDS": "4"})
    fresh_stack.up(workers=1, slots=1)
    ready, got = tmp_path / "ready", tmp_path / "got"
    script = f'trap \'echo TERM >> "{got}"\' TERM\ntouch "{ready}"\n' + (
        "while true; do sleep 0.1; done\n"
    )
    job_id = submit(fresh_stack, input=script)
    poll(ready.exists, 30, 0.05, "the job to start")
    result = cli(fresh_stack, "qdel", job_id)
    assert (result.returncode, result.stderr) == (0, "")
    job = fresh_stack.wait_state(job_id, "F", timeout=30)
    assert job["Exit_status"] == EXIT_SIGKILL, job
    assert got.read_text() == "TERM\n"
