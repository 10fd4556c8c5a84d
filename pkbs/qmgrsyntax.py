"""qmgr's language, as OpenPBS's qmgr reads it (src/cmds/qmgr.c): the requests on its
input, and one request's operation, object kind, object names and attribute list.

- Input (`requests`): a line ending in `\\` goes on on the next one; a line that starts
  with `#` is skipped; `;` ends a request, `#` at the start or after a blank starts a
  comment, both outside quotes. `qmgr -c` hands its one request over as it is.
- A request (`parse`): `operation kind [name[,name...]] [attr[.resource] OP value[, ...]]`.
  Operations and kinds may be cut short to any prefix, matched in PBS's order (`s` is
  set, `p` print, `e` export, `q` quit); a third word that is an attribute of the kind
  is the first attribute, not a name; values end at an unquoted `,` or blank (limits,
  `max_run`... may hold blanks) and may be quoted with `"` or `'`.

The server parses (dispatcher/qmgrroutes.py); the CLI only splits its input and answers
quit, exit and help itself. Standard library only: cheap for the CLI to import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# In the order PBS tries them: a prefix names the first that it begins.
OPERATIONS = (
    "create", "delete", "set", "unset", "list", "print", "active", "import", "export",
    "help", "?", "quit", "exit",
)
# What the CLI answers itself.
LOCAL_OPERATIONS = frozenset({"help", "?", "quit", "exit"})
OBJECT_KINDS = (
    ("server", "server"), ("queue", "queue"), ("queues", "queue"), ("node", "node"),
    ("nodes", "node"), ("resource", "resource"), ("sched", "sched"), ("hook", "hook"),
    ("pbshook", "pbshook"),
)
# Kinds whose third word is always a name (PBS does not look it up as an attribute).
_NAMED_KINDS = frozenset({"hook", "pbshook", "resource"})
# Attributes whose values may hold unquoted blanks (PBS's entity limits).
LIMIT_ATTRIBUTES = frozenset(
    {"max_run", "max_run_res", "max_run_soft", "max_run_res_soft", "max_queued",
     "max_queued_res", "queued_jobs_threshold", "queued_jobs_threshold_res"}
)
SET, INCR, DECR = "=", "+=", "-="
PROMPT = "Qmgr: "
CONTINUED_PROMPT = "Qmgr< "


@dataclass(frozen=True)
class AttributeOp:
    name: str
    resource: str | None
    op: str  # SET, INCR or DECR
    value: str


@dataclass(frozen=True)
class Request:
    operation: str
    kind: str
    # As given: [] when none ("" for `@default`: every object of the kind).
    names: list[str] = field(default_factory=list)
    attributes: list[AttributeOp] = field(default_factory=list)


class QmgrSyntaxError(Exception):
    """What qmgr prints on stderr for a request it cannot parse, and the status it
    exits with (PBS's parse(): 1 an illegal operation, 2 a bad object kind, 3 a bad
    name list, 4 a syntax error)."""

    def __init__(self, text: str, status: int) -> None:
        super().__init__(text)
        self.text = text
        self.status = status


def operation_of(word: str) -> str | None:
    """The operation `word` abbreviates, PBS's way (the first that begins with it)."""
    return next((op for op in OPERATIONS if op.startswith(word)), None)


def _syntax_error(request: str, column: int, status: int = 4) -> QmgrSyntaxError:
    return QmgrSyntaxError(f"qmgr: Syntax error\n{request}\n{' ' * column}^\n", status)


def _is_operator(text: str, i: int) -> bool:
    return i < len(text) and (text[i] == "=" or text[i : i + 2] in (INCR, DECR))


def _words(request: str) -> tuple[list[str], int]:
    """The first three words (ended by a blank or an operator) and where they end."""
    words: list[str] = []
    i = 0
    while i < len(request) and len(words) < 3:
        while i < len(request) and request[i].isspace():
            i += 1
        start = i
        while i < len(request) and not request[i].isspace() and not _is_operator(request, i):
            i += 1
        words.append(request[start:i])
    return words, i


def _check_names(names: str, kind: str) -> int:
    """0 if `names` is a valid `name[@server][,name...]` list, else the offset of the
    error (PBS's check_list)."""
    i = 0
    while i < len(names):
        first = names[i]
        ok = first.isalnum() if kind == "node" else first.isalpha()
        if not ok and first != "@":
            return i or 1
        j = i
        while j < len(names) and names[j] not in ",@":
            j += 1
        if j < len(names) and names[j] == "@":
            j += 1
            if j >= len(names) or names[j] == ",":
                return j
            while j < len(names) and names[j] != ",":
                j += 1
        if j < len(names) and names[j] == ",":
            j += 1
            if j >= len(names):
                return j
        i = j
    return 0


def _split_names(names: str) -> list[str]:
    """`a,b@default,@default` -> ["a", "b", ""]: the object names; a server other than
    `default` stays in the name (and is refused as an unknown object)."""
    found = []
    for item in names.split(","):
        name, at, server = item.strip().partition("@")
        found.append(name if at and server in ("default", "active") else item.strip())
    return found


def _quoted_value(text: str, i: int, allow_blanks: bool) -> tuple[str, int] | int:
    """A value from text[i:] as pbs_quote_parse reads it: (value, where it ended), or
    the offset of the error."""
    while i < len(text) and text[i].isspace():
        i += 1
    out: list[str] = []
    quote = ""
    quoting = False
    nth = 0
    while i < len(text):
        char = text[i]
        nth += 1
        if not char.isprintable() and not char.isspace():
            return i
        if quoting:
            if char == quote:
                quoting = False
            elif char == "&":
                return i
            else:
                out.append(char)
        elif char in "\"'" and (not allow_blanks or nth == 1):
            if quote and quote != char:
                out.append(char)
            else:
                quote, quoting = char, True
        elif char == "," or (char.isspace() and not allow_blanks):
            return "".join(out), i
        elif char == "&":
            return i
        else:
            out.append(char)
        i += 1
    if quoting:
        return i
    return "".join(out), i


