"""The pod runner's flow (worker/podrunner.py) against a stand-in cluster: a fake of
the few API calls (worker/podapi.py) whose pods go through the states a kubelet
reports, whose `pack` exec runs the real archive code on a directory standing for
the pod's volumes, and whose `signal` exec ends the job as its processes would end.
The calls themselves (worker/kubeapi.py) only a cluster exercises: scripts/e2e-kind.sh.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest
from pkbs.worker.containers import ContainerCannotStart
from pkbs.worker.podapi import PodAPIError
from pkbs.worker.podarchive import write_results
from pkbs.worker.podfiles import BEFORE, STDERR, STDOUT, USAGE
from pkbs.worker.podrunner import PodLost, PodRunner
from pkbs.worker.runner import EXIT_MEM, EXIT_WALLTIME, RunRequest

T = TypeVar("T")
WORKER = "worker-0"
Status = dict[str, Any]


def status(job: Status | None = None, phase: str = "Pending", **more: Any) -> Status:
    body: Status = {"phase": phase, **more}
    if job is not None:
        body["containerStatuses"] = [{"name": "job", "state": job}]
    return body


RUNNING = status({"running": {}}, "Running")


def ended(code: int, container_reason: str = "Error", phase: str = "Running",
          **more: Any) -> Status:
    return status({"terminated": {"exitCode": code, "reason": container_reason}}, phase, **more)


class Feed:
    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster, self.name = cluster, name
        self.event = asyncio.Event()

    @property
    def pod(self) -> dict[str, Any] | None:
        return self.cluster.pods.get(self.name)

    @property
    def gone(self) -> bool:
        return self.name in self.cluster.deleted

    async def changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), min(timeout, 0.5))
        self.event.clear()

    def close(self) -> None:
        self.cluster.feeds.pop(self.name, None)


class Cluster:
    """The pods of one namespace. `kubelet` plays a pod's life once it is made;
    `on_signal` is what a signal sent through the keeper does to the job."""

    def __init__(self, volumes: Path) -> None:
        self.volumes = volumes  # <name>/job, <name>/control: the pod's emptyDirs
        self.pods: dict[str, dict[str, Any]] = {}
        self.deleted: dict[str, int] = {}  # name -> grace
        self.feeds: dict[str, Feed] = {}
        self.signals: list[int] = []
        self.log = b""
        self.exec_works = True
        self.kubelet: Callable[[Cluster, str], Awaitable[None]] = run_job(0)
        self.on_signal: Callable[[Cluster, str, int], None] = die_of_signal
        self.tasks: set[asyncio.Task[None]] = set()
        self.labelled_deletes: list[str] = []

    def set(self, name: str, body: Status) -> None:
        if name in self.pods and name not in self.deleted:
            self.pods[name]["status"] = body
            if name in self.feeds:
                self.feeds[name].event.set()

    def follow(self, name: str) -> Feed:
        self.feeds[name] = Feed(self, name)
        return self.feeds[name]

    async def create(self, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        self.pods[name] = {**manifest, "status": status()}
        job_dir = Path(manifest["spec"]["containers"][0]["workingDir"])
        for sub in ("job", "control"):
            (self.volumes / name / sub).mkdir(parents=True)
        # The init container's work: the payload laid out, and its snapshot.
        for path in job_dir.rglob("*"):
            if path.is_file():
                target = self.volumes / name / "job" / path.relative_to(job_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
        from pkbs.payload import snapshot

        before = {rel: list(sig) for rel, sig in snapshot(self.volumes / name / "job").items()}
        (self.volumes / name / "control" / BEFORE).write_text(json.dumps(before))
        task = asyncio.create_task(self.kubelet(self, name))
        self.tasks.add(task)

    async def delete(self, name: str, grace_seconds: int = 0) -> None:
        if name in self.pods and name not in self.deleted:
            self.deleted[name] = grace_seconds
            if name in self.feeds:
                self.feeds[name].event.set()

    async def delete_labelled(self, selector: str) -> int:
        self.labelled_deletes.append(selector)
        def selected(labels: dict[str, str]) -> bool:
            for term in selector.split(","):
                if "!=" in term:
                    key, value = term.split("!=")
                    if labels.get(key) == value:
                        return False
                elif labels.get(term.split("=")[0]) != term.split("=")[1]:
                    return False
            return True

        found = [n for n, p in self.pods.items()
                 if n not in self.deleted and selected(p["metadata"]["labels"])]
        for name in found:
            await self.delete(name)
        return len(found)

    async def append_log(self, name: str, container: str, path: Path) -> int:
        with open(path, "ab") as out:
            out.write(self.log)
        return len(self.log)

    async def exec_stdout(self, name: str, container: str, command: list[str],
                          consume: Callable[[IO[bytes]], T]) -> T:
        assert container == "keeper" and command[:3] == ["python", "-m", "pkbs.worker.podkeeper"]
        if not self.exec_works or name in self.deleted:
            raise PodAPIError(0, "container not found")
        if command[3] == "signal":
            self.signals.append(int(command[4]))
            self.on_signal(self, name, int(command[4]))
            return consume(io.BytesIO(b"1\n"))
        assert command[3] == "pack"
        out = io.BytesIO()
        write_results(out, self.volumes / name / "job", self.volumes / name / "control")
        return await asyncio.to_thread(consume, io.BytesIO(out.getvalue()))


def run_job(code: int, container_reason: str = "Error", seconds: float | None = 0.1,
            **pod_status: Any) -> Callable[[Cluster, str], Awaitable[None]]:
    """Scheduled, init, the job runs `seconds` writing its files, ends with `code`."""

    async def kubelet(cluster: Cluster, name: str) -> None:
        await asyncio.sleep(0.05)
        cluster.set(name, status({"waiting": {"reason": "PodInitializing"}}))
        await asyncio.sleep(0.05)
        cluster.set(name, RUNNING)
        job, control = cluster.volumes / name / "job", cluster.volumes / name / "control"
        (job / "result.txt").write_text("computed\n")
        (control / STDOUT).write_text("out of the job\n")
        (control / STDERR).write_text("err of the job\n")
        (control / USAGE).write_text(json.dumps({"cpu_seconds": 2.5, "max_rss_bytes": 1 << 20}))
        if seconds is not None:
            await asyncio.sleep(seconds)
            cluster.set(name, ended(code, container_reason, **pod_status))

    return kubelet


def stuck(body: Status) -> Callable[[Cluster, str], Awaitable[None]]:
    async def kubelet(cluster: Cluster, name: str) -> None:
        await asyncio.sleep(0.05)
        cluster.set(name, body)

    return kubelet


def die_of_signal(cluster: Cluster, name: str, signo: int) -> None:
    if signo in (signal.SIGTERM, signal.SIGKILL):
        cluster.set(name, ended(128 + signo))


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return Cluster(tmp_path / "volumes")


def request(tmp_path: Path, **changes: Any) -> RunRequest:
    job_dir = tmp_path / "w0"
    job_dir.mkdir(exist_ok=True)
    (job_dir / "STDIN").write_text("echo hi\n")
    base: dict[str, Any] = {
        "job_dir": job_dir,
        "command": ["/bin/bash", str(job_dir / "STDIN")],
        "env": {"PBS_JOBID": "5.pkbs", "PKBS_RUN_ID": "00112233445566778899",
                "PKBS_ENDPOINT": "http://dispatcher:8000", "PKBS_TOKEN": "pkbsjob.x.y"},
        "stdout_path": tmp_path / "w0.o",
        "stderr_path": tmp_path / "w0.e",
        "kill_grace": 0.3,
    }
    base.update(changes)
    return RunRequest(**base)


def runner(cluster: Cluster, start_seconds: float = 5.0) -> PodRunner:
    return PodRunner(cluster, worker_image="pkbs-worker:0.1.0", worker_name=WORKER,
                     namespace="pkbs-jobs", start_seconds=start_seconds)


POD = "pkbs-00112233445566778899"


def in_loop(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """An async test, run in an event loop of its own (bounded in time)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 30))

    return run


