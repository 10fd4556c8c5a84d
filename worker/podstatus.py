"""How far a job's pod has got, read from the pod as the API shows it (a plain dict,
what `kubectl get pod -o json` prints), and the PBS exit status of its job. Pure.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .podfiles import EXIT_PAYLOAD_REFUSED
from .pods import INIT_CONTAINER, JOB_CONTAINER
from .runner import pbs_exit_status, sent_signal

Pod = dict[str, Any]

# The job container's image cannot be had: the job's fault when the image is its own.
IMAGE_ERRORS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
     "RegistryUnavailable", "SignatureValidationFailed"}
)
# The job container cannot be made or started (its command is not in the image...).
CONTAINER_ERRORS = frozenset({"CreateContainerConfigError", "CreateContainerError",
                              "RunContainerError"})
START_ERRORS = frozenset({"StartError", "ContainerCannotRun"})


class Starting(NamedTuple):
    """Not running yet (scheduling, pulling, fetching the payload): why, as far as known."""

    why: str


class Running(NamedTuple):
    """The job's container runs."""


class Ended(NamedTuple):
    """The job's container has ended."""

    exit_code: int
    reason: str = ""  # the container's (Completed, Error, OOMKilled, ...)
    signal: int = 0
    pod_reason: str = ""  # the pod's (DeadlineExceeded, Evicted, ...)
    message: str = ""


class CannotStart(NamedTuple):
    """The job can never run so: its image or its command. It ends unstarted."""

    why: str


class Broken(NamedTuple):
    """The pod failed through no fault of the job's (eviction, the worker's image, the
    payload not fetched): the job is tried again."""

    why: str


Progress = Starting | Running | Ended | CannotStart | Broken


def _status(statuses: list[Any] | None, name: str) -> dict[str, Any]:
    for status in statuses or []:
        if status.get("name") == name:
            return dict(status)
    return {}


def _said(state: dict[str, Any]) -> str:
    reason, message = state.get("reason") or "", (state.get("message") or "").strip()
    return f"{reason}: {message}" if reason and message else reason or message


def progress(pod: Pod, own_image: str | None) -> Progress:
    """Where the job of `pod` is. `own_image`: the image the job named (None: it runs
    in the worker's, whose failure to pull is not the job's)."""
    status = pod.get("status") or {}
    job = _status(status.get("containerStatuses"), JOB_CONTAINER).get("state") or {}
    init = _status(status.get("initContainerStatuses"), INIT_CONTAINER).get("state") or {}
    if "terminated" in job:
        ended = job["terminated"]
        if ended.get("reason") in START_ERRORS:
            return CannotStart(f"container cannot start: {_said(ended)}")
        return Ended(
            exit_code=int(ended.get("exitCode") or 0),
            reason=ended.get("reason") or "",
            signal=int(ended.get("signal") or 0),
            pod_reason=status.get("reason") or "",
            message=(ended.get("message") or status.get("message") or "").strip(),
        )
    if "running" in job:
        return Running()
    waiting = job.get("waiting") or {}
    if waiting.get("reason") in IMAGE_ERRORS:
        if own_image:
            return CannotStart(f"image {own_image}: {_said(waiting)}")
        return Broken(f"the worker image: {_said(waiting)}")
    if waiting.get("reason") in CONTAINER_ERRORS:
        return CannotStart(f"container cannot start: {_said(waiting)}")
    if "terminated" in init and init["terminated"].get("exitCode"):
        said = _said(init["terminated"])
        if init["terminated"]["exitCode"] == EXIT_PAYLOAD_REFUSED:
            return CannotStart(f"payload: {said}")
        return Broken(f"payload not fetched: {said}")
    init_waiting = init.get("waiting") or {}
    if init_waiting.get("reason") in IMAGE_ERRORS | CONTAINER_ERRORS:
        return Broken(f"the worker image: {_said(init_waiting)}")
    if status.get("phase") in ("Failed", "Succeeded"):
        return Broken(f"pod {status['phase'].lower()}: {_said(status) or 'no reason given'}")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return Starting(_said(condition) or "not scheduled")
    return Starting(_said(waiting) or _said(init.get("waiting") or {}) or status.get("phase")
                    or "created")


def exit_status(end: Ended, kill_reason: str | None) -> int:
    """PBS's Exit_status of the job: -29 over its walltime (the worker's timer or the
    pod's deadline), -27 over its memory (OOM-killed), 256 + N when a signal N ended
    it, else its exit code."""
    if end.pod_reason == "DeadlineExceeded":
        kill_reason = "walltime"
    elif end.reason == "OOMKilled" and kill_reason != "walltime":
        kill_reason = "mem"
    signal = end.signal or sent_signal(kill_reason, end.exit_code)
    return pbs_exit_status(kill_reason, end.exit_code, signal)
