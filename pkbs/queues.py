"""Queues: their limits and the check a submission must pass."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    """One queue's attributes, by their PBS names (what `qmgr -c "set queue ..."` sets).

    `PKBS_QUEUES='{"workq": {}, "short": {"resources_max": {"walltime": "00:10:00"}}}'`
    seeds an empty configuration store; from then on qmgr changes it (pkbs/configstore.py).
    The older names max_walltime, max_ncpus, max_mem and default_walltime are read as
    resources_max.walltime/.ncpus/.mem and resources_default.walltime.
    """

    model_config = ConfigDict(extra="forbid")

    queue_type: str = "Execution"
    enabled: bool = True
    started: bool = True
    priority: int = Field(0, description="Jobs of a higher-priority queue start first")
    resources_max: dict[str, str] = Field(default_factory=dict)
    resources_default: dict[str, str] = Field(default_factory=dict)
    # PBS limit syntax (pkbs/limits.py): "[u:PBS_GENERIC=2], [u:bob=5]" or a number.
    max_run: str | None = None
    max_queued: str | None = None
    max_run_res: dict[str, str] = Field(default_factory=dict)
    images: list[str] | None = Field(
        None, description="Images its container jobs may name (shell-style patterns); None: any"
    )

    @model_validator(mode="before")
    @classmethod
    def _older_names(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        value = dict(value)
        for old, (group, resource) in _OLDER_NAMES.items():
            if old in value:
                found = value.pop(old)
                if found is not None:
                    value.setdefault(group, {})
                    value[group] = {**value[group], resource: str(found)}
        return value


_OLDER_NAMES = {
    "max_walltime": ("resources_max", "walltime"),
    "max_ncpus": ("resources_max", "ncpus"),
    "max_mem": ("resources_max", "mem"),
    "default_walltime": ("resources_default", "walltime"),
}


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
    limits = queue.resources_max
    if "ncpus" in limits and ncpus > int(limits["ncpus"]):
        raise _exceeds(f"ncpus {ncpus} > {of_queue}.ncpus {limits['ncpus']}")
    if server_max_ncpus is not None and ncpus > server_max_ncpus:
        raise _exceeds(f"ncpus {ncpus} > largest worker's {server_max_ncpus}")
    if "walltime" in limits and walltime is not None and walltime > parse_duration(
        limits["walltime"]
    ):
        asked = format_duration(walltime)
        raise _exceeds(f"walltime {asked} > {of_queue}.walltime {limits['walltime']}")
    if "mem" in limits and mem is not None and mem > parse_size(limits["mem"]):
        raise _exceeds(f"mem {resources.get('mem') or f'{mem}b'} > {of_queue}.mem "
                       f"{limits['mem']}")


def _exceeds(detail: str) -> ExceedsLimits:
    return ExceedsLimits(f"{ExceedsLimits.default_message}: {detail}")


def apply_defaults(queue: QueueConfig, resources: dict[str, str]) -> None:
    """The queue's resources_default for what the job does not ask."""
    for name, value in queue.resources_default.items():
        resources.setdefault(name, value)


def consumer_levels(queues: dict[str, QueueConfig]) -> list[tuple[str, list[str]]]:
    """The workers' consumers of the work queue, highest priority first, as (name,
    subject filters). With one priority level (the default) and every queue started,
    that is one consumer, `workers`, over the whole work queue; else one per level
    over the started queues of that level (`workers` for level 0, `workers-p<N>` /
    `workers-n<N>`). A stopped queue's work (`started = False`) waits in the work
    queue, where no consumer takes it; with every queue stopped there is none."""
    levels: dict[int, list[str]] = {}
    for name, queue in queues.items():
        if queue.started:
            levels.setdefault(queue.priority, []).append(name)
    if len(levels) <= 1 and all(queue.started for queue in queues.values()):
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
