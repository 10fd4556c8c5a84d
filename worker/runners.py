"""The job runner a worker uses, as PKBS_JOB_RUNNER says: `process` (each job a local
process group, worker/runner.py) or `pod` (each job a Kubernetes pod of its own,
worker/podrunner.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pkbs.settings import Settings

from .runner import JobRunner, LocalProcessRunner

if TYPE_CHECKING:
    from .podrunner import PodRunner


def job_runner(settings: Settings) -> JobRunner:
    if settings.job_runner == "pod":
        return pod_runner(settings)
    return LocalProcessRunner()


def pod_runner(settings: Settings) -> PodRunner:
    """The pod runner on the cluster the worker runs in (its service account), or the
    kubeconfig's. ValueError names the settings it lacks; ClusterUnavailable says why
    there is no cluster to ask."""
    needed = {
        "PKBS_JOB_IMAGE": settings.job_image,
        "PKBS_JOB_ENDPOINT": settings.job_endpoint,
        "PKBS_JOB_TOKEN_SECRET": settings.job_token_secret,
    }
    missing = [name for name, value in needed.items() if not value]
    if missing:
        raise ValueError(f"PKBS_JOB_RUNNER=pod needs {', '.join(missing)}")
    assert settings.job_image is not None
    from pkbs.cluster import connect

    from .kubeapi import KubePodAPI
    from .podrunner import PodRunner
    from .pods import worker_selector

    api = KubePodAPI(connect(), settings.job_namespace, worker_selector(settings.worker_name))
    return PodRunner(api, worker_image=settings.job_image, worker_name=settings.worker_name,
                     namespace=settings.job_namespace, start_seconds=settings.pod_start_seconds)
