"""qsub's options: its command line (POSIX getopt over OpenPBS's option string), the
``#PBS`` directives of a job script, the check of each option's value, and how the
two merge.

Standard library only: ``qsub`` imports this on its fast path. Behaviour follows
OpenPBS (openpbs/openpbs @cd7ab5e, the snapshot PBS.md was written from); the source
file behind each rule is named where the rule is implemented. The syntax of the values
themselves (sizes, durations, resources, job ids ...) is `pkbs.pbsvalues`.

Errors:
- ``BadAttributeValue`` for a bad value (resources, names ...);
- ``UsageError`` for command-line misuse (qsub prints ``qsub: <message>`` and exits 2);
- ``DirectiveError`` (a ``BadAttributeValue``) for a bad ``#PBS`` line or a CRLF script
  (qsub prints ``qsub: <message>`` and exits 1, as OpenPBS's get_script callers do).
"""

from __future__ import annotations

from pkbs.errors import BadAttributeValue, DirectiveError, UsageError
from pkbs.frozen import Frozen
from pkbs.pbsvalues import (
    BAD_VALUE,
    ArrayRange,
    bad_value,
    check_resources,
    fullmatch,
    parse_array_range,
    parse_count,
    parse_depend,
    parse_exec_time,
    resource_items,
    split_outside_quotes,
)

TYPE_CHECKING = False  # typing is not imported at run time (qsub's start)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

MAX_JOB_NAME = 230  # PBS_MAXJOBNAME, src/include/pbs_ifl.h
MAX_QUEUE_NAME = 15  # PBS_MAXQUEUENAME
DEFAULT_DIRECTIVE_PREFIX = "#PBS"
# OpenPBS qsub_sup.c GETOPT_ARGS (Linux build). -G (Windows GUI) is not in it.
QSUB_OPTSTRING = "a:A:c:C:e:fhIj:J:k:l:m:M:N:o:p:q:r:R:S:u:v:VW:XzP:"


def _detail(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, (BadAttributeValue, UsageError)) else str(exc)
    return text.removeprefix(f"{BAD_VALUE}: ")


# --------------------------------------------------------------------------- option values


_JOB_NAME_RE = r"[A-Za-z0-9._+-]+"
_QUEUE_NAME_RE = r"[A-Za-z0-9][A-Za-z0-9_-]*"


def validate_job_name(name: str) -> str:
    """Job_Name at submit (Libecl verify_value_jobname + Libcmds/ck_job_name.c): 1..230
    characters from letters, digits and ``. _ + -``; a digit may come first."""
    if not name:
        raise bad_value("the job name is empty")
    if len(name) > MAX_JOB_NAME:
        raise bad_value(f"Job name is too long (more than {MAX_JOB_NAME} characters)")
    if not (name.isascii() and fullmatch(_JOB_NAME_RE, name)):
        raise bad_value(f"job name {name!r} may hold only letters, digits and . _ + -")
    return name


def validate_queue_name(name: str) -> str:
    """Queue names (Libecl pbs_verify_object_name): 1..15 characters, a letter or digit
    first, then letters, digits, ``_`` and ``-``."""
    if len(name) > MAX_QUEUE_NAME:
        raise BadAttributeValue(f"Queue name too long: {name!r}")
    if not (name.isascii() and fullmatch(_QUEUE_NAME_RE, name)):
        raise BadAttributeValue(f"Invalid object name: {name!r}")
    return name


_DESTINATION_RE = r"([^\s#@]*)(?:@([^\s#@]+))?"


def parse_destination(text: str) -> tuple[str | None, str | None]:
    """``queue``, ``@server`` or ``queue@server`` to (queue, server) (parse_destid.c)."""
    match = fullmatch(_DESTINATION_RE, text.lstrip())
    if match is None or len(match[1]) > MAX_QUEUE_NAME:
        raise UsageError(f"illegally formed destination: {text}", show_usage=False)
    return match[1] or None, match[2]


def _destination(value: str) -> str:
    parse_destination(value)
    return value


def validate_join(value: str) -> str:
    """``-j oe|eo|n`` (verify_value_joinpath)."""
    if value not in ("oe", "eo", "n"):
        raise bad_value(f"join {value!r} is not oe, eo or n")
    return value


