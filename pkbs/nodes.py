"""The node registry: what each worker has and what its jobs hold, in KV `PKBS_NODES`.

One key per worker (`n.<worker name>`), holding a Node. A worker writes its own at
start, when what it holds changes (at most once per `PUBLISH_PAUSE`) and at least
every `node_ttl_seconds / 3`; it deletes it when it stops. The bucket's max age is
`node_ttl_seconds`, so the entry of a worker that died without a word expires by
itself: the registry lists the live workers. Readers: `pbsnodes` and `qstat -B -f`
(through the dispatcher), and a worker judging whether any worker could ever run a
job it cannot ("Can Never Run").
"""

from __future__ import annotations

import contextlib
import time

from nats.js import JetStreamContext
from nats.js import api as jsapi
from nats.js import errors as jserr
from nats.js.kv import KeyValue
from pydantic import BaseModel, Field

from pkbs import constants as C

# The resources a node offers and a job takes from it (a job's select summed).
POOLED = ("ncpus", "ngpus", "mem")


class NodeResources(BaseModel, frozen=True):
    """Amounts of the pooled resources; mem in bytes."""

    ncpus: int = 0
    ngpus: int = 0
    mem: int = 0

    def get(self, name: str) -> int:
        value: int = getattr(self, name)
        return value

    def plus(self, other: NodeResources) -> NodeResources:
        return NodeResources(**{n: self.get(n) + other.get(n) for n in POOLED})

    def minus(self, other: NodeResources) -> NodeResources:
        return NodeResources(**{n: self.get(n) - other.get(n) for n in POOLED})

    def short_of(self, wanted: NodeResources) -> str | None:
        """The first resource of which `wanted` asks more than this holds."""
        return next((n for n in POOLED if wanted.get(n) > self.get(n)), None)

    def as_pbs(self) -> dict[str, str]:
        """As PBS shows resources_available / resources_assigned (mem in kb)."""
        return {"mem": f"{self.mem // 1024}kb", "ncpus": str(self.ncpus),
                "ngpus": str(self.ngpus)}


class Node(BaseModel, frozen=True):
    """One worker as the registry shows it."""

    name: str  # the worker's name (PKBS_WORKER_NAME)
    host: str  # the host it runs on
    available: NodeResources  # what it has (resources_available)
    assigned: NodeResources = NodeResources()  # what its running jobs hold
    # Running jobs, each with the CPUs it holds: [(job id, ncpus)].
    jobs: list[tuple[str, int]] = Field(default_factory=list)
    updated: float = Field(default_factory=time.time)  # wall clock of the write

    @property
    def free(self) -> NodeResources:
        return self.available.minus(self.assigned)

    @property
    def state(self) -> str:
        """PBS's node state: job-busy once every CPU is held, else free."""
        busy = self.available.ncpus and self.assigned.ncpus >= self.available.ncpus
        return "job-busy" if busy else "free"


def node_key(name: str) -> str:
    # KV keys allow [-/_=.a-zA-Z0-9]; anything else in a worker's name becomes "_".
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_=") else "_" for c in name)
    return f"{C.NODE_KEY_PREFIX}{safe}"


def insufficient(
    name: str, wanted: NodeResources, free: NodeResources, total: NodeResources
) -> str:
    """PBS's scheduler comment detail: `Insufficient amount of resource: ngpus
    (R: 1 A: 0 T: 0)` (requested, available now, total)."""

    def shown(resources: NodeResources) -> str:
        value = resources.get(name)
        return f"{value // 1024}kb" if name == "mem" else str(value)

    return (f"Insufficient amount of resource: {name} "
            f"(R: {shown(wanted)} A: {shown(free)} T: {shown(total)})")


class NodeRegistry:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, ttl: float, replicas: int = 1) -> NodeRegistry:
        """The registry's bucket, made if missing, with entries that live `ttl` s."""
        try:
            kv = await js.key_value(C.NODES_BUCKET)
        except jserr.BucketNotFoundError:
            try:
                kv = await js.create_key_value(
                    bucket=C.NODES_BUCKET, history=1, ttl=ttl, replicas=replicas,
                    storage=jsapi.StorageType.MEMORY,
                )
            except jserr.BadRequestError:  # made meanwhile by another process
                kv = await js.key_value(C.NODES_BUCKET)
        return cls(kv)

    async def publish(self, node: Node) -> None:
        await self.kv.put(node_key(node.name), node.model_dump_json().encode())

    async def remove(self, name: str) -> None:
        with contextlib.suppress(jserr.Error):
            await self.kv.purge(node_key(name))

    async def nodes(self) -> list[Node]:
        """The live workers, by name."""
        try:
            keys = await self.kv.keys()
        except jserr.NoKeysError:
            return []
        found = []
        for key in keys:
            try:
                entry = await self.kv.get(key)
            except (jserr.KeyNotFoundError, jserr.KeyDeletedError):
                continue  # expired or removed since the listing
            if entry.value:
                found.append(Node.model_validate_json(entry.value))
        return sorted(found, key=lambda node: node.name)


def total(nodes: list[Node], assigned: bool = False) -> NodeResources:
    """resources_available (or resources_assigned) summed over nodes (qstat -B -f)."""
    result = NodeResources()
    for node in nodes:
        result = result.plus(node.assigned if assigned else node.available)
    return result
