"""The container runner against the real Docker daemon: a job in an image of its own
choosing, with PBS's exit statuses, limits, signals, /input and /output, as a
non-root user with no capabilities; an image that is not there ends the job at once."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkbs.worker.containers import ContainerCannotStart, ContainerRunner
from pkbs.worker.runner import RunOutcome, RunRequest

from pkbs.dockerapi import LABEL_WORKER, DockerAPI

IMAGE = "pkbs-base:bookworm"  # Debian + python3, made by scripts/images.py (no registry)


@pytest.fixture
def job(tmp_path: Path, base_image: str) -> Iterator[Path]:
    (tmp_path / "job").mkdir()
    (tmp_path / "tmp").mkdir()
    yield tmp_path


def request(root: Path, script: str, **changes: object) -> RunRequest:
    (root / "job" / "run.sh").write_text(script)
    fields: dict[str, object] = dict(
        job_dir=root / "job", command=["/bin/sh", str(root / "job" / "run.sh")],
        env={"PBS_JOBID": "1.pkbs", "TMPDIR": str(root / "tmp"), "PATH": "/nowhere",
             "PKBS_RUN_ID": os.urandom(6).hex()},
        stdout_path=root / "out", stderr_path=root / "err", kill_grace=2.0, image=IMAGE)
    fields.update(changes)
    return RunRequest(**fields)  # type: ignore[arg-type]


def run(req: RunRequest, during: object = None) -> RunOutcome:
    async def go() -> RunOutcome:
        async with DockerAPI() as api:
            runner = ContainerRunner(api, "test-worker")
            running = await runner.start(req)
            if callable(during):
                await during(running)
            outcome = await running.wait()
            assert not await api.labelled(LABEL_WORKER, "test-worker"), "container left"
            return outcome

    return asyncio.run(go())


def test_a_job_runs_in_its_image_as_a_non_root_user(job: Path) -> None:
    (job / "job" / "data.txt").write_text("input\n")
    outcome = run(request(job, (
        'python3 -c "import sys; print(sys.version_info[:2])"\n'
        "id -u; echo $PBS_JOBID; pwd; cat /input/data.txt\n"
        "touch /input/x 2>/dev/null || echo input read-only\n"
        'echo result > /output/r.txt; echo oops >&2; exit 3\n')))
    assert outcome.exit_status == 3
    out = (job / "out").read_text().split("\n")
    assert out[0] == "(3, 11)" and out[1] != "0" and out[2] == "1.pkbs"
    assert out[3] == str(job / "job") and out[4] == "input" and out[5] == "input read-only"
    assert (job / "err").read_text() == "oops\n"
    assert (job / "job" / "output" / "r.txt").read_text() == "result\n"


def test_walltime_and_memory_limits_end_the_job_as_pbs_does(job: Path) -> None:
    slow = run(request(job, "sleep 30\n", walltime=1.0))
    assert slow.exit_status == -29
    assert "walltime" in (job / "err").read_text()
    hog = run(request(job, "python3 -c 'b = bytearray(300 * 2**20); import time; time.sleep(5)'\n",
                      mem_limit=64 * 2**20))
    assert hog.exit_status == -27


def test_qdel_and_qsig_reach_the_jobs_shell(job: Path) -> None:
    async def deleted(running: object) -> None:
        await asyncio.sleep(1)
        await running.kill("qdel")  # type: ignore[attr-defined]

    outcome = run(request(job, "sleep 30\n"), deleted)
    assert outcome.exit_status == 256 + 15

    async def signalled(running: object) -> None:
        await asyncio.sleep(1)
        running.send_signal(10)  # type: ignore[attr-defined]

    outcome = run(request(job, "trap 'echo got USR1; exit 0' USR1\nsleep 30 & wait\n"), signalled)
    assert outcome.exit_status == 0 and "got USR1" in (job / "out").read_text()


def test_an_image_that_is_not_there_cannot_start(job: Path) -> None:
    with pytest.raises(ContainerCannotStart, match="no-such-image"):
        run(request(job, "true\n", image="pkbs-test/no-such-image:1"))
