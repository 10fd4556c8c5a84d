"""qalter and qrerun through the real CLI."""

from __future__ import annotations

import re
from pathlib import Path

from tests.stackutil import (
    BIN,
    Stack,
    fetch_results,
    job_as,
    job_number,
    poll,
    wait_state_as,
)


def test_qalter_changes_a_queued_job(stack: Stack) -> None:
    job_id = stack.qsub("-h", "-N", "before", input="echo $PBS_JOBNAME\n")
    result = stack.run(str(BIN / "qalter"), "-N", "after", "-l", "walltime=00:05:00", job_id)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    job = stack.job(job_id)
    assert job["Job_Name"] == "after"
    assert job["Resource_List"]["walltime"] == "00:05:00"
    assert stack.run(str(BIN / "qrls"), job_id).returncode == 0
    assert stack.wait_state(job_id, "F")["Exit_status"] == 0


def test_qalter_refuses_to_rename_a_running_job(stack: Stack, tmp_path: Path) -> None:
    started = tmp_path / "started"
    job_id = stack.qsub("-N", "busy", input=f"touch {started}; sleep 30\n")
    try:
        poll(started.exists, 30, what="the job to start")
        renamed = stack.run(str(BIN / "qalter"), "-N", "other", job_id)
        assert renamed.returncode == 15015 & 0xFF
        assert renamed.stderr == f"qalter: Cannot modify attribute while job running {job_id}\n"
        limits = stack.run(str(BIN / "qalter"), "-l", "walltime=00:10:00", job_id)
        assert limits.returncode == 0, limits.stderr
        assert stack.job(job_id)["Resource_List"]["walltime"] == "00:10:00"
    finally:
        stack.run(str(BIN / "qdel"), job_id)


def test_qalter_depend_holds_until_the_parent_ends(stack: Stack, tmp_path: Path) -> None:
    go = tmp_path / "go"
    parent = stack.qsub("-N", "parent", input=f"until [ -e {go} ]; do sleep 0.05; done\n")
    child = stack.qsub("-h", "-N", "child", input="echo child\n")
    result = stack.run(str(BIN / "qalter"), "-W", f"depend=afterok:{parent}", child)
    assert result.returncode == 0, result.stderr
    assert stack.run(str(BIN / "qrls"), child).returncode == 0
    job = stack.job(child)
    assert (job["job_state"], job["Hold_Types"], job["depend"]) == ("H", "s", f"afterok:{parent}")
    go.touch()
    assert stack.wait_state(child, "F")["Exit_status"] == 0


def test_qrerun_runs_a_running_job_again(stack: Stack, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    job_id = stack.qsub("-N", "again", input=(
        f"echo run >> {runs}\nif [ $(wc -l < {runs}) -eq 1 ]; then sleep 60; fi\n"))
    poll(runs.exists, 30, what="the first run")
    result = stack.run(str(BIN / "qrerun"), job_id)
    assert (result.returncode, result.stderr) == (0, "")
    final = stack.wait_state(job_id, "F", timeout=60)
    assert (final["Exit_status"], final["run_count"]) == (0, 2)
    assert runs.read_text() == "run\nrun\n"


def test_qrerun_refuses_a_job_that_is_not_rerunnable(stack: Stack, tmp_path: Path) -> None:
    started = tmp_path / "started"
    job_id = stack.qsub("-r", "n", input=f"touch {started}; sleep 30\n")
    try:
        poll(started.exists, 30, what="the job to start")
        result = stack.run(str(BIN / "qrerun"), job_id)
        assert result.returncode == 15038 & 0xFF
        assert result.stderr == f"qrerun: Job is not rerunnable {job_id}\n"
    finally:
        stack.run(str(BIN / "qdel"), job_id)


# -- qalter of a running job's walltime --------------------------------------------------

EXIT_WALLTIME = -29  # JOB_EXEC_KILL_WALLTIME
EXIT_PERM = 15007 & 0xFF  # PBSE_PERM


def _running(stack: Stack, tmp_path: Path, *args: str, seconds: int = 30,
             env: dict[str, str] | None = None) -> str:
    """A job that runs `seconds` (in short sleeps) once it has touched its start file."""
    started = tmp_path / "started"
    script = f"touch {started}\nfor i in $(seq 1 {seconds * 10}); do sleep 0.1; done\n"
    job_id = stack.qsub(*args, input=script, env=env)
    poll(started.exists, 30, what="the job to start")
    return job_id


def test_lowered_walltime_of_a_running_job_is_enforced(stack: Stack, tmp_path: Path) -> None:
    """A user may lower the limit of a running job (PBS: the new limit goes to MoM);
    the job is killed at the new walltime with PBS's Exit_status -29."""
    alice = stack.as_user("alice")
    job_id = _running(stack, tmp_path, "-N", "lowered", "-l", "walltime=00:10:00", env=alice)
    try:
        result = stack.run(str(BIN / "qalter"), "-l", "walltime=00:00:03", job_id, env=alice)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        job = wait_state_as(stack, job_id, "F", alice, timeout=20)
    finally:
        stack.run(str(BIN / "qdel"), job_id)
    assert job["Exit_status"] == EXIT_WALLTIME, job
    assert job["Resource_List"]["walltime"] == "00:00:03"
    assert job["resources_used"]["walltime"] in ("00:00:03", "00:00:04"), job["resources_used"]
    fetch_results(stack, job_id, tmp_path / "out", env=alice)
    err = (tmp_path / "out" / f"lowered.e{job_number(job_id)}").read_text()
    assert re.fullmatch(r"=>> PBS: job killed: walltime \d+ exceeded limit 3\n", err), err


def test_only_an_operator_may_raise_a_running_jobs_walltime(
    stack: Stack, tmp_path: Path
) -> None:
    alice = stack.as_user("alice")
    job_id = _running(stack, tmp_path, "-l", "walltime=00:00:05", seconds=8, env=alice)
    try:
        refused = stack.run(str(BIN / "qalter"), "-l", "walltime=00:01:00", job_id, env=alice)
        assert (refused.returncode, refused.stdout, refused.stderr) == (
            EXIT_PERM,
            "",
            f"qalter: Unauthorized Request {job_id}\n",
        )
        assert job_as(stack, job_id, alice)["Resource_List"]["walltime"] == "00:00:05"
        raised = stack.run(str(BIN / "qalter"), "-l", "walltime=00:01:00", job_id)  # operator
        assert (raised.returncode, raised.stderr) == (0, "")
        job = wait_state_as(stack, job_id, "F", alice, timeout=30)
    finally:
        stack.run(str(BIN / "qdel"), job_id)
    assert job["Exit_status"] == 0, job  # ran its 8 s: the new limit held
    assert job["Resource_List"]["walltime"] == "00:01:00"
