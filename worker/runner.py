"""Run one job: the only place that knows how a job's processes are started.

Today a local process group; a Kubernetes pod executor can implement the same
two methods later (start a job, then wait for / kill it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pkbs.procs import become_subreaper, has_env, kill_tree, own_children, reap, stat_fields

from .runclock import RunClock, ended_within_walltime

# PBS's JOB_EXEC_KILL_WALLTIME / _KILL_MEM: Exit_status of a job killed for running
# too long / using more memory than it asked for.
EXIT_WALLTIME = -29
EXIT_MEM = -27
MEMORY_POLL_SECONDS = 0.5
# Without a memory limit a job's memory is sampled ever less often, up to this pause.
MEMORY_SAMPLE_MAX_SECONDS = 10.0
SIGNAL_BASE = 256  # PBS: a job shell killed by signal N exits 256 + N


def pbs_exit_status(kill_reason: str | None, code: int, signal: int | None = None) -> int:
    """A job's Exit_status as PBS gives it, whatever ran it: -29 killed for its
    walltime, -27 for its memory, 256 + N ended by signal N, else its exit code."""
    if kill_reason == "walltime":
        return EXIT_WALLTIME
    if kill_reason == "mem":
        return EXIT_MEM
    if signal:
        return SIGNAL_BASE + signal
    return code


def sent_signal(kill_reason: str | None, code: int) -> int | None:
    """The signal behind a shell-style exit code (128 + N) of a container whose job
    pkbs itself signalled (qdel, drain, rerun); None otherwise."""
    return code - 128 if kill_reason is not None and code > 128 else None


def killed_line(what: str) -> str:
    """The line PBS's MoM adds to a job's stderr when it kills the job."""
    return f"=>> PBS: job killed: {what}"


def note_killed(stderr_path: Path, what: str) -> None:
    with open(stderr_path, "ab") as err:
        err.write(f"{killed_line(what)}\n".encode())


@dataclass(frozen=True)
class RunRequest:
    job_dir: Path
    command: list[str]
    env: dict[str, str]
    stdout_path: Path
    stderr_path: Path
    walltime: float | None = None  # seconds; None = unlimited
    mem_limit: int | None = None  # bytes of resident memory of the whole job
    kill_grace: float = 10.0
    ncpus: int = 1
    image: str | None = None  # a container job's image (worker/containers.py)


@dataclass
class RunUsage:
    """What a run has used: so far (resources_used while it runs), or in all."""

    walltime: float
    cput: float
    max_rss_kb: int


@dataclass
class RunOutcome(RunUsage):
    exit_status: int
    session_id: int


class CannotSuspend(Exception):
    """The runner cannot stop this job's processes (qsig -s suspend): why."""


class RunningJob(Protocol):
    session_id: int
    clock: RunClock  # its walltime: paused while suspended, its limit changeable

    def usage(self) -> RunUsage | None:
        """What the job has used so far; None where the worker cannot see it."""
        ...

    async def wait(self) -> RunOutcome: ...

    async def kill(self, reason: str) -> None:
        """SIGTERM, once however often asked, then SIGKILL after the grace."""
        ...

    def send_signal(self, signo: int) -> None: ...

    async def suspend(self) -> None:
        """Stop the job's processes and its walltime clock (CannotSuspend)."""
        ...

    async def resume(self) -> None:
        """Continue them, and the clock."""
        ...


class JobRunner(Protocol):
    async def start(self, request: RunRequest) -> RunningJob: ...

    def leftovers(self) -> bool:
        """Whether a process of an ended job may still run (and so still use that
        job's directories and output files)."""
        ...


