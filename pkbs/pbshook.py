"""The `pbs` module a hook script imports, and the process that runs one hook.

A hook runs as `python -I -m pkbs.pbshook` (pkbs/hookrun.py starts it): this module
reads the event as JSON on stdin, makes itself importable as `pbs`, runs the hook's
script as `__main__`, and writes the outcome as JSON on its stdout (what the script
prints goes to stderr). The subset of PBS's `pbs` module it offers is in docs/admin.md
("Hooks"): `pbs.event()` with `type`, `hook_name`, `requestor`, `job` (and `job_o`
at modifyjob), `accept()`, `reject(msg)`; job attributes by their PBS names,
`Resource_List` and `resources_used` holding PBS types (`pbs.duration`, `pbs.size`,
ints); `pbs.logmsg`, `pbs.logjobmsg`.

Standard library and pkbs.pbsvalues only: every hook pays this process's start-up.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from typing import Any

from pkbs.errors import BadAttributeValue
from pkbs.pbsvalues import (
    COUNT,
    DURATION,
    SIZE,
    format_duration,
    normalize_size,
    parse_duration,
    parse_size,
    resource_kind,
)

# Event types (PBS's values, src/include/hook.h).
QUEUEJOB = 0x01
MODIFYJOB = 0x02
EXECJOB_BEGIN = 0x40
EXECJOB_END = 0x200
_EVENT_TYPES = {
    "queuejob": QUEUEJOB,
    "modifyjob": MODIFYJOB,
    "execjob_begin": EXECJOB_BEGIN,
    "execjob_end": EXECJOB_END,
}

# pbs.logmsg levels: the three severities, and PBS's event classes (logged as debug).
LOG_WARNING = 4
LOG_ERROR = 3
LOG_DEBUG = 7
EVENT_ERROR = 0x0001
EVENT_SYSTEM = 0x0002
EVENT_ADMIN = 0x0004
EVENT_JOB = 0x0008
EVENT_JOB_USAGE = 0x0010
EVENT_SECURITY = 0x0020
EVENT_SCHED = 0x0040
EVENT_DEBUG = 0x0080
EVENT_DEBUG2 = 0x0100
EVENT_RESV = 0x0200
EVENT_DEBUG3 = 0x0400
EVENT_DEBUG4 = 0x0800


# -- errors (PBS's names) -------------------------------------------------------------


class BadAttributeValueError(Exception):
    """A job attribute or resource set to a value of the wrong kind."""


class BadAttributeValueTypeError(BadAttributeValueError):
    pass


class UnsetAttributeNameError(Exception):
    """A job attribute pbs does not know."""


class EventIncompatibleError(Exception):
    """What this event does not offer: an attribute it may not set, job_o outside
    modifyjob."""


# -- value types ----------------------------------------------------------------------


class duration(int):
    """Seconds, from `[[hh:]mm:]ss` text or a number; prints as HH:MM:SS."""

    def __new__(cls, value: object) -> duration:
        if isinstance(value, str):
            try:
                seconds = round(parse_duration(value))
            except BadAttributeValue as exc:
                raise BadAttributeValueError(exc.message) from None
        elif isinstance(value, (int, float)) and value >= 0:
            seconds = round(value)
        else:
            raise BadAttributeValueTypeError(f"not a duration: {value!r}")
        return super().__new__(cls, seconds)

    def __str__(self) -> str:
        return format_duration(int(self))

    def __repr__(self) -> str:
        return f"pbs.duration({str(self)!r})"


@functools.total_ordering
class size:
    """A PBS size, `<int>[k|m|g|t|p][b|w]`; compares by bytes, prints as PBS stores it."""

    def __init__(self, value: object) -> None:
        text = str(value)
        try:
            self.bytes = parse_size(text)
        except BadAttributeValue as exc:
            raise BadAttributeValueError(exc.message) from None
        self._text = normalize_size(text)

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"pbs.size({self._text!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (size, str, int)):
            return self.bytes == size(other).bytes
        return NotImplemented

    def __lt__(self, other: object) -> bool:
        if isinstance(other, (size, str, int)):
            return self.bytes < size(other).bytes
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.bytes)


def _typed(name: str, value: object) -> object:
    """A resource value as a hook sees it: the PBS type of its kind."""
    if value is None:
        return None
    kind = resource_kind(name)
    try:
        if kind == DURATION:
            return duration(value)
        if kind == SIZE:
            return size(value)
        if kind == COUNT:
            return int(str(value))
    except (ValueError, BadAttributeValueError):
        return value  # stored text that is not of its kind: as it is
    return value


def _wire(name: str, value: object) -> str:
    """A value a hook set, as pkbs stores it (checked against its resource's kind)."""
    kind = resource_kind(name)
    if kind == DURATION:
        return str(duration(value))
    if kind == SIZE:
        return str(size(value))
    if kind == COUNT:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise BadAttributeValueTypeError(f"resource {name}: not a count: {value!r}")
        try:
            count = int(value)
        except ValueError:
            raise BadAttributeValueError(f"resource {name}: not a count: {value!r}") from None
        if count < 0:
            raise BadAttributeValueError(f"resource {name}: not a count: {value!r}")
        return str(count)
    return str(value)


class _job_dict(dict[str, Any]):
    """A job attribute that is a dict: a key that is not set reads None; changes are
    recorded on the job (`owner`) under `attribute`."""

    def __init__(self, owner: job, attribute: str, values: dict[str, Any]) -> None:
        super().__init__(values)
        self._owner = owner
        self._attribute = attribute

    def __missing__(self, name: str) -> None:
        return None


class pbs_resource(_job_dict):
    """Resource_List / resources_used: values typed as PBS types them; setting one
    (None unsets it) is recorded as a change of the job."""

    def __init__(self, owner: job, attribute: str, values: dict[str, Any]) -> None:
        super().__init__(owner, attribute, {k: _typed(k, v) for k, v in values.items()})

    def __setitem__(self, name: str, value: object) -> None:
        self._owner._check_settable(self._attribute)
        if value is None:
            self.pop(name, None)
            self._owner._resource_changes(self._attribute)[name] = None
            return
        wire = _wire(name, value)
        super().__setitem__(name, _typed(name, wire))
        self._owner._resource_changes(self._attribute)[name] = wire

    def __delitem__(self, name: str) -> None:
        self[name] = None


class pbs_list(_job_dict):
    """Variable_List: the job's environment variables; changes are recorded."""

    def __setitem__(self, name: str, value: object) -> None:
        self._owner._check_settable(self._attribute)
        super().__setitem__(name, str(value))
        self._owner._changes[self._attribute] = dict(self)

    def __delitem__(self, name: str) -> None:
        self._owner._check_settable(self._attribute)
        super().__delitem__(name)
        self._owner._changes[self._attribute] = dict(self)


_RESOURCE_ATTRIBUTES = ("Resource_List", "resources_used")
_LIST_ATTRIBUTES = ("Variable_List",)


class job:
    """A job as a hook sees it: its PBS attributes (None when not set). Setting one
    that the event allows is a change pkbs applies to the job; any other raises."""

    def __init__(self, attributes: dict[str, Any], settable: list[str], event_name: str) -> None:
        values = dict(attributes)
        for name in _RESOURCE_ATTRIBUTES:
            values[name] = pbs_resource(self, name, values.get(name) or {})
        for name in _LIST_ATTRIBUTES:
            values[name] = pbs_list(self, name, values.get(name) or {})
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_settable", frozenset(settable))
        object.__setattr__(self, "_event_name", event_name)
        object.__setattr__(self, "_changes", {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._values.get(name)

    def __setattr__(self, name: str, value: object) -> None:
        self._check_settable(name)
        if name in _RESOURCE_ATTRIBUTES:
            if not isinstance(value, dict):
                raise BadAttributeValueTypeError(f"{name} takes a dict of resources")
            target = self._values[name]
            for key in list(target):
                if key not in value:
                    target[key] = None
            for key, item in value.items():
                target[key] = item
            return
        if name in _LIST_ATTRIBUTES:
            if not isinstance(value, dict):
                raise BadAttributeValueTypeError(f"{name} takes a dict of variables")
            self._values[name] = pbs_list(self, name, {k: str(v) for k, v in value.items()})
            self._changes[name] = dict(self._values[name])
            return
        wire = None if value is None else value if isinstance(value, (bool, int)) else str(value)
        self._values[name] = value
        self._changes[name] = wire

    def _check_settable(self, name: str) -> None:
        if name not in self._settable:
            raise EventIncompatibleError(
                f"job attribute '{name}' cannot be set in a {self._event_name} hook"
            )

    def _resource_changes(self, name: str) -> dict[str, str | None]:
        changes: dict[str, str | None] = self._changes.setdefault(name, {})
        return changes

    def __repr__(self) -> str:
        return f"pbs.job({self._values.get('id')!r})"


_Job = job  # (inside `event`, `job` names its attribute)


class _Accepted(SystemExit):
    pass


class event:
    """The event that runs the hook (PBS's pbs.event(): always the same object)."""

    _current: event | None = None
    type: int
    hook_name: str
    hook_type: str
    requestor: str | None
    requestor_host: str | None
    job: _Job
    _job_o: _Job | None
    _name: str
    _accept: bool
    _reject_msg: str | None

    def __new__(cls) -> event:
        if cls._current is None:
            raise EventIncompatibleError("no hook event: this is not a running hook")
        return cls._current

    @classmethod
    def _make(cls, given: dict[str, Any]) -> event:
        self = object.__new__(cls)
        name = given["type"]
        self.type = _EVENT_TYPES[name]
        self.hook_name = given["hook_name"]
        self.hook_type = "site"
        self.requestor = given.get("requestor")
        self.requestor_host = given.get("requestor_host")
        self.job = job(given["job"], given.get("settable", []), name)
        original = given.get("job_o")
        self._job_o = None if original is None else job(original, [], name)
        self._name = name
        self._accept = True
        self._reject_msg = None
        cls._current = self
        return self

    @property
    def job_o(self) -> _Job:
        if self._job_o is None:
            raise EventIncompatibleError(f"job_o is not offered by a {self._name} event")
        return self._job_o

    def accept(self) -> None:
        """The request goes on (ends the hook)."""
        self._accept = True
        raise _Accepted(0)

    def reject(self, msg: object = None) -> None:
        """The request is refused, with `msg` as what the requester is told (ends the hook)."""
        self._accept = False
        self._reject_msg = None if msg is None else str(msg)
        raise _Accepted(0)


_logs: list[tuple[int, str]] = []


def logmsg(level: int, msg: object) -> None:
    """A line in the log of the dispatcher or worker that ran the hook."""
    _logs.append((int(level), str(msg)))


def logjobmsg(jobid: object, msg: object) -> None:
    _logs.append((EVENT_JOB, f"{jobid}: {msg}"))


# -- the hook process -------------------------------------------------------------------


def _run(given: dict[str, Any]) -> dict[str, Any]:
    """Run the hook script of `given`; its outcome."""
    current = event._make(given)
    code = compile(given["script"], f"<hook {given['hook_name']}>", "exec")
    scope: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    outcome: dict[str, Any] = {}
    try:
        exec(code, scope)
    except SystemExit:
        pass  # accept() / reject() end the hook, as would sys.exit()
    except BaseException:
        outcome["exception"] = traceback.format_exc(limit=-8)
    outcome.update(
        accept=current._accept,
        reject_msg=current._reject_msg,
        changes=current.job._changes,
        logs=_logs,
    )
    return outcome


def main() -> None:
    given = json.loads(sys.stdin.buffer.read())
    sys.modules["pbs"] = sys.modules[__name__]
    result_out = sys.stdout
    sys.stdout = sys.stderr  # what the hook prints is not the outcome
    outcome = _run(given)
    result_out.write(json.dumps(outcome))
    result_out.flush()


if __name__ == "__main__":
    main()
