"""Hostile and bad input: crafted payload archives, jobs that misbehave, and
injection attempts in names, variables, queues and job ids.

Payloads are posted straight to the API (tests.apiutil), bypassing qsub's own
checks: the dispatcher only checks their size, the worker unpacks them
(pkbs.payload.safe_unpack). Whatever happens, nothing may be written outside the
job directory, the worker must survive, and the job must be refused at submit (400)
or end F with a non-zero Exit_status and a comment that says why.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import stat
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apiutil import call, submit_body
from tests.stackutil import (
    BIN,
    Stack,
    api_endpoint,
    job_processes,
    pid_gone,
    poll,
    process_healthy,
    results_dir,
)

pytestmark = pytest.mark.timeout(90)

SCRIPT = b"echo ran\n"


def _zip(entries: list[tuple[str, bytes, int]], level: int = 6) -> bytes:
    """A zip of (name, data, unix mode with file type) entries, names taken as given."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def _many_entries() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo("STDIN"), SCRIPT)
        for i in range(10_000):
            zf.writestr(zipfile.ZipInfo(f"{i:x}"), b"")
    return buf.getvalue()


FILE, LINK = stat.S_IFREG | 0o644, stat.S_IFLNK | 0o777
EXE = stat.S_IFREG | 0o755


def hostile_payloads(escape: Path) -> dict[str, bytes]:
    """Each payload tries to write into `escape` (outside any job directory) or to
    exhaust the worker."""
    up = "../" * 16 + str(escape).lstrip("/")
    return {
        "zip_slip": _zip([("STDIN", SCRIPT, EXE), (f"{up}/slip", b"x", FILE)]),
        "absolute_path": _zip([("STDIN", SCRIPT, EXE), (f"{escape}/absolute", b"x", FILE)]),
        "symlink_out_absolute": _zip([
            ("STDIN", SCRIPT, EXE), ("link", str(escape).encode(), LINK),
            ("link/through", b"x", FILE),
        ]),
        "symlink_out_relative": _zip([
            ("STDIN", SCRIPT, EXE), ("up", up.encode(), LINK), ("up/through", b"x", FILE),
        ]),
        "backslash_slip": _zip([("STDIN", SCRIPT, EXE), ("..\\..\\..\\backslash", b"x", FILE)]),
        "newline_name": _zip([("STDIN", SCRIPT, EXE), ("a\nb", b"x", FILE)]),
        "many_entries": _many_entries(),
        "ratio_bomb": _zip([("STDIN", SCRIPT, EXE), ("bomb", b"\0" * (64 << 20), FILE)], 9),
        "not_a_zip": b"PK\x03\x04 but not really a zip archive",
        "empty": b"",
        "no_entrypoint": _zip([("other", SCRIPT, EXE)]),
    }


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Post every hostile payload to a stack of its own, watch what becomes of each
    job for a while, then take the stack down (a job that loops must not burn the
    other tests' workers). Yields what was seen."""
    base = tmp_path_factory.mktemp("hostile")
    escape = base / "escape"
    escape.mkdir()
    stack = Stack(base / "home")
    stack.up(workers=1, slots=2)
    try:
        worker = stack.pid_of("worker-1")
        endpoint, token = api_endpoint(stack)
        submitted: dict[str, tuple[int, Any]] = {}
        for kind, data in hostile_payloads(escape).items():
            assert len(data) < 1024 * 1024, (kind, len(data))
            body = submit_body(name=kind[:15])
            body["payload_b64"] = base64.b64encode(data).decode()
            submitted[kind] = call(endpoint, "POST", "/v1/jobs", token, body)
        accepted = {k: r[1]["job_id"] for k, r in submitted.items() if r[0] == 201}

        def settled() -> bool:
            # Each job is F, or has visibly been tried more than once.
            jobs = stack.qstat_json(*accepted.values())["Jobs"]
            return all(j["job_state"] == "F" or (j.get("run_count") or 0) >= 3
                       for j in jobs.values())

        with contextlib.suppress(AssertionError):  # what the jobs look like is the finding
            poll(settled, 20, 0.25, "every hostile job to be tried")
        jobs = stack.qstat_json(*accepted.values())["Jobs"]
        good = submit_body(name="after")
        status, body = call(endpoint, "POST", "/v1/jobs", token, good)
        assert status == 201, body
        with contextlib.suppress(AssertionError):
            stack.wait_state(body["job_id"], "F", timeout=20)
        after = stack.job(body["job_id"])
        yield {
            "escape": escape,
            "submitted": submitted,
            "jobs": {k: jobs[v] for k, v in accepted.items()},
            "worker_same": stack.pid_of("worker-1") == worker and process_healthy(
                stack, "worker-1"),
            "after": after,
            "stray": sorted(p.name for p in (stack.home / "jobs").rglob("*")
                            if p.name in ("slip", "absolute", "through", "backslash")),
        }
    finally:
        stack.down()


KINDS = list(hostile_payloads(Path("/nonexistent")))


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_payload_writes_nothing_outside(hostile: dict[str, Any], kind: str) -> None:
    """Nothing lands outside the job directory, and the worker lives on."""
    assert kind in hostile["submitted"]
    assert list(hostile["escape"].iterdir()) == []
    assert hostile["stray"] == []
    assert not any(Path(p).exists() for p in ("/slip", "/absolute", "/backslash"))
    assert hostile["worker_same"], "the worker died or was restarted"
    after = hostile["after"]
    assert (after["job_state"], after.get("Exit_status")) == ("F", 0), \
        f"a good job submitted after the hostile ones did not run: {after.get('comment')}"


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_payload_is_refused_or_fails_clearly(hostile: dict[str, Any],
                                                     kind: str) -> None:
    status, body = hostile["submitted"][kind]
    if status == 400:
        assert "payload" in str(body).lower()
        return
    assert status == 201, (status, body)
    job = hostile["jobs"][kind]
    assert job["job_state"] == "F", (job["job_state"], job.get("run_count"), job.get("comment"))
    assert job.get("Exit_status") not in (0, None)
    assert job.get("comment"), job
    assert job.get("run_count") == 1, "a bad payload is not worth a rerun"


# -- jobs that misbehave -----------------------------------------------------------


def _kill_all(stack: Stack, job_id: str) -> None:
    for pid in job_processes(stack, job_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_daemon_in_the_job_process_group_is_killed(stack: Stack) -> None:
    """`nohup sleep &` and a double fork stay in the job's process group: the worker
    kills them when the job script exits."""
    _assert_job_leaves_nothing(stack, "daemon", (
        "nohup sleep 301 >/dev/null 2>&1 &\n( sleep 302 & )\necho spawned\n"))


def test_daemon_in_its_own_session_is_killed(stack: Stack) -> None:
    # The job waits until its daemon has left the process group, then exits.
    _assert_job_leaves_nothing(stack, "setsid", (
        "setsid bash -c 'echo $$ > daemon.pid; exec sleep 300' &\n"
        "until [ -s daemon.pid ]; do sleep 0.05; done\n"))


def _assert_job_leaves_nothing(stack: Stack, name: str, script: str) -> None:
    """Once the job has finished, no process of it is left."""
    job_id = stack.qsub("-N", name, input=script)
    try:
        stack.wait_state(job_id, "F", timeout=30)
        poll(lambda: job_processes(stack, job_id) == [], 5, 0.05, f"processes of {job_id} to go")
    finally:
        _kill_all(stack, job_id)


def test_daemon_with_a_clean_environment_is_killed(stack: Stack, tmp_path: Path) -> None:
    pidfile = tmp_path / "daemon.pid"
    job_id = stack.qsub("-N", "envi", input=(
        f"setsid env -i /bin/bash -c 'echo $$ > {pidfile}; exec sleep 300' &\n"
        f"until [ -s {pidfile} ]; do sleep 0.05; done\n"))
    pid = 0
    try:
        stack.wait_state(job_id, "F", timeout=30)
        pid = int(pidfile.read_text())
        poll(lambda: pid_gone(pid), 5, 0.05, f"the daemon {pid} of {job_id} to go")
    finally:
        if pid and not pid_gone(pid):
            os.kill(pid, signal.SIGKILL)


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        return int(fh.read().rsplit(b")", 1)[1].split()[1])


def test_a_running_jobs_helper_outlives_another_jobs_end(fresh_stack: Stack,
                                                        tmp_path: Path) -> None:
    """Strays found by age must not include a running job's own helper: job A starts
    a helper that clears its environment; job B ends on the same worker; the helper
    lives on until A ends, then it goes too."""
    fresh_stack.up(workers=1, slots=2)
    pidfile, go = tmp_path / "helper.pid", tmp_path / "go"
    keeper = fresh_stack.qsub("-N", "keeper", input=(
        # (...&): the subshell exits at once, so the helper is the worker's orphan.
        f"(setsid env -i /bin/bash -c 'echo $$ > {pidfile}; exec sleep 300' &)\n"
        f"until [ -e {go} ]; do sleep 0.05; done\n"))
    poll(lambda: pidfile.exists() and pidfile.read_text().strip() != "", 30, 0.05,
         "the helper to start")
    helper = int(pidfile.read_text())
    worker = fresh_stack.pid_of("worker-1")
    poll(lambda: _parent(helper) == worker, 10, 0.05, "the helper to be the worker's orphan")
    try:
        other = fresh_stack.qsub("-N", "other", input="true\n")
        fresh_stack.wait_state(other, "F", timeout=30)
        assert not pid_gone(helper), "another job's end killed a running job's helper"
        go.touch()
        fresh_stack.wait_state(keeper, "F", timeout=30)
        poll(lambda: pid_gone(helper), 5, 0.05, f"the helper {helper} to go with its job")
    finally:
        go.touch()
        if not pid_gone(helper):
            os.kill(helper, signal.SIGKILL)


def test_huge_stdout_is_capped_with_a_note(stack: Stack) -> None:
    written = 200 * 1000 * 1000
    job_id = stack.qsub("-N", "bigout", input=f"head -c {written} /dev/zero\n")
    job = stack.wait_state(job_id, "F", timeout=60)
    where = results_dir(stack, job)
    try:
        out = where / str(job["Output_Path"]).rsplit("/", 1)[-1]
        size = out.stat().st_size if out.exists() else 0
        notes = " ".join(p.read_text(errors="replace")[-2000:] for p in where.glob("*.e*"))
        notes += str(job.get("comment") or "")
        assert size < written, f"stdout not capped: {size} bytes stored"
        assert "cap" in notes.lower() or "limit" in notes.lower(), notes
    finally:
        for path in where.glob("*"):
            path.unlink()


def test_job_ignoring_sigterm_is_killed_after_the_grace(fresh_stack: Stack,
                                                        tmp_path: Path) -> None:
    fresh_stack.extra_env["PKBS_KILL_GRACE_SECONDS"] = "1"
    fresh_stack.up(workers=1, slots=1)
    ready = tmp_path / "ready"
    job_id = fresh_stack.qsub("-N", "noterm", input=(
        f"trap '' TERM\necho ready > {ready}\nwhile true; do sleep 0.2; done\n"))
    try:
        poll(ready.exists, 30, 0.05, "the job to ignore SIGTERM")
        qdel_at = time.monotonic()
        result = fresh_stack.run(str(BIN / "qdel"), job_id)
        assert result.returncode == 0, result.stderr
        job = fresh_stack.wait_state(job_id, "F", timeout=15)
        took = time.monotonic() - qdel_at
        assert 0.9 <= took < 10, took
        assert job["Exit_status"] == 256 + signal.SIGKILL, job
        assert "deleted" in str(job.get("comment", "")).lower(), job
        poll(lambda: job_processes(fresh_stack, job_id) == [], 5, 0.05, "the job's processes to go")
    finally:
        _kill_all(fresh_stack, job_id)


# -- names, variables, queues and ids --------------------------------------------------


def _clean_failure(result: Any, command: str) -> None:
    assert result.returncode != 0, result
    assert result.stderr.startswith(f"{command}: "), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "", result.stdout


def test_job_name_injection_is_refused(stack: Stack, tmp_path: Path) -> None:
    for name in ("a;rm -rf x", "$(touch pwn)", "../x", "a/b", "a\nb"):
        result = stack.run(str(BIN / "qsub"), "-N", name, input="true\n", cwd=tmp_path)
        _clean_failure(result, "qsub")
    assert list(tmp_path.iterdir()) == []


def test_variable_values_reach_the_job_literally(stack: Stack, tmp_path: Path) -> None:
    canary = tmp_path / "pwn"
    value = f"$(touch {canary})"
    tick = f"`touch {canary}2`"
    job_id = stack.qsub("-N", "literal", "-v", f"X={value},Y={tick}",
                        input='printf "%s\\n" "$X" "$Y"\n')
    job = stack.wait_state(job_id, "F", timeout=30)
    assert job["Exit_status"] == 0
    assert (job["Variable_List"]["X"], job["Variable_List"]["Y"]) == (value, tick)
    out = results_dir(stack, job) / str(job["Output_Path"]).rsplit("/", 1)[-1]
    assert out.read_text() == f"{value}\n{tick}\n"
    assert not canary.exists() and not Path(f"{canary}2").exists()


def test_queue_name_injection_is_refused(stack: Stack) -> None:
    for queue in ("../x", "workq;ls", "work q", "$(id)"):
        result = stack.run(str(BIN / "qsub"), "-q", queue, input="true\n")
        _clean_failure(result, "qsub")


# Ids that are no job id: every command must refuse them with a message on stderr.
BAD_IDS = ["1;ls", "1.pkbs/../x", "1 2", "99999999999999999999999", "1.pkbs\nx", "-1"]
# Operands qstat takes for destinations (queues); qdel and pkbs fetch only take ids.
NOT_IDS = ["../../etc", "$(id)", "work q"]


@pytest.mark.parametrize("command", [["qstat"], ["qstat", "-f"], ["qdel"], ["pkbs", "fetch"]])
def test_bad_job_ids_get_clean_errors(stack: Stack, tmp_path: Path, command: list[str]) -> None:
    dest = tmp_path / "dest"
    extra = [str(dest)] if command[0] == "pkbs" else []
    bad = BAD_IDS + (NOT_IDS if command[0] != "qstat" else [])
    for job_id in bad:
        result = stack.run(str(BIN / command[0]), *command[1:], job_id, *extra, cwd=tmp_path)
        assert result.returncode != 0, (job_id, result)
        assert "Traceback" not in result.stderr, (job_id, result.stderr)
        assert result.stderr.strip(), (job_id, result)
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["dest"])
    assert not dest.exists() or list(dest.iterdir()) == []


def test_fetch_with_an_encoded_traversal_writes_only_into_dest(stack: Stack,
                                                              tmp_path: Path) -> None:
    """The dispatcher takes `1.pkbs%2F..%2Fx` for job 1 (the part after the number is
    a server name it ignores): whatever comes back lands inside DEST."""
    job_id = stack.qsub("-N", "enc", input="echo enc > made.txt\n")
    stack.wait_state(job_id, "F", timeout=30)
    number = job_id.split(".")[0]
    dest = tmp_path / "dest"
    for weird in (f"{number}.pkbs%2F..%2F..%2Fx", f"{number}.pkbs.evil", f"{number}.x%2F.."):
        result = stack.run(str(BIN / "pkbs"), "fetch", weird, str(dest), cwd=tmp_path)
        assert "Traceback" not in result.stderr, result.stderr
    outside = [p for p in tmp_path.rglob("*") if dest not in (p, *p.parents)]
    assert outside == []


@pytest.mark.parametrize("operand", NOT_IDS)
def test_qstat_unknown_destination_is_an_error(stack: Stack, operand: str) -> None:
    result = stack.run(str(BIN / "qstat"), operand)
    _clean_failure(result, "qstat")


# -- oversize bodies ---------------------------------------------------------------------


def test_chunked_oversize_body_is_cut_off_early(stack: Stack) -> None:
    """3 MiB of a chunked body that never ends: the dispatcher must answer (413) and
    not wait for the rest of it."""
    import socket
    import urllib.parse

    endpoint, token = api_endpoint(stack)
    url = urllib.parse.urlsplit(endpoint)
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall((f"POST /v1/jobs HTTP/1.1\r\nHost: {url.netloc}\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode())
        chunk = b"A" * 65536
        with contextlib.suppress(OSError):  # the server may close on us: that is fine
            sock.sendall(b'10\r\n{"payload_b64":"\r\n')
            for _ in range(48):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.settimeout(5)
        answer = b""
        with contextlib.suppress(TimeoutError, OSError):
            # Headers and body may come in separate reads.
            while b"limit" not in answer and (part := sock.recv(4096)):
                answer += part
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"limit" in answer, answer[:300]
