"""The dispatcher's HTTP contract: auth, idempotent submission, stateless replicas."""

from __future__ import annotations

import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pkbs import servers
from tests.apiutil import call, submit_body
from tests.stackutil import Stack, poll


def _client(stack: Stack) -> tuple[str, str]:
    data = json.loads((stack.home / "client.json").read_text())
    return data["endpoint"], data["token"]


def test_openapi_is_served(stack: Stack) -> None:
    endpoint, _ = _client(stack)
    status, spec = call(endpoint, "GET", "/openapi.json", None)
    assert status == 200
    assert "/v1/jobs" in spec["paths"]
    assert "post" in spec["paths"]["/v1/jobs"]


def test_missing_or_wrong_token_is_401(stack: Stack) -> None:
    endpoint, _ = _client(stack)
    for token in (None, "not-a-token", "pkbsjob.forged.0000"):
        status, body = call(endpoint, "GET", "/v1/jobs", token)
        assert status == 401, (token, body)
        assert body["error"]["pbs_errno"] == 15019
    status, _ = call(endpoint, "POST", "/v1/jobs", "wrong", submit_body())
    assert status == 401


def test_retried_submit_returns_the_same_job(stack: Stack) -> None:
    endpoint, token = _client(stack)
    body = submit_body(name="retry")
    first_status, first = call(endpoint, "POST", "/v1/jobs", token, body)
    second_status, second = call(endpoint, "POST", "/v1/jobs", token, body)
    assert first_status == second_status == 201
    assert first["job_id"] == second["job_id"]
    assert first["duplicate"] is False and second["duplicate"] is True
    stack.wait_state(first["job_id"], "F")
    status, listing = call(endpoint, "GET", "/v1/jobs?history=true", token)
    named = [j for j in listing["jobs"] if j["attributes"]["Job_Name"] == "retry"]
    assert len(named) == 1


def test_oversize_body_is_413_and_nothing_queued(stack: Stack) -> None:
    endpoint, token = _client(stack)
    _, before = call(endpoint, "GET", "/v1/jobs?history=true", token)
    big = json.dumps(submit_body()).encode() + b" " * (2 * 1024 * 1024)
    status, body = call(endpoint, "POST", "/v1/jobs", token, raw=big)
    assert status == 413
    assert "1.0 MiB" in body["error"]["message"]
    _, after = call(endpoint, "GET", "/v1/jobs?history=true", token)
    assert len(after["jobs"]) == len(before["jobs"])


def _start_second_dispatcher(stack: Stack, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    secrets = json.loads((stack.home / "secrets.json").read_text())
    conf = (stack.home / "run" / "nats.conf").read_text()
    nats_port = re.search(r"^port: (\d+)$", conf, re.M)
    assert nats_port is not None
    port = servers.free_port()
    env = {
        "PKBS_NATS_URL": f"nats://127.0.0.1:{nats_port[1]}",
        "PKBS_NATS_USER": secrets["nats_user"],
        "PKBS_NATS_PASSWORD": secrets["nats_password"],
        "PKBS_ADMIN_TOKEN": secrets["admin_token"],
        "PKBS_DISPATCHER_PORT": str(port),
        "PKBS_HOME": str(stack.home),
    }
    proc = servers.start_python_module("pkbs.dispatcher", env, log)
    servers.wait_for_port("127.0.0.1", port, 30, proc)
    return proc, f"http://127.0.0.1:{port}"


def test_two_dispatchers_give_unique_ids_under_concurrent_submission(
    stack: Stack, tmp_path: Path
) -> None:
    endpoint, token = _client(stack)
    second, endpoint2 = _start_second_dispatcher(stack, tmp_path / "dispatcher2.log")
    try:

        def submit(i: int) -> str:
            target = endpoint if i % 2 else endpoint2
            status, body = call(target, "POST", "/v1/jobs", token, submit_body(name=f"c{i}"))
            assert status == 201, body
            return str(body["job_id"])

        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = list(pool.map(submit, range(60)))
        assert len(set(ids)) == 60
        assert all(re.fullmatch(r"\d+\.pkbs", i) for i in ids)
        # Both replicas see every job (all state is in JetStream/KV).
        status, job = call(endpoint2, "GET", f"/v1/jobs/{ids[1]}", token)
        assert status == 200 and job["jobs"][0]["id"] == ids[1]
        poll(
            lambda: all(stack.job(i)["job_state"] == "F" for i in ids[-3:]),
            60,
            what="the last jobs to finish",
        )
    finally:
        servers.stop(second)
