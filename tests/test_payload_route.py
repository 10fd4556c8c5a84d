"""GET /v1/jobs/{id}/payload: what a job pod's init container fetches its payload with
(worker/podinit.py). Only the running job's own job-scoped token gets it; another
job's token, a user's, the operator's are refused, and the token stops working when
the job ends. podinit lays out what it fetched as the worker does."""

from __future__ import annotations

import io
import os
import re
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
from pkbs.worker import podinit
from pkbs.worker.podfiles import BEFORE, NODEFILE

from pkbs import constants as C
from tests.stackutil import Stack, api_endpoint, cli, poll, submit, wait_state_as, write_file


def _lower(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def get_payload(endpoint: str, job_id: str, token: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(podinit.payload_url(endpoint, job_id))
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, _lower(response.headers.items()), response.read()
    except urllib.error.HTTPError as err:
        return err.code, _lower(err.headers.items()), err.read()


def live_token(stack: Stack, marker: str) -> str:
    """The PKBS_TOKEN a running job printed after `marker` (its live stdout file in
    the local workers' directory, see stackutil.wait_live_output)."""
    pattern = re.compile(rf"^{re.escape(marker)} token=(pkbsjob\.\S+)$", re.M)

    def check() -> str | None:
        for path in (stack.home / "jobs").glob("*/*/w*.o"):
            try:
                found = pattern.search(path.read_text())
            except OSError:
                continue
            if found:
                return found.group(1)
        return None

    token: str = poll(check, 60, 0.05, f"the token printed after {marker!r}")
    return token


def test_only_the_running_job_gets_its_payload(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = stack.as_user("payload-alice")
    endpoint = alice["PKBS_ENDPOINT"]
    script = 'echo "payload-single token=$PKBS_TOKEN"\nsleep 60\n'
    single = submit(stack, "-N", "pay1", input=script, env=alice)
    project = tmp_path / "project"
    write_file(project / "run.sh", 'echo "payload-array-$PBS_ARRAY_INDEX token=$PKBS_TOKEN"\n'
               "sleep 60\n", 0o755)
    write_file(project / "data" / "input.txt", "42\n")
    array = stack.qsub("-N", "pay2", "-J", "1-2", str(project), env=alice)
    subjob = array.replace("[]", "[1]")
    try:
        own = live_token(stack, "payload-single")
        array_token = live_token(stack, "payload-array-1")

        status, headers, body = get_payload(endpoint, single, own)
        assert status == 200, body
        assert headers[C.PAYLOAD_FORMAT_HEADER.lower()] == "file"
        assert headers[C.ENTRYPOINT_HEADER.lower()] == "STDIN"
        assert body == script.encode()

        status, headers, body = get_payload(endpoint, subjob, array_token)
        assert status == 200, body
        assert headers[C.PAYLOAD_FORMAT_HEADER.lower()] == "zip"
        names = zipfile.ZipFile(io.BytesIO(body)).namelist()
        assert "run.sh" in names and "data/input.txt" in names, names

        # Another job's token, the user's own, the operator's: refused.
        _, admin = api_endpoint(stack)
        for job_id, token in ((single, array_token), (subjob, own),
                              (single, alice["PKBS_TOKEN"]), (single, admin)):
            status, _, body = get_payload(endpoint, job_id, token)
            assert status == 403, (job_id, status, body)
        assert get_payload(endpoint, "999999.pkbs", own)[0] == 404

        # podinit fetches it and lays it out as the worker does.
        for name, value in (("PBS_JOBID", subjob), ("PKBS_ENDPOINT", endpoint),
                            ("PKBS_TOKEN", array_token), ("NCPUS", "2")):
            monkeypatch.setenv(name, value)
        job_dir, control = tmp_path / "job", tmp_path / "control"
        job_dir.mkdir()
        control.mkdir()
        assert podinit.main([str(job_dir), str(control)]) == 0
        assert (job_dir / "data" / "input.txt").read_text() == "42\n"
        assert os.access(job_dir / "run.sh", os.X_OK)
        assert (control / NODEFILE).read_text().count("\n") == 2
        assert "run.sh" in (control / BEFORE).read_text()
    finally:
        cli(stack, "qdel", single, array, env=alice)
    wait_state_as(stack, single, "F", env=alice)
    # The token ends with its job.
    status, _, body = get_payload(endpoint, single, own)
    assert status == 401, body
