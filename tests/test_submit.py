"""qsub end to end: the three submission forms, directives, errors, the job environment.

Real CLI in subprocesses against the session stack (real nats-server and WsgiDAV).
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.stackutil import (
    Stack,
    cli,
    client_config,
    fetch_results,
    job_number,
    submit,
    write_file,
)

LIMIT_RE = re.compile(r"1(\.0)? MiB limit")


def _last_number(stack: Stack) -> int:
    """The newest job number, found by submitting (and deleting) a held probe job.

    Job numbers are PKBS_SUBMIT stream sequences: a request that queued nothing
    leaves the next probe exactly one number after the previous one."""
    probe = submit(stack, "-h", "-N", "probe", input="true\n")
    assert cli(stack, "qdel", probe).returncode == 0
    return job_number(probe)


def _output(stack: Stack, job_id: str, name: str, dest: Path) -> str:
    fetch_results(stack, job_id, dest)
    return (dest / f"{name}.o{job_number(job_id)}").read_text()


def _finished_ok(stack: Stack, job_id: str) -> dict[str, Any]:
    job = stack.wait_state(job_id, "F")
    assert job["Exit_status"] == 0, job
    return job


# -- the three forms of the issue ---------------------------------------------


def test_stdin_script(stack: Stack) -> None:
    job_id = submit(stack, "-N", "sleep", input="sleep 1\n")
    job = _finished_ok(stack, job_id)
    assert job["Job_Name"] == "sleep"


def test_executable_file(stack: Stack, tmp_path: Path) -> None:
    calc = write_file(tmp_path / "exam", "#!/bin/sh\necho \"answer $((6 * 7))\"\n", 0o755)
    job_id = submit(stack, "-N", "calc", str(calc), cwd=tmp_path)
    job = _finished_ok(stack, job_id)
    assert job["Job_Name"] == "calc"
    assert _output(stack, job_id, "calc", tmp_path / "out") == "answer 42\n"


def test_directory_with_run_sh(stack: Stack, tmp_path: Path) -> None:
    mydir = tmp_path / "mydir"
    write_file(mydir / "run.sh",
               '#!/bin/bash\n'
               'set -e\n'
               'test "$(pwd -P)" = "$(cd "$PBS_O_WORKDIR" && pwd -P)" && echo "in workdir"\n'
               'ls -A | sort\n'
               'cat data.txt sub/more.txt\n', 0o755)
    write_file(mydir / "data.txt", "alpha\n")
    write_file(mydir / "sub" / "more.txt", "beta\n")
    job_id = submit(stack, "-N", "proj", "mydir/", cwd=tmp_path)
    _finished_ok(stack, job_id)
    assert _output(stack, job_id, "proj", tmp_path / "out") == (
        "in workdir\ndata.txt\nrun.sh\nsub\nalpha\nbeta\n"
    )


def test_plain_script_not_executable_runs_via_shell(stack: Stack, tmp_path: Path) -> None:
    # What dask-jobqueue does: `qsub /tmp/xyz.sh` with a mode-0644 script.
    write_file(tmp_path / "job.sh", "#!/usr/bin/env bash\n\n#PBS -l walltime=00:30:00\n"
               "echo \"shell says ${BASH_VERSION:+bash}\"\n", 0o644)
    job_id = submit(stack, "job.sh", cwd=tmp_path)
    job = _finished_ok(stack, job_id)
    assert job["Job_Name"] == "job.sh"
    assert _output(stack, job_id, "job.sh", tmp_path / "out") == "shell says bash\n"


# -- directives ----------------------------------------------------------------


def test_directive_name_and_command_line_override(stack: Stack, tmp_path: Path) -> None:
    script = write_file(tmp_path / "named.sh", "#!/bin/bash\n#PBS -N fromdirective\ntrue\n")
    from_directive = submit(stack, str(script), cwd=tmp_path)
    from_cmdline = submit(stack, "-N", "fromcli", str(script), cwd=tmp_path)
    assert stack.job(from_directive)["Job_Name"] == "fromdirective"
    assert stack.job(from_cmdline)["Job_Name"] == "fromcli"
    stack.wait_state(from_directive, "F")
    stack.wait_state(from_cmdline, "F")


def test_malformed_directive_names_its_line(stack: Stack, tmp_path: Path) -> None:
    script = write_file(tmp_path / "bad.sh", "#!/bin/bash\n#PBS -N ok\n#PBS -l\necho hi\n")
    before = _last_number(stack)
    result = cli(stack, "qsub", str(script), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "qsub: directive error on line 3: option requires an argument -- 'l'\n"
    assert _last_number(stack) == before + 1  # nothing queued in between


# -- errors ----------------------------------------------------------------------


def test_oversize_directory_is_refused_and_nothing_queued(stack: Stack, tmp_path: Path) -> None:
    big = tmp_path / "big"
    write_file(big / "run.sh", "echo hi\n", 0o755)
    write_file(big / "noise.bin", os.urandom(1024 * 1024 + 64 * 1024))  # incompressible
    before = _last_number(stack)
    result = cli(stack, "qsub", "-N", "big", str(big))
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.startswith("qsub: ") and result.stderr.endswith("\n")
    assert LIMIT_RE.search(result.stderr), result.stderr
    assert _last_number(stack) == before + 1  # nothing queued in between


def _post_jobs(stack: Stack, body: bytes, token: str | None = None) -> tuple[int, dict[str, Any]]:
    config = client_config(stack.home)
    request = urllib.request.Request(
        config["endpoint"] + "/v1/jobs", data=body, method="POST",
        headers={"Authorization": f"Bearer {token or config['token']}",
                 "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _submit_body(payload: bytes) -> bytes:
    return json.dumps({
        "submit_id": os.urandom(16).hex(),
        "spec": {"name": "direct", "kind": "stdin", "entrypoint": "STDIN"},
        "payload_b64": base64.b64encode(payload).decode(),
    }).encode()


def test_dispatcher_rejects_oversize_payload_with_413(stack: Stack) -> None:
    # A body the dispatcher reads whole (under its body limit) whose payload is 1 MiB + 1.
    before = _last_number(stack)
    status, data = _post_jobs(stack, _submit_body(os.urandom(1024 * 1024 + 1)))
    assert status == 413, data
    error = data["error"]
    assert error["pbs_errno"] == 15004
    assert LIMIT_RE.search(error["message"]), error
    assert _last_number(stack) == before + 1  # nothing queued in between


def test_dispatcher_rejects_oversize_body_by_content_length(stack: Stack) -> None:
    # The body limit is checked from Content-Length before the body is read: announce
    # 4 MB, send nothing, and the answer must already be 413 with a JSON error.
    config = client_config(stack.home)
    url = urllib.parse.urlsplit(config["endpoint"])
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/jobs")
        conn.putheader("Authorization", f"Bearer {config['token']}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(4 * 1024 * 1024))
        conn.endheaders()
        response = conn.getresponse()
        data = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 413, data
    assert data["error"]["pbs_errno"] == 15004
    assert re.search(r"1(\.0)? MiB|1024 KiB", data["error"]["message"]), data


def test_dispatcher_refuses_wrong_token_with_401(stack: Stack) -> None:
    before = _last_number(stack)
    status, data = _post_jobs(stack, _submit_body(b"PK\x05\x06" + bytes(18)), token="bogus")
    assert status == 401
    assert data["error"]["message"] == "Invalid credential: the token is unknown or expired"
    assert _last_number(stack) == before + 1  # nothing queued in between


def test_directory_without_run_sh(stack: Stack, tmp_path: Path) -> None:
    write_file(tmp_path / "norun" / "data.txt", "x\n")
    result = cli(stack, "qsub", "norun", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "qsub: directory norun has no run.sh at its top level\n"


def test_empty_stdin(stack: Stack) -> None:
    result = cli(stack, "qsub", "-N", "empty", input="")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "qsub: script file is empty (nothing on standard input)\n"


def test_binary_file_not_executable(stack: Stack, tmp_path: Path) -> None:
    write_file(tmp_path / "prog.bin", b"\x7fELF\x02\x01\x01\x00" + bytes(64), 0o644)
    before = _last_number(stack)
    result = cli(stack, "qsub", "prog.bin", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "qsub: prog.bin is not executable and not a job script "
        "(chmod +x it to run it as the job)\n"
    )
    assert _last_number(stack) == before + 1  # nothing queued in between


def test_unknown_queue(stack: Stack) -> None:
    before = _last_number(stack)
    result = cli(stack, "qsub", "-q", "nosuch", input="echo hi\n")
    assert result.returncode == 15018 & 0xFF  # PBSE_UNKQUE: 170
    assert (result.stdout, result.stderr) == ("", "qsub: Unknown queue\n")
    assert _last_number(stack) == before + 1  # nothing queued in between


def test_wrong_token(stack: Stack) -> None:
    env = {"PKBS_TOKEN": "bogus", "PKBS_ENDPOINT": client_config(stack.home)["endpoint"]}
    result = cli(stack, "qsub", input="echo hi\n", env=env)
    assert result.returncode == 15019 & 0xFF
    assert result.stdout == ""
    assert result.stderr == "qsub: Invalid credential: the token is unknown or expired\n"


class _PlainTextErrors(http.server.BaseHTTPRequestHandler):
    """What a proxy or a crashed dispatcher answers: a 500 with a text body."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"Internal Server Error"
        self.send_response(500)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_non_json_error_reply_gives_clear_message(stack: Stack) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PlainTextErrors)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {"PKBS_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
               "PKBS_TOKEN": "whatever"}
        result = cli(stack, "qsub", input="echo hi\n", env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode != 0 and result.stdout == ""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("qsub: ") and result.stderr.count("\n") == 1, result.stderr


# -- the job's environment ------------------------------------------------------


def test_job_environment(stack: Stack, tmp_path: Path) -> None:
    script = (
        'echo "PBS_JOBID=$PBS_JOBID"\n'
        'echo "PBS_JOBNAME=$PBS_JOBNAME"\n'
        'echo "PBS_ENVIRONMENT=$PBS_ENVIRONMENT"\n'
        'echo "PBS_QUEUE=$PBS_QUEUE"\n'
        'here=$(pwd -P)\n'
        'cd "$PBS_O_WORKDIR" && test "$(pwd -P)" = "$here" && echo "workdir=cwd"\n'
        'test -f STDIN && echo "script is here"\n'
    )
    job_id = submit(stack, "-N", "envjob", input=script, cwd=tmp_path)
    _finished_ok(stack, job_id)
    assert _output(stack, job_id, "envjob", tmp_path / "out") == (
        f"PBS_JOBID={job_id}\n"
        "PBS_JOBNAME=envjob\n"
        "PBS_ENVIRONMENT=PBS_BATCH\n"
        "PBS_QUEUE=workq\n"
        "workdir=cwd\n"
        "script is here\n"
    )
