"""The worker: pulls jobs when it has free slots, runs them, has their results
delivered (delivery.py), and acknowledges a job only after its final state and
outputs are stored."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import pwd
import random
import shutil
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors
from nats.aio.msg import Msg

from pkbs import constants as C
from pkbs import lifecycle, tokens
from pkbs.configstore import ConfigStore
from pkbs.control import JobControl, run_key
from pkbs.dockerapi import DockerAPI, DockerError
from pkbs.errors import InvalidPayload, PkbsError, UnknownJob
from pkbs.hookjobs import changed_comment, record_job
from pkbs.hookrun import run_hooks
from pkbs.hookstore import EXECJOB_BEGIN, EXECJOB_END, HookTable
from pkbs.jobstore import JobStore
from pkbs.lifecycle import EXIT_RESULTS_NOT_STORED
from pkbs.models import JobRecord, ResultFile, WorkItem
from pkbs.nodes import Node, NodeRegistry, NodeResources, insufficient
from pkbs.payload import changed_files, safe_unpack, snapshot
from pkbs.pbsvalues import (
    format_duration,
    job_mem_bytes,
    job_walltime,
    signal_number,
)
from pkbs.procs import end_run, jobs_root, run_id
from pkbs.retention import expire_undelivered, history_seconds
from pkbs.runledger import RunLedger
from pkbs.settings import Settings
from pkbs.states import JobState, is_pending

from . import metrics
from .containers import ContainerCannotStart, ContainerRunner
from .delivery import Delivery, ResultsNotStored, undelivered_root
from .fetch import open_work_source, source_levels
from .jobenv import build_command, build_env
from .jobstart import NoRoom, StartAttempt
from .limitgate import RunGate
from .outputfeed import OutputFeed
from .rundir import NodeFiles, RunDir, WorkspacePool
from .runner import (
    CannotSuspend,
    JobRunner,
    LocalProcessRunner,
    RunningJob,
    RunOutcome,
    RunRequest,
    RunUsage,
)
from .slots import Grant, worker_pool

log = logging.getLogger("pkbs.worker")

# Long-poll of one fetch; also how long a drain may wait for an idle fetch to end.
FETCH_TIMEOUT = 1.0
# A job that meets a full disk on this worker is offered again after this long.
DISK_FULL_RETRY = 10.0
# A job whose -a time is ahead goes back to the queue for at most this long at a time.
MAX_DEFER_SECONDS = 300.0
# A job's .o/.e up to this size together are copied to its Output_Path in the event
# loop's thread (a local stack): the hop to a thread costs ~1.6 ms of CPU, the copy ~0.2.
INLINE_COPY_BYTES = 256 * 1024
# A job this worker cannot start goes back for this long: when it could run here once
# enough is free; when another live worker has enough (for that one to take it); when
# none has (and it says "Can Never Run"), to look again for one that joined.
NOT_NOW_RETRY = 1.0
OTHER_WORKER_RETRY = 0.2
NEVER_RUN_RETRY = 10.0
# The node registry is written at most this often, however fast jobs come and go.
ADVERTISE_PAUSE = 1.0
# A job an execjob_begin hook refused is offered again after this long.
HOOK_REJECT_RETRY = 1.0
# Who asks for execjob_* events (PBS: the execution host's daemon).
EXEC_REQUESTOR = "pbs_mom"
# A running job's usage goes into its record this long after it starts (then every
# PKBS_USAGE_UPDATE_SECONDS); due runs are looked for every USAGE_TICK_SECONDS.
USAGE_FIRST_SECONDS = 1.0
USAGE_TICK_SECONDS = 0.5
# Payloads of this many arrays are kept (each at most 1 MiB): see Worker._payload.
ARRAY_PAYLOADS_KEPT = 8
# What starting a job's program fails with when the fault is the job's (its shell or
# program is missing, not executable, not a program, or its arguments are too long).
CANNOT_EXECUTE = frozenset(
    {errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR, errno.EISDIR, errno.ELOOP,
     errno.ENAMETOOLONG, errno.E2BIG}
)


@dataclass
class Run:
    """One run of one job on this worker."""

    number: int
    index: int | None
    token: str
    msg: Msg
    ncpus: int
    record: JobRecord  # as this run's start wrote it
    revision: int  # ... and its KV revision then
    grant: Grant  # what it holds of the worker's pool
    inline_payload: bytes | None = None  # small payloads ride in the work message
    ledger: str | None = None  # the run ledger it is recorded in (run limits: limitgate.py)
    job: RunningJob | None = None
    feed: OutputFeed | None = None  # its live output, published while watched
    lost: bool = False  # another run took over: drop everything, no ack
    handed_back: bool = False
    # When (monotonic) the record last showed this run's token: at start, then at
    # each heartbeat. Its work message cannot have gone to another worker since.
    lease_seen: float = field(default_factory=time.monotonic)
    beaten: float = field(default_factory=time.monotonic)  # when its last heartbeat began
    # The KV revision of the record last followed (suspend, resume, walltime): an
    # older read (a slow heartbeat's) is not followed after a newer one.
    followed: int = 0
    following: asyncio.Lock = field(default_factory=asyncio.Lock)
    # When (monotonic) its usage so far is next written into its record.
    usage_due: float = field(default_factory=lambda: time.monotonic() + USAGE_FIRST_SECONDS)
    ended: bool = False  # its job's processes are gone


class Worker:
    def __init__(self, settings: Settings, runner: JobRunner | None = None) -> None:
        self.settings = settings
        # One directory per worker name: a restarted worker clears what it left.
        self.base_dir = jobs_root(settings.worker_dir) / settings.worker_name
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.runner = runner or LocalProcessRunner()
        # Jobs that name an image (PKBS_DOCKER_HOST: a daemon to run them on).
        self.containers: ContainerRunner | None = None
        self.slots = worker_pool(settings.worker_slots, settings.worker_ngpus,
                                 settings.worker_mem)
        self.node_changed = asyncio.Event()  # what the jobs hold changed: advertise it
        self.runs: dict[str, Run] = {}  # by run_key: "12" or "12.7"
        self.draining = asyncio.Event()
        self.hurried = asyncio.Event()  # a drain that is not to wait for running jobs
        self.stopped = asyncio.Event()
        self.host = socket.gethostname()
        self.account = account_name()
        self.workspaces = WorkspacePool(self.base_dir)
        self.nodefiles = NodeFiles(self.base_dir, self.host)
        self._tasks: set[asyncio.Task[None]] = set()
        self.connected = False
        # Array number -> whether it was not yet begun when a subjob of it started.
        self._array_queued: dict[int, bool] = {}
        self._array_payloads: dict[int, bytes] = {}  # array number -> payload, oldest first
        self._followers: set[asyncio.Task[None]] = set()  # runs reading a changed record
        self._watches: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        for leftover in self.base_dir.iterdir():  # what a previous life of this worker left
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        self.store = await JobStore.open(self.settings, f"worker-{self.settings.worker_name}")
        self.connected = True
        # The server's configuration (queues, limits), followed live.
        self.config = await ConfigStore.open(self.store.js, self.settings)
        await self.config.start()
        self.hooks = HookTable(self.config)  # execjob_begin / execjob_end, live too
        metrics.SLOTS.workers[self.settings.worker_name] = self.slots
        metrics.prepare(self.config.config.queues)
        self.delivery = Delivery(self.settings)
        if self.settings.docker_host:
            await self._open_containers(self.settings.docker_host)
        self.control = JobControl(self.store)
        self.registry = await NodeRegistry.open(
            self.store.js, self.settings.node_ttl_seconds, self.settings.stream_replicas
        )
        advertising = asyncio.create_task(self._advertise())
        self.gate = RunGate(self.store, await RunLedger.open(self.store.js), self.config)
        signal_sub = await self.store.nc.subscribe(
            f"{C.SIGNAL_SUBJECT_PREFIX}.>", cb=self._on_signal
        )
        adopt_sub = await self.store.nc.subscribe(
            f"{C.ADOPT_SUBJECT_PREFIX}.{self.settings.worker_name}", cb=self._on_adopt
        )
        watch_sub = await self.store.nc.subscribe(
            f"{C.OUTPUT_WATCH_PREFIX}.>", cb=self._on_watch
        )
        levels = source_levels(self.config.config.queues)
        source = await open_work_source(self.store.nc, self.config.config.queues)

        def levels_changed(store: ConfigStore) -> None:
            if source_levels(store.config.queues) != levels:
                source.wake()

        self.config.on_change(levels_changed)
        heartbeats = asyncio.create_task(self._heartbeats())
        expiry = asyncio.create_task(self._expire_undelivered())
        usage = asyncio.create_task(self._usage_updates())
        log.info("worker ready", extra={"worker": self.settings.worker_name})
        try:
            while not self.draining.is_set():
                if source_levels(self.config.config.queues) != levels:
                    # qmgr changed the queues' priorities or started ones: ask the
                    # consumers the dispatcher arranges for them.
                    for msg in await source.finish():
                        await self._return_untouched(msg)
                    levels = source_levels(self.config.config.queues)
                    source = await open_work_source(self.store.nc, self.config.config.queues)
                    log.info("work source follows the queues", extra={"consumers": levels})
                if self.slots.free <= 0:
                    await self.slots.wait_free()  # or until request_drain wakes it
                    continue
                try:
                    msgs = await source.fetch(self.slots.free, FETCH_TIMEOUT)
                except nats.errors.TimeoutError:
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.Error) as exc:
                    log.warning("fetch failed: %s", exc)
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    if self.draining.is_set() or not self.slots.try_acquire(1):
                        await self._return_untouched(msg)
                        continue
                    task = asyncio.create_task(self._handle(msg))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            for msg in await source.finish():
                await self._return_untouched(msg)
            await self._drain()
        finally:
            heartbeats.cancel()
            advertising.cancel()
            with contextlib.suppress(Exception):
                await self.registry.remove(self.settings.worker_name)
            expiry.cancel()
            usage.cancel()
            with contextlib.suppress(Exception):
                await signal_sub.unsubscribe()
                await adopt_sub.unsubscribe()
                await watch_sub.unsubscribe()
                await source.finish()
            await self.delivery.aclose()
            await self.config.stop()
            await self.store.close()
            metrics.SLOTS.workers.pop(self.settings.worker_name, None)
            self.stopped.set()

    async def _expire_undelivered(self) -> None:
        """Every PKBS_RETENTION_SWEEP_SECONDS, delete the results kept under
        pkbs-undelivered/ that are older than the job history (pkbs/retention.py)."""
        interval = self.settings.retention_sweep_seconds
        if interval <= 0:
            return
        root = undelivered_root(self.settings)
        while True:
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            try:
                history = history_seconds(self.config.config.server)
                for path in await asyncio.to_thread(expire_undelivered, root, history):
                    log.info("undelivered results expired: deleted %s", path)
            except Exception:
                log.exception("undelivered results not expired")

    async def _open_containers(self, docker_host: str) -> None:
        """The container runner, and what a previous life of this worker left on it."""
        api = DockerAPI(docker_host)
        runner = ContainerRunner(api, self.settings.worker_name)
        try:
            version = await api.version()
            removed = await runner.remove_leftovers()
        except DockerError as exc:
            await api.aclose()
            log.warning("no container jobs: %s", exc.message, extra={"docker": docker_host})
            return
        self.containers = runner
        log.info("container jobs on %s %s", version.get("Components", [{}])[0].get("Name",
                 "docker"), version.get("Version"),
                 extra={"docker": docker_host, "leftovers_removed": removed})

    async def _hand_over(self, msg: Msg, worker: str, token: str) -> bool:
        """Ask the worker running a job (run `token`) to take over this delivery of its
        work message; whether it did (False: that run is gone)."""
        if worker == self.settings.worker_name:
            return self._adopt(token, msg.reply)
        try:
            reply = await self.store.nc.request(
                f"{C.ADOPT_SUBJECT_PREFIX}.{worker}",
                token.encode(),
                timeout=2.0,
                headers={C.ADOPT_REPLY_HEADER: msg.reply},
            )
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            return False
        return reply.data == b"adopted"

    async def _on_adopt(self, request: Msg) -> None:
        subject = request.headers.get(C.ADOPT_REPLY_HEADER, "") if request.headers else ""
        adopted = bool(subject) and self._adopt(request.data.decode(), subject)
        await request.respond(b"adopted" if adopted else b"unknown")

    def _adopt(self, token: str, ack_subject: str) -> bool:
        """Heartbeat and acknowledge run `token` through a new delivery of its message."""
        run = next((r for r in self.runs.values() if r.token == token and not r.lost), None)
        if run is None:
            return False
        old = run.msg
        run.msg = Msg(
            _client=self.store.nc, subject=old.subject, reply=ack_subject, data=old.data,
            headers=old.headers,
        )
        run.beaten = 0.0  # a heartbeat on the new delivery soon
        log.info("work message delivered again, kept by its run", extra={"job": run.record.job_id})
        return True

    async def _return_untouched(self, msg: Msg) -> None:
        """Give back a message this worker will not run: a copy goes back in the queue
        and the original is terminated. (A nak is not stored: if the server stopped
        now, as when the whole stack goes down, the job would wait out ack_wait.) The
        copy stands for the original: a run the original started (whose worker was
        lost) is taken over by whoever gets the copy."""
        copy_id = f"{msg.header.get(C.MSG_ID_HEADER, '') if msg.header else ''}"
        copy_id += f"-returned-{msg.metadata.sequence.stream}"
        headers = {C.MSG_ID_HEADER: copy_id, C.WORK_SEQ_HEADER: str(work_seq(msg))}
        await self.store.js.publish(msg.subject, msg.data, headers=headers)
        await msg.term()
        metrics.GIVEN_BACK.inc()
        log.info("work message %d given back to the queue", msg.metadata.sequence.stream,
                 extra={"worker": self.settings.worker_name})

    def request_drain(self) -> None:
        self.draining.set()
        self.slots.wake()

    def hand_back_now(self) -> None:
        """End the drain's wait: running jobs are handed back (queued again) at once."""
        self.hurried.set()

    async def _drain(self) -> None:
        """No new jobs; running ones may finish within the grace (or until
        hand_back_now), the rest go back."""
        log.info(
            "draining: %d running jobs, up to %g s",
            len(self.runs),
            self.settings.drain_grace_seconds,
            extra={"worker": self.settings.worker_name},
        )
        if self._tasks:
            running = set(self._tasks)
            ended = asyncio.ensure_future(asyncio.wait(running))
            hurried = asyncio.ensure_future(self.hurried.wait())
            await asyncio.wait(
                {ended, hurried},
                timeout=self.settings.drain_grace_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            ended.cancel()  # only the waiting: the jobs' tasks go on
            hurried.cancel()
            pending = {task for task in running if not task.done()}
            if pending:
                for run in list(self.runs.values()):
                    run.handed_back = True
                    if run.job is not None:
                        await run.job.kill("drain")
                await asyncio.wait(pending)

    # -- one job --------------------------------------------------------------

    async def _handle(self, msg: Msg) -> None:
        # The CPU counted for this message (run loop) until its job takes what it asks.
        looking = True
        grant: Grant | None = None

        def stop_looking() -> None:
            nonlocal looking
            if looking:
                looking = False
                self.slots.release(1)

        run: Run | None = None

        async def free_slots() -> None:
            """The job's processes are gone: what it held serves the next job while
            this one's results are stored."""
            nonlocal grant
            if grant is not None:
                held, grant = grant, None
                self._give_back(held)

        try:
            item = WorkItem.model_validate_json(msg.data)
            if msg.metadata.num_delivered > 1:
                metrics.REDELIVERIES.labels(item.queue).inc()
            if item.last is not None:
                await self._expand(msg, item)
                return
            run = await self._begin(msg, item, stop_looking)
            if run is None:
                return
            grant = run.grant
            await self._execute(run, free_slots)
        except Exception:
            log.exception("job handling failed")
            with contextlib.suppress(Exception):
                await msg.nak(delay=1)
        finally:
            stop_looking()
            await free_slots()
            if run is not None and run.ledger is not None:
                await self.gate.release(run.ledger, run.token)

    def _give_back(self, grant: Grant) -> None:
        self.slots.give_back(grant)
        self.node_changed.set()

    async def _cannot_fit(self, msg: Msg, item: WorkItem, record: JobRecord | None,
                          wanted: NodeResources) -> None:
        """A job this worker cannot start for want of CPUs, GPUs or memory goes back
        to the queue, for another worker or for later; a queued job says why, as PBS's
        scheduler would: `Not Running: ...` (not now), `Can Never Run: ...` (no live
        worker has as much)."""
        here = self.slots.available
        free = here.minus(self.slots.assigned)
        short = here.short_of(wanted)
        if short is None:  # this worker has enough, not now
            short = free.short_of(wanted) or "ncpus"
            why = f"Not Running: {insufficient(short, wanted, free, here)}"
            delay = NOT_NOW_RETRY
        else:
            nodes = await self.registry.nodes()
            if any(node.available.short_of(wanted) is None for node in nodes):
                await msg.nak(delay=OTHER_WORKER_RETRY)  # one that can may take it
                return
            best = max(nodes, key=lambda node: node.available.get(short), default=None)
            if best is not None and best.available.get(short) > here.get(short):
                here, free = best.available, best.free
            why = f"Can Never Run: {insufficient(short, wanted, free, here)}"
            delay = NEVER_RUN_RETRY
        await msg.nak(delay=delay)
        if item.index is None and record is not None and record.comment != why:
            with contextlib.suppress(PkbsError):
                await self.store.update(item.number, lambda r: lifecycle.not_run(r, why))

    def _node(self) -> Node:
        jobs = [(run.record.job_id, run.grant.ncpus) for run in self.runs.values()]
        return Node(name=self.settings.worker_name, host=self.host,
                    available=self.slots.available, assigned=self.slots.assigned, jobs=jobs)

    async def _advertise(self) -> None:
        """Keep this worker's entry in the node registry: renewed every third of its
        time to live, and soon after what its jobs hold changes."""
        interval = self.settings.node_ttl_seconds / 3
        while True:
            try:
                await self.registry.publish(self._node())
            except (nats.errors.Error, OSError) as exc:
                log.warning("node registry not updated: %s", exc)
            self.node_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.node_changed.wait(), interval)
            await asyncio.sleep(ADVERTISE_PAUSE)  # at most so often, however busy

    async def _expand(self, msg: Msg, span: WorkItem) -> None:
        """Queue the next subjobs of an array span (and the rest as a new span), unless
        the array moved on: held, deleted or finished, or queued again since."""
        assert span.index is not None and span.last is not None
        try:
            array, _ = await self.store.get(span.number)
        except UnknownJob:
            await msg.term()
            return
        if array.state in (JobState.QUEUED, JobState.BEGUN, JobState.WAITING) and (
            array.enqueue_count == span.enqueue_count
        ):
            step = array.spec.array_indices().step
            await self.store.enqueue(array, range(span.index, span.last + 1, step))
        await msg.ack()

    async def _begin(
        self, msg: Msg, item: WorkItem, stop_looking: Callable[[], None]
    ) -> Run | None:
        """Take the job with a compare-and-set, and from the pool what it asks; None if
        it is not ours to run now (with what it asks not free here, it goes back)."""
        token = uuid.uuid4().hex
        admitted, ledger = await self.gate.admit(msg, item, token)
        if not admitted:
            return None
        attempt = StartAttempt(
            seq=work_seq(msg), token=token, worker=self.settings.worker_name, host=self.host,
            process_account=self.account if self.settings.job_runner == "process" else None,
            slots=self.slots, stop_looking=stop_looking, pool_changed=self.node_changed.set,
        )

        async def not_started() -> None:
            """What was taken for a run that does not start goes back."""
            attempt.give_back()
            if ledger is not None:
                await self.gate.release(ledger, token)

        try:
            started = await self._take(item, attempt)
            if attempt.owner is not None:
                # The message came again while its run may still be going: after the
                # dispatchers arranged the consumers anew (qmgr), or a late heartbeat.
                if await self._hand_over(msg, *attempt.owner):
                    await not_started()
                    return None  # its run's worker holds this delivery now
                attempt.owner_asked = True
                started = await self._take(item, attempt)
        except UnknownJob:
            await not_started()
            await msg.term()
            return None
        except NoRoom as no_room:
            await not_started()
            await self._cannot_fit(msg, item, no_room.record, no_room.wanted)
            return None
        except BaseException:
            await not_started()
            raise
        record, revision = started if started is not None else (None, 0)
        if record is None or record.run_token != token:
            await not_started()
            await self._left(msg, record, attempt)
            return None
        try:
            await self._started(record, attempt.lost)
        except BaseException:
            await not_started()
            raise
        assert attempt.grant is not None
        run = Run(
            number=item.number,
            index=item.index,
            token=token,
            msg=msg,
            ncpus=attempt.grant.ncpus,
            record=record,
            revision=revision,
            grant=attempt.grant,
            inline_payload=item.payload_bytes(),
            ledger=ledger,
        )
        attempt.grant = None  # the run's now: given back when its processes are gone
        return run

    async def _take(self, item: WorkItem, attempt: StartAttempt) -> tuple[JobRecord, int] | None:
        """The attempt's compare-and-set on the job's (or subjob's) record."""
        if item.index is None:
            queued = None if item.record is None or item.revision is None else (
                item.record, item.revision
            )
            return await self.store.cas(item.number, attempt.decide, known=queued)
        return await self._start_subjob(item, attempt.decide)

    async def _left(self, msg: Msg, record: JobRecord | None, attempt: StartAttempt) -> None:
        """The message did not start a run: back for the job's -a time, or done with."""
        if record is None and attempt.defer_for > 0:
            await msg.nak(delay=min(attempt.defer_for, MAX_DEFER_SECONDS))
            return
        if attempt.lost is not None and record is not None:  # ended: it is not rerunnable
            metrics.count_exit(record.spec.queue, metrics.LOST)
        await msg.ack()
        if record is not None and record.dependents:
            await self.control.notify_dependents(record)

    async def _started(self, record: JobRecord, lost: tuple[str, str] | None) -> None:
        """A run began (`lost`: in place of a lost run, its host and token)."""
        # The lost run was on this host: whoever should have ended it with its worker
        # (the stack's supervisor) may not have yet. It must not overlap this one.
        if lost is not None and lost[0] == self.host and run_key(record) not in self.runs:
            stale = await asyncio.to_thread(end_run, lost[1])
            if self.containers is not None:
                stale += await self.containers.end_run(run_id(lost[1]))
            log.warning("lost run ended", extra={"job": record.job_id, "processes": stale})
        log.info("job started", extra={"job": record.job_id, "worker": self.settings.worker_name})
        metrics.STARTED.inc()
        if lost is not None:
            metrics.count_exit(record.spec.queue, metrics.LOST)
        if record.run_count == 1 and record.stime is not None:
            metrics.WAIT_SECONDS.labels(record.spec.queue).observe(record.stime - record.ctime)
        if record.index is not None and self._array_queued.pop(record.number, False):
            await self.control.subjob_started(record.number)
        if record.dependents:
            await self.control.notify_dependents(record)

    async def _start_subjob(
        self, item: WorkItem, start: Callable[[JobRecord], JobRecord | None]
    ) -> tuple[JobRecord, int] | None:
        """A subjob's record is made when it first starts, from its array's."""
        assert item.index is not None
        array, _ = await self.store.get(item.number)
        if array.state not in (JobState.QUEUED, JobState.BEGUN, JobState.WAITING):
            return None  # held, deleted or finished: released arrays are queued again
        # Only the first subjobs find the array queued and mark it begun (B).
        self._array_queued[item.number] = array.state != JobState.BEGUN
        first = start(array.subjob(item.index))
        if first is not None:
            revision = await self.store.create_subjob(first)
            if revision is not None:
                return first, revision
        return await self.store.cas(item.number, start, item.index)

    async def _execute(self, run: Run, free_slots: Callable[[], Awaitable[None]]) -> None:
        record = run.record
        key = run_key(record)
        files = RunDir(self.workspaces, self.nodefiles, record)
        run.feed = OutputFeed(self.store.js, run.number, run.index, {
            name: files.stdout if name == "stdout" else files.stderr
            for name in record.output_streams
        })
        self.runs[key] = run
        try:
            if not await self._begin_hooks(run):
                return
            record = run.record
            try:
                request, before = await self._prepare(run, record, files)
            except (InvalidPayload, OSError) as exc:
                if disk_full_error(exc):
                    # This worker's disk is full, not the job's fault: another try later.
                    note = f"Worker {self.settings.worker_name}: disk full"
                    await self._hand_back(run, note, DISK_FULL_RETRY)
                    return
                if not isinstance(exc, (InvalidPayload, FileNotFoundError, IsADirectoryError)):
                    raise
                # The job can never start (bad payload, missing entry point): end it.
                await self._not_started(run, str(exc))
                return
            try:
                run.job = await self._runner_for(request).start(request)
            except ContainerCannotStart as exc:
                # Its image cannot be had or its container cannot start: end the job.
                await self._not_started(run, str(exc))
                return
            except OSError as exc:
                if exc.errno not in CANNOT_EXECUTE:
                    raise  # this worker's trouble (no descriptors, memory): another try
                # Its shell or program is missing or cannot be run: end the job.
                await self._not_started(run, str(exc))
                return
            if record.delete_requested:
                await run.job.kill("qdel")
            outcome = await run.job.wait()
            run.ended = True
            await run.feed.end()
            await free_slots()
            metrics.RUN_SECONDS.labels(record.spec.queue).observe(outcome.walltime)
            if run.lost or await self._lease_lost(run):
                return
            if run.handed_back:
                await self._hand_back(run)
                return
            notes = cap_outputs(files.outputs, self.settings.max_output_bytes)
            if disk_full(files.job):
                notes.append("the job's file system is full (No space left on device)")
            changed = changed_files(files.job, before)
            try:
                results = await self.delivery.store(record, files, changed)
            except ResultsNotStored as exc:
                # Not lost silently: the job ends with the reason, its files kept here.
                kept = self.delivery.keep_undelivered(record, files, changed)
                note = f"{exc} The job itself exited {outcome.exit_status}; {kept}"
                failed = dataclasses.replace(outcome, exit_status=EXIT_RESULTS_NOT_STORED)
                await self._finish(run, failed, [], "; ".join([note, *notes]))
                return
            if self.settings.deliver_local:
                notes += await self._deliver_locally(record, files, results)
            await self._finish(run, outcome, results, "; ".join(notes) or None)
        finally:
            self.runs.pop(key, None)
            run.feed.release()
            # A daemon the job left (still running beside other jobs) may hold its
            # directory and files: then they are not handed to another run.
            files.cleanup(reuse=not self.runner.leftovers())

    async def _deliver_locally(
        self, record: JobRecord, files: RunDir, results: list[ResultFile]
    ) -> list[str]:
        """Copy the .o/.e to Output_Path / Error_Path (a local stack): small ones at
        once, since a thread hop costs more CPU than the copy; large ones in a thread."""
        names = {name for name, _ in files.outputs}
        size = sum(result.size for result in results if result.name in names)
        if size <= INLINE_COPY_BYTES:
            return self.delivery.deliver_locally(record, files)
        return await asyncio.to_thread(self.delivery.deliver_locally, record, files)

    async def _begin_hooks(self, run: Run) -> bool:
        """Run the execjob_begin hooks; False if one refused the run (the job is then
        queued again, or held after too many refusals). Their changes (comment, the
        job's environment) are stored before the job starts."""
        chosen = self.hooks.for_event(EXECJOB_BEGIN)
        if not chosen:
            return True
        outcome = await run_hooks(
            chosen,
            EXECJOB_BEGIN,
            record_job(run.record),
            requestor=EXEC_REQUESTOR,
            requestor_host=self.host,
        )
        if not outcome.accepted:
            await self._start_rejected(run)
            return False
        if not outcome.changes:
            return True
        has_comment, comment = changed_comment(outcome.changes)
        variables = outcome.changes.get("Variable_List")

        def change(current: JobRecord) -> JobRecord | None:
            if current.run_token != run.token:
                return None
            update: dict[str, object] = {}
            if has_comment:
                update["comment"] = comment
            if variables is not None:
                spec = current.spec.model_copy(update={"variables": dict(variables)})
                update["spec"] = spec
            return current.model_copy(update=update)

        changed = await self.store.cas(run.number, change, run.index,
                                       known=(run.record, run.revision))
        if changed is None:
            run.lost = True  # another run owns the job now
            return False
        run.record, run.revision = changed
        return True

    async def _start_rejected(self, run: Run) -> None:
        def refuse(current: JobRecord) -> JobRecord | None:
            if current.run_token != run.token:
                return None
            return lifecycle.start_rejected(current)

        result = await self.store.cas(run.number, refuse, run.index,
                                      known=(run.record, run.revision))
        if result is None:
            return
        record = result[0]
        log.warning("execjob_begin hook rejected the job; %s", record.comment,
                    extra={"job": record.job_id, "state": record.state.value})
        if is_pending(record.state):
            await run.msg.nak(delay=HOOK_REJECT_RETRY)
        else:
            await run.msg.ack()  # held: qrls queues it again

    async def _end_hooks(self, run: Run, ended: lifecycle.RunEnd) -> lifecycle.RunEnd:
        """Run the execjob_end hooks on the job as it ends (Exit_status, usage), before
        the final record is written: the comment and resources_used they set stick.
        A refusal changes nothing else (the job has ended), as in PBS."""
        chosen = self.hooks.for_event(EXECJOB_END)
        if not chosen:
            return ended
        view = record_job(lifecycle.finished(run.record, ended, time.time()))
        view["job_state"] = JobState.EXITING.value
        outcome = await run_hooks(
            chosen, EXECJOB_END, view, requestor=EXEC_REQUESTOR, requestor_host=self.host
        )
        if not outcome.accepted:
            return ended
        has_comment, comment = changed_comment(outcome.changes)
        used = dict(ended.resources_used)
        for name, value in (outcome.changes.get("resources_used") or {}).items():
            if value is None:
                used.pop(name, None)
            else:
                used[name] = str(value)
        return dataclasses.replace(
            ended, comment=comment if has_comment else ended.comment, resources_used=used
        )

    def _runner_for(self, request: RunRequest) -> JobRunner:
        """The worker's runner (local processes, or a pod for every job), or for a job
        that names an image, a container of it."""
        if request.image is None or self.settings.job_runner == "pod":
            return self.runner
        if self.containers is None:
            raise ContainerCannotStart(
                f"image {request.image}: worker {self.settings.worker_name} runs no container "
                "jobs (no Docker daemon: PKBS_DOCKER_HOST)"
            )
        return self.containers

    async def _prepare(
        self, run: Run, record: JobRecord, files: RunDir
    ) -> tuple[RunRequest, dict[str, tuple[int, int]]]:
        """Unpack the payload in a fresh directory and describe the run."""
        job_dir = files.job
        data = run.inline_payload
        if data is None:
            data = await self._payload(run.number, record.index is not None)
        if record.spec.payload_format == "file":
            write_entrypoint(job_dir / record.spec.entrypoint, data)
        else:
            safe_unpack(data, job_dir)
        before = snapshot(job_dir)
        token = None
        if self.settings.job_token_secret and self.settings.job_endpoint:
            token = tokens.mint(
                self.settings.job_token_secret.get_secret_value(),
                record.owner,
                record.number,
                time.time() + 7 * 24 * 3600,
            )
        env = build_env(
            record, job_dir, files.tmp, files.nodefile, self.settings.job_endpoint, token,
            gpus=run.grant.gpus if self.slots.available.ngpus else None,
        )
        image = record.spec.image
        request = RunRequest(
            job_dir=job_dir,
            # An image's shell may be only /bin/sh (a process job's default is bash).
            command=build_command(record, job_dir, "/bin/sh" if image else "/bin/bash"),
            env=env,
            stdout_path=files.stdout,
            stderr_path=files.stderr,
            walltime=job_walltime(record.spec.resources),
            mem_limit=job_mem_bytes(record.spec.resources),
            kill_grace=self.settings.kill_grace_seconds,
            ncpus=run.ncpus,
            image=image,
        )
        return request, before

    async def _payload(self, number: int, subjob: bool) -> bytes:
        """A job's payload from PKBS_SUBMIT. A submission's payload never changes, so
        the last few arrays' payloads are kept: their subjobs need them one by one."""
        data = self._array_payloads.pop(number, None)
        if data is None:
            data = await self.store.payload(number)
        if subjob:
            self._array_payloads[number] = data  # (re)inserted last: the newest
            while len(self._array_payloads) > ARRAY_PAYLOADS_KEPT:
                del self._array_payloads[next(iter(self._array_payloads))]
        return data

    async def _not_started(self, run: Run, reason: str) -> None:
        """The job can never start: it ends saying why, then the message is acked."""

        def end(current: JobRecord) -> JobRecord | None:
            if current.run_token != run.token:
                return None  # fenced out: another run owns the job now
            return lifecycle.could_not_start(current, reason, time.time())

        await self._record_end(run, end)

    async def _finish(
        self, run: Run, outcome: RunOutcome, files: list[ResultFile], comment: str | None
    ) -> None:
        """Record the end of the run whose results are stored, then ack. The run's
        results become the job's only if this compare-and-set wins."""
        record = run.record
        path = self.delivery.run_path(record)
        ended = lifecycle.RunEnd(
            exit_status=outcome.exit_status,
            session_id=outcome.session_id,
            resources_used=resources_used(outcome, run.ncpus),
            results=files,
            results_path=path,
            results_url=self.delivery.url(path),
            comment=comment,
        )
        ended = await self._end_hooks(run, ended)

        def end(current: JobRecord) -> JobRecord | None:
            if current.run_token != run.token:
                return None  # fenced out: another run owns the job now
            return lifecycle.finished(current, ended, time.time())

        if not await self._record_end(run, end):
            # It got as far as storing results, maybe all of them.
            await self.delivery.remove_runs(record, [record.run_count])
            return
        # Earlier runs lost the job, but one whose worker was cut off may have stored
        # its results since (it removes them itself when its end is refused, if it can).
        await self.delivery.remove_runs(record, range(1, record.run_count))

    async def _record_end(self, run: Run, end: Callable[[JobRecord], JobRecord | None]) -> bool:
        """Write the job's final record, tell its dependants, ack; False if the run was
        superseded (nothing written, no ack)."""
        result = await self.store.cas(run.number, end, run.index, known=(run.record, run.revision))
        if result is None:
            log.warning("run was superseded; result dropped", extra={"job": run.record.job_id})
            return False
        final = result[0]
        if final.dependents:
            await self.control.notify_dependents(final)
        await run.msg.ack()  # (an array's dispatchers count its ended subjobs)
        metrics.FINISHED.inc()
        metrics.count_exit(final.spec.queue, metrics.exit_class(final))
        log.info(
            "job finished",
            extra={
                "job": final.job_id,
                "state": final.state.value,
                "exit_status": final.exit_status,
            },
        )
        return True

    async def _hand_back(
        self, run: Run, reason: str | None = None, retry_after: float | None = None
    ) -> None:
        """Queue the job again. With `retry_after` the same message comes back after
        that delay (this worker cannot run it now); else a fresh message goes out."""

        def requeue(current: JobRecord) -> JobRecord | None:
            if current.run_token != run.token:
                return None
            return lifecycle.requeued(current, reason, fresh_message=retry_after is None)

        # A fresh work message, not a nak: a nak is not stored, and a stack stopping
        # right after would leave the job waiting out ack_wait when it comes back.
        record = await self.store.update(run.number, requeue, run.index)
        if record is None:
            return
        metrics.count_exit(record.spec.queue, metrics.RERUN)
        if retry_after is not None:
            await run.msg.nak(delay=retry_after)
            return
        await self.store.enqueue(record)
        await run.msg.ack()

    async def _lease_lost(self, run: Run) -> bool:
        """Before storing results: if no heartbeat has confirmed the run for most of an
        ack wait (this worker was stopped, or starved), the job may have been rerun
        elsewhere meanwhile; then its results must not overwrite the new run's."""
        if time.monotonic() - run.lease_seen < 0.8 * self.settings.ack_wait_seconds:
            return False
        try:
            record, _ = await self.store.get(run.number, run.index)
        except UnknownJob:
            record = None
        if record is None or record.run_token != run.token:
            log.warning("run was superseded while this worker was stalled; results dropped",
                        extra={"job": run.record.job_id})
            run.lost = True
        return run.lost

    async def _heartbeats(self) -> None:
        """One loop for every run on this worker: about every ack_wait / 3 of a run, keep
        its message ours (in_progress) and check its record (qdel, qrerun, lost lease)."""
        interval = self.settings.ack_wait_seconds / 3
        beats: set[asyncio.Task[None]] = set()
        while True:
            await asyncio.sleep(interval / 4)
            now = time.monotonic()
            for run in list(self.runs.values()):
                if now - run.beaten >= interval:
                    run.beaten = now
                    task = asyncio.create_task(self._heartbeat(run))
                    beats.add(task)
                    task.add_done_callback(beats.discard)

    async def _heartbeat(self, run: Run) -> None:
        try:
            await run.msg.in_progress()
            record, revision = await self.store.get(run.number, run.index)
        except (PkbsError, nats.errors.Error) as exc:
            log.warning("heartbeat failed: %s", exc, extra={"job": run.number})
            return
        if record.run_token != run.token:
            run.lost = True
            if run.job is not None:
                await run.job.kill("lost")
            return
        run.lease_seen = time.monotonic()
        if record.delete_requested and run.job is not None:
            await run.job.kill("qdel")
        elif record.rerun_requested and run.job is not None:
            run.handed_back = True
            await run.job.kill("qrerun")
        else:
            await self._follow(run, record, revision)

    async def _refresh(self, run: Run) -> None:
        """The run's record changed (qsig -s suspend / resume, qalter -l walltime)."""
        try:
            record, revision = await self.store.get(run.number, run.index)
        except (PkbsError, nats.errors.Error) as exc:
            log.warning("record not read: %s", exc, extra={"job": run.record.job_id})
            return
        if record.run_token == run.token:
            await self._follow(run, record, revision)

    async def _follow(self, run: Run, record: JobRecord, revision: int) -> None:
        """Do what the run's record says: its processes stopped while it is suspended
        (S), running while R; its walltime limit the record's (a running job's
        walltime may be altered: it takes effect at once)."""
        job = run.job
        if job is None:
            return
        async with run.following:
            if revision <= run.followed:
                return
            run.followed = revision
            job.clock.set_limit(job_walltime(record.spec.resources))
            if record.state == JobState.SUSPENDED and not job.clock.paused:
                try:
                    await job.suspend()
                except CannotSuspend as exc:
                    await self._not_suspended(run, str(exc))
            elif record.state == JobState.RUNNING and job.clock.paused:
                await job.resume()

    async def _not_suspended(self, run: Run, reason: str) -> None:
        def back(current: JobRecord) -> JobRecord | None:
            if current.run_token != run.token or current.state != JobState.SUSPENDED:
                return None
            return lifecycle.suspend_refused(current, reason)

        result = await self.store.cas(run.number, back, run.index)
        if result is not None:
            run.followed = max(run.followed, result[1])

    async def _usage_updates(self) -> None:
        """resources_used and session_id of the jobs running here, into their records:
        USAGE_FIRST_SECONDS after each starts, then every PKBS_USAGE_UPDATE_SECONDS (a
        compare-and-set that only this run may make, as its final one)."""
        writes: set[asyncio.Task[None]] = set()
        while True:
            await asyncio.sleep(USAGE_TICK_SECONDS)
            now = time.monotonic()
            for run in list(self.runs.values()):
                if run.job is None or run.ended or now < run.usage_due:
                    continue
                run.usage_due = now + self.settings.usage_update_seconds
                task = asyncio.create_task(self._write_usage(run, run.job))
                writes.add(task)
                task.add_done_callback(writes.discard)

    async def _write_usage(self, run: Run, job: RunningJob) -> None:
        usage = job.usage()
        if usage is None:
            return
        used = resources_used(usage, run.ncpus)

        def note(current: JobRecord) -> JobRecord | None:
            if run.ended or current.run_token != run.token or current.state != JobState.RUNNING:
                return None
            return lifecycle.usage_noted(current, used, job.session_id)

        try:
            result = await self.store.cas(run.number, note, run.index,
                                          known=(run.record, run.revision))
        except (PkbsError, nats.errors.Error) as exc:
            log.warning("usage not noted: %s", exc, extra={"job": run.record.job_id})
            return
        if result is not None and not run.ended:
            run.record, run.revision = result
            run.lease_seen = time.monotonic()  # the record still names this run

    async def _on_watch(self, msg: Msg) -> None:
        """Someone watches the output of a job running here (see outputfeed.py)."""
        run = self.runs.get(msg.subject[len(C.OUTPUT_WATCH_PREFIX) + 1 :])
        if run is None or run.feed is None or not msg.reply:
            return  # not here (another worker's, or ended): no answer
        task = asyncio.create_task(self._serve_watch(msg, run.feed))
        self._watches.add(task)
        task.add_done_callback(self._watches.discard)

    async def _serve_watch(self, msg: Msg, feed: OutputFeed) -> None:
        reply: dict[str, object]
        if self.settings.job_runner == "pod":
            reply = {"error": "live output is not available for jobs run as pods; "
                              "`pkbs logs` shows it once the job has ended"}
        else:
            try:
                await feed.watch()
                reply = {"ok": True}
            except (OSError, nats.errors.Error) as exc:
                reply = {"error": f"live output not available: {exc}"}
        with contextlib.suppress(nats.errors.Error):
            await msg.respond(json.dumps(reply).encode())

    async def _on_signal(self, msg: Msg) -> None:
        """qdel (SIGTERM, then SIGKILL after the grace), qrerun, qsig, or a changed
        record (suspend, resume, walltime) for a job running here."""
        run = self.runs.get(msg.subject[len(C.SIGNAL_SUBJECT_PREFIX) + 1 :])
        if run is None or run.job is None:
            return
        name = msg.data.decode(errors="replace")
        if name in (C.KILL_REQUEST, C.RERUN_REQUEST, C.CHANGED_REQUEST):
            if name == C.KILL_REQUEST:
                task = asyncio.create_task(run.job.kill("qdel"))
            elif name == C.RERUN_REQUEST:
                run.handed_back = True
                task = asyncio.create_task(run.job.kill("qrerun"))
            else:
                task = asyncio.create_task(self._refresh(run))
            self._followers.add(task)
            task.add_done_callback(self._followers.discard)
            return
        signo = signal_number(name)
        if signo is not None:
            run.job.send_signal(signo)