@in_loop
async def test_a_job_runs_and_its_results_reach_the_run(cluster: Cluster, tmp_path: Path) -> None:
    run = request(tmp_path)
    job = await runner(cluster).start(run)
    outcome = await job.wait()
    assert outcome.exit_status == 0
    assert (outcome.cput, outcome.max_rss_kb) == (2.5, 1024)
    assert (run.job_dir / "result.txt").read_text() == "computed\n"
    assert run.stdout_path.read_text() == "out of the job\n"
    assert run.stderr_path.read_text() == "err of the job\n"
    assert cluster.deleted == {POD: 0}, "the pod goes once its results are taken"
    assert not cluster.feeds
    assert cluster.labelled_deletes == [
        "app.kubernetes.io/managed-by=pkbs,pkbs.worker=worker-0",
        "app.kubernetes.io/managed-by=pkbs,pkbs.job=5.pkbs,pkbs.run!=00112233445566778899",
    ]


@in_loop
async def test_a_job_without_a_shell_has_its_log_as_output(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.log = b"joined output from the log\n"
    run = request(tmp_path, command=[str(tmp_path / "w0" / "STDIN")])
    outcome = await (await runner(cluster).start(run)).wait()
    assert outcome.exit_status == 0
    assert run.stdout_path.read_text() == "out of the job\njoined output from the log\n"


@in_loop
async def test_exit_codes_come_from_the_job_container(cluster: Cluster, tmp_path: Path) -> None:
    cluster.kubelet = run_job(3)
    assert (await (await runner(cluster).start(request(tmp_path))).wait()).exit_status == 3


@in_loop
async def test_an_image_that_cannot_be_had_ends_the_job_unstarted(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.kubelet = stuck(status({"waiting": {"reason": "ErrImagePull",
                                                "message": "manifest unknown"}}))
    with pytest.raises(ContainerCannotStart, match="image nosuch:1: ErrImagePull: manifest"):
        await runner(cluster).start(request(tmp_path, image="nosuch:1"))
    assert POD in cluster.deleted


@in_loop
async def test_the_worker_image_missing_is_not_the_jobs_fault(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.kubelet = stuck(status({"waiting": {"reason": "ImagePullBackOff"}}))
    with pytest.raises(PodLost, match="the worker image"):
        await runner(cluster).start(request(tmp_path))
    assert POD in cluster.deleted


@in_loop
async def test_a_refused_payload_ends_the_job_unstarted(cluster: Cluster, tmp_path: Path) -> None:
    cluster.kubelet = stuck(status(phase="Failed", initContainerStatuses=[
        {"name": "payload", "state": {"terminated": {"exitCode": 2, "reason": "Error",
                                                     "message": "entry '../x'"}}}]))
    with pytest.raises(ContainerCannotStart, match="payload: Error: entry '../x'"):
        await runner(cluster).start(request(tmp_path))


@in_loop
async def test_a_pod_that_is_never_scheduled_ends_the_job_unstarted(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.kubelet = stuck(status(conditions=[
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/1 nodes are available: 1 Insufficient cpu."}]))
    with pytest.raises(ContainerCannotStart, match="not running after 0.5 s: Unschedulable: 0/1"):
        await runner(cluster, start_seconds=0.5).start(request(tmp_path, ncpus=64))
    assert POD in cluster.deleted


@in_loop
async def test_oom_killed_is_exit_status_minus_27(cluster: Cluster, tmp_path: Path) -> None:
    cluster.kubelet = run_job(137, "OOMKilled")
    run = request(tmp_path, mem_limit=64 << 20)
    assert (await (await runner(cluster).start(run)).wait()).exit_status == EXIT_MEM
    assert run.stderr_path.read_text().endswith(
        "=>> PBS: job killed: mem exceeded limit 65536kb (the container was OOM-killed)\n")


@in_loop
async def test_walltime_signals_the_job_and_is_minus_29(cluster: Cluster, tmp_path: Path) -> None:
    cluster.kubelet = run_job(0, seconds=None)
    run = request(tmp_path, walltime=0.3)
    outcome = await (await runner(cluster).start(run)).wait()
    assert outcome.exit_status == EXIT_WALLTIME
    assert cluster.signals == [signal.SIGTERM]
    assert "=>> PBS: job killed: walltime 0 exceeded limit 0" in run.stderr_path.read_text()
    assert (run.job_dir / "result.txt").exists(), "results are taken after a walltime kill"


@in_loop
async def test_qdel_is_sigterm_then_sigkill_and_271(cluster: Cluster, tmp_path: Path) -> None:
    cluster.kubelet = run_job(0, seconds=None)
    cluster.on_signal = lambda c, name, signo: (
        c.set(name, ended(128 + signo)) if signo == signal.SIGKILL else None)
    job = await runner(cluster).start(request(tmp_path))
    await job.kill("qdel")
    outcome = await job.wait()
    assert cluster.signals == [signal.SIGTERM, signal.SIGKILL]
    assert outcome.exit_status == 256 + signal.SIGKILL
    assert POD in cluster.deleted


@in_loop
async def test_qsig_reaches_the_job(cluster: Cluster, tmp_path: Path) -> None:
    cluster.kubelet = run_job(0, seconds=None)
    job = await runner(cluster).start(request(tmp_path))
    job.send_signal(signal.SIGUSR1)
    await asyncio.sleep(0.1)
    assert cluster.signals == [signal.SIGUSR1]
    await job.kill("qdel")
    assert (await job.wait()).exit_status == 256 + signal.SIGTERM


@in_loop
async def test_without_the_keeper_qdel_deletes_the_pod_with_the_grace(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.kubelet = run_job(0, seconds=None)
    job = await runner(cluster).start(request(tmp_path, kill_grace=7.2))
    cluster.exec_works = False
    await job.kill("qdel")
    assert cluster.deleted == {POD: 8}
    outcome = await job.wait()
    assert outcome.exit_status == 256 + signal.SIGTERM
    assert "could not be taken from its pod" in request(tmp_path).stderr_path.read_text()


@in_loop
async def test_an_evicted_pod_hands_the_job_back(cluster: Cluster, tmp_path: Path) -> None:
    cluster.kubelet = run_job(137, phase="Failed", reason="Evicted",
                              message="The node was low on resource: memory.")
    job = await runner(cluster).start(request(tmp_path))
    with pytest.raises(PodLost, match="evicted"):
        await job.wait()
    assert POD in cluster.deleted


@in_loop
async def test_a_pod_deleted_by_someone_else_hands_the_job_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.kubelet = run_job(0, seconds=None)
    job = await runner(cluster).start(request(tmp_path))
    await cluster.delete(POD)
    with pytest.raises(PodLost, match="deleted while its job ran"):
        await job.wait()


@in_loop
async def test_a_lost_runs_pod_is_ended(cluster: Cluster, tmp_path: Path) -> None:
    cluster.kubelet = run_job(0, seconds=None)
    job = await runner(cluster).start(request(tmp_path))
    assert await runner(cluster).end_run("00112233445566778899") == 1
    assert POD in cluster.deleted
    with pytest.raises(PodLost):  # what the worker of that run, if it still ran, would see
        await job.wait()


@in_loop
async def test_the_pod_of_a_lost_run_goes_before_the_job_runs_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A worker lost with its job: the job's pod runs on until the rerun (on any
    worker) starts, which deletes it first. No two runs of a job overlap."""
    cluster.kubelet = run_job(0, seconds=None)
    lost = await PodRunner(cluster, worker_image="pkbs-worker:0.1.0", worker_name="gone",
                           namespace="pkbs-jobs").start(request(tmp_path))
    rerun = request(tmp_path, env={**request(tmp_path).env, "PKBS_RUN_ID": "ffeeddccbbaa99887766"})
    cluster.kubelet = run_job(0)
    job = await runner(cluster).start(rerun)
    assert POD in cluster.deleted, "the lost run's pod"
    assert (await job.wait()).exit_status == 0
    with pytest.raises(PodLost):
        await lost.wait()
