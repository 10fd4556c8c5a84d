"""Smoke run of the soak (bench/soak.py): 60 jobs, 2 faults, so it cannot rot.

The real soak is `make soak` (10 000 jobs, ~5 min, at most 20 + 3 to settle); this
only checks that a tiny one injects its faults, audits every job and reports every
count, with nothing lost or duplicated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COUNTS = ("submitted", "completed", "lost", "unfinished", "duplicated", "reruns",
          "runs_logged", "extra_records", "results_on_webdav_disk",
          "results_fetched_over_http", "faults", "faults_total", "http_submit_retries",
          "submissions_acknowledged", "submissions_failed", "duration_s")


@pytest.mark.timeout(150)
def test_soak_smoke(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKBS_")}
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--jobs", "60", "--seed", "3", "--faults", "2",
         "--first-fault", "1", "--fault-interval", "1.5", "--webdav-stop", "1", "2",
         "--ack-wait", "2", "--workers", "2", "--slots", "2", "--qsub", "3",
         "--array-size", "5", "10", "--sleep-share", "1", "--sleep-max", "0.6",
         "--duration", "40", "--settle", "20", "--sample", "5", "--out", str(tmp_path),
         "--quiet"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=140,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    files = list(tmp_path.glob("soak-*.json"))
    assert len(files) == 1, files
    data = json.loads(files[0].read_text())
    outcome = data["outcome"]
    for key in COUNTS:
        assert key in outcome, f"the report has no {key}"
    assert outcome["faults_total"] == 2 and not outcome["fault_errors"], outcome["fault_log"]
    assert set(outcome["faults"]) == {"worker", "nats", "webdav", "dispatcher"}
    assert outcome["submitted"] == 60 and outcome["submissions_failed"] == 0
    assert outcome["lost"] == 0 and outcome["duplicated"] == 0, outcome["examples"]
    assert outcome["unfinished"] == 0 and outcome["completed"] == 60, outcome["examples"]
    assert outcome["results_on_webdav_disk"] == 60
    assert outcome["results_fetched_over_http"] == "5/5"
    assert outcome["qsub"]["jobs"] == 3 and data["plan"]["array"] >= 1
    assert "lost" in result.stdout and "duplicated" in result.stdout
