"""The server, its queues and its nodes: what `pkbs login` checks, qstat -B / -Q / -q
(the attributes qmgr sets, live: pkbs/qmgrattrs.py), and pbsnodes."""

from __future__ import annotations

import socket
import time
from collections import Counter
from typing import Any

from fastapi import APIRouter

import pkbs
from pkbs import constants as C
from pkbs.models import ServerInfo
from pkbs.nodes import total
from pkbs.pbsattrs import node_attributes
from pkbs.qmgrattrs import queue_view, server_view

from .context import Caller, Config, Index, Nodes, ServerConf

router = APIRouter(prefix=C.API_PREFIX)


@router.get("/server", response_model=ServerInfo)
async def server_info(who: Caller, settings: Config, conf: ServerConf) -> ServerInfo:
    return ServerInfo(
        name=settings.server_name, version=pkbs.__version__, queues=list(conf.config.queues)
    )


@router.get("/queues")
async def list_queues(
    who: Caller, settings: Config, conf: ServerConf, index: Index, nodes: Nodes
) -> dict[str, Any]:
    """Queues with their job counts, and the server's attributes (qstat -Q/-q/-B), its
    resources those of the live workers."""
    config = conf.config
    await index.sync()
    live = await nodes.nodes()
    known = index.counts()  # unfinished jobs, subjobs with a record included
    counts: dict[str, Counter[str]] = {q: known.get(q, Counter()) for q in config.queues}
    jobs: Counter[str] = sum(counts.values(), Counter())
    return {
        "server": settings.server_name,
        "timestamp": int(time.time()),
        "queues": [
            {"name": name, "attributes": queue_view(name, queue, counts[name])}
            for name, queue in config.queues.items()
        ],
        "server_attributes": server_view(
            settings.server_name, config, jobs, socket.gethostname(),
            resources_available=total(live).as_pbs(),
            resources_assigned=total(live, assigned=True).as_pbs(),
        ),
    }


@router.get("/nodes")
async def list_nodes(who: Caller, settings: Config, nodes: Nodes) -> dict[str, Any]:
    """The live workers, each with its PBS node attributes (pbsnodes)."""
    return {
        "server": settings.server_name,
        "nodes": [
            {"name": node.name, "attributes": node_attributes(node)}
            for node in await nodes.nodes()
        ],
    }