def validate_keep(value: str) -> str:
    """``-k``: letters from o e d n; n excludes o/e; d needs o, e or n (verify_keepfiles_common)."""
    letters = set(value)
    if not value or not letters <= set("oedn"):
        raise bad_value(f"keep {value!r} is not made of o, e, d, n")
    keeps = bool(letters & {"o", "e"})
    if (keeps and "n" in letters) or ("d" in letters and not (keeps or "n" in letters)):
        raise bad_value(f"keep {value!r}: n excludes o/e and d needs o, e or n")
    return value


def validate_mail_points(value: str) -> str:
    """``-m n`` or letters from a b e j, not ``j`` alone (verify_value_mailpoints)."""
    value = value.lstrip()
    if value == "n":
        return value
    if not value or value == "j" or not set(value) <= set("abej"):
        raise bad_value(f"mail points {value!r} are not n or a combination of a, b, e, j")
    return value


def parse_priority(value: str) -> int:
    """``-p`` -1024..1023 (verify_value_priority)."""
    try:
        priority = int(value.strip())
    except ValueError:
        raise bad_value(f"priority {value!r} is not a whole number") from None
    if not -1024 <= priority <= 1023:
        raise bad_value(f"priority {priority} is outside -1024..1023")
    return priority


_CHECKPOINT_RE = r"[nscw]|[cw]=\d+"


def validate_checkpoint(value: str) -> str:
    """``-c n|s|c|w|c=N|w=N`` (verify_value_checkpoint; qsub itself refuses ``u``)."""
    value = value.lstrip()
    if not fullmatch(_CHECKPOINT_RE, value):
        raise bad_value(f"checkpoint {value!r} is not n, s, c, w, c=<minutes> or w=<minutes>")
    return value


def validate_remove_files(value: str) -> str:
    """``-R`` letters from o and e (verify_removefiles_common)."""
    if not value or not set(value) <= {"o", "e"}:
        raise bad_value(f"remove files {value!r} is not o, e or oe")
    return value


_AT_ITEM_RE = r"([^\s#@]+)(?:@([^\s#@]+))?"


def _at_items(value: str) -> list[tuple[str, str | None]]:
    """``name[@host][,name[@host]...]`` (Libcmds/parse_at.c)."""
    items: list[tuple[str, str | None]] = []
    for item in value.split(","):
        match = fullmatch(_AT_ITEM_RE, item.strip())
        if match is None:
            raise bad_value(f"{value!r} is not a list of name[@host]")
        items.append((match[1], match[2]))
    return items


def validate_user_list(value: str) -> str:
    """``-M``, ``-u``, ``-W group_list``: ``name[@host][,...]``."""
    _at_items(value)
    return value


def validate_shell_path_list(value: str) -> str:
    """``-S path[@host][,...]``: absolute paths, one per host (parse_at_list use_count)."""
    hosts: set[str | None] = set()
    for path, host in _at_items(value):
        if not path.startswith("/"):
            raise bad_value(f"shell {path!r} is not an absolute path")
        if host in hosts:
            raise bad_value(f"shell list {value!r} names a host twice")
        hosts.add(host)
    return value


def validate_sandbox(value: str) -> str:
    """``-W sandbox=HOME|O_WORKDIR|PRIVATE`` (case-insensitive; returned upper-case)."""
    if value.upper() not in ("HOME", "O_WORKDIR", "PRIVATE"):
        raise bad_value(f"sandbox {value!r} is not HOME, O_WORKDIR or PRIVATE")
    return value.upper()


def validate_umask(value: str) -> str:
    """``-W umask=`` 1..4 octal digits (the MoM reads the value as octal)."""
    if not fullmatch(r"[0-7]{1,4}", value):
        raise bad_value(f"umask {value!r} is not 1 to 4 octal digits")
    return value


_STAGE_ITEM_RE = r"[^@]+@[^\s@:]+:[^@]+"


def validate_stage_list(value: str) -> str:
    """``-W stagein/stageout=local@host:remote[,...]`` (Libcmds/parse_stage.c)."""
    import re

    for item in re.split(r"(?<!\\),", value):
        if not fullmatch(_STAGE_ITEM_RE, item.strip()):
            raise bad_value(f"stage item {item!r} is not local_path@host:remote_path")
    return value