def watch_exit(pid: int) -> asyncio.Future[tuple[int, int, Any]]:
    """A future for os.wait4(pid): woken by a pidfd where Linux has them (no thread
    per job), else waited for in the default executor."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return loop.run_in_executor(None, os.wait4, pid, 0)
    future: asyncio.Future[tuple[int, int, Any]] = loop.create_future()

    def exited() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        try:
            future.set_result(os.wait4(pid, 0))
        except OSError as exc:
            future.set_exception(exc)

    loop.add_reader(pidfd, exited)
    return future


OUTPUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def spawn(request: RunRequest, home: int) -> int:
    """Start the job's program as the leader of a new session, in the job's directory,
    stdin from /dev/null, stdout and stderr to their files; its pid.

    os.posix_spawn (clone with a shared address space, no Python between it and exec)
    costs the worker about a quarter of the CPU subprocess.Popen does (measured ~0.1
    against 0.2-0.4 ms per start, docs/performance.md). On Python 3.11 it has no
    working-directory action, so the worker changes its own directory around the call
    and goes back to `home` (a descriptor of where it was); its event loop runs
    nothing else meanwhile, and no path it uses is relative. The job inherits no
    descriptor of the worker's: Python opens them all close-on-exec. Like Popen's
    restore_signals, the signals Python ignores are reset to default, and the job
    starts with no signal blocked."""
    actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(request.stdout_path), OUTPUT_FLAGS, 0o666),
    ]
    if request.stderr_path == request.stdout_path:
        actions.append((os.POSIX_SPAWN_DUP2, 1, 2))
    else:
        actions.append((os.POSIX_SPAWN_OPEN, 2, str(request.stderr_path), OUTPUT_FLAGS, 0o666))
    os.chdir(request.job_dir)
    try:
        return os.posix_spawn(
            request.command[0],
            request.command,
            request.env,
            file_actions=actions,
            setsid=True,
            setsigmask=(),
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    finally:
        os.fchdir(home)


class LocalProcessJob:
    """A job running as its own process group (session) on this host."""

    def __init__(
        self,
        request: RunRequest,
        home: int,
        on_exit: Callable[[int], None] | None = None,
        census: SessionCensus | None = None,
    ) -> None:
        self.request = request
        self.on_exit = on_exit
        self.clock = RunClock(request.walltime)
        self.census = census or SessionCensus()
        # A child's ru_maxrss counts the address space it was forked from (this
        # worker's) until it execs: only above the worker's own peak is it the job's.
        self.spawner_peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.peak_rss = 0  # bytes: the largest resident size of the session sampled
        self.session_id = spawn(request, home)  # the job's leader: its pid is the session's
        self.kill_reason: str | None = None
        self._killing: asyncio.Task[None] | None = None
        self._reaped = watch_exit(self.session_id)
        self._memory_watch: asyncio.Task[None] | None = None
        self._first_sample: asyncio.TimerHandle | None = None
        if request.mem_limit:
            self._watch_memory_now()
        else:  # a job that ends within the first pause is never sampled
            loop = asyncio.get_running_loop()
            self._first_sample = loop.call_later(MEMORY_POLL_SECONDS, self._watch_memory_now)

    def _watch_memory_now(self) -> None:
        self._memory_watch = asyncio.create_task(self._watch_memory(self.request.mem_limit))

    async def wait(self) -> RunOutcome:
        _, status, usage = await ended_within_walltime(
            self._reaped, self.clock, self.kill,
            functools.partial(note_killed, self.request.stderr_path))
        if self._first_sample is not None:
            self._first_sample.cancel()
        if self._memory_watch is not None:
            self._memory_watch.cancel()
        # Whatever the job left behind in its process group goes with it.
        self._signal_group(signal.SIGKILL)
        if self.on_exit is not None:
            self.on_exit(self.session_id)
        elapsed = self.clock.used()
        signalled = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        return RunOutcome(
            exit_status=pbs_exit_status(self.kill_reason, os.WEXITSTATUS(status), signalled),
            walltime=elapsed,
            cput=usage.ru_utime + usage.ru_stime,
            max_rss_kb=(
                int(usage.ru_maxrss)
                if usage.ru_maxrss > self.spawner_peak_kb
                else self.peak_rss // 1024
            ),
            session_id=self.session_id,
        )

    def usage(self) -> RunUsage:
        """Walltime so far, CPU time of the session's processes (with the children they
        waited for) and the largest resident size sampled, now included."""
        rss, ticks = self.census.usage(self.session_id)
        self.peak_rss = max(self.peak_rss, rss)
        return RunUsage(walltime=self.clock.used(), cput=ticks / CLOCK_TICKS,
                        max_rss_kb=self.peak_rss // 1024)

    async def _watch_memory(self, limit: int | None) -> None:
        """Sample the resident size of the job's whole session, as PBS's MoM does, for
        resources_used.mem. With a limit (-l mem) every MEMORY_POLL_SECONDS, and the
        job is killed above it (its processes together); without one ever less often."""
        pause = MEMORY_POLL_SECONDS
        while not self._reaped.done():
            used = session_rss(self.session_id)
            self.peak_rss = max(self.peak_rss, used)
            if limit is not None and used > limit:
                note_killed(self.request.stderr_path,
                            f"mem {used // 1024}kb exceeded limit {limit // 1024}kb")
                await self.kill("mem")
                return
            await asyncio.sleep(pause)
            if limit is None:
                pause = min(pause * 2, MEMORY_SAMPLE_MAX_SECONDS)

    async def kill(self, reason: str) -> None:
        """SIGTERM the whole group, SIGKILL after the grace period: once, however often
        it is asked (qdel, the heartbeat seeing the qdel, the walltime)."""
        if self.kill_reason is None:
            self.kill_reason = reason
        if self._reaped.done():
            return
        if self._killing is None:
            self._killing = asyncio.ensure_future(self._terminate())
        await asyncio.shield(self._killing)

    async def _terminate(self) -> None:
        self._signal_group(signal.SIGTERM)
        if self.clock.paused:  # a suspended job must run to see its SIGTERM
            self.clock.resume()
            self._signal_group(signal.SIGCONT)
        try:
            await asyncio.wait_for(asyncio.shield(self._reaped), self.request.kill_grace)
        except TimeoutError:
            self._signal_group(signal.SIGKILL)

    def send_signal(self, signo: int) -> None:
        self._signal_group(signo)

    async def suspend(self) -> None:
        """SIGSTOP to the group, as MoM's suspend signal; its walltime stops too."""
        if self._killing is None and not self.clock.paused:
            self._signal_group(signal.SIGSTOP)
            self.clock.pause()

    async def resume(self) -> None:
        if self.clock.paused:
            self.clock.resume()
            self._signal_group(signal.SIGCONT)

    def _signal_group(self, signo: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.session_id, signo)


