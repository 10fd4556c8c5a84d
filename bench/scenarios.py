"""The benchmark scenarios (docs/performance.md). Each returns a JSON-able dict;
figures come with the baseline measured beside them in the same run."""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import baselines, procstat
from .natsio import NatsView
from .stack import BenchStack
from .stats import ratio, summary_ms
from .submit import (
    BIN,
    TRUE_SCRIPT,
    Api,
    QsubFailed,
    request_body,
    run_qsub,
    submit_http,
    submit_qsub,
    with_new_id,
)

REPO = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("pkbs", "pkbs.cli", "pkbs.worker", "pkbs.dispatcher")


def project_dirs() -> list[Path]:
    """Where the measured pkbs code lives (the source tree, or whatever PYTHONPATH
    points at when measuring another version)."""
    import importlib

    return [Path(importlib.import_module(m).__file__ or "").resolve().parent
            for m in PROJECT_PACKAGES]
HISTORY_FIRST_NUMBER = 1_000_000_000  # injected records live far above real job numbers

ARRAY_NOTE = "skipped: qsub -J is refused (job arrays not implemented in this version)"


def _refused(exc: QsubFailed) -> bool:
    return "not supported" in exc.stderr or "-J" in exc.stderr


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Context:
    args: argparse.Namespace
    stack: BenchStack
    nv: NatsView
    total_slots: int
    env_asis: dict[str, str]
    env_warm: dict[str, str]
    body: dict[str, Any]
    submitted: list[int] = field(default_factory=list)
    template: dict[str, Any] | None = None
    load: dict[str, Any] = field(default_factory=dict)  # resources seen under load
    log: Callable[[str], None] = print

    @property
    def pids(self) -> dict[str, int]:
        return self.stack.pids()

    def settle(self) -> None:
        """Let every job submitted so far finish, then wait for the stack to go quiet."""
        if self.submitted:
            self.nv.wait_states(self.submitted, "F", timeout=900)
        procstat.wait_quiet(self.pids)

    def api(self, keep_alive: bool = True) -> Api:
        return Api(self.stack.endpoint, self.stack.token, keep_alive)


def make_envs(stack: BenchStack) -> tuple[dict[str, str], dict[str, str]]:
    """(as-is, warm) client environments, each with a private PYTHONPYCACHEPREFIX so
    that neither depends on whether someone byte-compiled the source tree.

    warm: PYTHONDONTWRITEBYTECODE unset, every module byte-compiled once (compileall
    of the project + a warm-up run): what an installed wheel (compiled at install
    time) costs.
    as-is: PYTHONDONTWRITEBYTECODE=1 as these machines set it, with the stdlib and
    site-packages byte-compiled but not the project (a fresh checkout): every start
    recompiles the project's modules. `warm_up` fills both prefixes.
    """
    warm = stack.base_env()
    warm.pop("PYTHONDONTWRITEBYTECODE", None)
    warm["PYTHONPYCACHEPREFIX"] = str(stack.home / "pycache-warm")
    asis = stack.base_env()
    asis["PYTHONDONTWRITEBYTECODE"] = "1"
    asis["PYTHONPYCACHEPREFIX"] = str(stack.home / "pycache-asis")
    return asis, warm


def warm_up(ctx: Context) -> dict[str, Any]:
    py = str(BIN / "python")
    t0 = time.perf_counter()
    dirs = project_dirs()
    subprocess.run([py, "-m", "compileall", "-q", *(str(d) for d in dirs)],
                   env=ctx.env_warm, capture_output=True, timeout=300)
    numbers = []
    for _ in range(2):
        subprocess.run([py, "-c", "pass"], env=ctx.env_warm, timeout=60)
        numbers.append(run_qsub(ctx.env_warm)[0])
        subprocess.run([str(BIN / "qstat"), "-x"], env=ctx.env_warm, capture_output=True,
                       timeout=120)
    ctx.submitted += numbers
    # as-is = the warm prefix without the project's own modules.
    warm_prefix = Path(ctx.env_warm["PYTHONPYCACHEPREFIX"])
    cold_prefix = Path(ctx.env_asis["PYTHONPYCACHEPREFIX"])
    shutil.rmtree(cold_prefix, ignore_errors=True)
    shutil.copytree(warm_prefix, cold_prefix)
    for d in dirs:
        shutil.rmtree(cold_prefix / d.relative_to(d.anchor), ignore_errors=True)
    project_pycache = any((d / "__pycache__").is_dir() for d in dirs)
    return {"seconds": round(time.perf_counter() - t0, 3),
            "warm_pycache_prefix": str(warm_prefix),
            "as_is_pycache_prefix": str(cold_prefix) + " (no project modules)",
            "project_dirs": [str(d) for d in dirs],
            "source_tree_has___pycache__": project_pycache}


