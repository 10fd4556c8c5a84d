"""Container-image jobs on `pkbs up` with the Docker daemon here: a job names its image
(`-v CONTAINER_IMAGE=…`, a `#PBS -v` line, or the API's `image` field) and runs in it,
with its outputs, limits (-27, -29), qdel, a worker's death (the container goes with
it, the job reruns once), an image that is not there (F, -1, the reason), a refused
image reference or one the queue does not allow (nothing queued), and a zip-slip
payload refused as for a process job."""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from pkbs.dockerapi import LABEL_JOB, LABEL_WORKER
from tests.apiutil import call, submit_body
from tests.stackutil import BIN, Stack, api_endpoint, poll, wait_restarted
from tests.test_hostile import hostile_payloads

IMAGE = "pkbs-base:bookworm"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[Stack]:
    """A local stack whose workers run container jobs on this machine's daemon; queue
    `trusted` allows only the Debian base."""
    queues = '{"workq": {}, "trusted": {"images": ["pkbs-base:*"]}}'
    made = Stack(tmp_path_factory.mktemp("containers") / "home",
                 extra_env={"PKBS_QUEUES": queues, "PKBS_KILL_GRACE_SECONDS": "2",
                            "PKBS_ACK_WAIT_SECONDS": "3"})
    made.up(workers=2, slots=2)
    yield made
    made.down()


def containers_of(client: docker.DockerClient, label: str, value: str) -> list[str]:
    found = client.containers.list(all=True, filters={"label": f"{label}={value}"})
    return [c.id for c in found]


def test_a_job_runs_in_the_image_it_names(stack: Stack, tmp_path: Path) -> None:
    status = stack.run(str(BIN / "pkbs"), "status")
    assert "container jobs: Docker at unix://" in status.stdout, status.stdout
    job_id = stack.qsub("-N", "py", "-v", f"CONTAINER_IMAGE={IMAGE}", input=(
        'python3 -c "import sys; print(sys.version)"\n'
        "id -u\necho made > /output/made.txt\necho local > here.txt\n"))
    job = stack.wait_state(job_id, "F", timeout=90)
    assert job["Exit_status"] == 0, job
    assert job["container_image"] == IMAGE and job["Variable_List"]["CONTAINER_IMAGE"] == IMAGE
    got = stack.run(str(BIN / "pkbs"), "fetch", job_id, str(tmp_path))
    assert got.returncode == 0, got.stderr
    out = next(tmp_path.glob("py.o*")).read_text().split("\n")
    assert out[0].startswith("3.11.") and out[1] != "0"
    assert (tmp_path / "output" / "made.txt").read_text() == "made\n"
    assert (tmp_path / "here.txt").read_text() == "local\n"


def test_a_directive_names_the_image_too(stack: Stack) -> None:
    job_id = stack.qsub(input=f"#PBS -v CONTAINER_IMAGE={IMAGE}\ntest -e /input && echo in\n")
    job = stack.wait_state(job_id, "F", timeout=90)
    assert job["Exit_status"] == 0 and job["container_image"] == IMAGE


def test_limits_end_a_container_job_as_pbs_does(stack: Stack) -> None:
    image = f"CONTAINER_IMAGE={IMAGE}"
    hog = stack.qsub("-v", image, "-l", "mem=64mb", input=(
        "python3 -c 'b = bytearray(400 * 2**20); import time; time.sleep(5)'\n"))
    slow = stack.qsub("-v", image, "-l", "walltime=00:00:02", input="sleep 60\n")
    assert stack.wait_state(hog, "F", timeout=90)["Exit_status"] == -27
    assert stack.wait_state(slow, "F", timeout=90)["Exit_status"] == -29


def test_qdel_of_a_running_container_job(stack: Stack, docker_client: docker.DockerClient) -> None:
    job_id = stack.qsub("-v", f"CONTAINER_IMAGE={IMAGE}", input="sleep 120\n")
    poll(lambda: containers_of(docker_client, LABEL_JOB, job_id), 60, 0.2, "its container")
    deleted = stack.run(str(BIN / "qdel"), job_id)
    assert deleted.returncode == 0, deleted.stderr
    job = stack.wait_state(job_id, "F", timeout=60)
    assert job["Exit_status"] == 256 + signal.SIGTERM, job
    assert not containers_of(docker_client, LABEL_JOB, job_id)


