"""What a job run as a Kubernetes pod looks like: `pod_manifest`, the one function that
builds it, and the names and labels that find it again. Pure: no API calls here.

One pod per run, in the jobs namespace, `restartPolicy: Never`, its processes in one
process namespace:

- init container `payload` (the worker's image, `python -m pkbs.worker.podinit`):
  fetches the job's payload from the dispatcher with the job's own job-scoped token
  (in its environment only) and unpacks it safely into the job directory; writes the
  node file and a snapshot of the job directory as the payload left it.
- container `job` (the job's image, or the worker's for a job that names none): the
  job's command in its job directory, with the job's environment (`PATH` is the
  image's, `HOME` the job directory). Run by a POSIX shell, its stdout and stderr go
  to files of the control directory; else they are the container's log, joined.
- container `keeper` (the worker's image, `python -m pkbs.worker.podkeeper keep`):
  samples the job's processes for resources_used and keeps the pod, so the job
  directory, after the job's container has ended; the worker takes the results out
  through it (`podkeeper pack`) and signals the job through it (`podkeeper signal`).

Every container runs as the user 10001, non-root, without privilege escalation or
capabilities, on a read-only root file system; what the job may write are emptyDirs:
its job directory (at the same path as on the worker, also read-only at /input),
/output (also `output/` of the job directory), TMPDIR and /tmp. No service-account
token is mounted. CPU and memory: requests = limits, from -l ncpus and -l mem.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from typing import Any

from pkbs.dockerapi import LABEL_JOB, LABEL_RUN, LABEL_WORKER
from pkbs.procs import RUN_ID_VARIABLE

from .containers import CONTAINER_UID, INPUT_DIR, OUTPUT_DIR, OUTPUT_NAME
from .podfiles import CONTROL_DIR, NODEFILE, STDERR, STDOUT
from .runner import RunRequest

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "pkbs"
# The job id exactly (a label value cannot hold a subjob's brackets).
ANNOTATION_JOB_ID = "pkbs.job-id"
INIT_CONTAINER = "payload"
JOB_CONTAINER = "job"
KEEPER_CONTAINER = "keeper"
# Shells whose `exec "$@" >file 2>file` the job's command is wrapped in, so that its
# stdout and stderr stay apart (a pod's log joins them).
POSIX_SHELLS = frozenset({"sh", "bash", "dash", "ash", "ksh", "mksh", "zsh"})
# A job without -l mem gets this much memory per CPU (requests = limits).
DEFAULT_MEM_PER_CPU = 2 * 1024**3
# activeDeadlineSeconds, a backstop should the worker be gone: the walltime, the kill
# grace and this, for pulling images and taking the results out.
DEADLINE_MARGIN = 600
WORK_LIMIT = "16Gi"  # the job directory
OUTPUT_LIMIT = "16Gi"
TMP_LIMIT = "4Gi"
CONTROL_LIMIT = "16Gi"  # stdout and stderr
HELPER_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "32Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}


def container_security() -> dict[str, Any]:
    """Every container's: no privilege escalation, no capabilities, read-only root."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def label_value(text: str) -> str:
    """`text` as a label value: at most 63 of [A-Za-z0-9_.-], alphanumeric at both
    ends (a subjob's `7[3].pkbs` becomes `7-3.pkbs`)."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "_", text.replace("[", "-").replace("]", ""))
    return value[:63].strip("_.-")


def pod_name(request: RunRequest) -> str:
    """The run's pod: `pkbs-<PKBS_RUN_ID>` (unique per run of a job)."""
    run = request.env.get(RUN_ID_VARIABLE) or uuid.uuid4().hex[:20]
    return f"pkbs-{label_value(run).lower()}"


def output_to_files(request: RunRequest) -> bool:
    """Whether the job's stdout and stderr go to files of the control directory: when
    a POSIX shell runs it (so its image has that shell)."""
    return len(request.command) > 1 and os.path.basename(request.command[0]) in POSIX_SHELLS


def job_command(request: RunRequest) -> list[str]:
    """The job container's command: the job's, with stdout and stderr redirected to
    the control directory by the shell that runs it (see output_to_files)."""
    if not output_to_files(request):
        return list(request.command)
    stderr = "&1" if request.stderr_path == request.stdout_path else f"{CONTROL_DIR}/{STDERR}"
    script = f'exec "$@" >{CONTROL_DIR}/{STDOUT} 2>{stderr}'
    return [request.command[0], "-c", script, "pkbs-job", *request.command]


def job_resources(request: RunRequest) -> dict[str, dict[str, str]]:
    """requests = limits: `ncpus` CPUs and `-l mem` (else DEFAULT_MEM_PER_CPU each)."""
    memory = request.mem_limit or DEFAULT_MEM_PER_CPU * request.ncpus
    amount = {"cpu": str(request.ncpus), "memory": str(memory)}
    return {"requests": dict(amount), "limits": dict(amount)}