# -- 1. throughput -------------------------------------------------------------------


def _variant(ctx: Context, name: str, n: int, threads: int, submit: Any) -> dict[str, Any]:
    """N single jobs. The harness does not follow their changes meanwhile (NatsView.quiet):
    it waits for the work queue to empty, then reads every record."""
    ctx.settle()
    pids = ctx.pids
    ctx.log(f"  throughput/{name}: {n} jobs")
    cpu0 = procstat.cpu_snapshot(pids)
    client0 = (_self_cpu(), _children_cpu())
    with procstat.RssSampler(pids) as rss, ctx.nv.quiet():
        numbers, t_first, t_submitted = submit()
        ctx.submitted += numbers
        t_seen_last = ctx.nv.wait_work_done(timeout=max(600, n))
    cpu1 = procstat.cpu_snapshot(pids)
    client1 = (_self_cpu(), _children_cpu())
    records = ctx.nv.records(numbers)
    unfinished = [number for number in numbers if records.get(number, {}).get("state") != "F"]
    if unfinished:  # (not expected: a job is F before its work message goes)
        t_seen_last = ctx.nv.wait_states(unfinished, "F", timeout=max(600, n))
        records.update(ctx.nv.records(unfinished))
    ctx.nv.note_records(records)
    obit = [r["obittime"] for r in records.values() if r.get("obittime")]
    bad = sum(1 for r in records.values() if r.get("exit_status") != 0)
    if bad:
        example = next(r for r in records.values() if r.get("exit_status") != 0)
        raise RuntimeError(f"{bad} of {n} `true` jobs did not exit 0 (e.g. job "
                           f"{example.get('number')}: exit {example.get('exit_status')}, "
                           f"{example.get('comment')!r}): the figures would mean nothing")
    t_last = max(obit) if obit else t_seen_last
    if ctx.template is None:
        ctx.template = next((r for r in records.values() if r.get("state") == "F"), None)
    wall = t_last - t_first
    cpu = procstat.cpu_delta(cpu0, cpu1)
    total_cpu = sum(cpu.values())
    ctx.load[name] = {"rss_peak_kib": rss.peak, "cpu_s": {k: round(v, 3) for k, v in cpu.items()}}
    return {
        "n": n,
        "threads": threads,
        "records_read": len(records),
        "nonzero_exit": bad,
        "submit_s": round(t_submitted - t_first, 3),
        "submit_per_s": round(n / max(t_submitted - t_first, 1e-9), 1),
        "wall_s": round(wall, 3),
        "jobs_per_s": round(n / wall, 2),
        "last_finish_seen_lag_ms": round(1000 * (t_seen_last - t_last), 1),
        "pkbs_cpu_ms_per_job": round(1000 * total_cpu / n, 3),
        "pkbs_cpu_ms_per_job_by_process": {k: round(1000 * v / n, 3) for k, v in cpu.items()},
        "client_cpu_ms_per_job": round(
            1000 * ((client1[0] - client0[0]) + (client1[1] - client0[1])) / n, 3),
        "rss_peak_kib": rss.peak,
    }


def _array_variant(ctx: Context, n: int) -> dict[str, Any]:
    """All N jobs as one array: `qsub -J 1-N`, until the array record is F. As for the
    single jobs, the harness does not follow the subjobs' changes meanwhile: it waits
    for the work queue to empty, then for the array's record to say F."""
    ctx.settle()
    pids = ctx.pids
    ctx.log(f"  throughput/array: qsub -J 1-{n}")
    cpu0 = procstat.cpu_snapshot(pids)
    with procstat.RssSampler(pids) as rss, ctx.nv.quiet():
        t_first = time.time()
        try:
            number, qsub_s = run_qsub(ctx.env_warm, TRUE_SCRIPT, ("-J", f"1-{n}"), timeout=600)
        except QsubFailed as exc:
            if _refused(exc):
                return {"skipped": ARRAY_NOTE, "qsub_says": exc.stderr[:200]}
            raise
        t_submitted = time.time()
        ctx.nv.wait_work_done(timeout=max(600, n))
        t_seen = ctx.nv.wait_record_state(number, "F", timeout=600)
    cpu = procstat.cpu_delta(cpu0, procstat.cpu_snapshot(pids))
    ctx.submitted.append(number)
    record = ctx.nv.records([number]).get(number, {})
    ctx.nv.note_records({number: record})
    t_last = record.get("obittime") or t_seen
    wall = t_last - t_first
    total_cpu = sum(cpu.values())
    ctx.load["array"] = {"rss_peak_kib": rss.peak,
                         "cpu_s": {k: round(v, 3) for k, v in cpu.items()}}
    return {
        "n": n,
        "threads": 1,
        "job": f"{number}[]",
        "array_done": record.get("array_done"),
        "array_failed": record.get("array_failed"),
        "submit_s": round(t_submitted - t_first, 3),
        "qsub_s": round(qsub_s, 3),
        "wall_s": round(wall, 3),
        "jobs_per_s": round(n / wall, 2),
        "pkbs_cpu_ms_per_job": round(1000 * total_cpu / n, 3),
        "pkbs_cpu_ms_per_job_by_process": {k: round(1000 * v / n, 3) for k, v in cpu.items()},
        "rss_peak_kib": rss.peak,
    }


