"""The embedded local stack: `pkbs up` / `pkbs down` / `pkbs status`.

`pkbs up` starts a supervisor (`python -m pkbs.local`) in the background. It runs
nats-server (JetStream, store under $PKBS_HOME/nats), the built-in WebDAV server,
one dispatcher and the workers, all on loopback; restarts any of them that dies,
as a Kubernetes Deployment would; and on SIGTERM stops exactly what it started.
Its state file ($PKBS_HOME/run/stack.json) lists every process and port.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pkbs import clientconfig, servers
from pkbs.errors import StackError
from pkbs.logs import iso_utc
from pkbs.procs import (
    become_subreaper,
    hide_from_jobs,
    kill_tree,
    own_children,
    reap,
    stat_fields,
)
from pkbs.settings import get_settings

STATE_FILE = "run/stack.json"
SECRETS_FILE = "secrets.json"
RESTART_BACKOFF_MAX = 10.0


def home_dir() -> Path:
    return clientconfig.pkbs_home()


def state_path(home: Path) -> Path:
    return home / STATE_FILE


def load_secrets(home: Path) -> dict[str, str]:
    """Generated once per $PKBS_HOME; kept 0600 beside the data they protect."""
    path = home / SECRETS_FILE
    if path.exists():
        data: dict[str, str] = json.loads(path.read_text())
        return data
    data = {
        "nats_user": "pkbs",
        "nats_password": secrets.token_urlsafe(24),
        "webdav_user": "pkbs",
        "webdav_password": secrets.token_urlsafe(24),
        "admin_token": secrets.token_urlsafe(32),
        "job_token_secret": secrets.token_urlsafe(32),
    }
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    return data


def read_state(home: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(state_path(home).read_text())
    except (OSError, ValueError):
        return None
    return data


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def nats_server_env(cpus: int | None = None) -> dict[str, str]:
    """The embedded nats-server's scheduler threads (GOMAXPROCS): a quarter of the
    cores, at least one, unless GOMAXPROCS is set already. On this stack it shares the
    cores with the dispatcher, the workers and their jobs, and waking its idle threads
    on other cores for each message costs more than they bring (measured on 2 cores:
    nats-server's share of the stack's CPU per trivial job 17-19 % with one thread,
    21-23 % with two; docs/performance.md)."""
    if "GOMAXPROCS" in os.environ:
        return {}
    return {"GOMAXPROCS": str(max(1, (cpus or os.cpu_count() or 1) // 4))}


def docker_host() -> str | None:
    """The Docker (or Podman) daemon container jobs run on: PKBS_DOCKER_HOST if set
    (empty: none), else the usual socket if a daemon answers there."""
    given = os.environ.get("PKBS_DOCKER_HOST")
    if given is not None:
        return given or None
    from pkbs.dockerapi import DEFAULT_SOCKET, docker_answers  # httpx: not for `pkbs status`

    host = f"unix://{DEFAULT_SOCKET}"
    return host if os.path.exists(DEFAULT_SOCKET) and docker_answers(host) else None


def service_env(
    home: Path, server_name: str, sec: dict[str, str], nats_url: str, webdav_url: str,
    endpoint: str,
) -> dict[str, str]:
    """The settings the dispatcher and the workers of a local stack share: where NATS,
    WebDAV and the dispatcher are, and the credentials (`sec`: load_secrets)."""
    return {
        "PKBS_HOME": str(home),
        "PKBS_SERVER_NAME": server_name,
        "PKBS_NATS_URL": nats_url,
        "PKBS_NATS_USER": sec["nats_user"],
        "PKBS_NATS_PASSWORD": sec["nats_password"],
        "PKBS_WEBDAV_URL": webdav_url,
        "PKBS_WEBDAV_USER": sec["webdav_user"],
        "PKBS_WEBDAV_PASSWORD": sec["webdav_password"],
        "PKBS_JOB_TOKEN_SECRET": sec["job_token_secret"],
        "PKBS_JOB_ENDPOINT": endpoint,
    }


def worker_env(home: Path, name: str, slots: int, metrics_port: int) -> dict[str, str]:
    """A worker's own settings, beside service_env's."""
    return {
        "PKBS_WORKER_NAME": name,
        "PKBS_WORKER_SLOTS": str(slots),
        "PKBS_WORKER_DIR": str(home / "jobs"),
        # Same host, same account as whoever submits: .o/.e land where PBS puts them.
        "PKBS_DELIVER_LOCAL": "true",
        "PKBS_WORKER_METRICS_PORT": str(metrics_port),
    }


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: int | None = None
    health_url: str | None = None
    metrics_port: int | None = None  # a worker's /metrics (the dispatcher's: its port)
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    backoff: float = 0.5
    started_at: float = 0.0

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at = time.monotonic()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.proc.pid if self.proc else None,
            "port": self.port,
            "health_url": self.health_url,
            "metrics_port": self.metrics_port,
            "restarts": self.restarts,
            "log": str(self.log),
        }


@dataclass
class StackConfig:
    home: Path
    workers: int
    slots: int
    server_name: str = "pkbs"
    user: str = field(default_factory=getpass.getuser)


def say(message: str) -> None:
    """A line of the supervisor's log (supervisor.log): `<ISO-8601 UTC time> <message>`."""
    print(f"{iso_utc(time.time())} {message}", flush=True)