def active_deadline(request: RunRequest) -> int | None:
    if request.walltime is None:
        return None
    return math.ceil(request.walltime + request.kill_grace) + DEADLINE_MARGIN


def _mount(volume: str, path: str | os.PathLike[str], read_only: bool = False) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": volume, "mountPath": str(path)}
    if read_only:
        mount["readOnly"] = True
    return mount


def _env(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in values.items()]


def _helper(name: str, image: str, args: list[str], mounts: list[dict[str, Any]],
            env: dict[str, str] | None = None) -> dict[str, Any]:
    """A container of the worker's image running one of pkbs's pod programs."""
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", *args],
        "resources": {kind: dict(amounts) for kind, amounts in HELPER_RESOURCES.items()},
        "securityContext": container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    if env:
        container["env"] = _env(env)
    return container


def pod_manifest(
    request: RunRequest,
    *,
    worker_image: str,
    worker_name: str,
    namespace: str,
) -> dict[str, Any]:
    """The Pod of one run of a job (a dict, as `kubectl create -f` takes it)."""
    job_dir = str(request.job_dir)
    output_in_job_dir = f"{job_dir}/{OUTPUT_NAME}"
    tmp_dirs = dict.fromkeys(["/tmp", request.env.get("TMPDIR", "/tmp")])
    env = {k: v for k, v in request.env.items() if k != "PATH"}
    env["HOME"] = job_dir
    env["PBS_NODEFILE"] = f"{CONTROL_DIR}/{NODEFILE}"
    job_id = request.env.get("PBS_JOBID", "")
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        "app.kubernetes.io/part-of": "pkbs",
        "app.kubernetes.io/component": "job",
        LABEL_JOB: label_value(job_id),
        LABEL_RUN: label_value(request.env.get(RUN_ID_VARIABLE, "")),
        LABEL_WORKER: label_value(worker_name),
    }
    init = _helper(
        INIT_CONTAINER,
        worker_image,
        ["pkbs.worker.podinit", job_dir, CONTROL_DIR],
        [_mount("work", job_dir), _mount("output", output_in_job_dir),
         _mount("control", CONTROL_DIR)],
        # The job's token fetches its payload: short-lived in effect (honoured only
        # while the job runs) and good for this job only.
        {name: request.env[name] for name in ("PBS_JOBID", "NCPUS", "PKBS_ENDPOINT",
                                              "PKBS_TOKEN") if name in request.env},
    )
    job: dict[str, Any] = {
        "name": JOB_CONTAINER,
        "image": request.image or worker_image,
        "imagePullPolicy": "IfNotPresent",
        "command": job_command(request),
        "workingDir": job_dir,
        "env": _env(env),
        "resources": job_resources(request),
        "securityContext": container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            _mount("work", job_dir),
            _mount("work", INPUT_DIR, read_only=True),
            _mount("output", OUTPUT_DIR),
            _mount("output", output_in_job_dir),
            *(_mount("tmp", path) for path in tmp_dirs),
            _mount("control", CONTROL_DIR),
        ],
    }
    keeper = _helper(
        KEEPER_CONTAINER,
        worker_image,
        ["pkbs.worker.podkeeper", "keep", CONTROL_DIR],
        [_mount("work", job_dir, read_only=True),
         _mount("output", output_in_job_dir, read_only=True),
         _mount("control", CONTROL_DIR)],
    )
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "shareProcessNamespace": True,
        "terminationGracePeriodSeconds": math.ceil(request.kill_grace),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": CONTAINER_UID,
            "runAsGroup": CONTAINER_UID,
            "fsGroup": CONTAINER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [init],
        "containers": [job, keeper],
        "volumes": [
            {"name": "work", "emptyDir": {"sizeLimit": WORK_LIMIT}},
            {"name": "output", "emptyDir": {"sizeLimit": OUTPUT_LIMIT}},
            {"name": "tmp", "emptyDir": {"sizeLimit": TMP_LIMIT}},
            {"name": "control", "emptyDir": {"sizeLimit": CONTROL_LIMIT}},
        ],
    }
    deadline = active_deadline(request)
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(request),
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANNOTATION_JOB_ID: job_id},
        },
        "spec": spec,
    }


def worker_selector(worker_name: str) -> str:
    """The label selector of every pod a worker made."""
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_WORKER}={label_value(worker_name)}"


def run_selector(run_id: str) -> str:
    """The label selector of a run's pod (by its PKBS_RUN_ID)."""
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_RUN}={label_value(run_id)}"


def earlier_runs_selector(job_id: str, run_id: str) -> str:
    """The label selector of the pods of a job's other runs than this one (a lost
    worker's run: the job runs once at a time, so they must go before this one runs)."""
    return (f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_JOB}={label_value(job_id)},"
            f"{LABEL_RUN}!={label_value(run_id)}")