def _baselines(ctx: Context, n: int, threads: int) -> dict[str, Any]:
    base = ctx.stack.home / "baseline"
    return {"spawn": baselines.spawn(n, threads),
            "fresh_dir": baselines.fresh_dir(n, threads, base)}


def throughput(ctx: Context) -> dict[str, Any]:
    """The variants one after the other, each between two baseline runs: its ratio is
    taken to the mean of the baselines measured just before and just after it, so that
    a machine that gets busier or quieter during the run moves both sides."""
    a = ctx.args
    n = a.n
    threads = a.baseline_threads or ctx.total_slots
    runs: list[dict[str, Any]] = []

    def measure_baselines() -> None:
        ctx.settle()
        ctx.log(f"  baselines: {n} spawns on {threads} threads")
        runs.append(_baselines(ctx, n, threads))

    variants: dict[str, Any] = {}

    def attempt(name: str, run: Callable[[], dict[str, Any]]) -> None:
        try:
            variants[name] = run()
        except Exception as exc:  # keep the other variants
            variants[name] = {"error": f"{type(exc).__name__}: {exc}"}
            ctx.log(f"  throughput/{name} failed: {exc}")
            return
        v = variants[name]
        if "jobs_per_s" not in v:
            return
        before = runs[-1]
        measure_baselines()
        after = runs[-1]
        for kind in ("fresh_dir", "spawn"):
            base = statistics.fmean([before[kind]["jobs_per_s"], after[kind]["jobs_per_s"]])
            v[f"baseline_{kind}_jobs_per_s"] = round(base, 1)
            v[f"ratio_to_{kind}"] = ratio(v["jobs_per_s"], base)

    measure_baselines()
    attempt("http_batch", lambda: {**_variant(
        ctx, "http_batch", n, a.http_threads,
        lambda: submit_http(ctx.stack.endpoint, ctx.stack.token, ctx.body, n, a.http_threads,
                            a.http_batch)), "batch": a.http_batch})
    n_single = a.n_single if a.n_single is not None else n
    if n_single > 0:
        attempt("http_single", lambda: _variant(
            ctx, "http_single", n_single, a.http_threads,
            lambda: submit_http(ctx.stack.endpoint, ctx.stack.token, ctx.body, n_single,
                                a.http_threads)))
    n_qsub = a.n_qsub
    if n_qsub > 0:
        attempt("qsub_parallel", lambda: _variant(
            ctx, "qsub_parallel", n_qsub, a.qsub_threads,
            lambda: submit_qsub(ctx.env_warm, n_qsub, a.qsub_threads)))
    n_array = a.n_array if a.n_array is not None else n
    if n_array > 0:
        attempt("array", lambda: _array_variant(ctx, n_array))
    if len(runs) == 1:
        measure_baselines()
    summary: dict[str, Any] = {}
    for kind in ("spawn", "fresh_dir"):
        rates = [r[kind]["jobs_per_s"] for r in runs]
        summary[kind] = {
            "n": n, "threads": threads,
            "jobs_per_s_median": round(statistics.median(rates), 1),
            "jobs_per_s_runs": [round(x, 1) for x in rates],
            "parent_cpu_ms_per_job": round(statistics.median(
                r[kind]["parent_cpu_ms_per_job"] for r in runs), 3),
        }
    for v in variants.values():
        if "jobs_per_s" in v:
            v["ratio_to_fresh_dir_best_run"] = ratio(v["jobs_per_s"],
                                                     max(summary["fresh_dir"]["jobs_per_s_runs"]))
    return {"n": n, "baseline_threads": threads, "baselines": summary, "variants": variants,
            "target": "jobs/s >= 0.30 x fresh_dir baseline (mean of the runs before and after)"}


# -- 2. qsub latency ------------------------------------------------------------------


