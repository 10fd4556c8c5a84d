"""Run each job as a Kubernetes pod of its own (PKBS_JOB_RUNNER=pod): the same
RunningJob as a local process group, so walltime, qdel, qsig, drain and reruns behave
alike. The pod itself: worker/pods.py; why and what the job sees: docs/containers.md.

A run: the pod is made, and `start` returns once the job's container runs (or has
already ended); an image that cannot be had or a command that cannot start ends the
job unstarted (ContainerCannotStart). Then the worker waits for the job's container
to end; its walltime is the worker's timer (the pod's activeDeadlineSeconds is only a
backstop). qdel, walltime and qsig are signals to the job's processes sent through
the keeper container, so the pod, and the job's files, outlive the job: the worker
takes the results out through the keeper (into the run's own directory, which the
usual delivery uploads), appends the job container's log, and deletes the pod. Only
when the keeper cannot be reached is the pod deleted at once, with the kill grace.
A pod that fails through no fault of the job's (evicted, deleted, its node gone)
raises PodLost: the job goes back to the queue and runs again. Before a run's pod
is made, the pods of the job's earlier runs are deleted (a lost worker's), and before
a worker's first pod, what a previous life of that worker left.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import signal
import time

from pkbs.procs import RUN_ID_VARIABLE

from .containers import ContainerCannotStart
from .podapi import PodAPI, PodAPIError, PodFeed
from .podarchive import ArchiveError, Usage, receive_results
from .podfiles import CONTROL_DIR
from .pods import (
    JOB_CONTAINER,
    KEEPER_CONTAINER,
    earlier_runs_selector,
    output_to_files,
    pod_manifest,
    run_selector,
    worker_selector,
)
from .podstatus import Broken, CannotStart, Ended, Running, Starting, exit_status, progress
from .runclock import RunClock, ended_within_walltime
from .runner import CannotSuspend, RunOutcome, RunRequest, killed_line

log = logging.getLogger("pkbs.worker.pods")

POLL_SECONDS = 10.0  # a pod the watch has said nothing of this long is read afresh
KEEPER = ["python", "-m", "pkbs.worker.podkeeper"]


class PodLost(Exception):
    """The job's pod failed or went away through no fault of the job's: the job is
    handed back and runs again, as when its worker is lost."""


class PodJob:
    """A job running in its pod: waited for, signalled, killed like a process group."""

    def __init__(self, api: PodAPI, feed: PodFeed, request: RunRequest, name: str) -> None:
        self.api = api
        self.feed = feed
        self.request = request
        self.name = name
        self.session_id = 0  # the job's processes are in the pod's own PID namespace
        self.clock = RunClock(request.walltime)
        self.kill_reason: str | None = None
        self._killing: asyncio.Future[None] | None = None
        self._deleting = False
        self._signals: set[asyncio.Task[bool]] = set()
        self._ended: asyncio.Task[Ended] = asyncio.create_task(self._until_ended())

    def usage(self) -> None:
        """Not seen from the worker: the pod's keeper reports it when the job ends."""
        return None

    async def _until_ended(self) -> Ended:
        while True:
            if self.feed.gone:
                if self._deleting:  # deleted by this worker: the kubelet's SIGTERM ended it
                    return Ended(exit_code=128 + signal.SIGTERM, reason="Deleted")
                raise PodLost(f"pod {self.name} was deleted while its job ran")
            state = progress(self.feed.pod or {}, self.request.image)
            if isinstance(state, Ended):
                return state
            if isinstance(state, Broken | CannotStart):
                raise PodLost(state.why)
            await self.feed.changed(POLL_SECONDS)

    async def wait(self) -> RunOutcome:
        notes: list[str] = []
        try:
            end = await ended_within_walltime(
                self._ended, self.clock, self.kill,
                lambda what: notes.append(killed_line(what)))
            elapsed = self.clock.used()
            if end.pod_reason == "Evicted":
                raise PodLost(f"pod {self.name} evicted: {end.message}")
            usage = await self._collect(notes)
            if end.reason == "OOMKilled" and self.kill_reason is None:
                self.kill_reason = "mem"
                limit = (self.request.mem_limit or 0) // 1024
                notes.append(killed_line(f"mem exceeded limit {limit}kb "
                                         "(the container was OOM-killed)"))
            if end.pod_reason == "DeadlineExceeded" and self.kill_reason is None:
                self.kill_reason = "walltime"
                notes.append(killed_line("walltime (the pod's deadline passed)"))
        finally:
            await self._remove()
            self.feed.close()
        if notes:
            with open(self.request.stderr_path, "a") as err:
                err.write("".join(f"{note}\n" for note in notes))
        return RunOutcome(
            exit_status=exit_status(end, self.kill_reason),
            walltime=elapsed,
            cput=usage.cpu_seconds,
            max_rss_kb=usage.max_rss_bytes // 1024,
            session_id=self.session_id,
        )

    async def _collect(self, notes: list[str]) -> Usage:
        """The job's files, stdout and stderr, out of the pod into the run's directory;
        then the job container's log (its output when no shell split it, else what
        the shell said before the job ran)."""
        request = self.request
        usage = Usage()
        pack = [*KEEPER, "pack", str(request.job_dir), CONTROL_DIR]
        receive = functools.partial(receive_results, job_dir=request.job_dir,
                                    stdout_path=request.stdout_path,
                                    stderr_path=request.stderr_path)
        try:
            usage = await self.api.exec_stdout(self.name, KEEPER_CONTAINER, pack, receive)
        except (PodAPIError, ArchiveError) as exc:
            log.warning("results of pod %s not taken: %s", self.name, exc)
            notes.append(f"=>> pkbs: the job's files could not be taken from its pod: {exc}")
        split = output_to_files(request)
        try:
            await self.api.append_log(self.name, JOB_CONTAINER,
                                      request.stderr_path if split else request.stdout_path)
        except PodAPIError as exc:
            if not split:
                notes.append(f"=>> pkbs: the job's output could not be read: {exc}")
        return usage

    async def kill(self, reason: str) -> None:
        """SIGTERM to the job's processes, SIGKILL after the grace period; when the
        keeper cannot pass them on, the pod is deleted with the grace instead."""
        if self.kill_reason is None:
            self.kill_reason = reason
        if self._ended.done():
            return
        if self._killing is None:  # once, however often asked
            self._killing = asyncio.ensure_future(self._terminate())
        await asyncio.shield(self._killing)

    async def _terminate(self) -> None:
        grace = self.request.kill_grace
        if not await self._signal(signal.SIGTERM):
            await self._remove(math.ceil(grace))
            return
        await asyncio.wait({self._ended}, timeout=grace)
        if not self._ended.done() and not await self._signal(signal.SIGKILL):
            await self._remove(0)

    def send_signal(self, signo: int) -> None:
        task = asyncio.create_task(self._signal(signo))
        self._signals.add(task)
        task.add_done_callback(self._signals.discard)

    async def suspend(self) -> None:
        """Refused: the pod's activeDeadlineSeconds (the walltime's backstop) would go
        on counting while the job stood still, and cannot be raised."""
        raise CannotSuspend("a job in a pod of its own cannot be suspended")

    async def resume(self) -> None:
        return None  # never suspended

    async def _signal(self, signo: int) -> bool:
        command = [*KEEPER, "signal", str(int(signo))]
        try:
            await self.api.exec_stdout(self.name, KEEPER_CONTAINER, command,
                                       lambda out: out.read())
        except PodAPIError as exc:
            log.warning("signal %s not sent to pod %s: %s", signo, self.name, exc.message)
            return False
        return True

    async def _remove(self, grace: int = 0) -> None:
        self._deleting = True
        try:
            await self.api.delete(self.name, grace)
        except PodAPIError as exc:
            log.warning("pod %s not deleted: %s", self.name, exc.message)


