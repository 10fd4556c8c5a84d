"""Queues: their limits and the check a submission must pass."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pkbs.constants import WORK_SUBJECT_PREFIX, WORKER_CONSUMER
from pkbs.errors import BadAttributeValue, ExceedsLimits, Unauthorized
from pkbs.imageref import IMAGE_VARIABLE, InvalidImage, allowed, check_image
from pkbs.models import JobSpec
from pkbs.pbsvalues import (
    check_resources,
    format_duration,
    job_mem_bytes,
    job_ncpus,
    job_walltime,
    parse_duration,
    parse_size,
)


class QueueConfig(BaseModel):
    """One queue (`PKBS_QUEUES='{"workq": {}, "short": {"max_walltime": "00:10:00"}}'`)."""

    max_walltime: str | None = Field(None, description="Longest walltime a job may ask")
    max_ncpus: int | None = Field(None, ge=1, description="Most CPUs a job may ask")
    max_mem: str | None = Field(None, description="Most memory a job may ask, e.g. 8gb")
    default_walltime: str | None = Field(None, description="Walltime of jobs that ask none")
    priority: int = Field(0, description="Jobs of a higher-priority queue start first")
    images: list[str] | None = Field(
        None, description="Images its container jobs may name (shell-style patterns); None: any"
    )
    enabled: bool = True
    started: bool = True

    def resources_max(self) -> dict[str, str]:
        limits = {"walltime": self.max_walltime, "mem": self.max_mem}
        if self.max_ncpus is not None:
            limits["ncpus"] = str(self.max_ncpus)
        return {k: v for k, v in limits.items() if v is not None}


def check_request(
    queue_name: str, queue: QueueConfig, resources: dict[str, str],
    server_max_ncpus: int | None,
) -> None:
    """Refuse at submit a resource the server does not know, and what the queue does not
    allow or no worker can ever run (`server_max_ncpus`: the CPUs of the largest
    worker), naming the limit."""
    check_resources(resources)
    ncpus = job_ncpus(resources)
    walltime = job_walltime(resources)
    mem = job_mem_bytes(resources)
    of_queue = f"queue {queue_name}'s resources_max"
    if queue.max_ncpus is not None and ncpus > queue.max_ncpus:
        raise _exceeds(f"ncpus {ncpus} > {of_queue}.ncpus {queue.max_ncpus}")
    if server_max_ncpus is not None and ncpus > server_max_ncpus:
        raise _exceeds(f"ncpus {ncpus} > largest worker's {server_max_ncpus}")
    if (
        queue.max_walltime
        and walltime is not None
        and walltime > parse_duration(queue.max_walltime)
    ):
        asked = format_duration(walltime)
        raise _exceeds(f"walltime {asked} > {of_queue}.walltime {queue.max_walltime}")
    if queue.max_mem and mem is not None and mem > parse_size(queue.max_mem):
        raise _exceeds(f"mem {resources.get('mem') or f'{mem}b'} > {of_queue}.mem "
                       f"{queue.max_mem}")


def _exceeds(detail: str) -> ExceedsLimits:
    return ExceedsLimits(f"{ExceedsLimits.default_message}: {detail}")


def consumer_levels(queues: dict[str, QueueConfig]) -> list[tuple[str, list[str]]]:
    """The workers' consumers of the work queue, highest priority first, as (name,
    subject filters). With one priority level (the default) that is one consumer,
    `workers`, over the whole work queue; with several, one per level over the
    queues of that level (`workers` for level 0, `workers-p<N>` / `workers-n<N>`)."""
    levels: dict[int, list[str]] = {}
    for name, queue in queues.items():
        levels.setdefault(queue.priority, []).append(name)
    if len(levels) <= 1:
        return [(WORKER_CONSUMER, [f"{WORK_SUBJECT_PREFIX}.>"])]
    return [
        (_level_consumer(level), [f"{WORK_SUBJECT_PREFIX}.{name}.>" for name in sorted(names)])
        for level, names in sorted(levels.items(), reverse=True)
    ]


def _level_consumer(level: int) -> str:
    if level == 0:
        return WORKER_CONSUMER
    return f"{WORKER_CONSUMER}-{'p' if level > 0 else 'n'}{abs(level)}"


def admit_image(queue_name: str, queue: QueueConfig, spec: JobSpec) -> None:
    """A container job's image: from the spec's `image` or its CONTAINER_IMAGE variable
    (both: the same), well-formed, and one the queue allows; recorded in both."""
    named = spec.variables.get(IMAGE_VARIABLE)
    image = spec.image or named
    if image is None:
        return
    if spec.image and named and spec.image != named:
        raise BadAttributeValue(f"image {spec.image!r} and {IMAGE_VARIABLE}={named!r} differ")
    try:
        check_image(image)
    except InvalidImage as exc:
        raise BadAttributeValue(f"Illegal attribute or resource value: {exc}") from None
    if not allowed(image, queue.images):
        raise Unauthorized(f"Unauthorized Request: image {image} is not allowed in queue "
                           f"{queue_name}")
    spec.image = image
    spec.variables[IMAGE_VARIABLE] = image