def test_a_dead_workers_container_goes_and_the_job_reruns_once(
        stack: Stack, docker_client: docker.DockerClient) -> None:
    job_id = stack.qsub("-v", f"CONTAINER_IMAGE={IMAGE}", input="sleep 4; echo done\n")
    running = poll(lambda: docker_client.containers.list(
        filters={"label": f"{LABEL_JOB}={job_id}"}), 60, 0.2, "its container")
    worker_name = running[0].labels[LABEL_WORKER]
    index = int(worker_name.rsplit("-w", 1)[1])
    victim = stack.pid_of(f"worker-{index}")
    os.kill(victim, signal.SIGKILL)
    # The supervisor removes the dead worker's containers before the job is rerun.
    poll(lambda: not containers_of(docker_client, LABEL_WORKER, worker_name)
         or containers_of(docker_client, LABEL_WORKER, worker_name) != [running[0].id],
         30, 0.1, "the dead worker's container to go")
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(running[0].id)
    job = stack.wait_state(job_id, "F", timeout=120)
    assert job["Exit_status"] == 0 and job["run_count"] == 2, job
    wait_restarted(stack, f"worker-{index}", victim)


def test_an_image_that_is_not_there_ends_the_job_at_once(stack: Stack) -> None:
    started = time.monotonic()
    job_id = stack.qsub("-v", "CONTAINER_IMAGE=pkbs-test/no-such-image:1", input="true\n")
    job = stack.wait_state(job_id, "F", timeout=60)
    assert job["Exit_status"] == -1 and job["run_count"] == 1, job
    assert "pkbs-test/no-such-image:1" in job["comment"], job["comment"]
    assert time.monotonic() - started < 60


def test_bad_or_unallowed_images_are_refused_at_submit(stack: Stack) -> None:
    before = stack.run(str(BIN / "qstat"), "-x").stdout
    bad = stack.run(str(BIN / "qsub"), "-v", "CONTAINER_IMAGE=Not An:Image", input="true\n")
    assert bad.returncode == 15014 & 0xFF, bad
    assert bad.stderr.startswith("qsub: Illegal attribute or resource value"), bad.stderr
    other = stack.run(str(BIN / "qsub"), "-q", "trusted", "-v", "CONTAINER_IMAGE=python:3.12",
                      input="true\n")
    assert other.returncode == 15007 & 0xFF, other
    assert "python:3.12" in other.stderr and "trusted" in other.stderr, other.stderr
    assert stack.run(str(BIN / "qstat"), "-x").stdout == before
    fine = stack.qsub("-q", "trusted", "-v", f"CONTAINER_IMAGE={IMAGE}", input="true\n")
    assert stack.wait_state(fine, "F", timeout=90)["Exit_status"] == 0


def test_the_api_field_and_a_zip_slip_payload(stack: Stack, tmp_path: Path) -> None:
    endpoint, token = api_endpoint(stack)
    body = submit_body("echo api\n", name="apiimage")
    body["spec"]["image"] = IMAGE
    status, reply = call(endpoint, "POST", "/v1/jobs", token, body)
    assert status == 201, reply
    job = stack.wait_state(reply["job_id"], "F", timeout=90)
    assert job["Exit_status"] == 0 and job["Variable_List"]["CONTAINER_IMAGE"] == IMAGE
    escape = tmp_path / "escape"
    escape.mkdir()
    slip = submit_body(name="slip")
    slip["spec"]["image"] = IMAGE
    slip["payload_b64"] = base64.b64encode(hostile_payloads(escape)["zip_slip"]).decode()
    status, reply = call(endpoint, "POST", "/v1/jobs", token, slip)
    if status == 201:
        job = stack.wait_state(reply["job_id"], "F", timeout=60)
        assert job["Exit_status"] == -1 and "Job could not start" in job["comment"], job
    assert not list(escape.iterdir())