def qsub_latency(ctx: Context) -> dict[str, Any]:
    samples = ctx.args.latency_samples
    py = str(BIN / "python")
    times: dict[str, list[float]] = {f"{w}_{m}": [] for w in ("qsub", "python_c_pass")
                                     for m in ("as_is", "warm")}
    times["http_post_new_connection"] = []
    times["http_post_keep_alive"] = []
    keep = ctx.api(keep_alive=True)
    keep.submit(with_new_id(ctx.body))  # open the connection
    ctx.settle()
    ctx.log(f"  qsub latency: {samples} rounds")
    for _ in range(samples):
        numbers = []
        for mode, env in (("as_is", ctx.env_asis), ("warm", ctx.env_warm)):
            t0 = time.perf_counter()
            subprocess.run([py, "-c", "pass"], env=env, check=True)
            times[f"python_c_pass_{mode}"].append(time.perf_counter() - t0)
            number, elapsed = run_qsub(env)
            times[f"qsub_{mode}"].append(elapsed)
            numbers.append(number)
        body = with_new_id(ctx.body)
        t0 = time.perf_counter()
        fresh = ctx.api(keep_alive=False)
        numbers.append(fresh.submit(body))
        times["http_post_new_connection"].append(time.perf_counter() - t0)
        body = with_new_id(ctx.body)
        t0 = time.perf_counter()
        numbers.append(keep.submit(body))
        times["http_post_keep_alive"].append(time.perf_counter() - t0)
        ctx.submitted += numbers
        ctx.nv.wait_states(numbers, "F", timeout=120)
    keep.close()
    out: dict[str, Any] = {"samples": samples, "script": "true (on stdin)"}
    out["times"] = {k: summary_ms(v) for k, v in times.items()}
    for mode in ("as_is", "warm"):
        q = out["times"][f"qsub_{mode}"]["p50_ms"]
        p = out["times"][f"python_c_pass_{mode}"]["p50_ms"]
        out[f"ratio_qsub_to_python_{mode}"] = ratio(q, p)
        out[f"qsub_minus_python_p50_ms_{mode}"] = round(q - p, 3)
    out["ratio_qsub_to_http_post"] = ratio(out["times"]["qsub_warm"]["p50_ms"],
                                           out["times"]["http_post_new_connection"]["p50_ms"])
    out["representative"] = "warm: an installed wheel ships byte-compiled modules"
    out["target"] = "qsub p50 <= 2.5 x python -c pass"
    return out


# -- 3. submit -> start / finished ------------------------------------------------------


def start_latency(ctx: Context) -> dict[str, Any]:
    samples = ctx.args.start_samples
    api = ctx.api()
    api.submit(with_new_id(ctx.body))  # connection open and warm
    ctx.settle()
    ctx.log(f"  submit->start latency: {samples} jobs one at a time")
    numbers, t_submit, t_return = [], [], []
    base_spawn, base_fresh = [], []
    fresh_root = ctx.stack.home / "baseline"
    for _ in range(samples):
        time.sleep(0.05)
        t0 = time.time()
        number = api.submit(with_new_id(ctx.body))
        t_return.append(time.time() - t0)
        ctx.submitted.append(number)
        numbers.append(number)
        t_submit.append(t0)
        ctx.nv.wait_states([number], "F", timeout=120)
        base_spawn.append(baselines.spawn(1, 1)["wall_s"])
        base_fresh.append(baselines.fresh_dir(1, 1, fresh_root)["wall_s"])
    api.close()
    records = ctx.nv.records(numbers)
    to_start, to_finish, seen_r, seen_f = [], [], [], []
    for number, t0 in zip(numbers, t_submit, strict=True):
        record = records.get(number, {})
        if record.get("stime"):
            to_start.append(record["stime"] - t0)
        if record.get("obittime"):
            to_finish.append(record["obittime"] - t0)
        r = ctx.nv.seen_in(number, "R")
        f = ctx.nv.seen_in(number, "F")
        if r:
            seen_r.append(r - t0)
        if f:
            seen_f.append(f - t0)
    out = {
        "samples": samples,
        "submit_http_keep_alive": summary_ms(t_return),
        "submit_to_start_record": summary_ms(to_start),
        "submit_to_finished_record": summary_ms(to_finish),
        "submit_to_R_event_seen": summary_ms(seen_r),
        "submit_to_F_event_seen": summary_ms(seen_f),
        "baseline_spawn": summary_ms(base_spawn),
        "baseline_fresh_dir_job": summary_ms(base_fresh),
        "note": ("t0 = just before the HTTP POST (keep-alive); start = record stime "
                 "(worker's clock, same machine); finished = record obittime (set after "
                 "the results are stored)"),
        "target": "submit->start p50 <= 50 ms",
    }
    out["ratio_finish_p50_to_fresh_dir_p50"] = ratio(
        out["submit_to_finished_record"].get("p50_ms"),
        out["baseline_fresh_dir_job"].get("p50_ms"))
    return out


