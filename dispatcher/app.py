"""The dispatcher's HTTP API, assembled: the routes of each resource (jobroutes,
outputroutes, serverroutes, qmgrroutes, fileroutes, payloadroutes, tokenroutes, defroutes,
healthroutes) and the dashboard's page (uiroutes), the body limit, request timing, the
error replies, and what runs while the app does. Stateless: every replica serves every
request from JetStream/KV; OpenAPI at /openapi.json is the contract with the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import pkbs
from pkbs import constants as C
from pkbs.configstore import ConfigStore
from pkbs.control import JobControl
from pkbs.defstore import DefinitionStore
from pkbs.errors import PkbsError
from pkbs.hookstore import HookTable
from pkbs.jobstore import JobStore
from pkbs.nodes import NodeRegistry
from pkbs.results import ResultStore
from pkbs.runledger import RunLedger
from pkbs.settings import Settings, get_settings

from . import (
    defroutes,
    fileroutes,
    healthroutes,
    jobroutes,
    metrics,
    outputroutes,
    payloadroutes,
    qmgrroutes,
    serverroutes,
    tokenroutes,
    uiroutes,
)
from .arrays import ArrayAccounting
from .bodylimit import BodyLimit
from .errors import refuse
from .jobindex import JobIndex
from .queuedlimits import QueuedLimits
from .reconcile import expire_forever, reconcile_forever
from .runlimits import LedgerRepair


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The job store, result store, definition store, server configuration, job index,
    array accounting, periodic repair and history retention, from start to shutdown."""
    settings: Settings = app.state.settings
    app.state.store = await JobStore.open(
        settings, f"dispatcher-{settings.dispatcher_port}", arrange=True
    )
    app.state.results = ResultStore.from_settings(settings)
    app.state.definitions = await DefinitionStore.open(app.state.store.js)
    app.state.nodes = await NodeRegistry.open(
        app.state.store.js, settings.node_ttl_seconds, settings.stream_replicas
    )
    app.state.config = await ConfigStore.open(app.state.store.js, settings)
    await app.state.config.start()
    app.state.hooks = HookTable(app.state.config)
    # Follows the job records from now on; loads them in the background (/readyz).
    app.state.index = JobIndex(app.state.store)
    app.state.queued = QueuedLimits(app.state.index)
    arrays = ArrayAccounting(JobControl(app.state.store), app.state.index)
    await app.state.index.start()
    metrics.JOBS.index = app.state.index
    metrics.JOBS.queues = lambda: app.state.config.config.queues
    await arrays.start()
    ledgers = LedgerRepair(app.state.store, await RunLedger.open(app.state.store.js),
                           app.state.config, app.state.index)
    repair = asyncio.create_task(
        reconcile_forever(app.state.store, app.state.index, arrays, ledgers, settings)
    )
    expiry = asyncio.create_task(
        expire_forever(
            app.state.store, app.state.index, app.state.results, app.state.config, settings
        )
    )
    yield
    repair.cancel()
    await ledgers.stop()
    expiry.cancel()
    metrics.JOBS.index = None
    await arrays.stop()
    await app.state.index.stop()
    await app.state.config.stop()
    await app.state.results.aclose()
    await app.state.store.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="pkbs dispatcher",
        version=pkbs.__version__,
        description="PBS-compatible batch queue: submit, query and control jobs.",
        lifespan=lifespan,
        exception_handlers={PkbsError: refuse},
    )
    app.state.settings = settings or get_settings()
    app.add_middleware(BodyLimit, limit=C.MAX_SUBMIT_BODY_BYTES)
    app.add_middleware(metrics.RequestTimer)  # outermost: refusals are timed too
    for routes in (healthroutes, serverroutes, jobroutes, outputroutes, tokenroutes, fileroutes,
                   defroutes, payloadroutes, qmgrroutes, uiroutes):
        app.include_router(routes.router)
    return app
