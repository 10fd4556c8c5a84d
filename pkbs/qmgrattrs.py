"""The server's and the queues' attributes as qmgr sets them: for each, its PBS name,
the kind of its value (checked and stored as PBS stores it) and the field of
ServerConfig it lives in; and the attributes `qstat -Q -f`, `qstat -B -f` and
`qmgr -c list` show (pkbs/pbsattrs.py lays them out), of which `print` prints the
settable ones.

The table is the one place a new attribute goes. Hooks are objects of their own
(pkbs/configstore.py keeps them apart), not attributes here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from pkbs.errors import (
    BadAttributeValue,
    ReadOnlyAttribute,
    UnknownAttribute,
    UnknownQueue,
    UnknownResource,
)
from pkbs.limits import format_limits, parse_limits
from pkbs.pbsattrs import queue_attributes, server_attributes
from pkbs.pbsvalues import (
    RESOURCE_KINDS,
    check_resource_value,
    format_duration,
    normalize_resource,
    parse_duration,
)
from pkbs.qmgrsyntax import DECR, INCR, SET, AttributeOp
from pkbs.queues import QueueConfig
from pkbs.serverconfig import ServerAttrs, ServerConfig

# PBS's range of a queue's Priority (verify_value_priority).
PRIORITY_RANGE = (-1024, 1023)


def _bad(value: str) -> BadAttributeValue:
    """PBS's refusal of `value`, which it does not repeat."""
    return BadAttributeValue()


# --------------------------------------------------------------------------- value kinds


def _bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("true", "t", "y", "1"):
        return True
    if text in ("false", "f", "n", "0"):
        return False
    raise _bad(value)