def container_latency(ctx: Context) -> dict[str, Any]:
    """Submit -> start and -> finished of a container job (`--container-image`) beside a
    process job's, alternating, one at a time; and `docker run --rm IMAGE true` as the
    daemon's own floor, in the same run."""
    image = ctx.args.container_image
    if not ctx.stack.layout().get("docker"):
        return {"skipped": "the stack's workers have no Docker daemon (PKBS_DOCKER_HOST)"}
    samples = ctx.args.container_samples
    api = ctx.api()
    boxed = {**ctx.body, "spec": {**ctx.body["spec"], "image": image}}
    api.submit(with_new_id(boxed))  # the image's first container, and the connection
    ctx.settle()
    ctx.log(f"  container jobs ({image}) and process jobs, {samples} of each, one at a time")
    kinds: dict[str, tuple[list[int], list[float]]] = {"process": ([], []),
                                                       "container": ([], [])}
    docker_run: list[float] = []
    for _ in range(samples):
        for kind, body in (("process", ctx.body), ("container", boxed)):
            time.sleep(0.05)
            t0 = time.time()
            number = api.submit(with_new_id(body))
            ctx.submitted.append(number)
            kinds[kind][0].append(number)
            kinds[kind][1].append(t0)
            ctx.nv.wait_states([number], "F", timeout=120)
        t0 = time.perf_counter()
        subprocess.run([_docker(), "run", "--rm", image, "true"], check=True,
                       capture_output=True, timeout=120)
        docker_run.append(time.perf_counter() - t0)
    api.close()
    out: dict[str, Any] = {"samples": samples, "image": image,
                           "baseline_docker_run_true": summary_ms(docker_run)}
    for kind, (numbers, starts) in kinds.items():
        records = ctx.nv.records(numbers)
        started = [records[n]["stime"] - t0 for n, t0 in zip(numbers, starts, strict=True)
                   if records.get(n, {}).get("stime")]
        ended = [records[n]["obittime"] - t0 for n, t0 in zip(numbers, starts, strict=True)
                 if records.get(n, {}).get("obittime")]
        out[kind] = {"submit_to_start_record": summary_ms(started),
                     "submit_to_finished_record": summary_ms(ended)}
    return out


def _docker() -> str:
    return "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else "docker"


# -- 5. history -----------------------------------------------------------------------


def _timed(argv: list[str], env: dict[str, str], timeout: float = 900) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, timeout=timeout)
    elapsed = time.perf_counter() - t0
    return elapsed, result.returncode, result.stdout.count(b"\n")


def _history_point(ctx: Context, repeats: int) -> dict[str, Any]:
    env = ctx.env_warm
    keys = ctx.nv.key_count()
    qstat = str(BIN / "qstat")
    qx, q, api_t, scan_t, py_t = [], [], [], [], []
    lines = rc = 0
    api = ctx.api()
    api_bytes = 0
    for _ in range(repeats):
        t, rc, lines = _timed([qstat, "-x"], env)
        qx.append(t)
        t, _, _ = _timed([qstat], env)
        q.append(t)
        t0 = time.perf_counter()
        status, data = api.request("GET", "/jobs?history=true&view=table")  # what qstat -x asks
        api_t.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"job listing failed ({status}): {data[:300]!r}")
        api_bytes = len(data)
        _, seconds = ctx.nv.scan()
        scan_t.append(seconds)
        t, _, _ = _timed([str(BIN / "python"), "-c", "pass"], env)
        py_t.append(t)
    api.close()
    rss = procstat.rss_kib(ctx.pids["dispatcher"])
    # The full attributes (qstat -f -x, -F json), once: 30 s or more at 100 000 records.
    full_t, full_bytes = _get_once(ctx, "/jobs?history=true")
    qx_p50 = statistics.median(qx)
    return {
        "records_in_kv": keys,
        "repeats": repeats,
        "qstat_x": summary_ms(qx),
        "qstat_x_exit": rc,
        "qstat_x_lines": lines,
        "qstat_no_x": summary_ms(q),
        "api_get_history": summary_ms(api_t),
        "api_response_bytes": api_bytes,
        "api_get_history_full": summary_ms([full_t]),
        "api_full_response_bytes": full_bytes,
        "dispatcher_rss_kib": rss,  # after the table listings
        "dispatcher_rss_kib_after_full": procstat.rss_kib(ctx.pids["dispatcher"]),
        "baseline_kv_scan_nats_py": summary_ms(scan_t),
        "baseline_python_c_pass": summary_ms(py_t),
        "ratio_qstat_x_to_kv_scan": ratio(qx_p50, statistics.median(scan_t)),
        "qstat_x_us_per_record": round(1e6 * qx_p50 / max(keys, 1), 2),
    }