def session_rss(session_id: int) -> int:
    """Resident bytes of every process in a session (from /proc)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in os.scandir("/proc"):
        fields = stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and int(fields[3]) == session_id:
            total += int(fields[21]) * page
    return total


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class SessionCensus:
    """Resident bytes and CPU ticks of every session on this host, from one pass over
    /proc (utime + stime + cutime + cstime of each process: what it and the children it
    waited for used), which serves every ask within FRESH_SECONDS: the usage of all
    the jobs due at once costs one pass, however many they are."""

    FRESH_SECONDS = 0.2

    def __init__(self) -> None:
        self._taken = -1e9
        self._sessions: dict[int, tuple[int, int]] = {}

    def usage(self, session_id: int) -> tuple[int, int]:
        if time.monotonic() - self._taken > self.FRESH_SECONDS:
            self._sessions = self._count()
            self._taken = time.monotonic()
        return self._sessions.get(session_id, (0, 0))

    @staticmethod
    def _count() -> dict[int, tuple[int, int]]:
        page = os.sysconf("SC_PAGE_SIZE")
        sessions: dict[int, tuple[int, int]] = {}
        for entry in os.scandir("/proc"):
            fields = stat_fields(int(entry.name)) if entry.name.isdigit() else None
            if fields is None:
                continue
            session = int(fields[3])
            rss, ticks = sessions.get(session, (0, 0))
            sessions[session] = (rss + int(fields[21]) * page,
                                 ticks + sum(int(f) for f in fields[11:15]))
        return sessions


def end_strays(job_id: str, leaders: set[int]) -> None:
    """Kill what a finished job left running outside its session (they are our
    children now) and reap our children that are not running jobs' leaders.

    A stray is known by the job's PBS_JOBID in its environment, or, if it cleared
    that, by its age: a child that is no running job's leader and started before the
    oldest running job did can only come from a job that has ended (one started
    later may be a running job's helper, and is left until that job ends)."""
    oldest = min((t for t in map(start_ticks, leaders) if t is not None), default=None)
    for pid in own_children():
        if pid in leaders:
            continue
        started = start_ticks(pid)
        older = started is not None and (oldest is None or started < oldest)
        if older or has_env(pid, "PBS_JOBID", job_id):
            kill_tree(pid)
        else:
            reap(pid)


def start_ticks(pid: int) -> int | None:
    """When a process started (clock ticks since boot, /proc/<pid>/stat field 22)."""
    fields = stat_fields(pid)
    return None if fields is None else int(fields[19])


class LocalProcessRunner:
    """Starts jobs as local process groups. It is a child subreaper, so what a job
    leaves behind outside its group comes back to it and is ended with the job."""

    def __init__(self) -> None:
        self.groups: dict[int, str] = {}  # session id -> job id, of running jobs
        self.subreaper = become_subreaper()
        # Where the worker works: spawn() comes back here after each start.
        self.home = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.census = SessionCensus()

    async def start(self, request: RunRequest) -> RunningJob:
        job = LocalProcessJob(request, self.home, on_exit=self._forget, census=self.census)
        self.groups[job.session_id] = request.env.get("PBS_JOBID", "")
        return job

    def leftovers(self) -> bool:
        """A child that is not a running job's leader: a daemon an ended job left,
        waiting for the jobs running beside it to end (see end_strays). Without the
        subreaper there is no knowing: True."""
        return not self.subreaper or any(pid not in self.groups for pid in own_children())

    def _forget(self, session_id: int) -> None:
        job_id = self.groups.pop(session_id, None)
        if self.subreaper and job_id:
            end_strays(job_id, set(self.groups))
