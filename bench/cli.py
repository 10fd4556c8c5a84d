"""`python -m bench`: start a private stack, run the scenarios, write JSON + a table."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from . import procstat, report, scenarios, source
from . import profile as prof
from .natsio import NatsView
from .stack import BenchStack, StackFailed
from .submit import request_body, submit_http

SCENARIOS = ("throughput", "qsub_latency", "start_latency", "container_latency", "array",
             "history", "payload", "storage", "resources")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="pkbs benchmarks against a private local stack (see docs/performance.md).")
    p.add_argument("--only", default="", help=f"comma list of scenarios: {','.join(SCENARIOS)}")
    p.add_argument("--skip", default="", help="comma list of scenarios to leave out")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: what `pkbs up` picks)")
    p.add_argument("--slots", type=int, default=None,
                   help="slots per worker (default: what `pkbs up` picks)")
    g = p.add_argument_group("1 throughput")
    g.add_argument("--n", type=int, default=2000, help="jobs per variant (default 2000)")
    g.add_argument("--n-qsub", type=int, default=500,
                   help="jobs for the separate-qsub variant (default 500: each qsub is a "
                        "Python process, 2000 take minutes on 2 cores; 0 skips it)")
    g.add_argument("--n-array", type=int, default=None,
                   help="subjobs of the one-array variant (default: --n; 0 skips it)")
    g.add_argument("--qsub-threads", type=int, default=8)
    g.add_argument("--http-threads", type=int, default=4)
    g.add_argument("--http-batch", type=int, default=100,
                   help="jobs per POST /v1/jobs/batch in the HTTP batch variant (100); "
                        "the one-job-per-POST variant runs as http_single (0 skips it)")
    g.add_argument("--n-single", type=int, default=None,
                   help="jobs of the http_single variant (default: --n; 0 skips it)")
    g.add_argument("--baseline-threads", type=int, default=None,
                   help="threads of the spawn baselines (default: total worker slots)")
    g = p.add_argument_group("2/3 latency")
    g.add_argument("--latency-samples", type=int, default=50, help="qsub calls (default 50)")
    g.add_argument("--start-samples", type=int, default=30,
                   help="jobs submitted one at a time (default 30)")
    g.add_argument("--container-samples", type=int, default=20,
                   help="container and process jobs each, one at a time (default 20)")
    g.add_argument("--container-image", default="pkbs-base:bookworm",
                   help="image of the container jobs (default pkbs-base:bookworm, made by "
                        "make base-image)")
    g = p.add_argument_group("4 array")
    g.add_argument("--array-size", type=int, default=20_000,
                   help="subjobs of the big array (default 20000 to keep the run short; "
                        "100000 for the issue's target); it is qdel'ed after the qstats")
    g.add_argument("--array-qstat-timeout", type=float, default=120.0,
                   help="give up on one qstat of the big array after this many seconds")
    g = p.add_argument_group("5 history")
    g.add_argument("--history", type=int, default=10000,
                   help="finished records to inject into the KV before a second qstat -x "
                        "(default 10000; 100000 for the issue's target; 0: none)")
    g.add_argument("--qstat-repeats", type=int, default=3)
    g = p.add_argument_group("6 payload")
    g.add_argument("--payload-kib", type=int, default=1020,
                   help="incompressible directory job size (default 1020 KiB; 0 skips)")
    g.add_argument("--big-mib", type=int, default=50,
                   help="output written by one job and uploaded (default 50; 0 skips)")
    g.add_argument("--payload-repeats", type=int, default=3)
    g = p.add_argument_group("8 storage (a stack of its own)")
    g.add_argument("--storage-history", type=float, default=10.0,
                   help="job_history_duration in seconds (default 10); the job stream "
                        "lasts three of them")
    g.add_argument("--storage-sweep", type=float, default=2.0,
                   help="PKBS_RETENTION_SWEEP_SECONDS (default 2)")
    g.add_argument("--storage-rate", type=float, default=3.0,
                   help="jobs per second, 100-500 KiB payloads (default 3)")
    g = p.add_argument_group("output")
    g.add_argument("--profile", nargs="?", const="both", default=None,
                   choices=("py-spy", "cprofile", "both"),
                   help="after scenario 1, an extra HTTP batch under py-spy (dispatcher, "
                        "worker-1; needs `pip install py-spy` in the venv) and/or in a second "
                        "stack under cProfile (bench/profhook); default both")
    g.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the JSON")
    g.add_argument("--keep-home", action="store_true", help="keep the temp PKBS_HOME")
    g.add_argument("--live", action="store_true",
                   help="measure the source tree as it is while it may change, instead of "
                        "a copy frozen at the start (see bench/source.py)")
    g.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p.parse_args(argv)


def selected(args: argparse.Namespace) -> list[str]:
    only = [s.strip().replace("-", "_") for s in args.only.split(",") if s.strip()]
    skip = {s.strip().replace("-", "_") for s in args.skip.split(",") if s.strip()}
    for name in [*only, *skip]:
        if name not in SCENARIOS:
            raise SystemExit(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    return [s for s in SCENARIOS if (not only or s in only) and s not in skip]


def git_describe() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"],
                              cwd=scenarios.REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


class _Target(prof.Target):
    def __init__(self, stack: BenchStack, nv: NatsView, body: dict[str, Any], n: int,
                 threads: int, owned: bool, per_request: int) -> None:
        self.stack, self.nv, self.body, self.n, self.threads = stack, nv, body, n, threads
        self.owned, self.per_request = owned, per_request
        self.numbers: list[int] = []

    def pids(self, with_supervisor: bool = True) -> dict[str, int]:
        return self.stack.pids(with_supervisor)

    def batch(self) -> tuple[int, float]:
        t0 = time.time()
        numbers, _, _ = submit_http(self.stack.endpoint, self.stack.token, self.body,
                                    self.n, self.threads, self.per_request)
        self.numbers += numbers
        self.nv.wait_states(numbers, "F", timeout=900)
        return self.n, time.time() - t0

    def close(self) -> None:
        if self.owned:
            self.nv.close()
            self.stack.down()


def _open_stack(args: argparse.Namespace, extra_env: dict[str, str] | None = None
                ) -> tuple[BenchStack, NatsView]:
    """Start a private stack; one retry (ports are picked free, then bound: on a busy
    machine another process can take one in between)."""
    for attempt in (1, 2):
        stack = BenchStack(args.workers, args.slots, args.keep_home, extra_env)
        try:
            stack.up()
            nv = NatsView(stack.nats_url, stack.secrets["nats_user"],
                          stack.secrets["nats_password"])
            return stack, nv
        except StackFailed:
            stack.down()
            if attempt == 2:
                raise
        except BaseException:
            stack.down()
            raise
    raise AssertionError("unreachable")


def _profile(ctx: scenarios.Context, outdir: Path) -> dict[str, Any]:
    args = ctx.args
    out: dict[str, Any] = {}
    if args.profile in ("py-spy", "both"):
        ctx.settle()
        ctx.log(f"  profile: HTTP batch of {args.n} under py-spy (dispatcher, worker-1)")
        target = _Target(ctx.stack, ctx.nv, ctx.body, args.n, args.http_threads, owned=False,
                         per_request=args.http_batch)
        try:
            out["py_spy"] = prof.pyspy_pass(target, outdir / "py-spy")
        except Exception as exc:
            out["py_spy"] = {"error": f"{type(exc).__name__}: {exc}"}
        ctx.submitted += target.numbers
    if args.profile in ("cprofile", "both"):
        ctx.settle()
        ctx.log(f"  profile: second stack with the cProfile hook, HTTP batch of {args.n} x2")
        hook_dir = outdir / "cprofile"
        hook_dir.mkdir(parents=True, exist_ok=True)
        try:
            stack, nv = _open_stack(args, prof.hook_env(hook_dir))
            out["cprofile"] = prof.cprofile_pass(
                _Target(stack, nv, ctx.body, args.n, args.http_threads, owned=True,
                        per_request=args.http_batch), hook_dir)
        except Exception as exc:
            out["cprofile"] = {"error": f"{type(exc).__name__}: {exc}"}
    imports, number = prof.qsub_imports(ctx.env_warm)
    if number is not None:
        ctx.submitted.append(number)
    out["qsub_imports"] = imports
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    names = selected(args)
    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    started = dt.datetime.now()
    t_start = time.monotonic()
    result: dict[str, Any] = {
        "schema": 1,
        "started": started.isoformat(timespec="seconds"),
        "git": git_describe(),
        "pkbs_source": str(scenarios.project_dirs()[0]),
        "argv": sys.argv[1:],
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": procstat.machine_facts(),
        "scenarios": {},
        "errors": {},
    }
    log("pkbs up")
    stack, nv = _open_stack(args)
    log(f"  PKBS_HOME={stack.home}")
    try:
        result["stack"] = stack.layout()
        env_asis, env_warm = scenarios.make_envs(stack)
        ctx = scenarios.Context(args=args, stack=stack, nv=nv,
                                total_slots=result["stack"]["total_slots"],
                                env_asis=env_asis, env_warm=env_warm,
                                body=request_body(env_warm), log=log)
        log("warm-up (byte-compiling into a private pycache prefix)")
        result["warm_up"] = scenarios.warm_up(ctx)
        ctx.settle()
        time.sleep(1.0)
        idle_rss = scenarios.rss_now(ctx)
        for name in names:
            if name == "resources":
                continue
            log(f"scenario {name}")
            try:
                result["scenarios"][name] = getattr(scenarios, name)(ctx)
            except Exception as exc:  # one failing scenario must not lose the others
                result["errors"][name] = f"{type(exc).__name__}: {exc}"
                log(traceback.format_exc())
            if name == "throughput" and name in result["scenarios"]:
                for variant, data in result["scenarios"][name]["variants"].items():
                    if "error" in data:
                        result["errors"][f"throughput/{variant}"] = data["error"]
            if name == "throughput" and args.profile:
                result["profile"] = _profile(ctx, stack.home / "profiles")
                for kind in ("py_spy", "cprofile"):
                    if "error" in result["profile"].get(kind, {}):
                        result["errors"][f"profile/{kind}"] = result["profile"][kind]["error"]
        if "resources" in names:
            ctx.settle()
            tp = result["scenarios"].get("throughput", {})
            base_cpu = tp.get("baselines", {}).get("fresh_dir", {}).get("parent_cpu_ms_per_job")
            result["scenarios"]["resources"] = scenarios.resources(ctx, idle_rss, base_cpu)
        result["jobs_submitted"] = len(ctx.submitted)
        if "profile" in result:
            _keep_profiles(result, args.out, started)
    finally:
        nv.close()
        log("pkbs down")
        stack.down()
    result["machine"]["loadavg_end"] = procstat.loadavg()
    result["duration_s"] = round(time.monotonic() - t_start, 1)
    if not result["errors"]:
        del result["errors"]
    return result


def _keep_profiles(result: dict[str, Any], out: Path, started: dt.datetime) -> None:
    """Copy the raw profiles next to the JSON (the temp home is removed)."""
    stamp = started.strftime("%Y%m%d-%H%M%S")
    for kind in ("py_spy", "cprofile"):
        for name, summary in result["profile"].get(kind, {}).items():
            if not isinstance(summary, dict) or "raw_file" not in summary:
                continue
            src = Path(summary["raw_file"])
            if src.exists():
                out.mkdir(parents=True, exist_ok=True)
                dest = out / f"{stamp}-{kind}-{name}{src.suffix}"
                dest.write_bytes(src.read_bytes())
                summary["raw_file"] = str(dest)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out = args.out.resolve()
    frozen: dict[str, Any] = {"snapshot": None}
    site = None
    if not args.live:
        site, frozen = source.freeze()
        source.activate(site)
    try:
        _main(args, frozen)
    finally:
        if site is not None and not args.keep_home:
            shutil.rmtree(site, ignore_errors=True)


def _main(args: argparse.Namespace, frozen: dict[str, Any]) -> None:

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    result = run(args)
    result["source"] = frozen
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.fromisoformat(result["started"]).strftime("%Y%m%d-%H%M%S")
    path = args.out / f"{stamp}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    print(report.table(result))
    print(f"\nresults: {path}")
    if result.get("errors"):
        sys.exit(1)
