"""Logs a person can read: ISO-8601 UTC times, per-request library lines only at
DEBUG, the supervisor saying which process died and how, `pkbs status --logs NAME`;
`pkbs down` saying what it waits for, and Ctrl-C handing running jobs back."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import time

from pkbs.logs import JsonFormatter, iso_utc, render, setup_logging
from tests.stackutil import BIN, Stack, poll

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_iso_times_and_readable_lines() -> None:
    assert iso_utc(0.25) == "1970-01-01T00:00:00.250Z"
    record = logging.makeLogRecord(
        {"name": "pkbs.worker", "levelname": "INFO", "msg": "job started", "job": "3.pkbs"}
    )
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert ISO.match(entry["ts"]) and entry["job"] == "3.pkbs"
    shown = render(line)
    assert re.match(r"^\S+Z INFO    pkbs.worker: job started job=3.pkbs$", shown), shown
    assert render("not json at all") == "not json at all"


def test_per_request_lines_only_at_debug() -> None:
    try:
        setup_logging("INFO", syslog_url="")
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert not logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO)
        assert logging.getLogger("pkbs.worker").isEnabledFor(logging.INFO)
        setup_logging("DEBUG", syslog_url="")
        assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)
    finally:
        setup_logging("WARNING", syslog_url="")


def test_supervisor_says_who_died_and_logs_are_readable(fresh_stack: Stack) -> None:
    fresh_stack.up(workers=1, slots=1)
    job_id = fresh_stack.qsub(input="echo hi\n")
    fresh_stack.wait_state(job_id, "F")
    os.kill(fresh_stack.pid_of("worker-1"), signal.SIGKILL)
    log = fresh_stack.home / "logs" / "supervisor.log"
    pattern = re.compile(r"^\S+Z worker-1 exited \(signal 9\) after [\d.]+ s, restarting in "
                         r"[\d.]+ s \(restart 1\)$", re.M)
    poll(lambda: pattern.search(log.read_text()), 30, what="the supervisor's line")
    poll(lambda: "worker-1 restarted, pid" in log.read_text(), 30, what="the restart")

    shown = fresh_stack.run("pkbs", "status", "--logs", "supervisor", "-n", "20")
    assert shown.returncode == 0 and pattern.search(shown.stdout), shown.stdout
    worker = fresh_stack.run("pkbs", "status", "--logs", "worker-1", "-n", "200")
    assert re.search(rf"^\S+Z INFO +pkbs\.worker: job started job={re.escape(job_id)}",
                     worker.stdout, re.M), worker.stdout
    raw = fresh_stack.run("pkbs", "status", "--logs", "dispatcher", "--raw", "-n", "200")
    lines = [json.loads(line) for line in raw.stdout.splitlines() if line.startswith("{")]
    assert lines and all(ISO.match(entry["ts"]) for entry in lines)
    assert not any(entry["logger"].startswith(("httpx", "uvicorn.access")) for entry in lines)
    missing = fresh_stack.run("pkbs", "status", "--logs", "nosuch")
    assert missing.returncode != 0
    assert "no log of 'nosuch'" in missing.stderr and "dispatcher" in missing.stderr


def test_down_says_what_it_waits_for_and_ctrl_c_requeues(fresh_stack: Stack) -> None:
    fresh_stack.extra_env["PKBS_DRAIN_GRACE_SECONDS"] = "60"
    fresh_stack.up(workers=1, slots=1)
    job_id = fresh_stack.qsub(input="echo started; sleep 300\n")
    fresh_stack.wait_state(job_id, "R")
    down = subprocess.Popen(
        [str(BIN / "pkbs"), "down"], env=fresh_stack.env, stderr=subprocess.PIPE, text=True
    )
    assert down.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = down.stderr.readline()
        seen.append(line)
        if "Ctrl-C to requeue now" in line:
            break
    assert re.search(r"waiting for 1 running job to drain, \d+ s left; Ctrl-C to requeue now",
                     "".join(seen)), seen
    started = time.monotonic()
    down.send_signal(signal.SIGINT)
    _, rest = down.communicate(timeout=60)
    assert down.returncode == 0, rest
    assert "handing the running jobs back now" in rest
    assert time.monotonic() - started < 50  # not the 60 s grace
    fresh_stack.up(workers=1, slots=1)
    record = fresh_stack.job(job_id)
    assert record["job_state"] in ("Q", "R") and int(record.get("run_count", 0)) >= 1
