"""Same-run baselines: what the machine can do without pkbs."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

SH_TRUE = ["/bin/sh", "-c", "true"]


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def spawn(n: int, threads: int) -> dict[str, Any]:
    """(b) n x subprocess.run(["/bin/sh", "-c", "true"]) on `threads` threads."""
    cpu0 = _self_cpu()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: subprocess.run(SH_TRUE, check=True), range(n)))
    wall = time.perf_counter() - t0
    return {"n": n, "threads": threads, "wall_s": wall, "jobs_per_s": n / wall,
            "parent_cpu_ms_per_job": 1000 * (_self_cpu() - cpu0) / n}


def fresh_dir(n: int, threads: int, base: Path) -> dict[str, Any]:
    """(c) per job: a fresh temp dir, the script written into it, run with stdout and
    stderr captured to files there -- the least a worker must do. Clean-up of the
    directories is not timed."""
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="fresh-", dir=base))

    def one(i: int) -> None:
        d = tempfile.mkdtemp(prefix=f"{i}.", dir=root)
        script = os.path.join(d, "run.sh")
        with open(script, "wb") as fh:
            fh.write(b"true\n")
        with open(os.path.join(d, "job.o"), "wb") as out, \
                open(os.path.join(d, "job.e"), "wb") as err:
            subprocess.run(["/bin/sh", script], cwd=d, stdout=out, stderr=err,
                           stdin=subprocess.DEVNULL, check=True)

    cpu0 = _self_cpu()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    cpu = _self_cpu() - cpu0
    shutil.rmtree(root, ignore_errors=True)
    return {"n": n, "threads": threads, "wall_s": wall, "jobs_per_s": n / wall,
            "parent_cpu_ms_per_job": 1000 * cpu / n}
