"""Site hooks as PBS keeps them: their attributes and imported script, one KV key each.

A hook lives in KV `PKBS_CONFIG` under `hook.<name>` (pkbs/configstore.py follows
every key of the bucket). `HookTable` keeps, for each event, the enabled hooks that
have a script, in PBS's order (`order`, then name), rebuilt on each change of the
bucket: a dispatcher or worker asks it per job and pays one dict lookup when no hook
is configured. Writes are compare-and-sets on the key's revision (qmgr's hook commands:
pkbs/hookcommands.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from nats.js import errors as jserr
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pkbs import constants as C
from pkbs.configstore import ConfigStore
from pkbs.errors import Conflict, HookError, UnknownHook

log = logging.getLogger(__name__)

# The events pkbs runs hooks at (PBS's names).
QUEUEJOB = "queuejob"
MODIFYJOB = "modifyjob"
EXECJOB_BEGIN = "execjob_begin"
EXECJOB_END = "execjob_end"
EVENTS = (QUEUEJOB, MODIFYJOB, EXECJOB_BEGIN, EXECJOB_END)
# Where each runs: the server (a dispatcher) or the execution host (a worker).
SERVER_EVENTS = frozenset({QUEUEJOB, MODIFYJOB})

PYTHON_CONTENT_TYPE = "application/x-python"
CONTENT_ENCODINGS = ("default", "base64")
MAX_SCRIPT_BYTES = 512 * 1024
CAS_ATTEMPTS = 50


class Hook(BaseModel):
    """A site hook: PBS's hook attributes (`qmgr -c "list hook NAME"`) and its script."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    type: str = "site"
    enabled: bool = True
    event: list[str] = Field(default_factory=list)
    user: str = "pbsadmin"
    alarm: int = Field(30, gt=0)
    order: int = Field(1, ge=1, le=1000)  # site hooks: [1, 1000]
    debug: bool = False
    fail_action: str = "none"
    # The imported script (`import hook NAME application/x-python ...`), as text.
    script: str = Field("", max_length=MAX_SCRIPT_BYTES)
    content_type: str = PYTHON_CONTENT_TYPE

    @field_validator("event")
    @classmethod
    def _known_events(cls, events: list[str]) -> list[str]:
        for event in events:
            if event not in EVENTS:
                known = ", ".join(EVENTS)
                raise ValueError(f"unsupported hook event {event!r} (pkbs runs {known})")
        return list(dict.fromkeys(events))

    @property
    def key(self) -> str:
        return hook_key(self.name)


def hook_key(name: str) -> str:
    return C.HOOK_KEY_PREFIX + name


def parse_hook(value: bytes) -> Hook | None:
    try:
        return Hook.model_validate_json(value)
    except ValidationError:
        log.exception("ignoring a stored hook that does not parse")
        return None


def stored_hooks(entries: dict[str, bytes]) -> list[Hook]:
    """Every hook of a ConfigStore's entries, by name."""
    hooks = [
        hook
        for key, value in entries.items()
        if key.startswith(C.HOOK_KEY_PREFIX) and (hook := parse_hook(value)) is not None
    ]
    return sorted(hooks, key=lambda h: h.name)


def runnable(hooks: Iterable[Hook], event: str) -> list[Hook]:
    """The hooks `event` runs, in order: enabled, with a script, lower `order` first."""
    chosen = [h for h in hooks if event in h.event and h.enabled and h.script.strip()]
    return sorted(chosen, key=lambda h: (h.order, h.name))


class HookTable:
    """The runnable hooks of each event, kept current from a ConfigStore."""

    def __init__(self, config: ConfigStore) -> None:
        self._by_event: dict[str, list[Hook]] = {}
        self._rebuild(config)
        config.on_change(self._rebuild)

    def _rebuild(self, config: ConfigStore) -> None:
        hooks = stored_hooks(config.entries)
        self._by_event = {event: found for event in EVENTS if (found := runnable(hooks, event))}

    def for_event(self, event: str) -> list[Hook]:
        return self._by_event.get(event, [])


# -- writes (qmgr) --------------------------------------------------------------------


async def read_hook(kv: KeyValue, name: str) -> tuple[Hook, int]:
    """The stored hook and its revision; PBS's "<name> does not exist!" if none."""
    try:
        entry = await kv.get(hook_key(name))
    except jserr.KeyNotFoundError:
        raise UnknownHook(f"{name} does not exist!") from None
    hook = parse_hook(entry.value or b"")
    if hook is None:
        raise UnknownHook(f"{name} does not exist!")
    return hook, entry.revision or 0


async def list_hooks(kv: KeyValue) -> list[Hook]:
    try:
        keys = await kv.keys()
    except jserr.NoKeysError:
        return []
    hooks = []
    for key in keys:
        if key.startswith(C.HOOK_KEY_PREFIX):
            try:
                hooks.append((await read_hook(kv, key[len(C.HOOK_KEY_PREFIX) :]))[0])
            except UnknownHook:
                continue  # deleted meanwhile
    return sorted(hooks, key=lambda h: h.name)


async def create_hook(kv: KeyValue, hook: Hook) -> Hook:
    try:
        await kv.create(hook.key, hook.model_dump_json().encode())
    except (jserr.KeyWrongLastSequenceError, jserr.BadRequestError):
        raise HookError(
            f"hook name '{hook.name}' already registered, try another name"
        ) from None
    return hook


async def change_hook(kv: KeyValue, name: str, edit: Callable[[Hook], Hook]) -> Hook:
    """Store `edit(hook)` with a compare-and-set on the hook's revision (again when
    another change came first); `edit` raises to refuse the change."""
    for _ in range(CAS_ATTEMPTS):
        hook, revision = await read_hook(kv, name)
        edited = Hook.model_validate(edit(hook.model_copy(deep=True)).model_dump())
        try:
            await kv.update(hook.key, edited.model_dump_json().encode(), last=revision)
        except jserr.KeyWrongLastSequenceError:
            continue
        return edited
    raise Conflict(f"hook {name}: concurrent changes, retry")


async def delete_hook(kv: KeyValue, name: str) -> None:
    await read_hook(kv, name)  # "does not exist!" when absent
    await kv.delete(hook_key(name))