def _validate_bool(value: str) -> str:
    if value.lower() not in ("true", "false"):
        raise bad_value(f"{value!r} is not true or false")
    return value.lower()


def _validate_count(value: str) -> str:
    return str(parse_count(value))


def _validate_depend(value: str) -> str:
    parse_depend(value)
    return value


def parse_variable_list(text: str) -> dict[str, str | None]:
    """``-v "a=1,b='x,y',C"`` to {"a": "1", "b": "x,y", "C": None}: None means "take it
    from the environment". Quotes group and are removed; ``\\,`` is a literal comma
    (qsub.c comma_token / copy_env_value)."""
    try:
        items = split_outside_quotes(text, ",")
    except ValueError as exc:
        raise BadAttributeValue(f"cannot send environment with the job: {exc}") from None
    variables: dict[str, str | None] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not name or any(c.isspace() or c in "'\"" for c in name):
            raise BadAttributeValue(f"cannot send environment with the job: bad item {item!r}")
        variables[name] = _unquote(raw) if sep else None
    return variables


def _unquote(raw: str) -> str:
    out: list[str] = []
    quote = ""
    index = 0
    while index < len(raw):
        char = raw[index]
        if char == "\\" and raw[index + 1 : index + 2] == ",":
            out.append(",")
            index += 1
        elif char in "\"'" and (not quote or char == quote):
            quote = "" if quote else char
        else:
            out.append(char)
        index += 1
    return "".join(out)


def parse_w_attributes(text: str) -> list[tuple[str, str]]:
    """``-W a=1,b=x,y,c=2`` to [(a, 1), (b, x,y), (c, 2)]: a value runs to the last comma
    before the next ``=``; a quoted value may hold ``=`` (Libcmds/parse_equal.c)."""
    pairs: list[tuple[str, str]] = []
    pos = 0
    while text[pos:].strip():
        name, value, pos = _w_pair(text, pos)
        pairs.append((name, value))
    if not pairs:
        raise UsageError("illegal -W value: empty")
    return pairs


def _w_pair(text: str, pos: int) -> tuple[str, str, int]:
    bad = UsageError(f"illegal -W value: {text!r} is not attribute=value[,attribute=value]")
    equal = text.find("=", pos)
    name = text[pos:equal].strip() if equal > pos else ""
    if not name or any(c.isspace() or c == "," for c in name):
        raise bad
    start = equal + 1
    while start < len(text) and text[start].isspace():
        start += 1
    quoted = ""
    if start < len(text) and text[start] in "\"'":
        close = text.find(text[start], start + 1)
        if close < 0:
            raise bad
        quoted, start = text[start + 1 : close], close + 1
    following = text.find("=", start)
    end = len(text) if following < 0 else text.rfind(",", start, following)
    if end < 0:
        raise bad
    value = (quoted + text[start:end]).rstrip()
    if not value or (following < 0 and value.endswith(",")):
        raise bad
    return name, value, end + 1


# --------------------------------------------------------------------------- qsub options


class QsubOptions(Frozen):
    """Everything qsub's options (or #PBS directives) say. None / False / empty = not
    given."""

    name: str | None = None  # -N
    destination: str | None = None  # -q queue|@server|queue@server
    output_path: str | None = None  # -o [host:]path
    error_path: str | None = None  # -e [host:]path
    join: str | None = None  # -j oe|eo|n
    keep: str | None = None  # -k
    resources: Mapping[str, str] = {}  # -l (accumulated)
    hold: bool = False  # -h (Hold_Types=u)
    exec_time: float | None = None  # -a (epoch seconds)
    rerunnable: bool | None = None  # -r y|n
    mail_points: str | None = None  # -m
    mail_users: str | None = None  # -M
    account: str | None = None  # -A
    project: str | None = None  # -P
    priority: int | None = None  # -p
    shell: str | None = None  # -S
    variables: Mapping[str, str | None] | None = None  # -v (the last -v wins, as in PBS)
    export_env: bool = False  # -V
    array: ArrayRange | None = None  # -J
    attributes: Mapping[str, str] = {}  # -W name=value
    directive_prefix: str | None = None  # -C
    quiet: bool = False  # -z
    foreground: bool = False  # -f
    user_list: str | None = None  # -u
    checkpoint: str | None = None  # -c
    remove_files: str | None = None  # -R
    x11: bool = False  # -X (only accepted, and ignored, in directives)

    @property
    def block(self) -> bool:
        return self.attributes.get("block") == "true"

    @property
    def depend(self) -> str | None:
        return self.attributes.get("depend")

    @property
    def umask(self) -> int | None:
        umask = self.attributes.get("umask")
        return int(umask, 8) if umask is not None else None

    @property
    def max_run_subjobs(self) -> int | None:
        if self.array is not None and self.array.max_running is not None:
            return self.array.max_running
        limit = self.attributes.get("max_run_subjobs")
        return int(limit) if limit is not None else None