def _long(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise _bad(value) from None


def _priority(value: str) -> int:
    number = _long(value)
    if not PRIORITY_RANGE[0] <= number <= PRIORITY_RANGE[1]:
        raise _bad(value)
    return number


def _duration(value: str) -> str:
    try:
        return format_duration(parse_duration(value))
    except (BadAttributeValue, ValueError):
        raise _bad(value) from None


def _queue_type(value: str) -> str:
    if value and "execution".startswith(value.lower()):
        return "Execution"
    raise _bad(value)  # pkbs routes no jobs: every queue runs its own


def _limit(value: str) -> str:
    try:
        return format_limits(parse_limits(value))
    except BadAttributeValue:
        raise _bad(value) from None


def _text(value: str) -> str:
    return value


def _resource(resource: str | None, value: str) -> str:
    if resource is None or resource.lower() not in RESOURCE_KINDS:
        raise UnknownResource()
    name = resource.lower()
    try:
        check_resource_value(name, value)
    except BadAttributeValue:
        raise _bad(value) from None
    if not value:
        raise _bad(value)
    return normalize_resource(name, value)


@dataclass(frozen=True)
class Attribute:
    """One settable attribute: PBS's spelling of its name, the field it is kept in, and
    what its value may be. `per_resource`: a map of resource -> value
    (`resources_max.ncpus`); `check` turns a value as typed into the value stored."""

    name: str
    field: str
    check: Callable[[str], Any]
    per_resource: bool = False
    limit: bool = False
    listed: bool = False  # a comma list (images): += adds items, -= removes them

    def stored(self, resource: str | None, value: str) -> Any:
        if self.per_resource:
            if resource is None or resource.lower() not in RESOURCE_KINDS:
                raise UnknownResource()
            return self.check(value) if self.limit else _resource(resource, value)
        if resource is not None:
            raise UnknownAttribute()
        if self.listed:
            return [item.strip() for item in value.split(",") if item.strip()]
        return self.check(value)


def _limit_change(current: str | None, op: str, value: str) -> str | None:
    given = parse_limits(_limit(value))
    if op == SET or current is None:
        if op == DECR:
            return current
        return format_limits(given)
    limits = parse_limits(current)
    if op == INCR:
        limits.update(given)
    else:
        for key in given:
            limits.pop(key, None)
    return format_limits(limits) if limits else None


def apply(target: BaseModel, attribute: Attribute, change: AttributeOp) -> None:
    """Set (=, += or -=) one attribute of `target` (a QueueConfig or ServerAttrs)."""
    current = getattr(target, attribute.field)
    resource = change.resource.lower() if change.resource else None
    if attribute.per_resource:
        stored = attribute.stored(resource, change.value)
        assert resource is not None
        values = dict(current)
        if attribute.limit:
            edited = _limit_change(values.get(resource), change.op, change.value)
            if edited is None:
                values.pop(resource, None)
            else:
                values[resource] = edited
        elif change.op == SET:
            values[resource] = stored
        else:
            raise _bad(change.value)
        setattr(target, attribute.field, values)
        return
    stored = attribute.stored(resource, change.value)
    if attribute.limit:
        setattr(target, attribute.field, _limit_change(current, change.op, change.value))
    elif attribute.listed:
        items = list(current or [])
        if change.op == SET:
            items = stored
        elif change.op == INCR:
            items += [item for item in stored if item not in items]
        else:
            items = [item for item in items if item not in stored]
        setattr(target, attribute.field, items)
    elif change.op == SET:
        setattr(target, attribute.field, stored)
    elif isinstance(stored, int) and not isinstance(stored, bool):
        edited = current + stored if change.op == INCR else current - stored
        setattr(target, attribute.field, attribute.check(str(edited)))
    else:
        raise _bad(change.value)


def unset(target: BaseModel, attribute: Attribute, resource: str | None) -> None:
    """Back to its default: a resource's entry removed, else the field's default
    (enabled and started: False, as PBS reads an unset one)."""
    if attribute.per_resource:
        values = dict(getattr(target, attribute.field))
        if resource is None:
            values.clear()
        else:
            values.pop(resource.lower(), None)
        setattr(target, attribute.field, values)
        return
    if attribute.field in ("enabled", "started"):
        setattr(target, attribute.field, False)
        return
    if attribute.field == "default_queue":
        setattr(target, attribute.field, "")
        return
    default = type(target).model_fields[attribute.field].get_default(call_default_factory=True)
    setattr(target, attribute.field, default)


# --------------------------------------------------------------------------- the table

QUEUE_ATTRIBUTES = (
    Attribute("queue_type", "queue_type", _queue_type),
    Attribute("Priority", "priority", _priority),
    Attribute("max_queued", "max_queued", _limit, limit=True),
    Attribute("resources_max", "resources_max", _text, per_resource=True),
    Attribute("resources_default", "resources_default", _text, per_resource=True),
    Attribute("max_run", "max_run", _limit, limit=True),
    Attribute("max_run_res", "max_run_res", _limit, per_resource=True, limit=True),
    Attribute("enabled", "enabled", _bool),
    Attribute("started", "started", _bool),
    Attribute("images", "images", _text, listed=True),
)
SERVER_ATTRIBUTES = (
    Attribute("scheduling", "scheduling", _bool),
    Attribute("max_queued", "max_queued", _limit, limit=True),
    Attribute("max_run", "max_run", _limit, limit=True),
    Attribute("max_run_res", "max_run_res", _limit, per_resource=True, limit=True),
    Attribute("default_queue", "default_queue", _text),
    Attribute("resources_default", "resources_default", _text, per_resource=True),
    Attribute("resources_max", "resources_max", _text, per_resource=True),
    Attribute("comment", "comment", _text),
    Attribute("job_history_enable", "job_history_enable", _bool),
    Attribute("job_history_duration", "job_history_duration", _duration),
)
# What qstat and qmgr list but no one sets (PBS: read-only, or fixed in pkbs).
READ_ONLY = {
    "queue": frozenset(
        {"total_jobs", "state_count", "resources_assigned", "hasnodes", "max_running"}
    ),
    "server": frozenset(
        {"server_state", "server_host", "total_jobs", "state_count", "resources_available",
         "resources_assigned", "default_chunk", "query_other_jobs", "flatuid", "pbs_version",
         "max_job_sequence_id"}
    ),
}
TABLES = {"queue": QUEUE_ATTRIBUTES, "server": SERVER_ATTRIBUTES}
_BY_NAME = {
    kind: {attribute.name.lower(): attribute for attribute in table}
    for kind, table in TABLES.items()
}
# Attributes whose value is one string: print quotes it whole (PBS's ATR_TYPE_STR).
STRING_ATTRIBUTES = frozenset({"queue_type", "default_queue", "comment"})


def attribute(kind: str, name: str) -> Attribute:
    """The settable attribute `name` (any case) of a `kind` object: ReadOnly for one
    only shown, UnknownAttribute for one PBS does not know."""
    found = _BY_NAME[kind].get(name.lower())
    if found is not None:
        return found
    if name.lower() in {n.lower() for n in READ_ONLY[kind]}:
        raise ReadOnlyAttribute()
    raise UnknownAttribute()


def is_attribute(kind: str, name: str) -> bool:
    """Whether `name` is an attribute of `kind` objects (qmgr's parser asks)."""
    if kind not in TABLES:
        return False
    lowered = name.lower()
    return lowered in _BY_NAME[kind] or lowered in {n.lower() for n in READ_ONLY[kind]}


def set_queue(queue: QueueConfig, changes: list[AttributeOp]) -> None:
    for change in changes:
        apply(queue, attribute("queue", change.name), change)


def unset_queue(queue: QueueConfig, changes: list[AttributeOp]) -> None:
    for change in changes:
        unset(queue, attribute("queue", change.name), change.resource)


def set_server(config: ServerConfig, changes: list[AttributeOp]) -> None:
    for change in changes:
        apply(config.server, attribute("server", change.name), change)
        if change.name.lower() == "default_queue" and change.value not in config.queues:
            raise UnknownQueue()


def unset_server(config: ServerConfig, changes: list[AttributeOp]) -> None:
    for change in changes:
        unset(config.server, attribute("server", change.name), change.resource)


def new_queue(changes: list[AttributeOp]) -> QueueConfig:
    """A queue `create queue` makes: an execution queue, neither enabled nor started
    (as PBS's new queues), then the attributes given."""
    queue = QueueConfig(enabled=False, started=False)
    set_queue(queue, changes)
    return queue


# --------------------------------------------------------------------------- views


def queue_view(name: str, queue: QueueConfig, counts: Mapping[str, int]) -> dict[str, object]:
    """The queue's attributes as qstat -Q -f and qmgr list show them."""
    return queue_attributes(
        name,
        counts,
        queue_type=queue.queue_type,
        enabled=queue.enabled,
        started=queue.started,
        max_queued=queue.max_queued,
        resources_max=queue.resources_max,
        resources_default=queue.resources_default,
        priority=queue.priority,
        max_run=queue.max_run,
        max_run_res=queue.max_run_res,
        images=queue.images,
    )


def server_view(
    name: str,
    config: ServerConfig,
    counts: Mapping[str, int],
    host: str,
    *,
    resources_available: Mapping[str, str] | None = None,
    resources_assigned: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """The server's attributes as qstat -B -f and qmgr list show them (its resources
    those of the live workers, when given)."""
    server: ServerAttrs = config.server
    return server_attributes(
        name,
        config.queues,
        counts,
        host=host,
        resources_available=resources_available,
        resources_assigned=resources_assigned,
        default_queue=server.default_queue,
        comment=server.comment,
        scheduling=server.scheduling,
        max_queued=server.max_queued,
        max_run=server.max_run,
        max_run_res=server.max_run_res,
        resources_default=server.resources_default,
        resources_max=server.resources_max,
        job_history_enable=server.job_history_enable,
        job_history_duration=server.job_history_duration,
    )


def settable(kind: str, flat_name: str) -> bool:
    """Whether `print` prints the listed attribute `flat_name` (`resources_max.ncpus`)."""
    return flat_name.split(".", 1)[0].lower() in _BY_NAME[kind]
