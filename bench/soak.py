"""`python -m bench.soak`: many short jobs under random faults, then an audit.

Issue 7's soak. Starts its own stack (the real `pkbs up` in a temporary PKBS_HOME,
loopback only, like `python -m bench`), submits N short jobs - most as HTTP batch
submissions with the body the real qsub sends, some as arrays, a few through the real
`qsub` - and meanwhile injects faults at random times from a seeded RNG:

    worker      SIGKILL of one worker (the supervisor kills its jobs and restarts it)
    nats        SIGKILL of nats-server (restarted on the same port and store)
    webdav      SIGSTOP of WsgiDAV for a few seconds, then SIGCONT
    dispatcher  SIGKILL of the dispatcher (restarted on the same port)

HTTP submissions keep their client submit id across retries (a retry after a
dispatcher or NATS fault must give the same job). The run stops at a time bound;
faults stop when every acknowledged job has finished (or at the bound); then the
jobs get a bounded time to settle, and the audit counts, per job (a subjob is a job):

    submitted    acknowledged: an id came back
    completed    F, Exit_status 0, its .o on WebDAV holding `out <job id>`
    lost         acknowledged, but no record, or ended wrongly, or no results
    unfinished   still not F when the settle time ran out
    duplicated   two runs of the job overlapped in time, more runs logged than
                 run_count, or a record nobody was given an id for
    reruns       jobs with run_count >= 2 (expected after worker/NATS faults)

Every job appends `start|end <job id> <pid> <time>` to a log in PKBS_HOME (that is
how overlaps are seen). All results are checked on the WebDAV server's disk, a
sample also over HTTP from WebDAV. JSON goes to bench/results/soak-<date>.json, a
table to stdout; the exit status is 1 if anything was lost, duplicated or unfinished.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import http.client
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import procstat, source
from .natsio import NatsView
from .runlog import job_runs
from .stack import BIN, BenchStack, StackFailed
from .submit import job_number, request_body

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
FAULT_KINDS = ("worker", "nats", "webdav", "dispatcher")
PROCESS_OF = {"nats": "nats-server", "dispatcher": "dispatcher", "webdav": "webdav"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="N short jobs on a private local stack while random faults are "
                    "injected; then an audit of every job (docs/performance.md, Soak).")
    p.add_argument("--jobs", type=int, default=10_000,
                   help="jobs to run, subjobs counted one by one (default 10000)")
    p.add_argument("--seed", type=int, default=1, help="RNG seed of plan and faults (1)")
    p.add_argument("--duration", type=float, default=1200.0,
                   help="time bound of submitting + faults, seconds (default 1200)")
    p.add_argument("--settle", type=float, default=180.0,
                   help="then, without faults, at most this long for jobs to finish (180)")
    g = p.add_argument_group("stack")
    g.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    g.add_argument("--slots", type=int, default=4, help="slots per worker (4)")
    g.add_argument("--ack-wait", type=float, default=5.0,
                   help="PKBS_ACK_WAIT_SECONDS: how soon a killed worker's job is "
                        "redelivered (default 5)")
    g = p.add_argument_group("faults")
    g.add_argument("--fault-interval", type=float, default=10.0,
                   help="mean seconds between faults (exponential; default 10)")
    g.add_argument("--first-fault", type=float, default=None,
                   help="seconds before the first fault (default: drawn like the others)")
    g.add_argument("--faults", type=int, default=None, help="at most this many (no limit)")
    g.add_argument("--fault-kinds", default=",".join(FAULT_KINDS),
                   help=f"comma list from {','.join(FAULT_KINDS)} (default all)")
    g.add_argument("--webdav-stop", type=float, nargs=2, default=(2.0, 8.0),
                   metavar=("MIN", "MAX"), help="WsgiDAV SIGSTOP length, seconds (2 8)")
    g = p.add_argument_group("jobs")
    g.add_argument("--array-share", type=float, default=0.2,
                   help="share of the jobs that are subjobs of arrays (0.2)")
    g.add_argument("--array-size", type=int, nargs=2, default=(10, 50),
                   metavar=("MIN", "MAX"), help="subjobs per array (10 50)")
    g.add_argument("--qsub", type=int, default=20,
                   help="jobs submitted by the real qsub, spread over the run (20)")
    g.add_argument("--sleep-share", type=float, default=0.3,
                   help="share of submissions whose jobs sleep a little (0.3)")
    g.add_argument("--sleep-max", type=float, default=1.0,
                   help="those sleep 0.1 .. this many seconds (1.0)")
    g.add_argument("--http-threads", type=int, default=4, help="HTTP submitters (4)")
    g.add_argument("--submit-rate", type=float, default=40.0,
                   help="jobs per second submitted at most (default 40, about what 2 "
                        "workers run on 2 cores: submitting lasts most of the run, so "
                        "faults hit it too; 0 = as fast as possible)")
    g = p.add_argument_group("audit and output")
    g.add_argument("--sample", type=int, default=50,
                   help="results also fetched over HTTP from WebDAV for this many jobs (50)")
    g.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the JSON")
    g.add_argument("--keep-home", action="store_true", help="keep the temp PKBS_HOME")
    g.add_argument("--live", action="store_true",
                   help="run the source tree as it is instead of a frozen copy")
    g.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    kinds = [k.strip() for k in args.fault_kinds.split(",") if k.strip()]
    for kind in kinds:
        if kind not in FAULT_KINDS:
            p.error(f"unknown fault kind {kind!r}; choose from {', '.join(FAULT_KINDS)}")
    args.kinds = kinds
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    return args


# -- the plan ---------------------------------------------------------------------


@dataclass
class Submission:
    kind: str  # "http", "array" or "qsub"
    size: int  # jobs it makes: 1, or the array's subjob count
    sleep: float  # seconds each of its jobs sleeps
    submit_id: str
    job_id: str | None = None
    attempts: int = 0
    error: str | None = None

    @property
    def number(self) -> int:
        assert self.job_id is not None
        return job_number(self.job_id)

    def unit_ids(self) -> list[tuple[str, str]]:
        """(KV key, job id) of every job it made."""
        assert self.job_id is not None
        n = self.number
        server = self.job_id.split(".", 1)[1]
        if self.kind != "array":
            return [(f"j.{n}", f"{n}.{server}")]
        return [(f"j.{n}.{i}", f"{n}[{i}].{server}") for i in range(1, self.size + 1)]


def make_plan(args: argparse.Namespace, rng: random.Random) -> list[Submission]:
    total = args.jobs
    qsubs = min(args.qsub, total)
    array_target = int(round((total - qsubs) * args.array_share))
    plan: list[Submission] = []

    def sleep() -> float:
        if rng.random() >= args.sleep_share:
            return 0.0
        return round(rng.uniform(0.1, max(args.sleep_max, 0.1)), 2)

    def sid() -> str:
        return f"soak-{args.seed}-{len(plan)}-{rng.getrandbits(64):016x}"

    units = 0
    while units < array_target:
        size = min(rng.randint(*args.array_size), array_target - units)
        if size < 2:
            break
        plan.append(Submission("array", size, sleep(), sid()))
        units += size
    while units < total - qsubs:
        plan.append(Submission("http", 1, sleep(), sid()))
        units += 1
    rng.shuffle(plan)
    plan += [Submission("qsub", 1, sleep(), sid()) for _ in range(total - units)]
    return plan


JOB_SCRIPT = """#!/bin/bash
echo "start $PBS_JOBID $$ $EPOCHREALTIME" >> {log}
if [ "${{SOAK_SLEEP:-0}}" != 0 ]; then sleep "$SOAK_SLEEP"; fi
echo "out $PBS_JOBID"
echo "end $PBS_JOBID $$ $EPOCHREALTIME" >> {log}
"""


# -- submitting -------------------------------------------------------------------


class Submitter:
    """POST /v1/jobs with a fixed submit id until 201 (connection errors and 5xx
    are retried: a dispatcher or NATS fault), or until the deadline."""

    def __init__(self, endpoint: str, token: str, deadline: float) -> None:
        url = urllib.parse.urlsplit(endpoint)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.token = token
        self.deadline = deadline
        self.retries = 0
        self.lock = threading.Lock()

    def post(self, body: dict[str, Any], sub: Submission) -> None:
        raw = json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                   "Accept": "application/json"}
        while True:
            sub.attempts += 1
            status, data = 0, b""
            conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                conn.request("POST", "/v1/jobs", body=raw, headers=headers)
                response = conn.getresponse()
                status, data = response.status, response.read()
            except (OSError, http.client.HTTPException) as exc:
                data = repr(exc).encode()
            finally:
                conn.close()
            if status == 201:
                sub.job_id = str(json.loads(data)["job_id"])
                return
            if status and status < 500:
                sub.error = f"HTTP {status}: {data[:200]!r}"
                return
            if time.monotonic() > self.deadline:
                sub.error = f"gave up at the time bound: {status} {data[:200]!r}"
                return
            with self.lock:
                self.retries += 1
            time.sleep(0.2)


def body_for(template: dict[str, Any], sub: Submission, script: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(template))
    body["submit_id"] = sub.submit_id
    body["payload_b64"] = base64.b64encode(script).decode()
    spec = body["spec"]
    spec["variables"]["SOAK_SLEEP"] = str(sub.sleep)
    if sub.kind == "array":
        spec["array"] = f"1-{sub.size}"
        spec["submit_args"] = f"-J 1-{sub.size} -N {spec['name']}"
    return body


def run_qsub(env: dict[str, str], script: bytes, sub: Submission, deadline: float,
             stats: Counter[str], unclean: list[str]) -> None:
    """The real qsub; a failure must be one clean line (then it is tried again)."""
    while True:
        sub.attempts += 1
        result = subprocess.run([str(BIN / "qsub"), "-N", "soakq", "-v",
                                 f"SOAK_SLEEP={sub.sleep}"], input=script, env=env,
                                capture_output=True, timeout=120)
        if result.returncode == 0:
            sub.job_id = result.stdout.decode().strip()
            return
        err = result.stderr.decode(errors="replace")
        clean = err.startswith("qsub: ") and err.count("\n") == 1 and "Traceback" not in err
        stats["qsub_failed_cleanly" if clean else "qsub_failed_uncleanly"] += 1
        if not clean:
            unclean.append(err[-300:])
        if time.monotonic() > deadline:
            sub.error = f"gave up at the time bound: {err.strip()[:200]}"
            return
        time.sleep(0.5)


# -- faults -----------------------------------------------------------------------


def stack_state(home: Path) -> dict[str, Any]:
    for _ in range(50):
        try:
            data: dict[str, Any] = json.loads((home / "run" / "stack.json").read_text())
            return data
        except (OSError, ValueError):
            time.sleep(0.05)
    raise RuntimeError("stack.json unreadable")


def proc_info(home: Path, name: str) -> dict[str, Any]:
    for proc in stack_state(home)["processes"]:
        if proc["name"] == name:
            found: dict[str, Any] = dict(proc)
            return found
    raise KeyError(name)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_replaced(home: Path, name: str, old_pid: int, timeout: float = 90) -> float | None:
    """Seconds until the supervisor runs a new, healthy `name`; None if it did not."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            proc = proc_info(home, name)
        except (KeyError, RuntimeError):
            proc = {}
        pid = proc.get("pid")
        if pid and int(pid) != old_pid and alive(int(pid)):
            health = proc.get("health_url")
            if not health or http_ok(health):
                return round(time.monotonic() - t0, 2)
        time.sleep(0.05)
    return None


