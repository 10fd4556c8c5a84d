"""Run one job in a container of the image it asked for (`-v CONTAINER_IMAGE=…`), on
a Docker (or Podman) daemon reachable from the worker: the same RunningJob as a local
process group, so walltime, qdel, qsig, drain and worker death behave alike.

What the job sees: its unpacked payload as the working directory at the same path as
on the worker (`PBS_O_WORKDIR`), also read-only at /input; /output, whose files come
back with the results; `TMPDIR` and the node file; the PBS environment (PATH is the
image's). It runs as a non-root user (the worker's, or 10001 for a root worker), with
no capabilities, no new privileges, no Docker socket, on the host's network as a
process job is, with `ncpus` CPUs and `mem` of memory (no swap beyond it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from pathlib import Path
from typing import Any

from pkbs.dockerapi import LABEL_JOB, LABEL_RUN, LABEL_WORKER, DockerAPI, DockerError
from pkbs.procs import RUN_ID_VARIABLE

from .runclock import RunClock, ended_within_walltime
from .runner import (
    RunOutcome,
    RunRequest,
    RunUsage,
    note_killed,
    pbs_exit_status,
    sent_signal,
)

# A root worker's container jobs run as this user (the images' pkbs user).
CONTAINER_UID = 10001
STATS_SECONDS = 1.0
INPUT_DIR = "/input"
OUTPUT_DIR = "/output"
# The job's own directory for /output: its files are changed files of the job.
OUTPUT_NAME = "output"


class ContainerCannotStart(Exception):
    """The job's image is not there and cannot be pulled, or its container cannot be
    started (no such program in the image…): the job's fault, it ends at once."""


def container_user() -> tuple[int, int]:
    uid = os.getuid()
    return (CONTAINER_UID, CONTAINER_UID) if uid == 0 else (uid, os.getgid())


def _own(path: Path, uid: int, gid: int) -> None:
    """Give a directory tree to the container's user (a root worker made it)."""
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def container_config(request: RunRequest, labels: dict[str, str],
                     user: tuple[int, int]) -> dict[str, Any]:
    """The Engine API's create body for one job (one function, so tests read it)."""
    assert request.image is not None
    env = {k: v for k, v in request.env.items() if k != "PATH"}
    env["HOME"] = str(request.job_dir)
    binds = [f"{request.job_dir}:{request.job_dir}:rw", f"{request.job_dir}:{INPUT_DIR}:ro",
             f"{request.job_dir / OUTPUT_NAME}:{OUTPUT_DIR}:rw"]
    for name in ("TMPDIR", "PBS_NODEFILE"):
        if name in request.env:
            mode = "ro" if name == "PBS_NODEFILE" else "rw"
            binds.append(f"{request.env[name]}:{request.env[name]}:{mode}")
    host: dict[str, Any] = {
        "Binds": binds,
        "NetworkMode": "host",
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "NanoCpus": int(request.ncpus * 1e9),
        "PidsLimit": 4096,
        # An init as PID 1 passes signals on to the job's shell, as a process job's
        # session gets them (a PID 1 shell would ignore SIGTERM), and reaps orphans.
        "Init": True,
    }
    if request.mem_limit:
        host["Memory"] = request.mem_limit
        host["MemorySwap"] = request.mem_limit
    return {
        "Image": request.image,
        "Entrypoint": request.command[:1],
        "Cmd": request.command[1:],
        "Env": [f"{k}={v}" for k, v in env.items()],
        "WorkingDir": str(request.job_dir),
        "User": f"{user[0]}:{user[1]}",
        "Labels": labels,
        "AttachStdout": False,
        "AttachStderr": False,
        "HostConfig": host,
    }


