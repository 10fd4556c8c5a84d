"""Drive a real local stack (`pkbs up`) and the real CLI in subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.runlog import job_runs
from pkbs import servers
from pkbs.configstore import ConfigStore
from pkbs.jobstore import connect_nats
from pkbs.serverconfig import ServerConfig
from pkbs.settings import Settings

BIN = Path(sys.executable).parent


@contextmanager
def bare_nats(where: Path) -> Iterator[str]:
    """A nats-server with JetStream and no auth, its files in `where`, for tests of one
    store or client without the rest of the stack; its URL while the block runs."""
    port = servers.free_port()
    servers.write_nats_config(
        where / "nats.conf", port=port, store_dir=where / "js", user=None, password=None
    )
    proc = servers.start_nats(where / "nats.conf", where / "nats.log")
    try:
        servers.wait_for_port("127.0.0.1", port, 20, proc)
        yield f"nats://127.0.0.1:{port}"
    finally:
        servers.stop(proc)


def poll(
    check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Stack:
    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PKBS_")}
        env.update({"PKBS_HOME": str(self.home), "PATH": f"{BIN}:{env.get('PATH', '')}"})
        env.update(self.extra_env)
        return env

    def run(
        self,
        *args: str,
        input: str | bytes | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        data = input.decode() if isinstance(input, bytes) else input
        return subprocess.run(
            list(args),
            input=data,
            capture_output=True,
            text=True,
            # The stack's own directory by default: a local stack puts a job's .o/.e
            # in its submit directory, as PBS does.
            cwd=cwd or (self.home if self.home.is_dir() else None),
            env={**self.env, **(env or {})},
            timeout=timeout,
        )

    @property
    def webdav_root(self) -> Path:
        """The directory the stack's WebDAV server serves."""
        return self.home / "webdav"

    def up(self, workers: int = 2, slots: int = 2) -> None:
        result = self.run(
            str(BIN / "pkbs"), "up", "--workers", str(workers), "--slots", str(slots), timeout=120
        )
        assert result.returncode == 0, result.stderr + result.stdout

    def down(self) -> None:
        result = self.run(str(BIN / "pkbs"), "down", timeout=120)
        assert result.returncode == 0, result.stderr

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.home / "run" / "stack.json").read_text())
        return data

    def pid_of(self, name: str) -> int:
        for proc in self.state()["processes"]:
            if proc["name"] == name:
                return int(proc["pid"])
        raise KeyError(name)

    def qsub(
        self,
        *args: str,
        input: str | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        result = self.run(str(BIN / "qsub"), *args, input=input, cwd=cwd, env=env)
        assert result.returncode == 0, f"qsub failed: {result.stderr}"
        return result.stdout.strip()

    def qstat_json(self, *ids: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        result = self.run(str(BIN / "qstat"), "-f", "-F", "json", "-x", *ids, env=env)
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def job(self, job_id: str) -> dict[str, Any]:
        jobs: dict[str, Any] = self.qstat_json(job_id).get("Jobs", {})
        return dict(jobs[job_id])

    def wait_state(self, job_id: str, state: str = "F", timeout: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["job_state"] == state else None

        result: dict[str, Any] = poll(check, timeout, 0.1, f"{job_id} to reach {state}")
        return result

    def token_for(self, user: str) -> str:
        result = self.run(str(BIN / "pkbs"), "token", "create", user)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def as_user(self, user: str) -> dict[str, str]:
        state = self.state()
        return {"PKBS_ENDPOINT": state["endpoint"], "PKBS_TOKEN": self.token_for(user)}


# -- helpers for the end-to-end CLI tests (appended) ---------------------------

CTIME_RE = r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}"


def job_number(job_id: str) -> int:
    """`17.pkbs` -> 17."""
    return int(job_id.split(".", 1)[0])


def write_file(path: Path, text: str | bytes, mode: int = 0o644) -> Path:
    """Write `text` to `path` (parents created) and set its mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    path.chmod(mode)
    return path


def pid_gone(pid: int) -> bool:
    """True once `pid` no longer exists (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


def client_config(home: Path) -> dict[str, Any]:
    """The client.json `pkbs up` wrote: endpoint, token and server name."""
    data: dict[str, Any] = json.loads((home / "client.json").read_text())
    return data


def status_rows(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    """`pkbs status` output -> {process: {pid, port, health, restarts}}."""
    rows: dict[str, dict[str, str]] = {}
    table = result.stdout.split("\n\n", 1)[0]  # then a line on container jobs
    for line in table.splitlines()[1:]:
        name, pid, port, health, restarts = line.split()
        rows[name] = {"pid": pid, "port": port, "health": health, "restarts": restarts}
    return rows


def cli(stack: Stack, command: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run one of the installed console scripts (qsub, qstat, qdel, pkbs) in `stack`."""
    return stack.run(str(BIN / command), *args, **kwargs)


def submit(
    stack: Stack,
    *args: str,
    input: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """qsub that must succeed and print exactly `<n>.pkbs` on stdout, nothing on stderr."""
    result = cli(stack, "qsub", *args, input=input, cwd=cwd, env=env)
    assert result.returncode == 0, f"qsub failed: {result.stderr}"
    assert result.stderr == "", result.stderr
    job_id = result.stdout.removesuffix("\n")
    assert result.stdout == job_id + "\n" and job_id.split(".")[0].isdigit(), result.stdout
    assert job_id.endswith(".pkbs"), job_id
    return job_id


def job_as(stack: Stack, job_id: str, env: dict[str, str]) -> dict[str, Any]:
    """The job's qstat -f -F json -x attributes, seen with another user's credentials."""
    jobs: dict[str, Any] = stack.qstat_json(job_id, env=env).get("Jobs", {})
    return dict(jobs[job_id])


def wait_state_as(
    stack: Stack, job_id: str, state: str, env: dict[str, str] | None = None, timeout: float = 60
) -> dict[str, Any]:
    """Like Stack.wait_state, for a job owned by the user of `env`."""

    def check() -> dict[str, Any] | None:
        job = job_as(stack, job_id, env or {})
        return job if job["job_state"] == state else None

    result: dict[str, Any] = poll(check, timeout, 0.1, f"{job_id} to reach {state}")
    return result


def fetch_results(
    stack: Stack, job_id: str, dest: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`pkbs fetch JOBID DEST`, which must succeed."""
    result = cli(stack, "pkbs", "fetch", job_id, str(dest), env=env)
    assert result.returncode == 0, result.stderr
    return result


def files_under(root: Path) -> dict[str, int]:
    """Every regular file under `root` as {relative posix path: size}."""
    return {
        p.relative_to(root).as_posix(): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def wait_live_output(stack: Stack, job_id: str, text: str, timeout: float = 30) -> None:
    """Poll the running job's stdout file in the local workers' directory (the
    local stack runs jobs under $PKBS_HOME/jobs, stdout beside the job directory as
    `w<n>.o`, see worker/rundir.py) until it contains `text`, which the caller makes
    unique to the job."""

    def check() -> bool:
        for path in (stack.home / "jobs").glob("*/*/w*.o"):
            try:
                if text in path.read_text():
                    return True
            except OSError:
                pass
        return False

    poll(check, timeout, 0.05, f"{text!r} in the output of {job_id}")


# -- helpers for the fault-injection and hostile-input tests (appended) --------


def logged_job(log: Path, ticks: int = 5, tick: float = 0.1, exit_code: int = 0) -> str:
    """A bash job that appends `start|tick|end <PBS_JOBID> <pid> <epoch>` lines to `log`
    (an absolute path: the local stack runs jobs on this machine), prints
    `out <PBS_JOBID>` on stdout and exits with `exit_code`. Audits read the log."""
    return (
        "#!/bin/bash\n"
        f'LOG="{log}"\n'
        'echo "start $PBS_JOBID $$ $EPOCHREALTIME" >> "$LOG"\n'
        f"for i in $(seq 1 {ticks}); do sleep {tick}; "
        'echo "tick $PBS_JOBID $$ $EPOCHREALTIME" >> "$LOG"; done\n'
        'echo "out $PBS_JOBID"\n'
        'echo "end $PBS_JOBID $$ $EPOCHREALTIME" >> "$LOG"\n'
        f"exit {exit_code}\n"
    )


def overlapping_runs(log: Path) -> list[str]:
    """Jobs with a run that started before the previous run of the same job stopped."""
    return sorted(
        job
        for job, spans in job_runs(log).items()
        if any(b.first <= a.last for a, b in zip(spans, spans[1:], strict=False))
    )


def api_endpoint(stack: Stack) -> tuple[str, str]:
    """(endpoint, admin token) of the stack, from its client.json."""
    config = client_config(stack.home)
    return str(config["endpoint"]), str(config["token"])


def results_dir(stack: Stack, job: dict[str, Any]) -> Path:
    """Where the local stack's WebDAV server keeps a finished job's results on disk:
    the collection its record names (qstat -f's results_url, the run that finished
    the job), under the server's root directory."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(str(job["results_url"])).path)
    return stack.webdav_root / path.strip("/")


def start_worker(
    stack: Stack,
    name: str,
    slots: int = 1,
    nats_url: str | None = None,
    webdav_url: str | None = None,
) -> subprocess.Popen[bytes]:
    """A worker of the test's own (`python -m pkbs.worker`) for a running stack (one
    started with fewer workers, e.g. `up(workers=0)`), set up as pkbs/local.py sets up
    the stack's, but reaching NATS and WebDAV at `nats_url` / `webdav_url` when given
    (e.g. through a proxy the test cuts). It logs to $PKBS_HOME/logs/<name>.log; the
    caller stops it (stop_worker)."""
    from pkbs import local

    state = stack.state()
    ports = {proc["name"]: proc["port"] for proc in state["processes"]}
    common = local.service_env(
        stack.home,
        str(client_config(stack.home)["server"]),
        local.load_secrets(stack.home),
        nats_url or f"nats://127.0.0.1:{ports['nats-server']}",
        webdav_url or f"http://127.0.0.1:{ports['webdav']}",
        str(state["endpoint"]),
    )
    env = {**stack.env, **common, **local.worker_env(stack.home, name, slots, servers.free_port())}
    with open(stack.home / "logs" / f"{name}.log", "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pkbs.worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM a worker of start_worker's (it drains); SIGKILL if it is not gone in time."""
    servers.stop(proc, timeout)


@dataclass
class Audit:
    """The outcome of a batch of jobs after a fault."""

    submitted: int = 0
    completed: int = 0
    lost: list[str] = field(default_factory=list)  # not F, wrong status, or no results
    duplicated: list[str] = field(default_factory=list)  # extra records, overlaps, uncounted runs
    reruns: int = 0  # jobs with run_count >= 2
    problems: list[str] = field(default_factory=list)

    def row(self, fault: str) -> str:
        return (
            f"{fault}: submitted {self.submitted} completed {self.completed} "
            f"lost {len(self.lost)} duplicated {len(self.duplicated)} rerun {self.reruns}"
        )

    def check(self) -> None:
        assert not self.lost and not self.duplicated, "\n".join(self.problems[:20])


def audit_jobs(
    stack: Stack,
    job_ids: list[str],
    log: Path | None,
    exit_status: int = 0,
    timeout: float = 60.0,
    exact: bool = True,
) -> Audit:
    """Wait (up to `timeout`) for every job to be F, then check each: Exit_status, its
    .o on WebDAV holding `out <id>` (for one job also through `pkbs fetch`), runs
    counted (no more starts in the log than run_count), no run overlapping another
    run of the same job. With `exact`, the server must know no job beyond `job_ids`
    (no duplicate records)."""
    import tempfile

    audit = Audit(submitted=len(job_ids))
    wanted = set(job_ids)
    subjobs = any("[" in j and "[]" not in j for j in job_ids)

    def all_jobs() -> dict[str, Any]:
        result = stack.run(str(BIN / "qstat"), "-f", "-F", "json", "-x", *(["-t"] * subjobs))
        assert result.returncode == 0, result.stderr
        jobs: dict[str, Any] = json.loads(result.stdout).get("Jobs", {})
        return jobs

    def ended(job_id: str) -> bool:  # a subjob ends X, as in PBS
        final = "X" if "[" in job_id and "[]" not in job_id else "F"
        return bool(jobs.get(job_id, {}).get("job_state") == final)

    jobs: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while True:
        jobs = all_jobs()
        if all(ended(j) for j in wanted):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    runs = job_runs(log) if log is not None else {}
    overlaps = set(overlapping_runs(log)) if log is not None else set()
    for job_id in job_ids:
        job = jobs.get(job_id)
        if job is None or not ended(job_id):
            audit.lost.append(job_id)
            state = None if job is None else (job.get("job_state"), job.get("comment"))
            audit.problems.append(f"{job_id}: not finished: {state}")
            continue
        if job.get("Exit_status") != exit_status:
            audit.lost.append(job_id)
            audit.problems.append(
                f"{job_id}: Exit_status {job.get('Exit_status')} ({job.get('comment')})"
            )
            continue
        out_name = str(job["Output_Path"]).rsplit("/", 1)[-1]
        out = results_dir(stack, job) / out_name
        if not out.is_file() or (log is not None and f"out {job_id}" not in out.read_text()):
            audit.lost.append(job_id)
            audit.problems.append(f"{job_id}: no results at {out}")
            continue
        if audit.completed == 0:  # one job of the batch also comes back through the API
            with tempfile.TemporaryDirectory() as tmp:
                got = stack.run(str(BIN / "pkbs"), "fetch", job_id, tmp)
                fetched = Path(tmp, out_name)
                if got.returncode != 0 or fetched.read_bytes() != out.read_bytes():
                    audit.lost.append(job_id)
                    audit.problems.append(f"{job_id}: pkbs fetch failed: {got.stderr}")
                    continue
        audit.completed += 1
        run_count = int(job.get("run_count") or 0)
        audit.reruns += run_count >= 2
        if log is not None:
            spans = runs.get(job_id, [])
            if not spans or len(spans) > run_count or not any(s.ended for s in spans):
                audit.duplicated.append(job_id)
                audit.problems.append(f"{job_id}: {len(spans)} runs logged, run_count {run_count}")
            if job_id in overlaps:
                audit.duplicated.append(job_id)
                audit.problems.append(f"{job_id}: two runs overlapped: {spans}")
    if exact:
        extra = sorted(set(jobs) - wanted)
        audit.duplicated += extra
        audit.problems += [f"{j}: a record nobody submitted" for j in extra]
    return audit


def process_start(pid: int) -> float:
    """Start time of `pid` (epoch seconds), from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as fh:
        btime = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def wait_restarted(stack: Stack, name: str, old_pid: int, timeout: float = 30) -> int:
    """Poll until the supervisor has replaced process `name` (pid `old_pid`) by a live
    one that `pkbs status` calls healthy (a restarted dispatcher is not listening yet
    the moment its process exists)."""

    def check() -> int | None:
        try:
            pid = stack.pid_of(name)
        except (KeyError, OSError, ValueError):
            return None
        if pid == old_pid or pid_gone(pid) or not process_healthy(stack, name):
            return None
        return pid

    new_pid: int = poll(check, timeout, 0.05, f"{name} to be restarted")
    return new_pid


def process_healthy(stack: Stack, name: str) -> bool:
    """What `pkbs status` calls healthy, for one process of the stack."""
    from pkbs import local

    return any(row["name"] == name and row.get("healthy") for row in local.status(stack.home))


def job_processes(stack: Stack, job_id: str) -> list[int]:
    """Live (non-zombie) processes of the stack's job <job_id>: PBS_JOBID in their
    environment, and a job directory under the stack's home (tests running side by
    side have stacks with jobs of the same ids)."""
    needle = f"PBS_JOBID={job_id}".encode()
    workdir = f"PBS_O_WORKDIR={stack.home}/".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        if needle not in env or not any(v.startswith(workdir) for v in env):
            continue
        if not pid_gone(int(entry)):
            found.append(int(entry))
    return found


def worker_dir_running(stack: Stack, job_id: str) -> Path | None:
    """The directory (`$PKBS_HOME/jobs/pkbs-jobs/<worker>`) of the worker running the
    job now: the parent of the working directory of a process of the job (found by
    PBS_JOBID in its environment). None if no process of the job runs."""
    jobs = (stack.home / "jobs" / "pkbs-jobs").resolve()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                if f"PBS_JOBID={job_id}".encode() not in fh.read().split(b"\0"):
                    continue
            cwd = Path(os.readlink(f"/proc/{entry.name}/cwd"))
        except OSError:
            continue
        if cwd.parent.parent == jobs:
            return cwd.parent
    return None


def store_settings(stack: Stack) -> Settings:
    """Settings that reach the stack's NATS and WebDAV (for JobStore, ConfigStore,
    ResultStore in a test)."""
    secrets = json.loads((stack.home / "secrets.json").read_text())
    conf = (stack.home / "run" / "nats.conf").read_text()
    port = re.search(r"^port: (\d+)$", conf, re.M)
    assert port is not None
    ports = {proc["name"]: proc["port"] for proc in stack.state()["processes"]}
    return Settings(
        nats_url=f"nats://127.0.0.1:{port[1]}",
        nats_user=secrets["nats_user"],
        nats_password=secrets["nats_password"],
        webdav_url=f"http://127.0.0.1:{ports['webdav']}",
        webdav_user=secrets["webdav_user"],
        webdav_password=secrets["webdav_password"],
    )


def set_server_attrs(stack: Stack, **attrs: Any) -> None:
    """Set server attributes (as `qmgr -c "set server ..."` does)."""
    change_config(
        stack, lambda c: c.model_copy(update={"server": c.server.model_copy(update=attrs)})
    )


def change_config(stack: Stack, edit: Callable[[ServerConfig], ServerConfig]) -> ServerConfig:
    """Change the stack's server configuration (KV PKBS_CONFIG) with a compare-and-set,
    as qmgr does; every dispatcher and worker follows it."""

    async def change() -> ServerConfig:
        nc = await connect_nats(store_settings(stack), "test-config")
        try:
            store = await ConfigStore.open(nc.jetstream(), store_settings(stack))
            return await store.change(edit)
        finally:
            await nc.drain()

    return asyncio.run(change())