class PodRunner:
    """Starts every job as a pod in its namespace (the worker's pods: its label)."""

    def __init__(self, api: PodAPI, *, worker_image: str, worker_name: str, namespace: str,
                 start_seconds: float = 600.0) -> None:
        self.api = api
        self.worker_image = worker_image
        self.worker_name = worker_name
        self.namespace = namespace
        self.start_seconds = start_seconds
        self._tidied: asyncio.Future[int] | None = None

    async def remove_leftovers(self) -> int:
        """Pods a previous life of this worker left (it has the same name): deleted."""
        return await self.api.delete_labelled(worker_selector(self.worker_name))

    async def end_run(self, run_id: str) -> int:
        """The pod of a lost run (by its PKBS_RUN_ID): deleted."""
        return await self.api.delete_labelled(run_selector(run_id))

    async def _tidy_once(self) -> None:
        """remove_leftovers, once, before this worker's first pod."""
        if self._tidied is None:
            self._tidied = asyncio.ensure_future(self.remove_leftovers())
        try:
            removed = await asyncio.shield(self._tidied)
        except PodAPIError as exc:
            log.warning("leftover pods not removed: %s", exc.message)
        else:
            if removed:
                log.info("leftover pods removed", extra={"pods": removed})

    async def _end_earlier_runs(self, request: RunRequest) -> None:
        """Delete what earlier runs of the job left running (their worker was lost,
        on any host): no two runs of a job overlap."""
        job_id = request.env.get("PBS_JOBID", "")
        selector = earlier_runs_selector(job_id, request.env.get(RUN_ID_VARIABLE, ""))
        try:
            removed = await self.api.delete_labelled(selector)
        except PodAPIError as exc:
            log.warning("pods of earlier runs not looked for: %s", exc.message,
                        extra={"job": job_id})
            return
        if removed:
            log.warning("pods of earlier runs deleted", extra={"job": job_id, "pods": removed})

    async def start(self, request: RunRequest) -> PodJob:
        if not (request.env.get("PKBS_ENDPOINT") and request.env.get("PKBS_TOKEN")):
            raise RuntimeError("pod jobs need PKBS_JOB_ENDPOINT and PKBS_JOB_TOKEN_SECRET: "
                               "their pods fetch the payload with the job's token")
        await self._tidy_once()
        manifest = pod_manifest(request, worker_image=self.worker_image,
                                worker_name=self.worker_name, namespace=self.namespace)
        name = manifest["metadata"]["name"]
        await self._end_earlier_runs(request)
        feed = self.api.follow(name)
        try:
            await self.api.create(manifest)
        except PodAPIError as exc:
            feed.close()
            if exc.status in (400, 422):  # the API found the pod invalid: its image name…
                raise ContainerCannotStart(f"pod refused: {exc.message}") from exc
            raise
        try:
            await self._until_started(feed, request, name)
        except BaseException:
            with contextlib.suppress(PodAPIError):
                await asyncio.shield(self.api.delete(name))
            feed.close()
            raise
        return PodJob(self.api, feed, request, name)

    async def _until_started(self, feed: PodFeed, request: RunRequest, name: str) -> None:
        """Until the job's container runs (or ran); ContainerCannotStart, PodLost."""
        deadline = time.monotonic() + self.start_seconds
        why = "created"
        while True:
            if feed.gone:
                raise PodLost(f"pod {name} was deleted before its job started")
            state = Starting(why) if feed.pod is None else progress(feed.pod, request.image)
            if isinstance(state, Running | Ended):
                return
            if isinstance(state, CannotStart):
                raise ContainerCannotStart(state.why)
            if isinstance(state, Broken):
                raise PodLost(state.why)
            if isinstance(state, Starting):
                why = state.why
            left = deadline - time.monotonic()
            if left <= 0:
                raise ContainerCannotStart(
                    f"pod {name} not running after {self.start_seconds:g} s: {why}")
            await feed.changed(min(left, POLL_SECONDS))

    def leftovers(self) -> bool:
        """A pod job's processes are gone with its pod."""
        return False
