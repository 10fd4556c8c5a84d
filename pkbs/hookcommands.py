"""qmgr's hook commands, with PBS's syntax and output:

    create hook NAME                  delete hook NAME
    set hook NAME event = queuejob    set hook NAME event += execjob_end
    set hook NAME enabled = false, alarm = 10, order = 5
    unset hook NAME alarm             list hook [NAME]       print hook [NAME]
    import hook NAME application/x-python default|base64 FILE
    export hook NAME application/x-python default|base64

`parse_hook_command` reads one command. An import's FILE is read where qmgr runs
(`with_import_file`, on the client, as PBS's qmgr does) and travels as `content`;
`apply_hook_command` then applies the command to the hooks in KV `PKBS_CONFIG`
(pkbs/hookstore.py) on the server and returns what qmgr prints.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, replace
from pathlib import Path

from nats.js.kv import KeyValue
from pydantic import ValidationError

from pkbs.errors import HookError, InvalidRequest, UsageError
from pkbs.hookstore import (
    CONTENT_ENCODINGS,
    EVENTS,
    MAX_SCRIPT_BYTES,
    PYTHON_CONTENT_TYPE,
    Hook,
    change_hook,
    create_hook,
    delete_hook,
    list_hooks,
    read_hook,
)
from pkbs.pbsvalues import split_outside_quotes

# qmgr's commands and the abbreviations PBS accepts.
VERBS = {
    "c": "create", "create": "create",
    "d": "delete", "delete": "delete",
    "s": "set", "set": "set",
    "u": "unset", "unset": "unset",
    "l": "list", "list": "list",
    "p": "print", "print": "print",
    "i": "import", "import": "import",
    "e": "export", "export": "export",
}  # fmt: skip
# Attributes in the order the server reports them (hook_func.c status_hook).
ATTRIBUTES = ("type", "enabled", "event", "user", "alarm", "order", "debug", "fail_action")
_BOOLEANS = {"true": True, "t": True, "y": True, "1": True,
             "false": False, "f": False, "n": False, "0": False}  # fmt: skip
_SETTING = re.compile(r"\s*([A-Za-z_]+)\s*(\+=|-=|=)\s*(.*?)\s*")


@dataclass(frozen=True)
class HookCommand:
    verb: str
    name: str | None = None
    # set: (attribute, operator, value); unset: the attributes.
    settings: tuple[tuple[str, str, str], ...] = ()
    unset: tuple[str, ...] = ()
    # import / export
    content_type: str | None = None
    encoding: str | None = None
    file: str | None = None
    content: str | None = None  # import: the file's bytes, base64 (with_import_file)


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def parse_hook_command(text: str) -> HookCommand:
    """One qmgr command on the `hook` object; UsageError ("Syntax error") otherwise."""
    words = text.strip().split(None, 3)
    if len(words) < 2 or words[0].lower() not in VERBS or words[1].lower() != "hook":
        raise UsageError("Syntax error", show_usage=False)
    verb = VERBS[words[0].lower()]
    name = words[2] if len(words) > 2 else None
    rest = words[3] if len(words) > 3 else ""
    if verb in ("list", "print"):
        if rest:
            raise UsageError("Syntax error", show_usage=False)
        return HookCommand(verb, name)
    if name is None:
        raise UsageError("Syntax error", show_usage=False)
    if verb in ("create", "delete"):
        if rest:
            raise UsageError("Syntax error", show_usage=False)
        return HookCommand(verb, name)
    if verb == "set":
        settings = []
        for part in split_outside_quotes(rest, ","):
            match = _SETTING.fullmatch(part)
            if match is None:
                raise UsageError("Syntax error", show_usage=False)
            attribute, operator, value = match.groups()
            settings.append((attribute, operator, _unquoted(value)))
        if not settings:
            raise UsageError("Syntax error", show_usage=False)
        return HookCommand(verb, name, settings=tuple(settings))
    if verb == "unset":
        attributes = tuple(a.strip() for a in rest.split(",") if a.strip())
        if not attributes:
            raise UsageError("Syntax error", show_usage=False)
        return HookCommand(verb, name, unset=attributes)
    parts = rest.split()
    if len(parts) != (3 if verb == "import" else 2) and not (verb == "export" and len(parts) == 3):
        raise UsageError("Syntax error", show_usage=False)
    content_type, encoding = parts[0], parts[1]
    if content_type != PYTHON_CONTENT_TYPE:
        raise HookError(f"<content-type> must be {PYTHON_CONTENT_TYPE}")
    if encoding not in CONTENT_ENCODINGS:
        raise HookError("<content-encoding> must be 'default' or 'base64'")
    file = parts[2] if len(parts) > 2 else None
    return HookCommand(verb, name, content_type=content_type, encoding=encoding, file=file)


def with_import_file(
    command: HookCommand, cwd: Path, following: str | None = None
) -> HookCommand:
    """An import with its FILE read (relative to `cwd`), as qmgr sends it. FILE `-`
    (as `print hook` writes it): the lines `following` the command in qmgr's input,
    up to a blank line."""
    if command.verb != "import" or command.content is not None or command.file is None:
        return command
    if command.file == "-":
        if following is None:
            raise InvalidRequest("import hook: no content follows '-'")
        return replace(command, content=base64.b64encode(following.encode()).decode())
    path = cwd / command.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"{command.file}: {exc.strerror}") from None
    return replace(command, content=base64.b64encode(data).decode())


# -- applying a command (server side) -------------------------------------------------


def _value(hook: Hook, attribute: str) -> str:
    value = getattr(hook, attribute)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value) if value else '""'
    return str(value)


def _boolean(value: str) -> bool:
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        raise HookError(
            f"unexpected value '{value}', must be (not case sensitive) true|t|y|1|false|f|n|0"
        ) from None


def _integer(attribute: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise HookError(f"{attribute} value '{value}' of a hook must be a number") from None


def _events(value: str) -> list[str]:
    events = [e.strip() for e in value.split(",") if e.strip()]
    for event in events:
        if event not in EVENTS:
            raise HookError(
                f"invalid argument ({event}) to event. Should be one or more of: "
                f"{','.join(EVENTS)} or \"\" (for no event)"
            )
    return events


def _set(hook: Hook, attribute: str, operator: str, value: str) -> Hook:
    values = hook.model_dump()
    if operator != "=" and attribute != "event":
        raise HookError(f"'{operator}' operator not = for {attribute}")
    if attribute == "event":
        given = _events(value)
        if operator == "+=":
            given = [*hook.event, *given]
        elif operator == "-=":
            given = [e for e in hook.event if e not in given]
        values["event"] = given
    elif attribute in ("enabled", "debug"):
        values[attribute] = _boolean(value)
    elif attribute == "alarm":
        alarm = _integer(attribute, value)
        if alarm <= 0:
            raise HookError(f"alarm value '{value}' of a hook must be > 0")
        values["alarm"] = alarm
    elif attribute == "order":
        order = _integer(attribute, value)
        if not 1 <= order <= 1000:
            raise HookError(
                f"order given ({order}) is outside the acceptable range of [1, 1000] "
                "for type 'site'."
            )
        values["order"] = order
    elif attribute == "type":
        if value != "site":
            raise HookError(f"not allowed to set hook to '{value}' type")
    elif attribute == "user":
        if value != "pbsadmin":
            raise HookError("user value of a hook must be pbsadmin (pkbs runs hooks "
                                    "as the dispatcher's or worker's user)")
    elif attribute == "fail_action":
        if value != "none":
            raise HookError('fail_action value of a hook must be "none" in pkbs')
    else:
        raise HookError(f"unknown hook attribute {attribute}")
    return Hook.model_validate(values)


def _unset(hook: Hook, attribute: str) -> Hook:
    if attribute not in ATTRIBUTES:
        raise HookError(f"unknown hook attribute {attribute}")
    default = Hook(name=hook.name)
    return hook.model_copy(update={attribute: getattr(default, attribute)})


def _imported(hook: Hook, command: HookCommand) -> Hook:
    if command.content is None:
        raise InvalidRequest("import hook: no file content")
    try:
        data = base64.b64decode(command.content, validate=True)
        if command.encoding == "base64":
            data = base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise HookError("import hook: content is not valid base64") from None
    if len(data) > MAX_SCRIPT_BYTES:
        raise HookError(f"import hook: a script may have at most {MAX_SCRIPT_BYTES} bytes")
    try:
        script = data.decode()
        compile(script, f"<hook {hook.name}>", "exec")
    except (UnicodeDecodeError, SyntaxError, ValueError) as exc:
        raise HookError(f"import hook {hook.name}: not a Python script: {exc}") from None
    return hook.model_copy(update={"script": script})


def listing(hooks: list[Hook]) -> str:
    """`list hook`: each hook and its attributes, as qmgr prints them."""
    out = []
    for hook in hooks:
        out.append(f"Hook {hook.name}\n")
        out.extend(f"    {a} = {_value(hook, a)}\n" for a in ATTRIBUTES)
        out.append("\n")
    return "".join(out)


def printout(hooks: list[Hook]) -> str:
    """`print hook`: commands that make the hooks again (qmgr < file)."""
    out = ["#\n# Create hooks and set their properties.\n#\n"] if hooks else []
    for hook in hooks:
        out.append(f"#\n# Create and define hook {hook.name}\n#\n")
        out.append(f"create hook {hook.name}\n")
        for attribute in ATTRIBUTES:
            out.append(f"set hook {hook.name} {attribute} = {_value(hook, attribute)}\n")
        if hook.script:
            out.append(f"import hook {hook.name} {PYTHON_CONTENT_TYPE} base64 -\n")
            out.append(base64.encodebytes(hook.script.encode()).decode())
            out.append("\n")
    return "".join(out)


async def apply_hook_command(kv: KeyValue, command: HookCommand) -> str:
    """Apply `command` to the hooks in `kv`; what qmgr prints (nothing for a change)."""
    name = command.name
    try:
        if command.verb in ("list", "print"):
            hooks = [(await read_hook(kv, name))[0]] if name else await list_hooks(kv)
            return listing(hooks) if command.verb == "list" else printout(hooks)
        assert name is not None
        if command.verb == "create":
            if name.startswith("PBS"):
                raise HookError(
                    f"hook_name '{name}', cannot use PBS as a prefix it is reserved for pbs hooks"
                )
            await create_hook(kv, Hook(name=name))
        elif command.verb == "delete":
            await delete_hook(kv, name)
        elif command.verb == "export":
            hook = (await read_hook(kv, name))[0]
            if command.encoding == "base64":
                return base64.encodebytes(hook.script.encode()).decode()
            return hook.script
        elif command.verb == "import":
            await change_hook(kv, name, lambda hook: _imported(hook, command))
        else:

            def edit(hook: Hook) -> Hook:
                for attribute, operator, value in command.settings:
                    hook = _set(hook, attribute, operator, value)
                for attribute in command.unset:
                    hook = _unset(hook, attribute)
                return hook

            await change_hook(kv, name, edit)
    except ValidationError as exc:
        raise HookError(str(exc.errors()[0]["msg"])) from None
    return ""