class FaultInjector(threading.Thread):
    def __init__(self, args: argparse.Namespace, home: Path, rng: random.Random,
                 t0: float, log: Any) -> None:
        super().__init__(daemon=True, name="soak-faults")
        self.args, self.home, self.rng, self.t0, self.log = args, home, rng, t0, log
        self.stop = threading.Event()
        self.events: list[dict[str, Any]] = []
        self.workers = [p["name"] for p in stack_state(home)["processes"]
                        if p["name"].startswith("worker")]

    def run(self) -> None:
        first = True
        while not self.stop.is_set():
            if self.args.faults is not None and len(self.events) >= self.args.faults:
                return
            if first and self.args.first_fault is not None:
                gap = self.args.first_fault
            else:
                gap = self.rng.expovariate(1.0 / self.args.fault_interval)
            first = False
            if self.stop.wait(gap):
                return
            kind = self.rng.choice(self.args.kinds)
            try:
                event = self.inject(kind)
            except Exception as exc:  # a fault that could not be injected is reported
                event = {"kind": kind, "error": f"{type(exc).__name__}: {exc}"}
            event["at_s"] = round(time.monotonic() - self.t0, 2)
            self.events.append(event)
            self.log(f"  fault {len(self.events)}: {event}")

    def inject(self, kind: str) -> dict[str, Any]:
        if kind == "webdav":
            pid = int(proc_info(self.home, "webdav")["pid"])
            length = round(self.rng.uniform(*self.args.webdav_stop), 2)
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(length)
            finally:
                os.kill(pid, signal.SIGCONT)
            return {"kind": kind, "victim": "webdav", "pid": pid, "stopped_s": length}
        name = self.rng.choice(self.workers) if kind == "worker" else PROCESS_OF[kind]
        pid = int(proc_info(self.home, name)["pid"])
        os.kill(pid, signal.SIGKILL)
        back = wait_replaced(self.home, name, pid)
        return {"kind": kind, "victim": name, "pid": pid, "restarted_after_s": back}

    def counts(self) -> dict[str, int]:
        out = {kind: 0 for kind in self.args.kinds}
        for event in self.events:
            if "error" not in event:
                out[event["kind"]] += 1
        return out