def _get_once(ctx: Context, path: str, timeout: float = 900) -> tuple[float, int]:
    """(seconds, response bytes) of one GET on a fresh connection with a long timeout."""
    import http.client

    url = urllib.parse.urlsplit(ctx.stack.endpoint)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=timeout)
    try:
        t0 = time.perf_counter()
        conn.request("GET", "/v1" + path, headers={"Authorization": f"Bearer {ctx.stack.token}"})
        response = conn.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - t0
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path} failed ({response.status}): {data[:300]!r}")
    return elapsed, len(data)


def _first_listing(ctx: Context) -> float:
    """Seconds until the dispatcher lists the jobs (its job index has applied every
    record written so far; it answers 503 while it catches up)."""
    api = ctx.api()
    t0 = time.perf_counter()
    try:
        while True:
            status, data = api.request("GET", "/jobs?history=true&view=table")
            if status == 200:
                return time.perf_counter() - t0
            if status != 503 or time.perf_counter() - t0 > 600:
                raise RuntimeError(f"job listing failed ({status}): {data[:300]!r}")
    finally:
        api.close()


def history(ctx: Context) -> dict[str, Any]:
    ctx.settle()
    repeats = ctx.args.qstat_repeats
    ctx.log("  qstat -x over the records so far")
    out: dict[str, Any] = {"points": [_history_point(ctx, repeats)],
                           "target": "qstat over 100 000 finished jobs <= 1 s"}
    extra = ctx.args.history
    if extra > 0:
        if ctx.template is None:
            number = ctx.api().submit(with_new_id(ctx.body))
            ctx.submitted.append(number)
            ctx.nv.wait_states([number], "F")
            ctx.template = ctx.nv.records([number])[number]
        if ctx.template.get("state") != "F":
            raise RuntimeError(f"no finished record to copy: {ctx.template.get('state')}")
        ctx.log(f"  injecting {extra} finished records into KV {'PKBS_JOBS'}")
        first = HISTORY_FIRST_NUMBER + ctx.nv.key_count()
        seconds = ctx.nv.inject_history(ctx.template, extra, first)
        rss_before = procstat.rss_kib(ctx.pids["dispatcher"])
        listed = _first_listing(ctx)
        out["injected"] = {"count": extra, "seconds": round(seconds, 3),
                           "first_listing_after_s": round(listed, 3),
                           "dispatcher_rss_kib_after_inject": rss_before,
                           "per_s": round(extra / seconds, 1), "first_number": first,
                           "note": ("finished JobRecords written straight into KV PKBS_JOBS "
                                    "(keys j.<n>), copies of a real finished record: this "
                                    "bypasses the queue, the payload stream and the workers")}
        procstat.wait_quiet(ctx.pids)
        ctx.log("  qstat -x over the injected history")
        out["points"].append(_history_point(ctx, repeats))
    return out


# -- 6. payload ---------------------------------------------------------------------


def _payload_dir(root: Path, kib: int) -> tuple[Path, int]:
    """A job directory (run.sh + incompressible data) whose zip fits the 1 MiB limit."""
    from pkbs import payload

    job = root / "payload-job"
    if job.exists():
        shutil.rmtree(job)
    job.mkdir(parents=True)
    (job / "run.sh").write_text("#!/bin/sh\nwc -c < data.bin\n")
    (job / "run.sh").chmod(0o755)
    size = kib * 1024
    while True:
        (job / "data.bin").write_bytes(os.urandom(size))
        try:
            zipped = len(payload.build_from_directory(job))
            return job, zipped
        except Exception:
            size -= 4096


def _e2e_qsub(ctx: Context, args: tuple[str, ...], script: bytes) -> dict[str, float]:
    t0 = time.time()
    number, qsub_s = run_qsub(ctx.env_warm, script, args)
    ctx.submitted.append(number)
    ctx.nv.wait_states([number], "F", timeout=300)
    record = ctx.nv.records([number])[number]
    if record.get("exit_status") != 0:
        raise RuntimeError(f"payload job {number} exited {record.get('exit_status')}: "
                           f"{record.get('comment')!r}")
    return {"qsub_s": qsub_s, "e2e_s": record["obittime"] - t0,
            "start_s": record["stime"] - t0}