_FLAG_OPTIONS = {"h": "hold", "V": "export_env", "z": "quiet", "f": "foreground"}
_VALUE_OPTIONS: dict[str, tuple[str, Callable[[str], object]]] = {
    "A": ("account", str),
    "c": ("checkpoint", validate_checkpoint),
    "C": ("directive_prefix", str),
    "e": ("error_path", str),
    "j": ("join", validate_join),
    "J": ("array", parse_array_range),
    "k": ("keep", validate_keep),
    "m": ("mail_points", validate_mail_points),
    "M": ("mail_users", validate_user_list),
    "N": ("name", validate_job_name),
    "o": ("output_path", str),
    "p": ("priority", parse_priority),
    "P": ("project", str),
    "q": ("destination", _destination),
    "R": ("remove_files", validate_remove_files),
    "S": ("shell", validate_shell_path_list),
    "u": ("user_list", validate_user_list),
}
_W_VALIDATORS: dict[str, Callable[[str], str]] = {
    "depend": _validate_depend,
    "block": _validate_bool,
    "umask": validate_umask,
    "sandbox": validate_sandbox,
    "group_list": validate_user_list,
    "stagein": validate_stage_list,
    "stageout": validate_stage_list,
    "run_count": _validate_count,
    "max_run_subjobs": _validate_count,
}
INTERACTIVE_UNSUPPORTED = "interactive jobs (-I) are not supported by pkbs; submit a batch job"


