"""What a route is given besides its request's parameters (FastAPI dependencies): the
authenticated caller, and the dispatcher's settings, job store, job index, result
store, definition store, live server configuration, max_queued check and node registry,
which the app's lifespan (app.py) keeps in `app.state`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from pkbs.configstore import ConfigStore
from pkbs.defstore import DefinitionStore
from pkbs.hookstore import HookTable
from pkbs.jobstore import Identity, JobStore
from pkbs.nodes import NodeRegistry
from pkbs.results import ResultStore
from pkbs.settings import Settings

from .auth import authenticate, bearer_token
from .jobindex import JobIndex
from .queuedlimits import QueuedLimits


def _app_state(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency that gives what the app keeps in `app.state` under `name` (async:
    no thread-pool hop per request)."""

    async def get(request: Request) -> Any:
        return getattr(request.app.state, name)

    return get


async def _identity(request: Request) -> Identity:
    settings: Settings = request.app.state.settings
    return await authenticate(bearer_token(request), settings, request.app.state.store)


# Module level: FastAPI resolves these annotations by name.
Caller = Annotated[Identity, Depends(_identity)]
Config = Annotated[Settings, Depends(_app_state("settings"))]
Store = Annotated[JobStore, Depends(_app_state("store"))]
Index = Annotated[JobIndex, Depends(_app_state("index"))]
Results = Annotated[ResultStore, Depends(_app_state("results"))]
Definitions = Annotated[DefinitionStore, Depends(_app_state("definitions"))]
Nodes = Annotated[NodeRegistry, Depends(_app_state("nodes"))]
ServerConf = Annotated[ConfigStore, Depends(_app_state("config"))]
Hooks = Annotated[HookTable, Depends(_app_state("hooks"))]
Queued = Annotated[QueuedLimits, Depends(_app_state("queued"))]
