"""qalter and qrerun through the real CLI."""

from __future__ import annotations

from pathlib import Path

from tests.stackutil import BIN, Stack, poll


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
