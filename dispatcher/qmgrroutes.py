"""qmgr: `POST /v1/qmgr` takes one request as typed (`set queue workq enabled = false`)
and answers what qmgr prints for it and the status it exits with.

The request is parsed here (pkbs/qmgrsyntax.py), then run by the object kind it names:
each kind (server, queue; hooks register theirs with `register`) lists, prints,
creates, sets, unsets and deletes its objects. Reading is for everyone, changes are
the admin's (PBS: Unauthorized Request). Changes are compare-and-sets of the stored
configuration (pkbs/configstore.py), which every dispatcher and worker follows; after
a change of the queues this dispatcher arranges the workers' consumers anew.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from fastapi import APIRouter
from pydantic import BaseModel, Field

from pkbs import constants as C
from pkbs import qmgrattrs, qmgrformat
from pkbs.configstore import ConfigStore
from pkbs.errors import (
    InvalidRequest,
    ObjectBusy,
    PkbsError,
    QueueExists,
    QueueNameTooLong,
    Unauthorized,
    UnknownQueue,
)
from pkbs.hookcommands import apply_hook_command, parse_hook_command
from pkbs.jobstore import Identity, JobStore, ensure_consumers
from pkbs.nodes import NodeRegistry
from pkbs.nodes import total as summed
from pkbs.qmgrsyntax import QmgrSyntaxError, Request, parse
from pkbs.qsuboptions import MAX_QUEUE_NAME, validate_queue_name
from pkbs.serverconfig import ServerConfig
from pkbs.settings import Settings

from .context import Caller, Config, Index, Nodes, ServerConf, Store
from .jobindex import JobIndex

router = APIRouter(prefix=C.API_PREFIX)

# How qmgr names the server it talks to when none is given on its command line.
SERVER_LABEL = "default"
CHANGES = frozenset({"create", "delete", "set", "unset", "import", "export"})


class QmgrRequest(BaseModel):
    command: str = Field(max_length=65536, description="One qmgr request, as typed")
    content: str | None = Field(
        None, max_length=2_000_000, description="import hook: the file's bytes, base64"
    )
    check_only: bool = Field(False, description="Only check its syntax (qmgr -n)")


class QmgrReply(BaseModel):
    output: str = Field("", description="What qmgr prints on stdout")
    errors: str = Field("", description="What qmgr prints on stderr")
    status: int = Field(0, description="What qmgr exits with (before its low 8 bits)")


@dataclass
class QmgrContext:
    who: Identity
    settings: Settings
    config: ConfigStore
    index: JobIndex
    store: JobStore
    nodes: NodeRegistry

    async def counts(self) -> dict[str, Counter[str]]:
        await self.index.sync()
        return self.index.counts()

    async def change(self, edit: Callable[[ServerConfig], None]) -> ServerConfig:
        """Store `edit` of the configuration; then arrange the workers' consumers for
        the queues it leaves."""

        def edited(config: ServerConfig) -> ServerConfig:
            edit(config)
            return config

        stored = await self.config.change(edited)
        await ensure_consumers(
            self.store.js, stored.queues, self.settings.ack_wait_seconds, arrange=True
        )
        return stored


class ObjectKind(Protocol):
    """The objects of one kind qmgr names (`server`, `queue`, `hook`)."""

    def is_attribute(self, name: str) -> bool:
        """Whether `name` is an attribute of these objects (then a request's third
        word is its first attribute, not an object's name)."""

    async def run(self, request: Request, name: str, ctx: QmgrContext) -> str:
        """Do `request` to the object `name` ("": each one, or the server); what qmgr
        prints. A PkbsError refuses it."""


OBJECT_KINDS: dict[str, ObjectKind] = {}


def register(kind: str, objects: ObjectKind) -> None:
    """Make qmgr's requests on `kind` objects run by `objects`."""
    OBJECT_KINDS[kind] = objects


def _is_attribute(kind: str, name: str) -> bool:
    objects = OBJECT_KINDS.get(kind)
    return objects is not None and objects.is_attribute(name)


def _wanted(request: Request, attributes: dict[str, object]) -> list[tuple[str, object]]:
    """The listed attributes the request names (all when it names none)."""
    if not request.attributes:
        return list(attributes.items())
    names = {
        (a.name.lower(), a.resource.lower() if a.resource else None) for a in request.attributes
    }
    chosen = []
    for flat, value in attributes.items():
        base, _, resource = flat.partition(".")
        if (base.lower(), None) in names or (base.lower(), resource.lower() or None) in names:
            chosen.append((flat, value))
    return chosen


def _print_attributes(kind: str, attributes: list[tuple[str, object]]) -> list[tuple[str, object]]:
    return [(flat, value) for flat, value in attributes if qmgrattrs.settable(kind, flat)]


class Queues:
    def is_attribute(self, name: str) -> bool:
        return qmgrattrs.is_attribute("queue", name)

    async def run(self, request: Request, name: str, ctx: QmgrContext) -> str:
        operation = request.operation
        if operation in ("list", "print"):
            return await self.show(request, name, ctx)
        if operation == "create":
            return await self.create(request, name, ctx)
        if operation == "delete":
            return await self.delete(name, ctx)
        if operation in ("set", "unset"):
            change = qmgrattrs.set_queue if operation == "set" else qmgrattrs.unset_queue
            await ctx.change(lambda config: change(config.queue(name), request.attributes))
            return ""
        raise InvalidRequest()

    async def show(self, request: Request, name: str, ctx: QmgrContext) -> str:
        queues = ctx.config.config.queues
        names = list(queues) if not name else [name]
        if name and name not in queues:
            raise UnknownQueue()
        counts = await ctx.counts()
        out = [qmgrformat.QUEUES_HEADER] if request.operation == "print" else []
        for each in names:
            view = qmgrattrs.queue_view(each, queues[each], counts.get(each, Counter()))
            wanted = _wanted(request, view)
            if request.operation == "list":
                out.append(qmgrformat.list_object(f"Queue {each}", dict(wanted)))
            else:
                out.append(qmgrformat.print_queue(
                    each, _print_attributes("queue", wanted), qmgrattrs.STRING_ATTRIBUTES
                ))
        return "".join(out)

    async def create(self, request: Request, name: str, ctx: QmgrContext) -> str:
        if not name or len(name) > MAX_QUEUE_NAME:
            raise QueueNameTooLong()
        validate_queue_name(name)
        queue = qmgrattrs.new_queue(request.attributes)

        def edit(config: ServerConfig) -> None:
            if name in config.queues:
                raise QueueExists()
            config.queues[name] = queue

        await ctx.change(edit)
        return ""

    async def delete(self, name: str, ctx: QmgrContext) -> str:
        ctx.config.config.queue(name)
        if sum((await ctx.counts()).get(name, Counter()).values()):
            raise ObjectBusy()

        def edit(config: ServerConfig) -> None:
            config.queue(name)
            del config.queues[name]

        await ctx.change(edit)
        return ""


class Server:
    def is_attribute(self, name: str) -> bool:
        return qmgrattrs.is_attribute("server", name)

    async def run(self, request: Request, name: str, ctx: QmgrContext) -> str:
        if name and name != ctx.settings.server_name:
            raise InvalidRequest(f"Unknown server {name}")
        operation = request.operation
        if operation in ("list", "print"):
            return await self.show(request, ctx)
        if operation in ("set", "unset"):
            change = qmgrattrs.set_server if operation == "set" else qmgrattrs.unset_server
            await ctx.change(lambda config: change(config, request.attributes))
            return ""
        raise InvalidRequest()

    async def show(self, request: Request, ctx: QmgrContext) -> str:
        config = ctx.config.config
        counts = await ctx.counts()
        total: Counter[str] = sum(counts.values(), Counter())
        server_name = ctx.settings.server_name
        live = await ctx.nodes.nodes()
        view = qmgrattrs.server_view(
            server_name, config, total, socket.gethostname(),
            resources_available=summed(live).as_pbs(),
            resources_assigned=summed(live, assigned=True).as_pbs(),
        )
        wanted = _wanted(request, view)
        if request.operation == "list":
            return qmgrformat.list_object(f"Server {server_name}", dict(wanted))
        out = ""
        if not request.attributes:
            out = await Queues().show(Request("print", "queue"), "", ctx) if config.queues else ""
        return out + qmgrformat.print_server(
            _print_attributes("server", wanted), qmgrattrs.STRING_ATTRIBUTES
        )


register("server", Server())
register("queue", Queues())


def _refusal(name: str, error: PkbsError) -> str:
    return (
        f"qmgr obj={name} svr={SERVER_LABEL}: {error.message}\n"
        f"qmgr: Error ({error.pbs_errno}) returned from server\n"
    )


async def run_hook_request(
    command: str, content: str | None, ctx: QmgrContext, check_only: bool
) -> QmgrReply:
    """A request on hooks (pkbs/hookcommands.py): every one is the admin's."""
    try:
        parsed = parse_hook_command(command)
    except PkbsError as error:
        return QmgrReply(errors=f"qmgr: {error.message}\n", status=1)
    if check_only:
        return QmgrReply()
    if content is not None:
        parsed = replace(parsed, content=content)
    try:
        if not ctx.who.is_admin:
            raise Unauthorized()
        return QmgrReply(output=await apply_hook_command(ctx.config.kv, parsed))
    except PkbsError as error:
        return QmgrReply(errors=_refusal(parsed.name or "", error), status=error.pbs_errno)


def is_hook_request(command: str) -> bool:
    words = command.split(None, 2)
    return len(words) > 1 and words[1].lower() == "hook"


async def run_request(command: str, ctx: QmgrContext, check_only: bool = False) -> QmgrReply:
    """One qmgr request: what qmgr prints and exits with."""
    try:
        request = parse(command, _is_attribute)
    except QmgrSyntaxError as exc:
        return QmgrReply(errors=exc.text, status=exc.status)
    if request is None or request.kind == "" or check_only:
        return QmgrReply()  # blank, or help/quit/exit: the CLI's own
    objects = OBJECT_KINDS.get(request.kind)
    names = request.names
    if not names:
        if request.kind == "queue":
            return QmgrReply(errors="No Active Queues, nothing done.\n")
        names = [""]
    reply = QmgrReply()
    for name in names:
        try:
            if objects is None:
                raise InvalidRequest(f"Invalid request: pkbs has no {request.kind} objects")
            if request.operation in CHANGES and not ctx.who.is_admin:
                raise Unauthorized()
            reply.output += await objects.run(request, name, ctx)
        except PkbsError as error:
            reply.errors += _refusal(name, error)
            # list and print exit 1 (no status came back); the others exit(pbs_errno).
            reply.status = 1 if request.operation in ("list", "print") else error.pbs_errno
    return reply


@router.post("/qmgr", response_model=QmgrReply)
async def qmgr(
    body: QmgrRequest,
    who: Caller,
    settings: Config,
    conf: ServerConf,
    index: Index,
    store: Store,
    nodes: Nodes,
) -> QmgrReply:
    """Run one qmgr request (its stdout, stderr and exit status come back)."""
    context = QmgrContext(who, settings, conf, index, store, nodes)
    if is_hook_request(body.command):
        return await run_hook_request(body.command, body.content, context, body.check_only)
    return await run_request(body.command, context, body.check_only)

