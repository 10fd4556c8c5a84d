"""dask-jobqueue's PBSCluster, unmodified, against the session stack: it scales to two
workers, computes on them and closes; their jobs take its directives as resources, end
F when it qdels them, and leave their logs where its `-o/-e <dir>/` says.

PBSCluster writes a `#PBS` script, runs `qsub <script>` and takes the first digit run
of its stdout as the job id, and cancels with `qdel <number>`. Each dask worker is a
pkbs job running `<sys.executable> -m distributed.cli.dask_worker ...` on a local pkbs
worker, which connects back to the scheduler in this process over loopback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.stackutil import BIN, Stack, client_config, fetch_results, job_number, poll

pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (dev extra)")
pytest.importorskip("distributed", reason="distributed is not installed (dev extra)")

from dask_jobqueue import PBSCluster  # noqa: E402
from distributed import Client  # noqa: E402

EXIT_SIGTERM = 256 + 15  # how qdel ends a running dask worker


def _dask_jobs(stack: Stack) -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = stack.qstat_json().get("Jobs", {})
    return {job_id: job for job_id, job in jobs.items() if job["Job_Name"] == "dask-worker"}


def test_pbscluster_scales_computes_and_closes(stack: Stack, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # PBSCluster runs qsub/qdel as subprocesses of this process: point them at the stack.
    for name in [k for k in os.environ if k.startswith("PKBS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PKBS_HOME", str(stack.home))
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    server = client_config(stack.home)["server"]
    before = set(_dask_jobs(stack))
    logs = tmp_path / "logs"

    cluster = PBSCluster(
        cores=1, memory="1GB", processes=1, walltime="00:10:00",
        scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"},
        worker_extra_args=["--host", "127.0.0.1"],
        log_directory=str(logs),
    )
    job_ids: set[str] = set()
    try:
        script = cluster.job_script()
        assert "#PBS -l select=1:ncpus=1:mem=954MB\n" in script, script
        cluster.scale(2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=30)
            job_ids = {f"{job.job_id}.{server}" for job in cluster.workers.values()}
            assert len(job_ids) == 2, job_ids
            assert client.submit(sum, range(10)).result(timeout=30) == 45
            # Builtins only: the workers cannot import this test module.
            squares = client.map(pow, range(20), [2] * 20)
            assert client.gather(squares) == [x * x for x in range(20)]
            hosts = {addr.split("//")[1].rsplit(":", 1)[0]
                     for addr in client.scheduler_info()["workers"]}
            assert hosts == {"127.0.0.1"}
    finally:
        cluster.close(timeout=30)

    # No job of this test is left queued or running; qdel ended the workers.
    def all_finished() -> dict[str, dict[str, Any]] | None:
        jobs = {j: job for j, job in _dask_jobs(stack).items() if j not in before}
        return jobs if all(job["job_state"] == "F" for job in jobs.values()) else None

    jobs = poll(all_finished, 30, 0.1, "the dask-worker jobs to finish")
    assert set(jobs) == job_ids
    for job in jobs.values():
        assert job["Exit_status"] in (0, EXIT_SIGTERM), job
        assert job["run_count"] == 1
        # The directives PBSCluster wrote were accepted as resources.
        resources = job["Resource_List"]
        assert resources["select"] == "1:ncpus=1:mem=954MB"
        assert (resources["ncpus"], resources["mem"]) == (1, "954mb")
        assert resources["walltime"] == "00:10:00"
        assert job["Output_Path"].endswith(f":{logs}/")
        assert job["Error_Path"].endswith(f":{logs}/")
        assert job["Submit_arguments"].endswith(".sh")

    # The worker's log (dask logs to stderr) shows it joined the scheduler over loopback.
    # `-e <dir>/` names the file as PBS does: <dir>/<job id>.ER (and .OU for -o).
    first = min(job_ids, key=job_number)
    fetch_results(stack, first, tmp_path / "results")
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [f"{first}.ER",
                                                                      f"{first}.OU"]
    errors = (tmp_path / "results" / f"{first}.ER").read_text()
    assert "Registered to:" in errors and "tcp://127.0.0.1:" in errors, errors