def _getopt(argv: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """POSIX getopt over QSUB_OPTSTRING. Operands keep a leading ``--`` when it was given,
    so the caller knows an executable (not a script) follows."""
    options: list[tuple[str, str]] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            return options, list(argv[index:])
        if not arg.startswith("-") or arg == "-":
            break
        pos = 1
        while pos < len(arg):
            opt = arg[pos]
            spec = QSUB_OPTSTRING.find(opt)
            if opt == ":" or spec < 0:
                raise UsageError(f"invalid option -- '{opt}'")
            if QSUB_OPTSTRING[spec + 1 : spec + 2] != ":":
                options.append((opt, ""))
                pos += 1
                continue
            if pos + 1 < len(arg):
                options.append((opt, arg[pos + 1 :]))
            elif index + 1 < len(argv):
                index += 1
                options.append((opt, argv[index]))
            else:
                raise UsageError(f"option requires an argument -- '{opt}'")
            break
        index += 1
    return options, list(argv[index:])


def _check_operands(operands: list[str], directive: bool) -> None:
    if directive and operands:
        raise UsageError(f"unexpected argument {operands[0]!r} in a directive")
    if operands[:1] == ["--"]:
        if len(operands) < 2:
            raise UsageError("an executable must follow --")
    elif len(operands) > 1:
        raise UsageError(f"the job script must be the last argument, not {operands[0]!r}")


class _Builder:
    """Collects one argv's options (a command line or one directive line)."""

    def __init__(self, directive: bool, now: float | None) -> None:
        self.directive = directive
        self.now = now
        self.values: dict[str, Any] = {}
        self.resources: dict[str, str] = {}
        self.attributes: dict[str, str] = {}

    def apply(self, opt: str, arg: str) -> None:
        if opt in _FLAG_OPTIONS:
            self.values[_FLAG_OPTIONS[opt]] = True
        elif opt in _VALUE_OPTIONS:
            self._value(opt, arg)
        elif opt == "l":
            self._resources(arg)
        elif opt == "W":
            for name, value in parse_w_attributes(arg):
                self._attribute(name, value)
        else:
            self._special(opt, arg)

    def _value(self, opt: str, arg: str) -> None:
        name, convert = _VALUE_OPTIONS[opt]
        try:
            self.values[name] = convert(arg)
        except BadAttributeValue as exc:
            raise UsageError(f"illegal -{opt} value: {_detail(exc)}", show_usage=False) from exc

    def _resources(self, arg: str) -> None:
        # Command line: a later value wins. Directives: the first value wins (set_resource.c).
        for name, value in resource_items(arg):
            if self.directive:
                self.resources.setdefault(name, value)
            else:
                self.resources[name] = value

    def _attribute(self, name: str, value: str) -> None:
        if name == "interactive":
            if _validate_attribute(name, value, _validate_bool) == "true":
                raise UsageError(INTERACTIVE_UNSUPPORTED, show_usage=False)
            return
        validator = _W_VALIDATORS.get(name)
        if validator is not None:
            value = _validate_attribute(name, value, validator)
        self.attributes[name] = value

    def _special(self, opt: str, arg: str) -> None:
        if opt == "a":
            try:
                self.values["exec_time"] = parse_exec_time(arg, self.now)
            except BadAttributeValue as exc:
                raise UsageError(f"illegal -a value: {_detail(exc)}") from exc
        elif opt == "r":
            if arg not in ("y", "n"):
                raise UsageError("illegal -r value: expected y or n")
            self.values["rerunnable"] = arg == "y"
        elif opt == "v":
            self.values["variables"] = parse_variable_list(arg)
        elif opt == "I":
            raise UsageError(INTERACTIVE_UNSUPPORTED, show_usage=False)
        elif self.directive:  # -X: ignored in directives, as PBS only checks the command line
            self.values["x11"] = True
        else:
            message = "X11 Forwarding possible only for interactive jobs"
            raise UsageError(message, show_usage=False)

    def build(self) -> QsubOptions:
        array: ArrayRange | None = self.values.get("array")
        if array and array.max_running is not None and "max_run_subjobs" in self.attributes:
            raise UsageError("multiple max_run_subjobs values found", show_usage=False)
        return QsubOptions(**self.values, resources=self.resources, attributes=self.attributes)


def _validate_attribute(name: str, value: str, validator: Callable[[str], str]) -> str:
    try:
        return validator(value)
    except BadAttributeValue as exc:
        raise UsageError(f"illegal -W value: {name}: {_detail(exc)}", show_usage=False) from exc


def parse_qsub_args(
    argv: Sequence[str], *, directive: bool = False, now: float | None = None
) -> tuple[QsubOptions, list[str]]:
    """qsub's argv (without the program name) to options and operands.

    Operands: ``[]`` (script on stdin), ``[script]`` (``-`` = stdin), or
    ``["--", executable, *args]``. ``directive=True`` parses one ``#PBS`` line: operands
    are refused and ``-X`` is ignored. ``now`` anchors ``-a``. Raises UsageError
    (getopt errors, ``illegal -X value``, -I) or BadAttributeValue (``-l``, ``-v``)."""
    options, operands = _getopt(argv)
    builder = _Builder(directive, now)
    for opt, arg in options:
        builder.apply(opt, arg)
    _check_operands(operands, directive)
    return builder.build(), operands


_FLAG_FIELDS = frozenset(_FLAG_OPTIONS.values()) | {"x11"}


def _overlay(base: QsubOptions, top: QsubOptions, *, base_resources_win: bool) -> QsubOptions:
    values: dict[str, Any] = {}
    for name in QsubOptions._fields:
        low, high = getattr(base, name), getattr(top, name)
        if name in _FLAG_FIELDS:
            values[name] = low or high
        elif name == "resources" and base_resources_win:
            values[name] = {**high, **low}
        elif name in ("resources", "attributes"):
            values[name] = {**low, **high}
        else:
            values[name] = low if high is None else high
    return QsubOptions(**values)


def merge(directive_opts: QsubOptions, cmdline_opts: QsubOptions) -> QsubOptions:
    """The job's options: the command line wins over directives, option by option, ``-l``
    resource by resource and ``-W`` attribute by attribute; flags add up. Then
    ``check_options``. Call it even when the script has no directives."""
    merged = _overlay(directive_opts, cmdline_opts, base_resources_win=False)
    check_options(merged)
    return merged


def check_options(options: QsubOptions) -> None:
    """Rules across options (qsub.c process_opts, req_quejob.c)."""
    check_resources(options.resources)
    if options.array is None and options.mail_points and "j" in options.mail_points:
        raise UsageError("mail option 'j' can not be used without array job", show_usage=False)
    if options.array is not None and options.rerunnable is False:
        raise UsageError("cannot submit non-rerunable Array Job", show_usage=False)
    if (
        options.array is not None
        and options.array.max_running is not None
        and "max_run_subjobs" in options.attributes
    ):
        raise UsageError("multiple max_run_subjobs values found", show_usage=False)


# --------------------------------------------------------------------------- directives


def _is_executable(line: str) -> bool:
    """Libcmds/check_job_script.c pbs_isexecutable: ``:`` or ``#!`` in column 1, blank
    lines and lines whose first non-blank is ``#`` are not executable."""
    if line.startswith((":", "#!")):
        return False
    stripped = line.lstrip()
    return bool(stripped) and not stripped.startswith("#")


def _join_continuation(lines: list[str], index: int) -> tuple[str, int]:
    """A directive ending in ``\\`` (then optional blanks) takes the next line, verbatim
    (Libutil/misc_utils.c pbs_extendable_line). Returns the text and its last index."""
    text = lines[index]
    while True:
        body = text.rstrip()
        if not body.endswith("\\"):
            return text, index
        text = body[:-1]
        if index + 1 >= len(lines):
            return text, index
        index += 1
        text += lines[index]


def extract_directives(
    script_text: str, prefix: str = DEFAULT_DIRECTIVE_PREFIX
) -> list[tuple[int, list[str]]]:
    """The directives of a job script as (1-based line, argv tokens), following
    qsub_sup.c get_script: optional blanks + prefix, scanning stops at the first
    executable line, trailing ``\\`` continues. An empty prefix disables scanning."""
    crlf = script_text.find("\r\n")
    if crlf >= 0:
        raise DirectiveError("script contains cr, lf", line=script_text.count("\n", 0, crlf) + 1)
    if not prefix:
        return []
    lines = script_text.split("\n")
    directives: list[tuple[int, list[str]]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.lstrip().startswith(prefix):
            text, last = _join_continuation(lines, index)
            tokens = _tokenize(text.lstrip()[len(prefix) :], index + 1)
            if tokens:
                directives.append((index + 1, tokens))
            index = last
        elif _is_executable(line):
            break
        index += 1
    return directives


def _tokenize(text: str, line: int) -> list[str]:
    import shlex  # only scripts with directives need it

    try:
        return shlex.split(text)
    except ValueError as exc:
        raise DirectiveError(f"directive error on line {line}: {exc}", line=line) from exc


def choose_directive_prefix(cmdline_prefix: str | None, environ: Mapping[str, str]) -> str:
    """``-C`` (``""`` disables scanning) > ``$PBS_DPREFIX`` > ``#PBS`` (qsub.c set_dir_prefix)."""
    if cmdline_prefix is not None:
        return cmdline_prefix
    return environ.get("PBS_DPREFIX", DEFAULT_DIRECTIVE_PREFIX)


def parse_script_options(
    script_text: str, prefix: str = DEFAULT_DIRECTIVE_PREFIX, *, now: float | None = None
) -> QsubOptions:
    """All directives of a script folded into one QsubOptions. A later directive wins,
    except that the first value of each ``-l`` resource wins (set_resource.c adds a
    directive resource only when it is not yet on the list)."""
    options = QsubOptions()
    for line, tokens in extract_directives(script_text, prefix):
        try:
            line_options, _ = parse_qsub_args(tokens, directive=True, now=now)
        except (UsageError, BadAttributeValue) as exc:
            message = f"directive error on line {line}: {_detail(exc)}"
            raise DirectiveError(message, line=line) from exc
        options = _overlay(options, line_options, base_resources_win=True)
    return options
