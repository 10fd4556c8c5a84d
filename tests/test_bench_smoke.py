"""Smoke run of the benchmark harness (bench/): tiny sizes, so it cannot rot.

Not a benchmark: nothing here asserts on speed, only that every scenario ran and
wrote the figures the report is built from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def _positive(data: dict[str, Any], *path: str) -> float:
    value: Any = data
    for key in path:
        assert isinstance(value, dict) and key in value, f"missing {'/'.join(path)}"
        value = value[key]
    assert isinstance(value, int | float) and value > 0, f"{'/'.join(path)} = {value!r}"
    return float(value)


@pytest.mark.timeout(60)
def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKBS_")}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--n", "10", "--n-qsub", "4",
         "--n-array", "10", "--array-size", "20", "--latency-samples", "3",
         "--start-samples", "3", "--container-samples", "2", "--history", "20",
         "--qstat-repeats", "1", "--payload-kib", "32", "--payload-repeats", "1",
         "--big-mib", "0", "--skip", "storage", "--out", str(out), "--quiet"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=55,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    files = list(out.glob("*.json"))
    assert len(files) == 1, files
    data = json.loads(files[0].read_text())
    assert "errors" not in data, data.get("errors")
    assert "figure" in result.stdout and "baseline" in result.stdout

    _positive(data, "machine", "cpu_count")
    assert data["machine"]["python"]
    _positive(data, "stack", "total_slots")
    sc = data["scenarios"]
    assert set(sc) == {"throughput", "qsub_latency", "start_latency", "container_latency",
                       "array", "history", "payload", "resources"}

    tp = sc["throughput"]
    for base in ("spawn", "fresh_dir"):
        _positive(tp, "baselines", base, "jobs_per_s_median")
    for variant in ("http_batch", "qsub_parallel"):
        v = tp["variants"][variant]
        assert v["records_read"] == v["n"] and v["nonzero_exit"] == 0
        _positive(v, "jobs_per_s")
        _positive(v, "ratio_to_fresh_dir")
        _positive(v, "baseline_fresh_dir_jobs_per_s")
        _positive(v, "pkbs_cpu_ms_per_job")
    # Arrays: measured when qsub -J is accepted, else skipped with a note.
    arr = tp["variants"]["array"]
    if "skipped" not in arr:
        _positive(arr, "jobs_per_s")
        _positive(arr, "ratio_to_fresh_dir")

    ql = sc["qsub_latency"]
    for key in ("qsub_as_is", "qsub_warm", "python_c_pass_as_is", "python_c_pass_warm",
                "http_post_new_connection"):
        assert ql["times"][key]["n"] == 3
        _positive(ql, "times", key, "p50_ms")
    _positive(ql, "ratio_qsub_to_python_warm")

    sl = sc["start_latency"]
    for key in ("submit_to_start_record", "submit_to_finished_record", "baseline_spawn",
                "baseline_fresh_dir_job"):
        _positive(sl, key, "p50_ms")
        _positive(sl, key, "p95_ms")

    # Container jobs: measured where the stack's workers have a Docker daemon.
    cl = sc["container_latency"]
    if "skipped" not in cl:
        for kind in ("process", "container"):
            _positive(cl, kind, "submit_to_finished_record", "p50_ms")
        _positive(cl, "baseline_docker_run_true", "p50_ms")

    if "skipped" not in sc["array"]:
        _positive(sc["array"], "submit_s")
        assert "s" in sc["array"]["qstat_t"], sc["array"]["qstat_t"]

    points = sc["history"]["points"]
    assert len(points) == 2
    assert points[1]["records_in_kv"] == points[0]["records_in_kv"] + 20
    for p in points:
        _positive(p, "qstat_x", "p50_ms")
        _positive(p, "baseline_kv_scan_nats_py", "p50_ms")
        assert p["qstat_x_exit"] == 0

    d = sc["payload"]["dir_job"]
    _positive(d, "submit_to_finished", "p50_ms")
    _positive(d, "baseline_raw_copy_and_run", "p50_ms")
    assert "big_output" not in sc["payload"]

    res = sc["resources"]
    for name in ("dispatcher", "nats-server", "webdav", "worker-1"):
        _positive(res, "rss_idle_kib", name)
    assert "under_load_http_batch" in res


@pytest.mark.timeout(60)
def test_storage_scenario_smoke() -> None:
    """Scenario 8 (run alone above's time budget would not allow): its figures are
    all there; with retention the stores hold only the jobs within history."""
    from bench.storage import storage

    data = storage(history=2.0, sweep=0.5, periods=3, rate=2.0, kib=(10, 20), log=lambda _: None)
    assert data["jobs_submitted"] >= 10
    for key in ("submit_stream", "jobs_kv", "webdav"):
        _positive(data, key, "last_third_mean")
        _positive(data, key, "last_to_second_third")
    for key in ("submit_stream_bytes", "jobs_kv_bytes", "webdav_bytes"):
        _positive(data, "per_job", key)
    assert data["kept_at_end"]["submit_msgs"] < data["jobs_submitted"]
