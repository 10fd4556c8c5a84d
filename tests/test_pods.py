"""The pod of a job run (worker/pods.py), offline: built for several runs, validated
with kubernetes-validate --strict against the Kubernetes versions the manifests are,
and held to the same policies as the manifests' pods (restricted, read-only root, no
service-account token, requests and limits, pinned images), plus what makes it the
job's: image, command, environment, resources, deadline, labels, volumes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pkbs.worker.podfiles import CONTROL_DIR, NODEFILE, STDERR, STDOUT
from pkbs.worker.pods import (
    DEADLINE_MARGIN,
    DEFAULT_MEM_PER_CPU,
    INIT_CONTAINER,
    JOB_CONTAINER,
    KEEPER_CONTAINER,
    earlier_runs_selector,
    label_value,
    output_to_files,
    pod_manifest,
    run_selector,
    worker_selector,
)
from pkbs.worker.runner import RunRequest

from tests.test_manifests import (
    K8S_VERSION,
    MIN_K8S_VERSION,
    assert_images_pinned,
    assert_resources_set,
    assert_restricted,
)

WORKER_IMAGE = "registry.example/pkbs-worker:0.1.0"
JOB_DIR = Path("/scratch/jobs/worker-7d9f-x2k/w3")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def request(**changes: Any) -> RunRequest:
    env = {
        "PATH": "/opt/pkbs/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "PBS_JOBID": "12.pkbs",
        "PBS_O_WORKDIR": str(JOB_DIR),
        "NCPUS": "1",
        "TMPDIR": f"{JOB_DIR}.tmp",
        "PBS_NODEFILE": "/scratch/jobs/worker-7d9f-x2k/nodes.1",
        "PKBS_RUN_ID": "0a1b2c3d4e5f60718293",
        "PKBS_ENDPOINT": "http://dispatcher.pkbs.svc.cluster.local:8000",
        "PKBS_TOKEN": "pkbsjob.eyJ1IjoiYWxpY2UifQ.sig",
        "MY_VAR": "from -v",
    }
    env.update(changes.pop("env", {}))
    base: dict[str, Any] = {
        "job_dir": JOB_DIR,
        "command": ["/bin/bash", f"{JOB_DIR}/STDIN"],
        "env": env,
        "stdout_path": JOB_DIR.with_suffix(".o"),
        "stderr_path": JOB_DIR.with_suffix(".e"),
    }
    base.update(changes)
    return RunRequest(**base)


RUNS = {
    "no image": request(),
    "own image": request(image="python:3.12-slim"),
    "ncpus mem walltime": request(image="ghcr.io/org/sim@sha256:" + "ab" * 32, ncpus=4,
                                  mem_limit=3 * 1024**3, walltime=3600.0, kill_grace=12.5,
                                  env={"NCPUS": "4"}),
    "subjob": request(env={"PBS_JOBID": "7[3].pkbs", "PBS_ARRAY_INDEX": "3",
                           "PBS_ARRAY_ID": "7[].pkbs"}, walltime=60.0),
    "shebang executable": request(command=[f"{JOB_DIR}/job.py"], image="python:3.12-slim"),
    "joined output": request(stderr_path=JOB_DIR.with_suffix(".o")),
}


def pod(run: RunRequest) -> dict[str, Any]:
    return pod_manifest(run, worker_image=WORKER_IMAGE, worker_name="worker-7d9f-x2k",
                        namespace="pkbs-jobs")


def container(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    spec = manifest["spec"]
    (found,) = [c for c in [*spec["initContainers"], *spec["containers"]] if c["name"] == name]
    return dict(found)


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", [])}


@pytest.mark.parametrize("run", RUNS.values(), ids=RUNS.keys())
def test_job_pod_is_valid_and_meets_the_manifests_policies(run: RunRequest) -> None:
    kv = pytest.importorskip("kubernetes_validate.utils", reason="kubernetes-validate missing")
    manifest = pod(run)
    for version in (K8S_VERSION, MIN_K8S_VERSION):
        kv.validate(manifest, version, strict=True)
    name = manifest["metadata"]["name"]
    assert_restricted(name, manifest["spec"])
    assert_resources_set(name, manifest["spec"])
    assert_images_pinned(name, manifest["spec"])
    assert DNS_LABEL.fullmatch(name) and len(name) <= 63, name
    for key, value in manifest["metadata"]["labels"].items():
        assert LABEL_VALUE.fullmatch(value) and len(value) <= 63, (key, value)


def test_strict_validation_would_catch_a_typo() -> None:
    kv = pytest.importorskip("kubernetes_validate.utils", reason="kubernetes-validate missing")
    manifest = pod(request())
    manifest["spec"]["containers"][0]["workDir"] = "/"
    with pytest.raises(kv.ValidationError):
        kv.validate(manifest, K8S_VERSION, strict=True)


def test_the_job_runs_in_its_image_or_the_workers() -> None:
    assert container(pod(request()), JOB_CONTAINER)["image"] == WORKER_IMAGE
    own = pod(request(image="python:3.12-slim"))
    assert container(own, JOB_CONTAINER)["image"] == "python:3.12-slim"
    for helper in (INIT_CONTAINER, KEEPER_CONTAINER):
        assert container(own, helper)["image"] == WORKER_IMAGE


def test_a_shell_job_keeps_stdout_and_stderr_apart() -> None:
    job = container(pod(request()), JOB_CONTAINER)
    assert job["command"] == [
        "/bin/bash", "-c", f'exec "$@" >{CONTROL_DIR}/{STDOUT} 2>{CONTROL_DIR}/{STDERR}',
        "pkbs-job", "/bin/bash", f"{JOB_DIR}/STDIN",
    ]
    joined = container(pod(RUNS["joined output"]), JOB_CONTAINER)
    assert joined["command"][2] == f'exec "$@" >{CONTROL_DIR}/{STDOUT} 2>&1'
    # An executable runs as itself (its image may have no shell): its output is the log.
    assert not output_to_files(RUNS["shebang executable"])
    assert container(pod(RUNS["shebang executable"]), JOB_CONTAINER)["command"] == [
        f"{JOB_DIR}/job.py"
    ]
    assert not output_to_files(request(command=["/usr/bin/python3", f"{JOB_DIR}/STDIN"]))


def test_the_job_sees_its_environment_and_directories() -> None:
    manifest = pod(request())
    job = container(manifest, JOB_CONTAINER)
    env = env_of(job)
    assert "PATH" not in env, "the image's PATH"
    assert env["HOME"] == str(JOB_DIR) and job["workingDir"] == str(JOB_DIR)
    assert env["PBS_NODEFILE"] == f"{CONTROL_DIR}/{NODEFILE}"
    assert env["MY_VAR"] == "from -v" and env["PBS_JOBID"] == "12.pkbs"
    assert env["PKBS_TOKEN"].startswith("pkbsjob."), "qsub in the job, as a process job"
    mounts = {m["mountPath"]: (m["name"], m.get("readOnly", False)) for m in job["volumeMounts"]}
    assert mounts == {
        str(JOB_DIR): ("work", False),
        "/input": ("work", True),
        "/output": ("output", False),
        f"{JOB_DIR}/output": ("output", False),
        f"{JOB_DIR}.tmp": ("tmp", False),
        "/tmp": ("tmp", False),
        CONTROL_DIR: ("control", False),
    }
    volumes = {v["name"]: v for v in manifest["spec"]["volumes"]}
    assert all(set(v) == {"name", "emptyDir"} for v in volumes.values())


def test_only_the_init_container_and_the_job_hold_the_job_token() -> None:
    manifest = pod(request())
    init = env_of(container(manifest, INIT_CONTAINER))
    assert init == {
        "PBS_JOBID": "12.pkbs",
        "NCPUS": "1",
        "PKBS_ENDPOINT": "http://dispatcher.pkbs.svc.cluster.local:8000",
        "PKBS_TOKEN": "pkbsjob.eyJ1IjoiYWxpY2UifQ.sig",
    }
    assert "env" not in container(manifest, KEEPER_CONTAINER)
    assert manifest["spec"]["automountServiceAccountToken"] is False
    assert manifest["spec"]["enableServiceLinks"] is False


def test_resources_come_from_ncpus_and_mem() -> None:
    small = container(pod(request()), JOB_CONTAINER)["resources"]
    assert small["requests"] == small["limits"] == {"cpu": "1",
                                                    "memory": str(DEFAULT_MEM_PER_CPU)}
    big = container(pod(RUNS["ncpus mem walltime"]), JOB_CONTAINER)["resources"]
    assert big["requests"] == big["limits"] == {"cpu": "4", "memory": str(3 * 1024**3)}


def test_walltime_sets_a_deadline_beyond_the_workers_own_timer() -> None:
    assert "activeDeadlineSeconds" not in pod(request())["spec"]
    spec = pod(RUNS["ncpus mem walltime"])["spec"]
    assert spec["activeDeadlineSeconds"] == 3600 + 13 + DEADLINE_MARGIN
    assert spec["terminationGracePeriodSeconds"] == 13


def test_labels_find_the_run_its_job_and_its_worker() -> None:
    manifest = pod(RUNS["subjob"])
    labels = manifest["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "pkbs"
    assert labels["pkbs.job"] == "7-3.pkbs"
    assert labels["pkbs.run"] == "0a1b2c3d4e5f60718293"
    assert manifest["metadata"]["annotations"]["pkbs.job-id"] == "7[3].pkbs"
    assert manifest["metadata"]["name"] == "pkbs-0a1b2c3d4e5f60718293"
    assert worker_selector("worker-7d9f-x2k") == (
        "app.kubernetes.io/managed-by=pkbs,pkbs.worker=worker-7d9f-x2k")
    assert run_selector("0a1b2c3d4e5f60718293").endswith(",pkbs.run=0a1b2c3d4e5f60718293")
    assert earlier_runs_selector("7[3].pkbs", "0a1b2c3d4e5f60718293") == (
        "app.kubernetes.io/managed-by=pkbs,pkbs.job=7-3.pkbs,pkbs.run!=0a1b2c3d4e5f60718293")
    assert manifest["spec"]["restartPolicy"] == "Never"
    assert manifest["spec"]["shareProcessNamespace"] is True


@pytest.mark.parametrize(
    ("text", "value"),
    [("12.pkbs", "12.pkbs"), ("7[3].pkbs", "7-3.pkbs"), ("7[].pkbs", "7-.pkbs"),
     ("a b/c", "a_b_c"), ("-x-", "x"), ("x" * 80, "x" * 63), ("", "")],
)
def test_label_values(text: str, value: str) -> None:
    assert label_value(text) == value
    assert LABEL_VALUE.fullmatch(value)