def without_time(line: str) -> str:
    """A supervisor log line without its time (what `pkbs up` shows)."""
    first, _, rest = line.partition(" ")
    return rest if first.endswith("Z") and first[:4].isdigit() else line


def exit_reason(returncode: int) -> str:
    return f"signal {-returncode}" if returncode < 0 else f"status {returncode}"


class Supervisor:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.home = config.home
        self.stopping = False
        self.children: list[Child] = []
        # Where the workers run container jobs (None: they run none).
        self.docker: str | None = None

    def plan(self) -> None:
        from pkbs.settings import Settings  # (not on the path of the other commands)

        home = self.home
        for sub in ("nats", "webdav", "logs", "run", "jobs"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        sec = load_secrets(home)
        nats_port, monitor_port = servers.free_port(), servers.free_port()
        dav_port, api_port = servers.free_port(), servers.free_port()
        servers.write_nats_config(
            home / "run" / "nats.conf",
            port=nats_port,
            store_dir=home / "nats",
            user=sec["nats_user"],
            password=sec["nats_password"],
            monitor_port=monitor_port,
            max_file_store=Settings().max_store_bytes,
        )
        self.endpoint = f"http://127.0.0.1:{api_port}"
        common = service_env(
            home,
            self.config.server_name,
            sec,
            f"nats://127.0.0.1:{nats_port}",
            f"http://127.0.0.1:{dav_port}",
            self.endpoint,
        )
        self.docker = docker_host()
        if self.docker:
            common["PKBS_DOCKER_HOST"] = self.docker
        logs = home / "logs"
        self.children = [
            Child(
                "nats-server",
                [servers.nats_server_binary(), "-c", str(home / "run/nats.conf")],
                nats_server_env(),
                logs / "nats-server.log",
                nats_port,
                f"http://127.0.0.1:{monitor_port}/healthz",
            ),
            Child(
                "webdav",
                servers.python_module_argv("pkbs.webdav"),
                {
                    # Only its own credential: no NATS password, no job-token secret.
                    "PKBS_HOME": str(home),
                    "PKBS_WEBDAV_USER": sec["webdav_user"],
                    "PKBS_WEBDAV_PASSWORD": sec["webdav_password"],
                    "PKBS_WEBDAV_ROOT": str(home / "webdav"),
                    "PKBS_WEBDAV_LISTEN_PORT": str(dav_port),
                },
                logs / "webdav.log",
                dav_port,
            ),
            Child(
                "dispatcher",
                servers.python_module_argv("pkbs.dispatcher"),
                {
                    **common,
                    "PKBS_DISPATCHER_PORT": str(api_port),
                    "PKBS_ADMIN_TOKEN": sec["admin_token"],
                    "PKBS_ADMIN_USER": self.config.user,
                    "PKBS_MAX_JOB_NCPUS": str(self.config.slots),
                },
                logs / "dispatcher.log",
                api_port,
                f"{self.endpoint}/readyz",
            ),
        ]
        for i in range(1, self.config.workers + 1):
            name = f"{os.uname().nodename}-w{i}"
            metrics_port = servers.free_port()
            self.children.append(
                Child(
                    f"worker-{i}",
                    servers.python_module_argv("pkbs.worker"),
                    {**common, **worker_env(home, name, self.config.slots, metrics_port)},
                    logs / f"worker-{i}.log",
                    metrics_port=metrics_port,
                )
            )
        clientconfig.save(
            home / clientconfig.CLIENT_FILE,
            clientconfig.ClientConfig(self.endpoint, sec["admin_token"], self.config.server_name),
        )

    def write_state(self, status: str) -> None:
        path = state_path(self.home)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "status": status,
                    "supervisor_pid": os.getpid(),
                    "endpoint": self.endpoint,
                    "docker": self.docker,
                    "drain_grace_seconds": get_settings().drain_grace_seconds,
                    "processes": [c.describe() for c in self.children],
                },
                indent=2,
            )
        )
        os.replace(tmp, path)

    def start_all(self, progress: Callable[[str], None]) -> None:
        for child in self.children:
            progress(f"starting {child.name}")
            child.start()
            assert child.proc is not None
            if child.port is not None:
                servers.wait_for_port("127.0.0.1", child.port, 30, child.proc)
            if child.health_url:
                wait_http(child.health_url, 30, child.proc)
            self.write_state("starting")
        self.write_state("running")

    def supervise(self) -> None:
        while not self.stopping:
            self.reap_zombies()
            now = time.monotonic()
            changed = False
            for child in self.children:
                if child.proc is None or child.proc.poll() is None:
                    continue
                if child.next_start == 0.0:
                    # Back off if it died young; reset once it ran a while.
                    ran = now - child.started_at
                    child.backoff = 0.5 if ran > 30 else min(child.backoff * 2, RESTART_BACKOFF_MAX)
                    child.next_start = now + child.backoff
                    say(
                        f"{child.name} exited ({exit_reason(child.proc.returncode)}) after "
                        f"{ran:.1f} s, restarting in {child.backoff:g} s "
                        f"(restart {child.restarts + 1})"
                    )
                    self.reap_orphans(child)
                elif now >= child.next_start:
                    child.restarts += 1
                    child.next_start = 0.0
                    child.start()
                    say(f"{child.name} restarted, pid {child.proc.pid} (restart {child.restarts})")
                    changed = True
            if changed:
                self.write_state("running")
            time.sleep(0.2)

    def known_pids(self) -> set[int]:
        return {c.proc.pid for c in self.children if c.proc is not None}

    def reap_orphans(self, dead: Child) -> None:
        """A worker died: its jobs are our children now (we are a subreaper). Kill
        them at once, before JetStream hands the jobs to another worker."""
        if not dead.name.startswith("worker"):
            return
        known = self.known_pids()
        for pid in own_children():
            if pid not in known:
                kill_tree(pid)
                say(f"killed pid {pid} left by dead {dead.name}")
        if self.docker:  # its container jobs are not our children: removed by label
            worker = dead.env["PKBS_WORKER_NAME"]
            from pkbs.dockerapi import LABEL_WORKER, remove_labelled_now

            removed = remove_labelled_now(self.docker, LABEL_WORKER, worker)
            if removed:
                say(f"removed {removed} containers left by dead {dead.name}")

    def reap_zombies(self) -> None:
        """Orphans that ended by themselves are our zombies: collect them."""
        known = self.known_pids()
        for pid in own_children():
            if pid not in known:
                reap(pid)

    def hand_back_jobs(self) -> None:
        """A second stop signal: the workers hand their running jobs back now."""
        say("handing running jobs back now")
        for child in self.children:
            if child.name.startswith("worker") and child.proc and child.proc.poll() is None:
                child.proc.terminate()

    def stop_all(self) -> None:
        say("stopping")
        self.write_state("stopping")
        # Workers first (they drain), then the dispatcher, WebDAV, NATS last.
        for group in (
            [c for c in self.children if c.name.startswith("worker")],
            [c for c in self.children if c.name == "dispatcher"],
            [c for c in self.children if c.name == "webdav"],
            [c for c in self.children if c.name == "nats-server"],
        ):
            for child in group:
                if child.proc and child.proc.poll() is None:
                    child.proc.terminate()
            for child in group:
                if child.proc:
                    try:
                        child.proc.wait(timeout=40)
                    except subprocess.TimeoutExpired:
                        child.proc.kill()
                        child.proc.wait()
        state_path(self.home).unlink(missing_ok=True)


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        if http_ok(url, timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


def run_supervisor(config: StackConfig) -> None:
    """Entry of the background supervisor process."""
    sup = Supervisor(config)

    def on_term(signum: int, frame: object) -> None:
        if sup.stopping:
            sup.hand_back_jobs()
        sup.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    # Before plan() reads secrets.json: orphaned jobs become our children, and no
    # job may read our memory or environment (pkbs/procs.py).
    hide_from_jobs()
    become_subreaper()
    sup.plan()
    try:
        sup.start_all(say)
        say("ready")
        sup.supervise()
    finally:
        sup.stop_all()


# -- the commands' side -------------------------------------------------------


def supervisor_argv(config: StackConfig) -> list[str]:
    """The background supervisor's command line (its arguments: see `__main__` below)."""
    return [
        *servers.python_module_argv("pkbs.local"),
        str(config.home),
        str(config.workers),
        str(config.slots),
        config.server_name,
    ]


def up(config: StackConfig, progress: Callable[[str], None], timeout: float = 90) -> dict[str, Any]:
    """Start the supervisor in the background and wait until the stack is ready."""
    home = config.home
    state = read_state(home)
    if state and pid_alive(int(state["supervisor_pid"])):
        progress("already running")
        return state
    (home / "logs").mkdir(parents=True, exist_ok=True)
    log = home / "logs" / "supervisor.log"
    # The log is appended to: show only what this start writes.
    seen = len(log.read_text().splitlines()) if log.exists() else 0
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            supervisor_argv(config),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines()
        for line in lines[seen:]:
            progress(without_time(line))
        seen = len(lines)
        state = read_state(home)
        if state and state.get("status") == "running" and state["supervisor_pid"] == proc.pid:
            return state
        if proc.poll() is not None:
            raise StackError(f"the stack failed to start; see {log}")
        time.sleep(0.1)
    proc.terminate()
    raise StackError(f"the stack did not become ready in {timeout}s; see {log}")


def down(
    home: Path,
    progress: Callable[[str], None],
    timeout: float = 120,
    running_jobs: Callable[[], int | None] = lambda: None,
) -> bool:
    """Stop the stack: the workers drain first (their running jobs may end within the
    drain grace, else are handed back), then the rest. Says what it waits for, from
    `running_jobs()` (None: unknown) once a second; Ctrl-C hands the jobs back at once."""
    state = read_state(home)
    if not state or not pid_alive(int(state["supervisor_pid"])):
        state_path(home).unlink(missing_ok=True)
        return False
    pid = int(state["supervisor_pid"])
    grace = float(state.get("drain_grace_seconds", 0))
    os.kill(pid, signal.SIGTERM)
    progress("stopping workers (running jobs drain), dispatcher, webdav, nats-server")
    started = time.monotonic()
    deadline = started + timeout
    said = ""
    hurried = False
    next_look = 0.0
    while pid_alive(pid) and not _is_zombie(pid) and time.monotonic() < deadline:
        try:
            if not hurried and time.monotonic() >= next_look:
                next_look = time.monotonic() + 1
                said = _say_drain(progress, said, running_jobs(), grace, started)
            time.sleep(0.1)
        except KeyboardInterrupt:
            if hurried:
                raise
            hurried = True
            os.kill(pid, signal.SIGTERM)
            progress("handing the running jobs back now (queued again)")
    if pid_alive(pid) and not _is_zombie(pid):
        raise StackError(f"supervisor {pid} did not stop within {timeout}s")
    return True


def _say_drain(
    progress: Callable[[str], None], said: str, running: int | None, grace: float, since: float
) -> str:
    """`waiting for 1 running job to drain, 25 s left; Ctrl-C to requeue now` when the
    count or the whole seconds left change by 5; what was said."""
    if not running:
        return said
    left = max(0, round(grace - (time.monotonic() - since)))
    jobs = "job" if running == 1 else "jobs"
    line = (f"waiting for {running} running {jobs} to drain, {left} s left; "
            "Ctrl-C to requeue now")
    key = f"{running}/{left // 5}"
    if key != said:
        progress(line)
    return key


def _is_zombie(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] == b"Z"


def log_path(home: Path, component: str) -> Path:
    """The log file of one process of the stack (`supervisor` included), or a
    StackError naming those there are."""
    logs = home / "logs"
    known = sorted(p.stem for p in logs.glob("*.log")) if logs.is_dir() else []
    if component not in known:
        raise StackError(
            f"no log of {component!r} in {logs}; there are: {', '.join(known) or 'none'}"
        )
    return logs / f"{component}.log"


def status(home: Path) -> list[dict[str, Any]]:
    """Each process of the stack with its pid, whether it lives and is healthy."""
    state = read_state(home)
    if not state:
        return []
    rows = [
        {
            "name": "supervisor",
            "pid": state["supervisor_pid"],
            "port": None,
            "restarts": 0,
            "alive": pid_alive(int(state["supervisor_pid"])),
        }
    ]
    for proc in state["processes"]:
        alive = proc["pid"] is not None and pid_alive(int(proc["pid"]))
        row = {**proc, "alive": alive}
        if alive and proc.get("health_url"):
            row["healthy"] = http_ok(proc["health_url"])
        elif alive and proc.get("port"):
            row["healthy"] = _port_open(int(proc["port"]))
        else:
            row["healthy"] = alive
        rows.append(row)
    rows[0]["healthy"] = rows[0]["alive"]
    return rows


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    home_arg, workers_arg, slots_arg, server_arg = sys.argv[1:5]
    run_supervisor(StackConfig(Path(home_arg), int(workers_arg), int(slots_arg), server_arg))
