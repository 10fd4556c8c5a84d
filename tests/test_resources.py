"""Resources on a stack started as a user starts it (`pkbs up`, no options; the admin
gives its worker two GPUs): unknown resources refused, one job may use every CPU, a
request over the largest worker refused naming the limit, GPU jobs get distinct
devices, a job no worker can run waits with PBS's "Can Never Run" comment, one that
cannot run now is handed back and says why, and pbsnodes / qstat -B -f show capacity."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stackutil import BIN, Stack, cli, poll, submit
from worker.slots import host_mem

CPUS = os.cpu_count() or 1
EXIT_UNKRESC = 15035 & 0xFF  # PBSE_UNKRESC
EXIT_EXCQRESC = 15036 & 0xFF  # PBSE_EXCQRESC


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("pkbs-plain"), extra_env={"PKBS_WORKER_NGPUS": "2"})
    result = s.run(str(BIN / "pkbs"), "up", timeout=120)
    assert result.returncode == 0, result.stderr
    # The worker is in the registry once it is ready.
    poll(lambda: cli(s, "pbsnodes", "-a").stdout, 30, 0.1, "the worker to register")
    yield s
    s.down()


def _gate(path: Path) -> str:
    return f'for i in $(seq 1 600); do [ -e "{path}" ] && break; sleep 0.05; done\n'


@pytest.mark.parametrize(
    ("resource", "message"),
    [("foo=bar", "Unknown resource Resource_List.foo"),
     ("select=1:ncpus=1:foo=2", "Unknown resource: foo")],
)
def test_unknown_resource_is_refused(plain: Stack, resource: str, message: str) -> None:
    result = cli(plain, "qsub", "-l", resource, input="true\n")
    assert (result.returncode, result.stdout, result.stderr) == (
        EXIT_UNKRESC, "", f"qsub: {message}\n")


def test_one_job_may_use_every_cpu_of_the_default_stack(plain: Stack) -> None:
    job_id = submit(plain, "-l", f"ncpus={CPUS}", input="echo $NCPUS\n")
    job = plain.wait_state(job_id, "F")
    assert (job["Exit_status"], job["exec_host"]) == (0, f"{socket.gethostname()}/0*{CPUS}")
    result = cli(plain, "qsub", "-l", f"ncpus={CPUS + 1}", input="true\n")
    assert (result.returncode, result.stderr) == (
        EXIT_EXCQRESC,
        "qsub: Job violates queue and/or server resource limits: "
        f"ncpus {CPUS + 1} > largest worker's {CPUS}\n",
    )


def test_gpu_jobs_get_distinct_devices(plain: Stack, tmp_path: Path) -> None:
    go = tmp_path / "go"
    ids = [
        submit(plain, "-l", "ngpus=1",
               input=f'echo "$CUDA_VISIBLE_DEVICES" > "{tmp_path}/gpu{i}"\n' + _gate(go))
        for i in range(2)
    ]
    try:
        poll(lambda: len([p for p in tmp_path.glob("gpu*") if p.read_text()]) == 2, 30, 0.05,
             "both GPU jobs to start")
        seen = sorted((tmp_path / f"gpu{i}").read_text().strip() for i in range(2))
        assert seen == ["0", "1"]
        # The registry shows it within a second (the worker writes it at most so often).
        row = poll(lambda: (r := cli(plain, "pbsnodes", "-aSj").stdout.splitlines()[3].split())
                   [8] == "0/2" and r, 10, 0.1, "pbsnodes to show both GPUs taken")
        numbers = sorted((i.split(".")[0] for i in ids), key=int)
        busy = "free" if CPUS > 2 else "job-busy"
        assert (row[1], row[2], row[9]) == (busy, "2", ",".join(numbers))
    finally:
        go.touch()
    for job_id in ids:
        assert plain.wait_state(job_id, "F")["Exit_status"] == 0


def test_job_no_worker_can_run_waits_saying_so(plain: Stack) -> None:
    job_id = submit(plain, "-l", "ngpus=3", input="true\n")
    try:
        job = poll(lambda: (j := plain.job(job_id)).get("comment") and j, 30, 0.2,
                   "the Can Never Run comment")
        assert job["job_state"] == "Q"
        assert job["comment"] == (
            "Can Never Run: Insufficient amount of resource: ngpus (R: 3 A: 2 T: 2)")
    finally:
        cli(plain, "qdel", job_id)


@pytest.mark.skipif(CPUS < 2, reason="needs two CPUs")
def test_job_that_cannot_run_now_is_handed_back_and_runs_later(
    plain: Stack, tmp_path: Path
) -> None:
    go, started = tmp_path / "go", tmp_path / "started"
    small = submit(plain, "-l", "ncpus=1", input=f'touch "{started}"\n' + _gate(go))
    try:
        poll(started.exists, 30, 0.05, "the small job to start")
        big = submit(plain, "-l", f"ncpus={CPUS}", input="true\n")
        job = poll(lambda: (j := plain.job(big)).get("comment") and j, 30, 0.2,
                   "the Not Running comment")
        assert (job["job_state"], job["comment"]) == (
            "Q", f"Not Running: Insufficient amount of resource: ncpus "
                 f"(R: {CPUS} A: {CPUS - 1} T: {CPUS})")
    finally:
        go.touch()
    assert plain.wait_state(small, "F")["Exit_status"] == 0
    assert plain.wait_state(big, "F")["Exit_status"] == 0


def test_pbsnodes_and_qstat_show_what_the_workers_have(plain: Stack) -> None:
    host = socket.gethostname()
    mem_kb = host_mem() // 1024
    name = f"{host}-w1"
    result = cli(plain, "pbsnodes", "-a")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        f"{name}\n"
        f"     Mom = {host}\n"
        "     ntype = PBS\n"
        "     state = free\n"
        f"     pcpus = {CPUS}\n"
        f"     resources_available.host = {host}\n"
        f"     resources_available.mem = {mem_kb}kb\n"
        f"     resources_available.ncpus = {CPUS}\n"
        "     resources_available.ngpus = 2\n"
        f"     resources_available.vnode = {name}\n"
        "     resources_assigned.mem = 0kb\n"
        "     resources_assigned.ncpus = 0\n"
        "     resources_assigned.ngpus = 0\n"
        "     resv_enable = True\n"
        "     sharing = default_shared\n"
        "\n"
    )
    lines = cli(plain, "pbsnodes", "-aSj").stdout.splitlines()
    assert lines[1].split() == ["vnode", "state", "njobs", "run", "susp", "f/t", "f/t", "f/t",
                                "f/t", "jobs"]
    row = lines[3].split()
    assert row[:5] == [name[:15], "free", "0", "0", "0"]
    assert row[6:] == [f"{CPUS}/{CPUS}", "0/0", "2/2", "--"]
    server = cli(plain, "qstat", "-B", "-f").stdout
    assert f"    resources_available.ncpus = {CPUS}\n" in server
    assert "    resources_available.ngpus = 2\n" in server
    assert "    resources_assigned.ncpus = 0\n" in server
