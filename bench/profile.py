"""Profiling the stack during an HTTP-batch throughput pass, and qsub's imports.

Two profilers, `--profile py-spy|cprofile|both`:

- py-spy (not a project dependency: `pip install py-spy` into the venv) samples the
  running dispatcher and worker-1 from outside, no code change. Its idle detection
  does not work in these containers (a blocked asyncio loop is sampled as busy), so it
  runs with `--gil`: only samples where a thread holds the GIL count. That leaves out
  time in syscalls that release the GIL (mkdir, open, rmtree, fork/exec), and on an
  oversubscribed machine a GIL holder may be descheduled, so sample seconds exceed
  the CPU seconds from /proc (both are reported).
- cProfile runs inside a second, private stack whose processes load
  bench/profhook/sitecustomize.py (PYTHONPATH): SIGUSR1/SIGUSR2 start/stop a
  cProfile with a CPU-time clock around exactly the batch. Deterministic and it
  includes syscalls (as built-in functions), at the price of slowing Python ~2x.
"""

from __future__ import annotations

import collections
import functools
import os
import pstats
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import procstat
from .submit import BIN

REPO = Path(__file__).resolve().parent.parent
HOOK_DIR = Path(__file__).resolve().parent / "profhook"
RATE = 100  # py-spy samples per second
TOP = 15


@functools.cache
def _roots() -> tuple[str, ...]:
    """Where project code lives: the tree, and the frozen copy being measured."""
    from .scenarios import project_dirs

    roots = {str(REPO)} | {str(d.parent) for d in project_dirs()}
    return tuple(sorted((r + os.sep for r in roots), key=len, reverse=True))


def _ours(path: str) -> str | None:
    """Path relative to the project if it is project code (not the venv), else None."""
    if "site-packages" in path:
        return None
    for root in _roots():
        if path.startswith(root):
            return path[len(root):]
    return None


def _short(path: str) -> str:
    ours = _ours(path)
    if ours is not None:
        return ours
    marker = "site-packages" + os.sep
    if marker in path:
        return path.split(marker, 1)[1]
    if "/lib/python" in path:
        return "stdlib/" + path.split("/lib/python", 1)[1].split("/", 1)[-1]
    return path


def _package(path: str) -> str:
    if path in ("~", ""):
        return "builtins"
    short = _short(path)
    if _ours(path) is not None:
        return "pkbs:" + short.split("/", 1)[0].removesuffix(".py")
    if short.startswith("stdlib/"):
        rest = short[len("stdlib/"):]
        return "stdlib:" + rest.split("/", 1)[0].removesuffix(".py")
    return short.split("/", 1)[0].removesuffix(".py") or "?"


def _top(counter: Mapping[str, float]) -> list[tuple[str, float]]:
    return sorted(counter.items(), key=lambda kv: kv[1], reverse=True)[:TOP]


def _pct(counter: Mapping[str, float], total: float, scale: float) -> list[list[Any]]:
    return [[k, round(v * scale, 3), round(100 * v / max(total, 1e-12), 1)]
            for k, v in _top(counter)]


# -- py-spy -------------------------------------------------------------------------


def py_spy() -> str | None:
    beside = BIN / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


class Recorder:
    """py-spy record on several pids at once; stop() sends SIGINT so they write out."""

    def __init__(self, pids: dict[str, int], outdir: Path) -> None:
        self.binary = py_spy()
        self.procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        if self.binary is None:
            return
        outdir.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            out = outdir / f"{name}.txt"
            argv = [self.binary, "record", "--pid", str(pid), "--rate", str(RATE),
                    "--format", "raw", "--function", "--gil", "--nonblocking",
                    "--full-filenames", "--output", str(out)]
            self.procs[name] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL), out)
        time.sleep(1.0)  # let py-spy attach

    def stop(self) -> dict[str, Path]:
        done = {}
        for name, (proc, out) in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if out.exists():
                done[name] = out
        return done


def _frame(text: str) -> tuple[str, str]:
    """'func (path:line)' -> (func, path)."""
    func, _, rest = text.partition(" (")
    path = rest.rsplit(":", 1)[0] if rest else ""
    return func, path