# -- auditing ---------------------------------------------------------------------


async def _get_records(nv: NatsView, keys: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    async def one(key: str) -> None:
        for attempt in range(5):
            try:
                entry = await nv.kv.get(key)
            except Exception as exc:
                if "not found" in str(exc).lower() or type(exc).__name__ == "KeyNotFoundError":
                    return
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if entry.value:
                out[key] = json.loads(entry.value)
            return

    for i in range(0, len(keys), 256):
        await asyncio.gather(*(one(k) for k in keys[i:i + 256]))
    return out


async def _all_keys(nv: NatsView) -> list[str]:
    try:
        return [str(k) for k in await nv.kv.keys()]
    except Exception as exc:
        if "no keys" in str(exc).lower():
            return []
        raise


def output_name(record: dict[str, Any]) -> str:
    """`<name>.o<number>[.<index>]` (the soak never sets -o)."""
    index = record.get("index")
    suffix = "" if index is None else f".{index}"
    return f"{record['spec']['name']}.o{record['number']}{suffix}"


def output_segments(record: dict[str, Any], job_id: str) -> list[str]:
    """Path segments, under WebDAV's root, of a finished job's stdout: in the collection
    its record names (the run that finished the job), else in the job's own (records
    older than per-run collections)."""
    collection = record.get("results_path") or f"/pkbs/{record['owner']}/{job_id}/"
    return [*(s for s in collection.split("/") if s), output_name(record)]


def fetch_webdav(url: str, user: str, password: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {auth}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""
    except OSError as exc:
        return 0, repr(exc).encode()


def audit(stack: BenchStack, nv: NatsView, plan: list[Submission], log: Path,
          rng: random.Random, sample: int) -> dict[str, Any]:
    acked = [s for s in plan if s.job_id is not None]
    units = [u for s in acked for u in s.unit_ids()]
    arrays = [s for s in acked if s.kind == "array"]
    records = nv.call(_get_records(nv, [k for k, _ in units] + [f"j.{s.number}" for s in arrays]),
                      timeout=1800)
    runs = job_runs(log)
    webdav_root = stack.home / "webdav"
    lost: dict[str, str] = {}
    unfinished: dict[str, str] = {}
    duplicated: dict[str, str] = {}
    completed: list[tuple[str, dict[str, Any]]] = []
    reruns = 0
    runs_logged = 0
    for key, job_id in units:
        record = records.get(key)
        spans = runs.get(job_id, [])
        runs_logged += len(spans)
        if record is None:
            lost[job_id] = "no record"
            continue
        run_count = int(record.get("run_count") or 0)
        reruns += run_count >= 2
        overlap = any(b.first <= a.last for a, b in zip(spans, spans[1:], strict=False))
        if overlap:
            duplicated[job_id] = f"two runs overlapped: {spans}"
        elif len(spans) > run_count:
            duplicated[job_id] = f"{len(spans)} runs logged, run_count {run_count}"
        state = record.get("state")
        if state != "F":
            unfinished[job_id] = f"state {state}, comment {record.get('comment')!r}"
            continue
        if record.get("exit_status") != 0:
            lost[job_id] = (f"Exit_status {record.get('exit_status')}, "
                            f"comment {record.get('comment')!r}")
            continue
        out = webdav_root.joinpath(*output_segments(record, job_id))
        try:
            text = out.read_text(errors="replace")
        except OSError:
            text = ""
        if f"out {job_id}" not in text:
            lost[job_id] = f"no results at {out}"
            continue
        if not any(s.ended for s in spans):
            duplicated.setdefault(job_id, "F and exit 0 but no run logged its end")
        completed.append((job_id, record))
    arrays_done = sum(1 for s in arrays if records.get(f"j.{s.number}", {}).get("state") == "F")
    # Records nobody was given an id for (a retried submit that made a second job).
    expected = {k for k, _ in units} | {f"j.{s.number}" for s in arrays}
    keys = nv.call(_all_keys(nv), timeout=600)
    extra = sorted(k for k in keys if k.startswith("j.") and k not in expected)
    for key in extra:
        duplicated[key] = "a record nobody was given an id for"
    # A sample of the results, fetched over HTTP from WebDAV itself.
    checked = rng.sample(completed, min(sample, len(completed)))
    http_ok_count = 0
    http_failures: list[str] = []
    for job_id, record in checked:
        path = "/".join(urllib.parse.quote(p, safe="") for p in output_segments(record, job_id))
        status, data = fetch_webdav(f"{stack.webdav_url}/{path}", stack.secrets["webdav_user"],
                                    stack.secrets["webdav_password"])
        if status == 200 and f"out {job_id}".encode() in data:
            http_ok_count += 1
        else:
            http_failures.append(f"{job_id}: HTTP {status}")
    return {
        "submitted": len(units),
        "completed": len(completed),
        "lost": len(lost),
        "unfinished": len(unfinished),
        "duplicated": len(duplicated),
        "reruns": reruns,
        "runs_logged": runs_logged,
        "arrays_finished": f"{arrays_done}/{len(arrays)}",
        "extra_records": len(extra),
        "results_on_webdav_disk": len(completed),
        "results_fetched_over_http": f"{http_ok_count}/{len(checked)}",
        "examples": {
            "lost": dict(list(lost.items())[:10]),
            "unfinished": dict(list(unfinished.items())[:10]),
            "duplicated": dict(list(duplicated.items())[:10]),
            "http_failures": http_failures[:10],
        },
    }


# -- the run ----------------------------------------------------------------------


def git_describe() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"],
                              cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def soak(args: argparse.Namespace) -> dict[str, Any]:
    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    started = dt.datetime.now()
    rng = random.Random(args.seed)
    fault_rng = random.Random(args.seed * 7919 + 1)
    plan = make_plan(args, rng)
    result: dict[str, Any] = {
        "schema": 1,
        "kind": "soak",
        "started": started.isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "git": git_describe(),
        "machine": procstat.machine_facts(),
        "plan": dict(Counter(s.kind for s in plan)),
    }
    result["plan"]["jobs"] = sum(s.size for s in plan)
    log(f"pkbs up ({args.workers} workers x {args.slots} slots, ack_wait {args.ack_wait} s)")
    stack = BenchStack(args.workers, args.slots, args.keep_home,
                       {"PKBS_ACK_WAIT_SECONDS": str(args.ack_wait)})
    for attempt in (1, 2):
        try:
            stack.up()
            break
        except StackFailed:
            stack.down()
            if attempt == 2:
                raise
            stack = BenchStack(args.workers, args.slots, args.keep_home,
                               {"PKBS_ACK_WAIT_SECONDS": str(args.ack_wait)})
    nv: NatsView | None = None
    try:
        log(f"  PKBS_HOME={stack.home}")
        nv = NatsView(stack.nats_url, stack.secrets["nats_user"], stack.secrets["nats_password"])
        result["outcome"] = _run(args, stack, nv, plan, fault_rng, rng, log, result)
    finally:
        if nv is not None:
            nv.close()
        log("pkbs down")
        stack.down()
    result["machine"]["loadavg_end"] = procstat.loadavg()
    return result


def _run(args: argparse.Namespace, stack: BenchStack, nv: NatsView, plan: list[Submission],
         fault_rng: random.Random, rng: random.Random, log: Any,
         result: dict[str, Any]) -> dict[str, Any]:
    runlog = stack.home / "soak-runs.log"
    script = JOB_SCRIPT.format(log=str(runlog)).encode()
    env = stack.base_env()
    template = request_body(env, script, ("-N", "soak"))
    array_template = request_body(env, script, ("-J", "1-2", "-N", "soakarr"))
    t0 = time.monotonic()
    deadline = t0 + args.duration
    faults = FaultInjector(args, stack.home, fault_rng, t0, log)
    faults.start()
    submitter = Submitter(stack.endpoint, stack.token, deadline)
    qsub_stats: Counter[str] = Counter()
    qsub_unclean: list[str] = []
    http_subs = [s for s in plan if s.kind != "qsub"]
    qsub_subs = [s for s in plan if s.kind == "qsub"]
    posted = [0]
    lock = threading.Lock()
    next_at = [time.monotonic()]

    def post(sub: Submission) -> None:
        if args.submit_rate > 0:
            with lock:
                at = next_at[0]
                next_at[0] += sub.size / args.submit_rate
            time.sleep(max(0.0, at - time.monotonic()))
        if time.monotonic() <= deadline:
            body = body_for(array_template if sub.kind == "array" else template, sub, script)
            submitter.post(body, sub)
        else:
            sub.error = "not submitted: time bound"
        with lock:
            posted[0] += 1

    def qsubs() -> None:
        for i, sub in enumerate(qsub_subs):
            # Spread over the HTTP submissions: the i-th after (i+1)/(q+1) of them.
            mark = len(http_subs) * (i + 1) // (len(qsub_subs) + 1)
            while posted[0] < mark and time.monotonic() < deadline:
                time.sleep(0.05)
            if time.monotonic() > deadline:
                sub.error = "not submitted: time bound"
                continue
            run_qsub(env, script, sub, deadline, qsub_stats, qsub_unclean)

    log(f"submitting {result['plan']['jobs']} jobs in {len(plan)} submissions; faults "
        f"every ~{args.fault_interval:g} s ({','.join(args.kinds)}); bound {args.duration:g} s")
    qsub_thread = threading.Thread(target=qsubs, daemon=True, name="soak-qsub")
    qsub_thread.start()
    with ThreadPoolExecutor(args.http_threads) as pool:
        list(pool.map(post, http_subs))
    qsub_thread.join()
    submitted_at = time.monotonic() - t0
    acked = [s for s in plan if s.job_id is not None]
    log(f"  submitted: {len(acked)} of {len(plan)} submissions in {submitted_at:.1f} s "
        f"({submitter.retries} HTTP retries)")
    # Wait for every acknowledged job (arrays: the array record) to be F; faults go on.
    numbers = {s.number for s in acked}
    finished = wait_finished(nv, numbers, deadline, log, t0)
    bound_hit = time.monotonic() >= deadline and finished < len(numbers)
    faults.stop.set()
    faults.join()
    faults_end = time.monotonic() - t0
    log(f"  faults stopped at {faults_end:.1f} s: {faults.counts()}; settling")
    wait_finished(nv, numbers, time.monotonic() + args.settle, log, t0)
    settled_at = time.monotonic() - t0
    log("auditing")
    outcome = audit(stack, nv, plan, runlog, rng, args.sample)
    failed_subs = [s for s in plan if s.job_id is None]
    outcome.update({
        "submissions": len(plan),
        "submissions_acknowledged": len(acked),
        "submissions_failed": len(failed_subs),
        "submission_failures": [f"{s.kind} {s.submit_id}: {s.error}" for s in failed_subs][:10],
        "http_submit_retries": submitter.retries,
        "qsub": {"jobs": sum(1 for s in qsub_subs if s.job_id), **qsub_stats,
                 "unclean_examples": qsub_unclean[:5]},
        "faults": faults.counts(),
        "faults_total": sum(faults.counts().values()),
        "fault_errors": [e for e in faults.events if "error" in e],
        "fault_log": faults.events,
        "bound_hit": bound_hit,
        "submit_phase_s": round(submitted_at, 1),
        "faults_stopped_at_s": round(faults_end, 1),
        "settled_at_s": round(settled_at, 1),
        "audit_s": round(time.monotonic() - t0 - settled_at, 1),
        "duration_s": round(time.monotonic() - t0, 1),
    })
    return outcome


def wait_finished(nv: NatsView, numbers: set[int], deadline: float, log: Any,
                  t0: float) -> int:
    """Wait until every job number (an array: its record) is F, from the events, or
    from the KV every few seconds (events are not stored: a NATS restart drops some)."""
    pending = {n for n in numbers if nv.seen_in(n, "F") is None}
    last_kv = last_log = time.monotonic()
    while pending and time.monotonic() < deadline:
        pending = {n for n in pending if nv.seen_in(n, "F") is None}
        now = time.monotonic()
        if now - last_kv > 5:
            try:
                records = nv.records(pending, concurrency=256)
            except Exception:
                records = {}
            for number, record in records.items():
                if record.get("state") == "F":
                    nv.seen.setdefault(number, {}).setdefault("F", time.time())
            pending = {n for n in pending if nv.seen_in(n, "F") is None}
            last_kv = now
        if now - last_log > 30:
            log(f"  {now - t0:.0f} s: {len(numbers) - len(pending)} of {len(numbers)} "
                "submissions finished")
            last_log = now
        time.sleep(0.2)
    return len(numbers) - len(pending)


# -- output -----------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    o = result["outcome"]
    rows = [
        ("jobs planned", result["plan"]["jobs"]),
        ("submissions (http / array / qsub)",
         f"{result['plan'].get('http', 0)} / {result['plan'].get('array', 0)} / "
         f"{result['plan'].get('qsub', 0)}"),
        ("submissions acknowledged / failed",
         f"{o['submissions_acknowledged']} / {o['submissions_failed']}"),
        ("HTTP submit retries (same submit id)", o["http_submit_retries"]),
        ("qsub failures (clean / unclean)",
         f"{o['qsub'].get('qsub_failed_cleanly', 0)} / "
         f"{o['qsub'].get('qsub_failed_uncleanly', 0)}"),
        ("faults injected", f"{o['faults_total']}  "
         + ", ".join(f"{k} {v}" for k, v in o["faults"].items())),
        ("jobs submitted (acknowledged)", o["submitted"]),
        ("completed", o["completed"]),
        ("lost", o["lost"]),
        ("unfinished", o["unfinished"]),
        ("duplicated (overlap / uncounted run / extra record)", o["duplicated"]),
        ("reruns (run_count >= 2)", o["reruns"]),
        ("runs logged", o["runs_logged"]),
        ("arrays finished", o["arrays_finished"]),
        ("results on WebDAV (disk) / over HTTP (sample)",
         f"{o['results_on_webdav_disk']} / {o['results_fetched_over_http']}"),
        ("time bound hit", o["bound_hit"]),
        ("duration (submit / faults end / settled / total)",
         f"{o['submit_phase_s']} / {o['faults_stopped_at_s']} / {o['settled_at_s']} / "
         f"{o['duration_s']} s"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"pkbs soak, seed {result['config']['seed']}, {result['started']}"]
    lines += [f"  {name.ljust(width)}  {value}" for name, value in rows]
    for kind, examples in o["examples"].items():
        for job, why in (examples.items() if isinstance(examples, dict) else
                         enumerate(examples)):
            lines.append(f"  {kind}: {job}: {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out = args.out.resolve()
    # nats-py logs every failed reconnect with a traceback: expected here, by design.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    frozen: dict[str, Any] = {"snapshot": None}
    site = None
    if not args.live:
        site, frozen = source.freeze()
        source.activate(site)

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        result = soak(args)
    finally:
        if site is not None and not args.keep_home:
            shutil.rmtree(site, ignore_errors=True)
    result["source"] = frozen
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.fromisoformat(result["started"]).strftime("%Y%m%d-%H%M%S")
    path = args.out / f"soak-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nresults: {path}")
    o = result["outcome"]
    if o["lost"] or o["duplicated"] or o["unfinished"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