def _raw_local_dir(src: Path, root: Path) -> float:
    """Baseline: copy the directory into a fresh dir and run run.sh, outputs to files."""
    t0 = time.perf_counter()
    dest = Path(shutil.copytree(src, root / f"raw-{time.monotonic_ns()}"))
    with open(dest / "o", "wb") as out, open(dest / "e", "wb") as err:
        subprocess.run(["/bin/sh", "run.sh"], cwd=dest, stdout=out, stderr=err, check=True)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(dest)
    return elapsed


def _big_output_job(ctx: Context, nbytes: int) -> dict[str, Any]:
    script = (f"head -c {nbytes} /dev/urandom > big.bin\n"
              "date +%s.%N\n").encode()
    body = request_body(ctx.env_warm, script, ("-N", "bigout"))
    api = ctx.api()
    number = api.submit(with_new_id(body))
    ctx.submitted.append(number)
    ctx.nv.wait_states([number], "F", timeout=900)
    record = ctx.nv.records([number])[number]
    job_id = f"{number}.{record.get('server', 'pkbs')}"
    names = [f["name"] for f in record.get("results", [])]
    out_name = next((x for x in names if x.startswith("bigout.o")), f"bigout.o{number}")
    status, data = api.request("GET", f"/jobs/{urllib.parse.quote(job_id)}/files/{out_name}")
    api.close()
    if status != 200:
        raise RuntimeError(f"cannot read {out_name}: {status}")
    t_end = float(data.decode().strip().splitlines()[-1])
    sizes = {f["name"]: f["size"] for f in record.get("results", [])}
    upload_s = record["obittime"] - t_end
    return {"job": job_id, "uploaded_bytes": sizes.get("big.bin"), "upload_s": upload_s,
            "mib_per_s": nbytes / 2**20 / upload_s,
            "job_run_s": t_end - record["stime"]}


def _raw_put(ctx: Context, path: Path, index: int) -> float:
    import httpx

    sec = ctx.stack.secrets
    auth = (sec["webdav_user"], sec["webdav_password"])
    base = ctx.stack.webdav_url
    with httpx.Client(auth=auth, timeout=300) as client:
        client.request("MKCOL", f"{base}/bench-raw/")
        with open(path, "rb") as fh:
            t0 = time.perf_counter()
            response = client.put(f"{base}/bench-raw/raw-{index}.bin", content=fh)
            elapsed = time.perf_counter() - t0
        response.raise_for_status()
        client.delete(f"{base}/bench-raw/raw-{index}.bin")
    return elapsed


def payload(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    repeats = a.payload_repeats
    root = ctx.stack.home / "bench-payload"
    root.mkdir(exist_ok=True)
    out: dict[str, Any] = {"repeats": repeats}
    ctx.settle()
    if a.payload_kib > 0:
        job, zipped = _payload_dir(root, a.payload_kib)
        ctx.log(f"  payload: {zipped} byte directory job x{repeats}")
        big, tiny, raw = [], [], []
        for _ in range(repeats):
            big.append(_e2e_qsub(ctx, (str(job),), b""))
            tiny.append(_e2e_qsub(ctx, (), TRUE_SCRIPT))
            raw.append(_raw_local_dir(job, root))
        out["dir_job"] = {
            "zipped_bytes": zipped,
            "qsub": summary_ms([x["qsub_s"] for x in big]),
            "submit_to_finished": summary_ms([x["e2e_s"] for x in big]),
            "baseline_tiny_job_qsub": summary_ms([x["qsub_s"] for x in tiny]),
            "baseline_tiny_job_submit_to_finished": summary_ms([x["e2e_s"] for x in tiny]),
            "baseline_raw_copy_and_run": summary_ms(raw),
        }
        d = out["dir_job"]
        d["extra_ms_vs_tiny_job"] = round(d["submit_to_finished"]["p50_ms"]
                                          - d["baseline_tiny_job_submit_to_finished"]["p50_ms"], 3)
        d["ratio_to_raw"] = ratio(d["submit_to_finished"]["p50_ms"],
                                  d["baseline_raw_copy_and_run"]["p50_ms"])
    if a.big_mib > 0:
        nbytes = a.big_mib * 2**20
        ctx.log(f"  payload: job writing {a.big_mib} MiB x{repeats}, raw PUT x{repeats}")
        jobs = []
        for _ in range(repeats):
            procstat.wait_quiet(ctx.pids)
            jobs.append(_big_output_job(ctx, nbytes))
        raw_file = root / "raw.bin"
        with open(raw_file, "wb") as fh:
            for _ in range(a.big_mib):
                fh.write(os.urandom(2**20))
        puts = []
        for i in range(repeats):
            procstat.wait_quiet(ctx.pids)
            puts.append(_raw_put(ctx, raw_file, i))
        raw_file.unlink()
        best_job = max(j["mib_per_s"] for j in jobs)
        best_put = max(nbytes / 2**20 / s for s in puts)
        out["big_output"] = {
            "mib": a.big_mib,
            "jobs": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in j.items()}
                     for j in jobs],
            "upload_mib_per_s_best": round(best_job, 2),
            "upload_mib_per_s_median": round(statistics.median(j["mib_per_s"] for j in jobs), 2),
            "baseline_raw_put_s": [round(s, 4) for s in puts],
            "baseline_raw_put_mib_per_s_best": round(best_put, 2),
            "ratio_to_raw_put": ratio(best_job, best_put),
            "note": ("upload time = record obittime - the job's own end time (printed by "
                     "the job as its last line); raw = one httpx PUT of the same size "
                     "streamed from a file to the same WebDAV server"),
        }
    return out