def work_seq(msg: Msg) -> int:
    """Which work message this is, as a job's record names the one that started its
    run: its stream sequence, or for a copy given back to the queue, the original's."""
    original = msg.headers.get(C.WORK_SEQ_HEADER) if msg.headers else None
    return int(original) if original else msg.metadata.sequence.stream


def resources_used(outcome: RunUsage, ncpus: int) -> dict[str, str]:
    """The run's resources_used (so far, or in all), as PBS writes them."""
    return {
        "cput": format_duration(outcome.cput),
        "walltime": format_duration(outcome.walltime),
        "mem": f"{outcome.max_rss_kb}kb",
        "ncpus": str(ncpus),
        "cpupercent": str(int(100 * outcome.cput / max(outcome.walltime, 1e-3))),
    }


def account_name() -> str:
    """The name of the account this process runs as (its uid if it has none)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def write_entrypoint(path: Path, data: bytes) -> None:
    """A payload that is the job's one file (a script or an executable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def disk_full_error(exc: BaseException | None) -> bool:
    """Whether `exc`, or what caused it, is a full disk (ENOSPC / EDQUOT)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full(path: Path, margin: int = 64 * 1024) -> bool:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize < margin


def cap_outputs(outputs: list[tuple[str, Path]], limit: int) -> list[str]:
    """Cut stdout/stderr files over `limit` bytes, with a note at the end of each."""
    notes = []
    for name, path in outputs:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        if size <= limit:
            continue
        note = f"output {name} cut at the {limit}-byte cap (the job wrote {size} bytes)"
        with open(path, "r+b") as fh:
            fh.truncate(limit)
            fh.seek(limit)
            fh.write(f"\n=>> pkbs: {note}\n".encode())
        notes.append(note)
    return notes
