"""What one worker offers its jobs: a pool of CPUs, GPUs (by device number) and
memory. A job takes what it asks for from the pool, or waits elsewhere: it is never
started short. CPUs are also counted while a message is being looked at (`try_acquire`:
one each), so the worker asks for no more messages than it could start."""

from __future__ import annotations

import asyncio
import glob
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from pkbs.nodes import NodeResources
from pkbs.pbsvalues import job_mem_bytes, job_ncpus, job_ngpus, parse_size


@dataclass(frozen=True)
class Grant:
    """What a job holds: CPUs, the GPUs' device numbers, memory in bytes."""

    ncpus: int
    gpus: tuple[int, ...] = ()
    mem: int = 0


def job_request(resources: Mapping[str, str]) -> NodeResources:
    """What a job takes from its worker's pool."""
    return NodeResources(
        ncpus=job_ncpus(resources),
        ngpus=job_ngpus(resources),
        mem=job_mem_bytes(resources) or 0,
    )


class Slots:
    def __init__(self, total: int, ngpus: int = 0, mem: int = 0) -> None:
        self.total = total
        self.used = 0
        self.available = NodeResources(ncpus=total, ngpus=ngpus, mem=mem)
        self.free_gpus = list(range(ngpus))
        self.mem_used = 0
        self._changed = asyncio.Event()  # set on every release (and by wake)

    @property
    def free(self) -> int:
        return self.total - self.used

    @property
    def assigned(self) -> NodeResources:
        return NodeResources(
            ncpus=self.used,
            ngpus=self.available.ngpus - len(self.free_gpus),
            mem=self.mem_used,
        )

    def try_acquire(self, count: int) -> bool:
        if self.free < count:
            return False
        self.used += count
        return True

    def release(self, count: int) -> None:
        self.used -= count
        self._changed.set()

    def take(self, wanted: NodeResources) -> Grant | None:
        """All of `wanted` at once, or None (nothing taken) if not all of it is free."""
        free = NodeResources(ncpus=self.free, ngpus=len(self.free_gpus),
                             mem=self.available.mem - self.mem_used)
        if free.short_of(wanted) is not None:
            return None
        gpus = tuple(self.free_gpus[: wanted.ngpus])
        del self.free_gpus[: wanted.ngpus]
        self.used += wanted.ncpus
        self.mem_used += wanted.mem
        return Grant(wanted.ncpus, gpus, wanted.mem)

    def give_back(self, grant: Grant) -> None:
        self.free_gpus = sorted(self.free_gpus + list(grant.gpus))
        self.mem_used -= grant.mem
        self.release(grant.ncpus)

    async def wait_free(self) -> None:
        """Return once a CPU is free, or when `wake` is called."""
        if self.free <= 0:
            self._changed.clear()
            await self._changed.wait()

    def wake(self) -> None:
        """Let a `wait_free` return early (the worker is draining)."""
        self._changed.set()


def host_gpus() -> int:
    """The NVIDIA GPUs of this host: its /dev/nvidia<N> devices, else what `nvidia-smi
    -L` lists (0 if neither)."""
    devices = [d for d in glob.glob("/dev/nvidia*") if re.fullmatch(r"/dev/nvidia\d+", d)]
    if devices:
        return len(devices)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def host_mem() -> int:
    """This host's memory in bytes (MemTotal), 0 if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def worker_pool(ncpus: int, ngpus: int | None, mem: str | None) -> Slots:
    """The pool a worker offers: its settings, else what the host has."""
    return Slots(
        ncpus,
        host_gpus() if ngpus is None else ngpus,
        host_mem() if mem is None else parse_size(mem),
    )