class ContainerJob:
    """A job's container: waited for, signalled, killed like a process group."""

    def __init__(self, api: DockerAPI, container: str, request: RunRequest, pid: int) -> None:
        self.api = api
        self.container = container
        self.request = request
        self.session_id = pid
        self.clock = RunClock(request.walltime)
        self.kill_reason: str | None = None
        self._killing: asyncio.Future[None] | None = None
        self.peak_rss = 0
        self.cpu_ns = 0
        self._exited: asyncio.Task[int] = asyncio.create_task(api.wait(container))
        self._logs = asyncio.create_task(self._copy_logs())
        self._stats = asyncio.create_task(self._sample())

    async def _copy_logs(self) -> None:
        """stdout and stderr into the job's output files, as the container writes."""
        out = open(self.request.stdout_path, "ab")  # noqa: SIM115 (closed below)
        same = self.request.stderr_path == self.request.stdout_path
        err = out if same else open(self.request.stderr_path, "ab")  # noqa: SIM115
        try:
            async for stream, data in self.api.logs(self.container):
                target = err if stream == 2 else out
                target.write(data)
                target.flush()
        except DockerError:
            pass
        finally:
            out.close()
            if not same:
                err.close()

    async def _sample(self) -> None:
        """Memory and CPU of the container, for resources_used (and -l mem: the
        daemon enforces it, the kernel's OOM killer ends the job)."""
        while not self._exited.done():
            with contextlib.suppress(DockerError, KeyError, TypeError):
                stats = await self.api.stats(self.container)
                memory = stats.get("memory_stats") or {}
                self.peak_rss = max(self.peak_rss, int(memory.get("max_usage")
                                                       or memory.get("usage") or 0))
                self.cpu_ns = max(self.cpu_ns,
                                  int(stats["cpu_stats"]["cpu_usage"]["total_usage"]))
            await asyncio.sleep(STATS_SECONDS)

    def usage(self) -> RunUsage:
        """From the daemon's stats, sampled every STATS_SECONDS."""
        return RunUsage(walltime=self.clock.used(), cput=self.cpu_ns / 1e9,
                        max_rss_kb=self.peak_rss // 1024)

    async def wait(self) -> RunOutcome:
        code = await ended_within_walltime(
            self._exited, self.clock, self.kill,
            functools.partial(note_killed, self.request.stderr_path))
        elapsed = self.clock.used()
        state: dict[str, Any] = {}
        with contextlib.suppress(DockerError):
            state = (await self.api.inspect(self.container)).get("State") or {}
        self._stats.cancel()
        await asyncio.wait({self._logs}, timeout=10)
        if state.get("OOMKilled") and self.kill_reason is None:
            self.kill_reason = "mem"
            limit = (self.request.mem_limit or 0) // 1024
            note_killed(self.request.stderr_path,
                        f"mem exceeded limit {limit}kb (the container was OOM-killed)")
        with contextlib.suppress(DockerError):
            await self.api.remove(self.container)
        exit_status = pbs_exit_status(self.kill_reason, code, sent_signal(self.kill_reason, code))
        return RunOutcome(exit_status=exit_status, walltime=elapsed, cput=self.cpu_ns / 1e9,
                          max_rss_kb=self.peak_rss // 1024, session_id=self.session_id)

    async def kill(self, reason: str) -> None:
        """SIGTERM, then SIGKILL after the grace period: once, however often asked."""
        if self.kill_reason is None:
            self.kill_reason = reason
        if self._exited.done():
            return
        if self._killing is None:
            self._killing = asyncio.ensure_future(self._terminate())
        await asyncio.shield(self._killing)

    async def _terminate(self) -> None:
        if self.clock.paused:  # a paused container takes no signal: it runs again
            await self.resume()
        with contextlib.suppress(DockerError):
            await self.api.kill(self.container, "SIGTERM")
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), self.request.kill_grace)
        except TimeoutError:
            with contextlib.suppress(DockerError):
                await self.api.kill(self.container, "SIGKILL")

    def send_signal(self, signo: int) -> None:
        task = asyncio.create_task(self.api.kill(self.container, signo))
        task.add_done_callback(lambda t: t.exception())

    async def suspend(self) -> None:
        """docker pause (the cgroup freezer stops every process), and the walltime."""
        if self._killing is None and not self.clock.paused:
            with contextlib.suppress(DockerError):
                await self.api.pause(self.container)
            self.clock.pause()

    async def resume(self) -> None:
        if self.clock.paused:
            self.clock.resume()
            with contextlib.suppress(DockerError):
                await self.api.unpause(self.container)


class ContainerRunner:
    """Starts jobs that name an image as containers of it."""

    def __init__(self, api: DockerAPI, worker_name: str) -> None:
        self.api = api
        self.worker_name = worker_name
        self.user = container_user()

    async def remove_leftovers(self) -> int:
        """Containers a previous life of this worker left running: removed."""
        return await self.api.remove_labelled(LABEL_WORKER, self.worker_name)

    async def end_run(self, run_id: str) -> int:
        """The containers of a lost run (by its PKBS_RUN_ID): removed."""
        return await self.api.remove_labelled(LABEL_RUN, run_id)

    async def start(self, request: RunRequest) -> ContainerJob:
        assert request.image is not None
        try:
            if not await self.api.has_image(request.image):
                await self.api.pull(request.image)
        except DockerError as exc:
            if exc.status == 0:
                raise  # the daemon is gone: this worker's trouble, the job is tried again
            raise ContainerCannotStart(f"image {request.image}: {exc.message}") from exc
        (request.job_dir / OUTPUT_NAME).mkdir(exist_ok=True)
        for path in (request.job_dir, Path(request.env.get("TMPDIR", request.job_dir))):
            if os.getuid() == 0:
                _own(path, *self.user)
        for path in (request.stdout_path, request.stderr_path):
            path.touch()
        labels = {LABEL_WORKER: self.worker_name,
                  LABEL_JOB: request.env.get("PBS_JOBID", ""),
                  LABEL_RUN: request.env.get(RUN_ID_VARIABLE, "")}
        name = f"pkbs-{labels[LABEL_RUN] or os.urandom(6).hex()}"
        config = container_config(request, labels, self.user)
        try:
            container = await self.api.create(name, config)
            await self.api.start(container)
            pid = int((await self.api.inspect(container))["State"].get("Pid") or 0)
        except DockerError as exc:
            with contextlib.suppress(DockerError):
                await self.api.remove(name)
            if exc.status == 0:
                raise
            raise ContainerCannotStart(f"image {request.image}: {exc.message}") from exc
        return ContainerJob(self.api, container, request, pid)

    def leftovers(self) -> bool:
        """A container job's processes are gone with its container."""
        return False