def _attributes(text: str, operation: str) -> list[AttributeOp] | int:
    """The attribute list (PBS's attributes()), or the offset of a syntax error."""
    found: list[AttributeOp] = []
    i = 0
    n = len(text)

    def skip(at: int) -> int:
        while at < n and text[at].isspace():
            at += 1
        return at

    i = skip(i)
    if i >= n:
        return found
    while True:
        i = skip(i)
        if i >= n:
            return i
        start = i
        while i < n and text[i] not in ".," and not _is_operator(text, i) and not text[i].isspace():
            i += 1
        if i == start:
            return start + 1 if start == 0 else start
        name = text[start:i]
        resource = None
        if i < n and text[i] == ".":
            i += 1
            start = i
            stop = ","
            if operation not in ("unset", "list", "print"):
                stop = ""
            while i < n and not (
                text[i].isspace() or _is_operator(text, i) or text[i] in stop
            ):
                i += 1
            if i == start:
                return start
            resource = text[start:i]
        i = skip(i)
        if i >= n:
            if operation in ("create", "set"):
                return i
            found.append(AttributeOp(name, resource, SET, ""))
            return found
        if text[i] == ",":
            found.append(AttributeOp(name, resource, SET, ""))
        else:
            if text[i] == "=":
                op, i = SET, i + 1
            elif text[i : i + 2] == INCR:
                op, i = INCR, i + 2
            elif text[i : i + 2] == DECR:
                op, i = DECR, i + 2
            else:
                return i
            if operation == "unset":
                return i
            i = skip(i)
            if i >= n:
                return i
            parsed = _quoted_value(text, i, name.lower() in LIMIT_ATTRIBUTES)
            if isinstance(parsed, int):
                return i
            value, i = parsed
            found.append(AttributeOp(name, resource, op, value))
            if i >= n:
                return found
        i = skip(i)
        if i >= n:
            return found
        if text[i] != ",":
            return i
        i += 1


def parse(request: str, is_attribute: Callable[[str, str], bool]) -> Request | None:
    """One request; None for a blank one. `is_attribute(kind, name)`: whether `name`
    is an attribute of objects of `kind` (the server's attribute table says).
    QmgrSyntaxError for what PBS's qmgr refuses before sending anything."""
    request = request.lstrip()
    if not request:
        return None
    words, parsed = _words(request)
    operation = operation_of(words[0])
    if operation is None:
        raise QmgrSyntaxError(
            f"qmgr: Illegal operation: {words[0]}\nTry 'help' if you are having trouble.\n", 1
        )
    if operation in LOCAL_OPERATIONS:
        return Request(operation, "")
    if len(words) < 2 or not words[1]:
        raise QmgrSyntaxError("qmgr: No object type given\n", 2)
    kind = next((k for word, k in OBJECT_KINDS if word.startswith(words[1])), None)
    if kind is None:
        raise QmgrSyntaxError(f"qmgr: Illegal object type: {words[1]}.\n", 2)
    names: list[str] = []
    if len(words) > 2 and words[2]:
        word = words[2]
        if kind not in _NAMED_KINDS and is_attribute(kind, word.split(".", 1)[0]):
            parsed -= len(word)
        elif error := _check_names(word, kind):
            raise _syntax_error(request, parsed - len(word) + error - 1, status=3)
        else:
            names = _split_names(word)
    attributes = _attributes(request[parsed:], operation)
    if isinstance(attributes, int):
        raise _syntax_error(request, parsed + attributes)
    if operation in ("set", "unset") and not attributes:
        raise _syntax_error(request, parsed)
    return Request(operation, kind, names, attributes)


def requests(read_line: Callable[[str], str | None]) -> Iterator[str]:
    """The requests on qmgr's input, as PBS's get_request cuts them. `read_line(prompt)`
    gives the next line without its newline, None at the end of the input; the prompt
    is `Qmgr: ` for a request's first line, `Qmgr< ` for a line that continues one."""
    while True:
        line = ""
        continued = False
        while True:
            raw = read_line(CONTINUED_PROMPT if continued else PROMPT)
            if raw is None:
                return
            if not raw.strip():
                continue
            stripped = raw.lstrip()
            if raw.endswith("\\"):
                raw = raw[:-1] + " "
                end = False
            else:
                end = not stripped.startswith("#")
            if not stripped.startswith("#"):
                line += raw
                continued = True
            if end:
                break
        yield from split_line(line)


def split_line(line: str) -> Iterator[str]:
    """The requests of one input line: cut at `;`, up to a comment, outside quotes."""
    current: list[str] = []
    i = 0
    while i < len(line):
        char = line[i]
        if char in "\"'":
            end = line.find(char, i + 1)
            end = len(line) - 1 if end < 0 else end
            current.append(line[i : end + 1])
            i = end + 1
            continue
        if char == ";":
            yield "".join(current)
            current = []
            i += 1
            while i < len(line) and line[i].isspace():
                i += 1
            continue
        if char == "#" and (i == 0 or line[i - 1].isspace()):
            break
        current.append(char)
        i += 1
    if current or not line:
        yield "".join(current)
