"""Reading a job pod's status (worker/podstatus.py): how far its job got, whose fault
a failure is, and the job's PBS exit status. Pods as the API shows them."""

from __future__ import annotations

from typing import Any

import pytest
from pkbs.worker.podstatus import (
    Broken,
    CannotStart,
    Ended,
    Running,
    Starting,
    exit_status,
    progress,
)

IMAGE = "python:3.12-slim"


def pod(job: dict[str, Any] | None = None, init: dict[str, Any] | None = None,
        phase: str = "Pending", **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"phase": phase, **status}
    if init is not None:
        body["initContainerStatuses"] = [{"name": "payload", "state": init}]
    if job is not None:
        body["containerStatuses"] = [
            {"name": "job", "state": job, "image": IMAGE},
            {"name": "keeper", "state": {"running": {}}},
        ]
    return {"metadata": {"name": "pkbs-1"}, "status": body}


def terminated(code: int, reason: str = "Error", **more: Any) -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "reason": reason, **more}}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"waiting": {"reason": reason, "message": message}}


UNSCHEDULED = pod(conditions=[{"type": "PodScheduled", "status": "False",
                               "reason": "Unschedulable",
                               "message": "0/3 nodes are available: 3 Insufficient cpu."}])


@pytest.mark.parametrize(
    ("state", "own_image", "expected"),
    [
        (pod(), None, Starting("Pending")),
        (UNSCHEDULED, None,
         Starting("Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.")),
        (pod(init={"running": {}}, job=waiting("PodInitializing")), None,
         Starting("PodInitializing")),
        (pod(job=waiting("ContainerCreating")), IMAGE, Starting("ContainerCreating")),
        (pod(job={"running": {"startedAt": "2026-01-01T00:00:00Z"}}, phase="Running"), None,
         Running()),
        (pod(job=terminated(0, "Completed"), phase="Running"), None,
         Ended(exit_code=0, reason="Completed")),
        (pod(job=terminated(137, "OOMKilled"), phase="Running"), None,
         Ended(exit_code=137, reason="OOMKilled")),
        (pod(job=terminated(137), phase="Failed", reason="DeadlineExceeded",
             message="Pod was active on the node longer than the specified deadline"), None,
         Ended(exit_code=137, reason="Error", pod_reason="DeadlineExceeded",
               message="Pod was active on the node longer than the specified deadline")),
        (pod(job=waiting("ErrImagePull", "not found")), IMAGE,
         CannotStart(f"image {IMAGE}: ErrImagePull: not found")),
        (pod(job=waiting("ImagePullBackOff", "Back-off pulling")), IMAGE,
         CannotStart(f"image {IMAGE}: ImagePullBackOff: Back-off pulling")),
        (pod(job=waiting("InvalidImageName")), IMAGE,
         CannotStart(f"image {IMAGE}: InvalidImageName")),
        (pod(job=waiting("ErrImagePull", "no registry")), None,
         Broken("the worker image: ErrImagePull: no registry")),
        (pod(job=waiting("CreateContainerError", "no such user")), IMAGE,
         CannotStart("container cannot start: CreateContainerError: no such user")),
        (pod(job=terminated(128, "StartError", message='exec: "/bin/bash": not found'),
             phase="Running"), IMAGE,
         CannotStart('container cannot start: StartError: exec: "/bin/bash": not found')),
        (pod(init=terminated(2, message="payload of 7.pkbs refused: ../x"), phase="Failed"), None,
         CannotStart("payload: Error: payload of 7.pkbs refused: ../x")),
        (pod(init=terminated(3, message="dispatcher unreachable"), phase="Failed"), None,
         Broken("payload not fetched: Error: dispatcher unreachable")),
        (pod(init=waiting("ImagePullBackOff")), IMAGE,
         Broken("the worker image: ImagePullBackOff")),
        (pod(phase="Failed", reason="Evicted", message="low on memory"), None,
         Broken("pod failed: Evicted: low on memory")),
    ],
)
def test_progress(state: dict[str, Any], own_image: str | None, expected: object) -> None:
    assert progress(state, own_image) == expected


@pytest.mark.parametrize(
    ("end", "kill_reason", "status"),
    [
        (Ended(0, "Completed"), None, 0),
        (Ended(3), None, 3),
        (Ended(143), None, 143),  # the job's shell said so itself
        (Ended(143), "qdel", 271),  # SIGTERM from qdel ended it: 256 + 15, as PBS
        (Ended(137), "qdel", 265),
        (Ended(0, signal=9), None, 265),
        (Ended(143), "walltime", -29),
        (Ended(137, pod_reason="DeadlineExceeded"), None, -29),
        (Ended(137, "OOMKilled"), None, -27),
    ],
)
def test_exit_status(end: Ended, kill_reason: str | None, status: int) -> None:
    assert exit_status(end, kill_reason) == status
