"""`pkbs logs`: a job's output while it runs (relayed by the dispatcher from
PKBS_OUTPUT, where its worker publishes while someone watches) and after it ends
(its stored .o/.e on WebDAV), on the real local stack through the real CLI."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.stackutil import (
    BIN,
    Stack,
    api_endpoint,
    cli,
    poll,
    submit,
    wait_live_output,
)

pytestmark = pytest.mark.timeout(90)


def ticking_job(tag: str, lines: int, pause: float, exit_code: int = 0) -> str:
    """A job printing `<tag> <i> <epoch>` every `pause` seconds, then exiting."""
    return (
        "#!/bin/bash\n"
        f"for i in $(seq 1 {lines}); do echo \"{tag} $i $EPOCHREALTIME\"; sleep {pause}; done\n"
        f"exit {exit_code}\n"
    )


def follow(stack: Stack, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "pkbs"), "logs", "-f", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=stack.env, bufsize=1,
    )


def received(proc: subprocess.Popen[str]) -> Iterator[tuple[str, float]]:
    """Each line `pkbs logs -f` prints, with when it was read."""
    assert proc.stdout is not None
    for line in proc.stdout:
        yield line.rstrip("\n"), time.time()


def numbers(lines: list[str], tag: str) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith(f"{tag} ")]


def test_follow_shows_each_line_as_printed_and_exits_with_the_job(stack: Stack) -> None:
    job = submit(stack, "-N", "ticker", input=ticking_job("tick", 6, 1.0, exit_code=3))
    proc = follow(stack, job)
    lines: list[str] = []
    latencies: list[float] = []
    for line, at in received(proc):
        lines.append(line)
        tag, _, printed = line.split()
        assert tag == "tick", line
        latencies.append(at - float(printed))
    assert proc.wait(timeout=30) == 3, proc.stderr.read() if proc.stderr else ""
    assert numbers(lines, "tick") == [1, 2, 3, 4, 5, 6]
    # The first lines may have been printed before the watch began (a catch-up).
    live = latencies[2:]
    print(f"LIVE OUTPUT latency over {len(live)} lines: median {statistics.median(live):.3f} s,"
          f" max {max(live):.3f} s")


def test_tail_stderr_and_late_joiners(stack: Stack) -> None:
    script = (
        "#!/bin/bash\n"
        "for i in $(seq 1 10); do echo \"out $i\"; echo \"err $i\" >&2; done\n"
        "sleep 3\n"
        "for i in $(seq 11 40); do echo \"out $i\"; sleep 0.1; done\n"
    )
    job = submit(stack, "-N", "tails", input=script)
    wait_live_output(stack, job, "out 10")
    early = cli(stack, "pkbs", "logs", "--tail", "3", job)
    assert early.returncode == 0, early.stderr
    assert early.stdout == "out 8\nout 9\nout 10\n"
    errors = cli(stack, "pkbs", "logs", "-e", job)
    assert errors.returncode == 0, errors.stderr
    assert errors.stdout == "".join(f"err {i}\n" for i in range(1, 11))
    # One watcher from the start, another joining while the first follows: each
    # gets everything, in order, once.
    first = follow(stack, job)
    poll(lambda: "out 15\n" in cli(stack, "pkbs", "logs", job).stdout, 20, 0.1, "out 15")
    second = follow(stack, job)
    for proc in (first, second):
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert numbers(out.splitlines(), "out") == list(range(1, 41)), out


def test_subjob_and_finished_job_read_the_stored_output(stack: Stack) -> None:
    script = "#!/bin/bash\necho \"sub $PBS_ARRAY_INDEX\"\nsleep 1\necho \"done $PBS_ARRAY_INDEX\"\n"
    array = stack.qsub("-J", "1-2", input=script)
    subjob = array.replace("[]", "[2]")
    proc = follow(stack, subjob)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out == "sub 2\ndone 2\n"
    stack.wait_state(subjob, "X")
    stored = cli(stack, "pkbs", "logs", subjob)
    assert (stored.returncode, stored.stdout) == (0, "sub 2\ndone 2\n"), stored.stderr
    last = cli(stack, "pkbs", "logs", "--tail", "1", subjob)
    assert last.stdout == "done 2\n", last.stderr
    whole = cli(stack, "pkbs", "logs", array)
    assert whole.returncode != 0
    assert "name one of its subjobs" in whole.stderr


def test_another_users_job_is_refused(stack: Stack) -> None:
    job = submit(stack, input="echo private\n")
    stack.wait_state(job)
    other = cli(stack, "pkbs", "logs", job, env=stack.as_user("mallory"))
    assert other.returncode == 15007 & 0xFF, other.stderr
    assert other.stderr == f"pkbs logs: Unauthorized Request {job}\n"
    assert other.stdout == ""


def test_job_deleted_while_queued_never_ran(stack: Stack) -> None:
    job = submit(stack, "-h", input="echo never\n")
    proc = follow(stack, job)  # waits for the job to run
    assert cli(stack, "qdel", job).returncode == 0
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 15016 & 0xFF
    assert err == f"pkbs logs: Never ran, so there is no output of job {job}\n"
    again = cli(stack, "pkbs", "logs", job)
    assert (again.returncode, again.stderr) == (proc.returncode, err)


def test_joined_output_and_the_event_stream(stack: Stack) -> None:
    """-j oe: stderr is in stdout's file and `-e` says so. The API's event stream,
    as a web page would read it: output events, then the end with Exit_status."""
    job = submit(stack, "-j", "oe", input="echo a; echo b >&2; exit 4\n")
    stack.wait_state(job)
    refused = cli(stack, "pkbs", "logs", "-e", job)
    assert refused.returncode != 0
    assert "stderr goes to its stdout (-j oe)" in refused.stderr
    endpoint, token = api_endpoint(stack)
    request = urllib.request.Request(
        f"{endpoint}/v1/jobs/{job}/output?follow=true",
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        body = response.read().decode()
    events = [block.split("\n") for block in body.strip().split("\n\n")]
    assert events[0] == ["event: output", f"data: {json.dumps('a' + chr(10) + 'b' + chr(10))}"]
    assert events[-1] == ["event: end", 'data: {"job_state": "F", "Exit_status": 4}']


def test_running_job_shows_its_usage_session_and_comment(stack: Stack) -> None:
    """qstat -f of a job burning CPU: resources_used.cput and walltime above zero,
    its session's leader as session_id (a real process group, running the job), PBS's
    run comment; qstat -a shows the session and the elapsed time."""
    # 2.5 s of CPU (however long that takes on a busy machine), then some rest: its
    # usage is noted 1 s after it starts and every 10 s.
    burn = ('while read -ra f < /proc/$$/stat; [ $((f[13] + f[14])) -lt 250 ]; do :; done\n'
            "sleep 30\n")
    job = submit(stack, "-N", "burner", input=burn)

    def busy() -> dict[str, object] | None:
        attrs = stack.job(job)
        used = attrs.get("resources_used", {})
        running = attrs["job_state"] == "R" and used.get("cput", "00:00:00") != "00:00:00"
        return attrs if running else None

    attrs = poll(busy, 60, 0.2, f"{job} running with cput > 0")
    used = attrs["resources_used"]
    assert isinstance(used, dict)
    assert used["walltime"] != "00:00:00" and used["ncpus"] == 1, used
    assert str(used["mem"]).endswith("kb"), used
    session = attrs["session_id"]
    assert isinstance(session, int) and session > 1
    with open(f"/proc/{session}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    assert int(fields[2]) == session and int(fields[3]) == session  # pgrp, session
    with open(f"/proc/{session}/environ", "rb") as fh:
        assert f"PBS_JOBID={job}".encode() in fh.read().split(b"\0")
    comment = str(attrs["comment"])
    assert re.fullmatch(r"Job run at [A-Z][a-z]{2} [A-Z][a-z]{2} \d\d at \d\d:\d\d "
                        r"on \([^:]+:ncpus=1\)", comment), comment
    row = cli(stack, "qstat", "-a", job).stdout.splitlines()[-1].split()
    assert row[0] == job and row[4] == str(session) and row[-2:] == ["R", "00:00"], row
    assert cli(stack, "qdel", job).returncode == 0
    final = stack.wait_state(job, "F", timeout=30)
    assert final["session_id"] == session and final["Exit_status"] == 256 + 15


def test_a_flood_is_cut_with_a_marker_and_the_file_keeps_it_all(stack: Stack) -> None:
    """A job printing 8 MB at once, followed from the start: the watcher gets a
    marker for what the live stream skipped and then everything after the flood;
    the stored .o has every byte."""
    script = (
        "#!/bin/bash\n"
        "sleep 1\n"
        "head -c 8000000 /dev/zero | tr '\\0' 'x' | fold -w 99\n"
        "sleep 1\n"
        "echo after-the-flood\n"
    )
    job = submit(stack, "-N", "flood", input=script)
    proc = follow(stack, job)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "bytes of output skipped here" in out
    assert out.endswith("after-the-flood\n")
    assert len(out) < 2_000_000, len(out)
    stored = cli(stack, "pkbs", "logs", job)
    assert len(stored.stdout) == 8_000_000 + 8_000_000 // 99 + len("after-the-flood\n")