# -- 7. resources -----------------------------------------------------------------------


def rss_now(ctx: Context) -> dict[str, int]:
    out = {}
    for name, pid in ctx.pids.items():
        value = procstat.rss_kib(pid)
        if value is not None:
            out[name] = value
    return out


def resources(ctx: Context, idle: dict[str, int], baseline_cpu: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"rss_idle_kib": idle, "rss_end_kib": rss_now(ctx)}
    for name, data in ctx.load.items():
        out[f"under_load_{name}"] = data
    out["baseline_fresh_dir_parent_cpu_ms_per_job"] = baseline_cpu
    out["note"] = ("CPU = utime+stime from /proc/<pid>/stat of the stack's own processes "
                   "(jobs are reaped children and not included); RSS = VmRSS, sampled "
                   "every 0.25 s under load")
    return out


def _timed_or_timeout(argv: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    try:
        seconds, rc, lines = _timed(argv, env, timeout)
    except subprocess.TimeoutExpired:
        return {"timed_out_after_s": timeout}
    return {"s": round(seconds, 3), "exit": rc, "lines": lines}


def array(ctx: Context) -> dict[str, Any]:
    """4: a big array: time to submit it, then qstat / qstat -t while it runs; then
    qdel it (running all of it would take far longer than the benchmark)."""
    size = ctx.args.array_size
    env = ctx.env_warm
    ctx.settle()
    ctx.log(f"  array: qsub -J 1-{size}")
    try:
        number, qsub_s = run_qsub(env, TRUE_SCRIPT, ("-J", f"1-{size}"), timeout=600)
    except QsubFailed as exc:
        if _refused(exc):
            return {"skipped": ARRAY_NOTE, "qsub_says": exc.stderr[:200]}
        raise
    server = ctx.stack.client.get("server", "pkbs")
    array_id = f"{number}[].{server}"
    qstat = str(BIN / "qstat")
    timeout = ctx.args.array_qstat_timeout
    out: dict[str, Any] = {"size": size, "job": array_id, "submit_s": round(qsub_s, 3),
                           "target": "submit <= 5 s"}
    out["qstat"] = _timed_or_timeout([qstat], env, timeout)
    out["qstat_t"] = _timed_or_timeout([qstat, "-t"], env, timeout)
    out["qstat_t_array"] = _timed_or_timeout([qstat, "-t", array_id], env, timeout)
    t0 = time.time()
    result = subprocess.run([str(BIN / "qdel"), array_id], env=env, capture_output=True,
                            timeout=timeout)
    out["qdel_s"] = round(time.time() - t0, 3)
    out["qdel_exit"] = result.returncode
    try:
        ctx.nv.wait_states([number], "F", timeout=600)
        out["qdel_to_finished_s"] = round(time.time() - t0, 3)
        ctx.submitted.append(number)
    except TimeoutError:
        out["qdel_to_finished_s"] = None
    out["subjobs_run_before_qdel"] = len(ctx.nv.subjobs_finished.get(number, ()))
    procstat.wait_quiet(ctx.pids)
    one, py = [], []
    for _ in range(3):
        n1, s1 = run_qsub(env)
        ctx.submitted.append(n1)
        one.append(s1)
        t, _, _ = _timed([str(BIN / "python"), "-c", "pass"], env)
        py.append(t)
    out["baseline_qsub_one_job"] = summary_ms(one)
    out["baseline_python_c_pass"] = summary_ms(py)
    out["ratio_submit_to_one_qsub"] = ratio(qsub_s, statistics.median(one))
    return out


def storage(ctx: Context) -> dict[str, Any]:
    """8: JetStream and WebDAV bytes under a steady job stream with history retention
    (bench/storage.py), on a stack of its own."""
    from .storage import storage as run

    args = ctx.args
    return run(history=args.storage_history, sweep=args.storage_sweep,
               rate=args.storage_rate, log=ctx.log)
