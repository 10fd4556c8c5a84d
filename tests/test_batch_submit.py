"""Batch submission: POST /v1/jobs/batch and the Python API over it
(pkbs.cli.client.Client.submit_many)."""

from __future__ import annotations

import base64
import os
from typing import Any

from pkbs.cli.client import Client
from pkbs.cli.qsub import script_request

from pkbs.clientconfig import ClientConfig
from pkbs.constants import MAX_BATCH_JOBS
from pkbs.errors import UnknownQueue, UsageError
from tests.apiutil import call, submit_body
from tests.stackutil import Stack, api_endpoint, fetch_results, job_number


def _client(stack: Stack) -> Client:
    endpoint, token = api_endpoint(stack)
    return Client(ClientConfig(endpoint, token))


def _history_size(stack: Stack) -> int:
    endpoint, token = api_endpoint(stack)
    status, listing = call(endpoint, "GET", "/v1/jobs?history=true&view=table", token)
    assert status == 200
    return len(listing["rows"])


def test_a_batch_runs_every_job_numbered_in_order(stack: Stack, tmp_path: Any) -> None:
    bodies = [submit_body(f"echo batch-{k}\n", name=f"b{k}") for k in range(12)]
    array = submit_body("echo sub-$PBS_ARRAY_INDEX\n", name="barray")
    array["spec"]["array"] = "1-3"
    bodies.insert(5, array)
    seen: list[int] = []
    job_ids = _client(stack).submit_many(bodies, progress=seen.append)
    assert seen == [13]
    numbers = [job_number(job_id.replace("[]", "")) for job_id in job_ids]
    assert numbers == list(range(numbers[0], numbers[0] + 13)), job_ids
    assert job_ids[5].endswith("[].pkbs")
    for position, job_id in enumerate(job_ids):
        job = stack.wait_state(job_id, "F")
        assert job["Exit_status"] == 0, job
        assert job["Job_Name"] == bodies[position]["spec"]["name"]
    k = 7  # the eighth plain job: position 8 after the array
    dest = tmp_path / "out"
    fetch_results(stack, job_ids[8], str(dest))
    assert (dest / f"b{k}.o{numbers[8]}").read_text() == f"batch-{k}\n"


def test_a_retried_batch_submits_nothing_twice(stack: Stack) -> None:
    bodies = [submit_body(name=f"again{k}") for k in range(5)]
    endpoint, token = api_endpoint(stack)
    status, first = call(endpoint, "POST", "/v1/jobs/batch", token, {"jobs": bodies[:3]})
    assert status == 201
    assert [job["duplicate"] for job in first["jobs"]] == [False] * 3
    before = _history_size(stack)
    # The client failed part-way and sends everything again: the first three are
    # the jobs made the first time, only the last two are new.
    status, second = call(endpoint, "POST", "/v1/jobs/batch", token, {"jobs": bodies})
    assert status == 201
    assert [job["duplicate"] for job in second["jobs"]] == [True] * 3 + [False] * 2
    assert [job["job_id"] for job in second["jobs"][:3]] == [j["job_id"] for j in first["jobs"]]
    assert _history_size(stack) == before + 2
    for job in second["jobs"]:
        assert stack.wait_state(job["job_id"], "F")["Exit_status"] == 0


def test_one_refused_job_refuses_the_batch(stack: Stack) -> None:
    endpoint, token = api_endpoint(stack)
    before = _history_size(stack)
    bodies = [submit_body(), submit_body(), submit_body(queue="nosuchqueue"), submit_body()]
    status, reply = call(endpoint, "POST", "/v1/jobs/batch", token, {"jobs": bodies})
    assert status == 400
    assert reply["error"]["pbs_errno"] == 15018  # PBSE_UNKQUE
    assert reply["error"]["message"] == "batch job 2: Unknown queue"
    bodies[2] = submit_body()
    bodies[2]["payload_b64"] = "not base64!"
    status, reply = call(endpoint, "POST", "/v1/jobs/batch", token, {"jobs": bodies})
    assert status == 400
    assert reply["error"]["message"].startswith("batch job 2: payload_b64")
    assert _history_size(stack) == before


def test_batch_size_limits(stack: Stack) -> None:
    endpoint, token = api_endpoint(stack)
    status, _ = call(endpoint, "POST", "/v1/jobs/batch", token, {"jobs": []})
    assert status == 422
    too_many = [submit_body()] * (MAX_BATCH_JOBS + 1)
    status, _ = call(endpoint, "POST", "/v1/jobs/batch", token, {"jobs": too_many})
    assert status == 422
    status, _ = call(endpoint, "POST", "/v1/jobs/batch", None, {"jobs": [submit_body()]})
    assert status == 401


def test_the_client_splits_what_one_request_cannot_carry(stack: Stack) -> None:
    """Three scripts of ~700 KiB zipped: any two exceed the body limit."""
    filler = "# " + base64.b64encode(os.urandom(700 * 1024)).decode() + "\n"
    bodies = [submit_body(f"{filler}echo big-{k}\n", name=f"big{k}") for k in range(3)]
    seen: list[int] = []
    job_ids = _client(stack).submit_many(bodies, progress=seen.append)
    assert seen == [1, 2, 3]
    for job_id in job_ids:
        assert stack.wait_state(job_id, "F")["Exit_status"] == 0


def test_the_client_reports_a_refused_batch(stack: Stack) -> None:
    try:
        _client(stack).submit_many([submit_body(), submit_body(queue="nosuchqueue")])
    except UnknownQueue as exc:
        assert exc.pbs_errno == 15018
        assert "batch job 1" in exc.message
    else:
        raise AssertionError("the batch was accepted")


def test_bodies_made_from_scripts_like_qsub_makes_them(stack: Stack) -> None:
    """pkbs.cli.qsub.script_request: qsub's options and #PBS lines, without a process."""
    bodies = [
        script_request(f"#PBS -N fromscript{k}\n#PBS -l walltime=00:01:00\necho {k}\n",
                       ["-q", "workq", "-v", f"K={k}"])
        for k in range(3)
    ]
    job_ids = _client(stack).submit_many(bodies)
    for k, job_id in enumerate(job_ids):
        job = stack.wait_state(job_id, "F")
        assert job["Job_Name"] == f"fromscript{k}" and job["Exit_status"] == 0
        assert job["Resource_List"]["walltime"] == "00:01:00"
        assert str(job["Variable_List"]["K"]) == str(k)
    for bad in (["-I"], ["script.sh"]):
        try:
            script_request("true\n", bad)
        except UsageError:
            continue
        raise AssertionError(f"{bad} accepted")