def summarize_pyspy(path: Path) -> dict[str, Any]:
    """Self time by function and by package; inclusive time of project functions."""
    self_t: collections.Counter[str] = collections.Counter()
    pkg_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        frames = [f for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        count = int(count_s)
        total += count
        func, fpath = _frame(frames[-1])
        self_t[f"{func} ({_short(fpath)})"] += count
        pkg_t[_package(fpath)] += count
        seen = set()
        for frame in frames:
            func, fpath = _frame(frame)
            if _ours(fpath) is not None:
                key = f"{func} ({_short(fpath)})"
                if key not in seen:
                    seen.add(key)
                    incl[key] += count
    scale = 1 / RATE
    return {"profiler": "py-spy --gil", "samples": total, "sample_s": round(total / RATE, 2),
            "columns": ["function", "seconds", "% of samples"],
            "self_top": _pct(self_t, total, scale), "by_package": _pct(pkg_t, total, scale),
            "project_inclusive_top": _pct(incl, total, scale)}


# -- cProfile -------------------------------------------------------------------------


def summarize_cprofile(path: Path) -> dict[str, Any]:
    stats = pstats.Stats(str(path))
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = \
        stats.stats  # type: ignore[attr-defined]
    self_t: dict[str, float] = collections.defaultdict(float)
    pkg_t: dict[str, float] = collections.defaultdict(float)
    cum: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = {}
    total = 0.0
    for (file, line, func), (_cc, nc, tt, ct, _callers) in raw.items():
        key = f"{func} ({_short(file)}:{line})" if file != "~" else func
        self_t[key] += tt
        pkg_t[_package(file)] += tt
        calls[key] = calls.get(key, 0) + nc
        total += tt
        if _ours(file) is not None:
            cum[key] += ct

    def rows(counter: Mapping[str, float]) -> list[list[Any]]:
        return [[k, round(v, 3), round(100 * v / max(total, 1e-12), 1), calls.get(k)]
                for k, v in _top(counter)]

    return {"profiler": "cProfile (process_time), main thread", "cpu_s": round(total, 3),
            "columns": ["function", "seconds", "% of profiled CPU", "calls"],
            "self_top": rows(self_t),
            "by_package": _pct(pkg_t, total, 1.0),
            "project_cumulative_top": rows(cum)}


# -- the passes -------------------------------------------------------------------------


class Target:
    """What a profiling pass needs from a running stack."""

    def pids(self, with_supervisor: bool = True) -> dict[str, int]:
        raise NotImplementedError

    def batch(self) -> tuple[int, float]:
        """Run the HTTP batch to completion; (jobs, wall seconds)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def pyspy_pass(target: Target, outdir: Path) -> dict[str, Any]:
    pids = target.pids()
    targets = {k: v for k, v in pids.items() if k in ("dispatcher", "worker-1")}
    recorder = Recorder(targets, outdir)
    if recorder.binary is None:
        return {"skipped": "py-spy not installed (pip install py-spy into the venv)"}
    cpu0 = procstat.cpu_snapshot(targets)
    n, wall = target.batch()
    cpu = procstat.cpu_delta(cpu0, procstat.cpu_snapshot(targets))
    files = recorder.stop()
    out: dict[str, Any] = {"n": n, "wall_s": round(wall, 3),
                           "jobs_per_s_under_profiler": round(n / wall, 1)}
    for name, path in files.items():
        out[name] = summarize_pyspy(path)
        out[name]["proc_cpu_s"] = round(cpu.get(name, 0.0), 3)
        out[name]["raw_file"] = str(path)
    return out


def hook_env(outdir: Path) -> dict[str, str]:
    """Environment for `pkbs up` that loads the cProfile hook into the stack."""
    path = os.environ.get("PYTHONPATH", "")
    return {"BENCH_CPROFILE_DIR": str(outdir),
            "PYTHONPATH": str(HOOK_DIR) + (os.pathsep + path if path else "")}


def cprofile_pass(target: Target, outdir: Path) -> dict[str, Any]:
    """`target` is a second stack started with hook_env(outdir): profile exactly one
    batch (after a warm-up batch) in the dispatcher and every worker, then stop it."""
    try:
        pids = target.pids(with_supervisor=False)
        targets = {k: v for k, v in pids.items() if k == "dispatcher" or k.startswith("worker")}
        target.batch()  # warm: the first jobs pay for imports and connections
        for pid in targets.values():
            os.kill(pid, signal.SIGUSR1)
        cpu0 = procstat.cpu_snapshot(targets)
        n, wall = target.batch()
        cpu = procstat.cpu_delta(cpu0, procstat.cpu_snapshot(targets))
        for pid in targets.values():
            os.kill(pid, signal.SIGUSR2)
        expected = {name: outdir / f"{'dispatcher' if name == 'dispatcher' else 'worker'}"
                    f"-{pid}.prof" for name, pid in targets.items()}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(p.exists() for p in expected.values()):
            time.sleep(0.1)
    finally:
        target.close()
    out: dict[str, Any] = {"n": n, "wall_s": round(wall, 3),
                           "jobs_per_s_under_profiler": round(n / wall, 1)}
    for name, prof in expected.items():
        if prof.exists():
            out[name] = summarize_cprofile(prof)
            out[name]["proc_cpu_s"] = round(cpu.get(name, 0.0), 3)
            out[name]["raw_file"] = str(prof)
    return out


def qsub_imports(env: dict[str, str], top: int = 12) -> tuple[dict[str, Any], int | None]:
    """-X importtime of one qsub submission: the slowest imports, cumulative.
    Returns (summary, the job number it submitted)."""
    run_env = dict(env)
    run_env["PYTHONPROFILEIMPORTTIME"] = "1"
    result = subprocess.run([str(BIN / "qsub")], env=run_env, input="true\n",
                            capture_output=True, text=True, timeout=60)
    number = None
    if result.returncode == 0 and result.stdout.strip():
        number = int(result.stdout.strip().split(".", 1)[0])
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3:
            continue
        rows.append((int(parts[1].strip()), int(parts[0].strip()), parts[2].rstrip()))
    total = sum(r[1] for r in rows)
    # Depth 0 and 1 of the import tree, biggest cumulative first.
    shallow = [r for r in rows if not r[2].startswith("    ")]
    shallow.sort(reverse=True)
    return {
        "command": "echo true | qsub, PYTHONPROFILEIMPORTTIME=1",
        "imports_us_total": total,
        "cumulative_us_top": [[name.rstrip(), cum] for cum, _, name in shallow[:top]],
        "python": sys.version.split()[0],
    }, number
