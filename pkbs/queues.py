"""Queues: their limits and the check a submission must pass."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pkbs.errors import ExceedsLimits
from pkbs.pbs import job_mem_bytes, job_ncpus, job_walltime, parse_duration, parse_size


class QueueConfig(BaseModel):
    """One queue (`PKBS_QUEUES='{"workq": {}, "short": {"max_walltime": "00:10:00"}}'`)."""

    max_walltime: str | None = Field(None, description="Longest walltime a job may ask")
    max_ncpus: int | None = Field(None, ge=1, description="Most CPUs a job may ask")
    max_mem: str | None = Field(None, description="Most memory a job may ask, e.g. 8gb")
    default_walltime: str | None = Field(None, description="Walltime of jobs that ask none")
    priority: int = Field(0, description="Recorded; higher runs first where supported")
    enabled: bool = True
    started: bool = True

    def resources_max(self) -> dict[str, str]:
        limits = {"walltime": self.max_walltime, "mem": self.max_mem}
        if self.max_ncpus is not None:
            limits["ncpus"] = str(self.max_ncpus)
        return {k: v for k, v in limits.items() if v is not None}


def check_request(
    queue: QueueConfig, resources: dict[str, str], server_max_ncpus: int | None
) -> None:
    """Refuse at submit what the queue does not allow or no worker can ever run."""
    ncpus = job_ncpus(resources)
    walltime = job_walltime(resources)
    mem = job_mem_bytes(resources)
    if queue.max_ncpus is not None and ncpus > queue.max_ncpus:
        raise ExceedsLimits()
    if server_max_ncpus is not None and ncpus > server_max_ncpus:
        raise ExceedsLimits()
    if (
        queue.max_walltime
        and walltime is not None
        and walltime > parse_duration(queue.max_walltime)
    ):
        raise ExceedsLimits()
    if queue.max_mem and mem is not None and mem > parse_size(queue.max_mem):
        raise ExceedsLimits()
