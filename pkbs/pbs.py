"""PBS syntax: job ids, durations, sizes, ``-l`` resources, ``#PBS`` directives, qsub options.

Pure functions on strings, standard library only: ``qsub`` imports this on its fast path.
Behaviour follows OpenPBS (openpbs/openpbs @cd7ab5e, the snapshot PBS.md was written from);
the source file behind each rule is named where the rule is implemented.

Errors:
- ``BadAttributeValue`` for a bad value (resources, sizes, durations, names ...);
- ``UnknownJob`` for text that is not a job id (PBS says "Unknown Job Id");
- ``UsageError`` for command-line misuse (qsub prints ``qsub: <message>`` and exits 2);
- ``DirectiveError`` (a ``BadAttributeValue``) for a bad ``#PBS`` line or a CRLF script
  (qsub prints ``qsub: <message>`` and exits 1, as OpenPBS's get_script callers do).
"""

from __future__ import annotations

import time

from pkbs.errors import BadAttributeValue, DirectiveError, UnknownJob, UsageError

# typing and dataclasses are not imported at run time: dataclasses pulls in inspect and
# ast, typing costs milliseconds, and this module is on qsub's start-up path. Neither is
# re: it is imported where a pattern is matched (`echo true | qsub` matches none), as
# importing it costs several milliseconds (enum, functools, collections).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from typing import Any, Final

BAD_VALUE = "Illegal attribute or resource value"
MAX_JOB_NAME = 230  # PBS_MAXJOBNAME, src/include/pbs_ifl.h
MAX_QUEUE_NAME = 15  # PBS_MAXQUEUENAME
WORD_BYTES = 8  # the "w" size unit: sizeof(long) on the 64-bit platforms PBS runs on
DEFAULT_DIRECTIVE_PREFIX = "#PBS"
# OpenPBS qsub_sup.c GETOPT_ARGS (Linux build). -G (Windows GUI) is not in it.
QSUB_OPTSTRING = "a:A:c:C:e:fhIj:J:k:l:m:M:N:o:p:q:r:R:S:u:v:VW:XzP:"


class FrozenInstanceError(AttributeError):
    """Assignment to a field of an immutable value (as ``dataclasses.FrozenInstanceError``)."""


class _Frozen:
    """Base of the immutable value classes below (what ``@dataclass(frozen=True)`` gave,
    without importing dataclasses): subclasses list their fields in ``_FIELDS`` (also
    their ``__slots__``) and assign each exactly once, in ``__init__``. Equality, hashing
    and repr go over the fields; assigning a field that is already set, or deleting one,
    raises FrozenInstanceError (an AttributeError)."""

    __slots__ = ()
    _FIELDS: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __setattr__(self, name: str, value: object) -> None:
        if name in self._FIELDS and not hasattr(self, name):  # first assignment: __init__
            object.__setattr__(self, name, value)
        else:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, _Frozen)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        items = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"{type(self).__qualname__}({items})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._values())  # fields are positional parameters, in order


def _fullmatch(pattern: str, text: str, ignorecase: bool = False) -> re.Match[str] | None:
    """Patterns compile on first use (re caches them), keeping the import cheap."""
    import re

    return re.fullmatch(pattern, text, re.ASCII | re.IGNORECASE if ignorecase else re.ASCII)


def _bad(detail: str) -> BadAttributeValue:
    return BadAttributeValue(f"{BAD_VALUE}: {detail}")


def _detail(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, (BadAttributeValue, UsageError)) else str(exc)
    return text.removeprefix(f"{BAD_VALUE}: ")


# --------------------------------------------------------------------------- job ids

# number, optional [index] or [], optional .server (first component kept) + .domain parts.
_JOB_ID_RE = r"(\d+)(?:\[(\d*)\])?(?:\.([^\s.@#\[\]]+)(?:\.[^\s@#\[\]]*)*)?"


class JobId(_Frozen):
    """``123.pkbs`` / array ``123[].pkbs`` (is_array) / subjob ``123[4].pkbs`` (is_array, index).
    Immutable and hashable."""

    _FIELDS = ("number", "index", "is_array", "server")
    __slots__ = _FIELDS
    number: Final[int]
    index: Final[int | None]
    is_array: Final[bool]
    server: Final[str | None]

    def __init__(
        self,
        number: int,
        index: int | None = None,
        is_array: bool = False,
        server: str | None = None,
    ) -> None:
        if number < 0:
            raise ValueError("a job number cannot be negative")
        if index is not None and (index < 0 or not is_array):
            raise ValueError("a subjob index needs is_array=True and index >= 0")
        self.number = number
        self.index = index
        self.is_array = is_array
        self.server = server

    @property
    def is_subjob(self) -> bool:
        return self.index is not None

    @property
    def array_id(self) -> JobId:
        """The parent array ``123[]`` of a subjob; the id itself otherwise."""
        return JobId(self.number, None, self.is_array, self.server)

    def subjob(self, index: int) -> JobId:
        if not self.is_array:
            raise ValueError(f"{self} is not an array job")
        return JobId(self.number, index, self.is_array, self.server)

    def format(self, default_server: str | None = None) -> str:
        text = str(self.number)
        if self.is_array:
            text += "[]" if self.index is None else f"[{self.index}]"
        server = self.server or default_server
        return f"{text}.{server}" if server else text

    def __str__(self) -> str:
        return self.format()


def parse_job_id(text: str, default_server: str | None = None) -> JobId:
    """Parse ``123``, ``123.svr``, ``123.svr.example.com`` (server ``svr``), ``123[]``,
    ``123[4].svr``. Ranges (``123[1-5]``) and ``@server`` are rejected."""
    match = _fullmatch(_JOB_ID_RE, text.strip())
    if match is None:
        raise UnknownJob(job_id=text)
    number, index, server = match.groups()
    return JobId(
        number=int(number),
        index=int(index) if index else None,
        is_array=index is not None,
        server=server or default_server,
    )


# --------------------------------------------------------------------------- durations and sizes

_DURATION_RE = r"(\d+(?::\d+){0,2})(?:\.(\d*))?"


def parse_duration(text: str) -> float:
    """``[[hh:]mm:]ss[.ms]`` to seconds (attr_fn_time.c decode_time; fields may exceed 59)."""
    match = _fullmatch(_DURATION_RE, text.strip())
    if match is None:
        raise _bad(f"{text!r} is not a duration [[hh:]mm:]ss[.ms]")
    whole, fraction = match.groups()
    seconds = 0
    for part in whole.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)


def format_duration(seconds: float) -> str:
    """``HH:MM:SS`` (hours unbounded), rounding .5 up as decode_time does."""
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    whole = int(seconds)
    if seconds - whole >= 0.5:
        whole += 1
    hours, rest = divmod(whole, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


_SIZE_RE = r"(\d+)([kmgtp]?)([bw]?)"
_SIZE_SHIFTS = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}
_SIZE_UNITS = {"b": 0, "kb": 10, "mb": 20, "gb": 30, "tb": 40, "pb": 50}


def parse_size(text: str) -> int:
    """``<int>[k|m|g|t|p][b|w]`` to bytes, case-insensitive, binary multiples, w = 8-byte
    words, no suffix = bytes (attr_fn_size.c to_size)."""
    match = _fullmatch(_SIZE_RE, text.strip(), ignorecase=True)
    if match is None:
        raise _bad(f"{text!r} is not a size <int>[k|m|g|t|p][b|w]")
    number, scale, unit = match.groups()
    nbytes = int(number) << _SIZE_SHIFTS[scale.lower()]
    return nbytes * WORD_BYTES if unit.lower() == "w" else nbytes


def format_size(nbytes: int, unit: str = "kb") -> str:
    """``1234kb`` (rounded up, as get_kilobytes does); unit is one of b kb mb gb tb pb."""
    shift = _SIZE_UNITS.get(unit)
    if shift is None:
        raise ValueError(f"unknown size unit {unit!r}")
    if nbytes < 0:
        raise ValueError("a size cannot be negative")
    return f"{(nbytes + (1 << shift) - 1) >> shift}{unit}"


# --------------------------------------------------------------------------- resources

_DURATION_RESOURCES = frozenset(
    {"walltime", "cput", "pcput", "soft_walltime", "min_walltime", "max_walltime"}
)
_SIZE_RESOURCES = frozenset({"mem", "vmem", "pmem", "pvmem", "file", "hbmem"})
_COUNT_RESOURCES = frozenset({"ncpus", "nodect", "mpiprocs", "ompthreads", "ngpus"})
# Resources flagged ATR_DFLAG_CVTSLT (master_resc_def_all.xml): chunk-level, so illegal
# job-wide next to select/place (req_quejob.c, PBSE_INVALJOBRESC).
_CHUNK_RESOURCES = frozenset(
    {"ncpus", "mem", "vmem", "mpiprocs", "ompthreads", "arch", "host", "vnode", "hbmem"}
)
_NOT_IN_CHUNK = _DURATION_RESOURCES | {"select", "place", "nodes", "nodect"}
_PLACE_ARRANGEMENTS = frozenset({"free", "pack", "scatter", "vscatter"})
_PLACE_SHARING = frozenset({"excl", "shared", "exclhost"})


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise _bad(f"{text!r} is not a whole number >= 0")
    return int(text)


def _check_resource_value(name: str, value: str) -> None:
    if name in _DURATION_RESOURCES:
        parse_duration(value)
    elif name in _SIZE_RESOURCES:
        parse_size(value)
    elif name in _COUNT_RESOURCES:
        _count(value)
    elif name == "select":
        parse_select(value)
    elif name == "place":
        parse_place(value)


def _resource_value(text: str, pos: int) -> tuple[str, int]:
    """One value of a ``-l`` list from ``pos``: quotes removed, ends at ``,`` or whitespace
    (Libifl/pbs_quote_parse.c with QMGR_NO_WHITE_IN_VALUE)."""
    out: list[str] = []
    quote = ""
    while pos < len(text):
        char = text[pos]
        if quote:
            if char == quote:
                quote = ""
            else:
                out.append(char)
        elif char in "\"'":
            quote = char
        elif char == "," or char.isspace():
            break
        else:
            out.append(char)
        pos += 1
    if quote:
        raise _bad(f"unterminated quote in {text!r}")
    if "&" in out:
        raise _bad(f"illegal character '&' in {text!r}")
    return "".join(out), pos


def _resource_items(text: str) -> list[tuple[str, str]]:
    """Split and validate one ``-l`` argument (Libcmds/set_resource.c); names lower-cased
    (PBS looks resource names up case-insensitively)."""
    items: list[tuple[str, str]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        end = pos
        while end < len(text) and text[end] not in "=," and not text[end].isspace():
            end += 1
        name = text[pos:end].lower()
        if not name or end >= len(text) or text[end] != "=":
            raise _bad(f"expected resource=value in {text!r}")
        value, pos = _resource_value(text, end + 1)
        if not value:
            raise _bad(f"resource {name!r} has no value")
        try:
            _check_resource_value(name, value)
        except BadAttributeValue as exc:
            raise BadAttributeValue(f"{BAD_VALUE} Resource_List.{name}: {_detail(exc)}") from exc
        items.append((name, value))
        if pos < len(text) and text[pos] == ",":
            pos += 1
            if pos >= len(text):
                raise _bad(f"trailing comma in {text!r}")
    if not items:
        raise _bad("empty resource list")
    return items


def parse_resource_list(text: str) -> dict[str, str]:
    """``ncpus=4,mem=2gb,walltime=01:00:00`` / ``select=2:ncpus=4+1:ncpus=1`` /
    ``place=scatter:excl`` to a dict; known resources are validated. Several ``-l``
    options merge: see ``parse_qsub_args``."""
    return dict(_resource_items(text))


def parse_select(text: str) -> list[tuple[int, dict[str, str]]]:
    """``[N:]res=val[:res=val][+[N:]...]`` to (count, resources) chunks."""
    chunks: list[tuple[int, dict[str, str]]] = []
    for chunk in text.split("+"):
        if not chunk:
            raise _bad(f"empty chunk in select {text!r}")
        parts = chunk.split(":")
        count = 1
        if parts[0].isascii() and parts[0].isdigit():
            count = int(parts.pop(0))
            if count < 1:
                raise _bad(f"select chunk {chunk!r} has a count below 1")
        chunks.append((count, _chunk_resources(chunk, parts)))
    return chunks


def _chunk_resources(chunk: str, parts: list[str]) -> dict[str, str]:
    spec: dict[str, str] = {}
    for part in parts:
        name, sep, value = part.partition("=")
        name = name.lower()
        if not (sep and name and value):
            raise _bad(f"select chunk {chunk!r}: expected resource=value, got {part!r}")
        if name in _NOT_IN_CHUNK:
            raise _bad(f'Resource invalid in "select" specification: {name}')
        if name in spec:
            raise _bad(
                "duplicated resource within a section of a select specification, "
                f"resource is: {name}"
            )
        _check_resource_value(name, value)
        spec[name] = value
    return spec


def parse_place(text: str) -> dict[str, str]:
    """``[free|pack|scatter|vscatter][:excl|shared|exclhost][:group=res]`` to a dict with
    keys arrangement / sharing / group (at most one of each)."""
    place: dict[str, str] = {}
    for part in text.split(":"):
        if part in _PLACE_ARRANGEMENTS:
            key, value = "arrangement", part
        elif part in _PLACE_SHARING:
            key, value = "sharing", part
        elif part.startswith("group=") and len(part) > len("group="):
            key, value = "group", part[len("group=") :]
        else:
            raise _bad(
                f"place {text!r}: {part!r} is not free|pack|scatter|vscatter, "
                "excl|shared|exclhost or group=<resource>"
            )
        if key in place:
            raise _bad(f"place {text!r} gives the {key} twice")
        place[key] = value
    return place


def check_resources(resources: Mapping[str, str]) -> None:
    """Rules across resources that the server enforces at submit (req_quejob.c)."""
    has_select = "select" in resources
    if not (has_select or "place" in resources):
        return
    if "nodes" in resources:
        raise BadAttributeValue("nodes: Cannot be used with select or place")
    job_wide = sorted(_CHUNK_RESOURCES.intersection(resources))
    if job_wide:
        raise BadAttributeValue(
            f'"-lresource=" cannot be used with "select" or "place", resource is: {job_wide[0]}'
        )
    if not has_select:
        raise BadAttributeValue('Cannot have "place" without "select"')


def _nodes_ncpus(nodes: str) -> int:
    """CPUs of an old-style ``nodes=N:ppn=P+host:ppn=P`` spec (PBS converts ppn to ncpus)."""
    total = 0
    for part in nodes.split("+"):
        items = part.split(":")
        count = int(items[0]) if items[0].isascii() and items[0].isdigit() else 1
        per_node = 1
        for item in items[1:]:
            name, _, value = item.partition("=")
            if name in ("ppn", "ncpus") and value.isascii() and value.isdigit():
                per_node = int(value)
        total += count * per_node
    return total


def job_ncpus(resources: Mapping[str, str]) -> int:
    """CPUs the job takes: sum of N*ncpus over select chunks (ncpus defaults to 1 per
    chunk), else ncpus, else an old-style nodes spec, else 1."""
    select = resources.get("select")
    if select:
        return sum(n * int(spec.get("ncpus", "1")) for n, spec in parse_select(select))
    if "ncpus" in resources:
        return _count(resources["ncpus"])
    nodes = resources.get("nodes")
    return _nodes_ncpus(nodes) if nodes else 1


def job_mem_bytes(resources: Mapping[str, str]) -> int | None:
    """Memory the job asked for: sum of N*mem over select chunks, else mem, else None."""
    select = resources.get("select")
    if select:
        chunks = [(n, spec["mem"]) for n, spec in parse_select(select) if "mem" in spec]
        if chunks:
            return sum(n * parse_size(mem) for n, mem in chunks)
    mem = resources.get("mem")
    return parse_size(mem) if mem is not None else None


def job_walltime(resources: Mapping[str, str]) -> float | None:
    walltime = resources.get("walltime")
    return parse_duration(walltime) if walltime is not None else None


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


# --------------------------------------------------------------------------- option values


class ArrayRange(_Frozen):
    """``-J X-Y[:Z][%max]``: indices start..end (inclusive) by step; unpacks as a 4-tuple.
    Immutable and hashable."""

    _FIELDS = ("start", "end", "step", "max_running")
    __slots__ = _FIELDS
    start: Final[int]
    end: Final[int]
    step: Final[int]
    max_running: Final[int | None]

    def __init__(self, start: int, end: int, step: int = 1, max_running: int | None = None) -> None:
        self.start = start
        self.end = end
        self.step = step
        self.max_running = max_running

    def __iter__(self) -> Iterator[int | None]:
        return iter((self.start, self.end, self.step, self.max_running))

    def indices(self) -> range:
        return range(self.start, self.end + 1, self.step)

    def format(self) -> str:
        text = f"{self.start}-{self.end}" + (f":{self.step}" if self.step != 1 else "")
        return text + (f"%{self.max_running}" if self.max_running is not None else "")


_ARRAY_RE = r"(\d+)-(\d+)(?::(\d+))?(?:%(\d+))?"


def parse_array_range(text: str) -> ArrayRange:
    """``X-Y[:Z][%max]`` (Libcmds/chk_Jrange.c: X < Y, Z >= 1; %max is max_run_subjobs)."""
    match = _fullmatch(_ARRAY_RE, text.strip())
    if match is None:
        raise _bad(f"{text!r} is not an array range X-Y[:Z][%max]")
    start, end = int(match[1]), int(match[2])
    step = int(match[3]) if match[3] else 1
    if start >= end:
        raise _bad(f"array range {text!r}: the first index must be below the last")
    if step < 1:
        raise _bad(f"array range {text!r}: the step must be at least 1")
    return ArrayRange(start, end, step, int(match[4]) if match[4] else None)


_DEPEND_TYPES = frozenset(
    {"after", "afterok", "afternotok", "afterany", "before", "beforeok", "beforenotok", "beforeany"}
)


def parse_depend(text: str, default_server: str | None = None) -> list[tuple[str, list[str]]]:
    """``afterok:12.svr:13,afterany:14[],on:2`` to [(type, [job ids])]; ids are normalised
    with default_server; ``on`` carries its count. Subjobs are refused
    (Libcmds/parse_depend.c)."""
    result: list[tuple[str, list[str]]] = []
    for item in text.split(","):
        kind, *values = item.strip().split(":")
        if kind == "on":
            if len(values) != 1:
                raise _bad(f"depend {item!r}: expected on:<count>")
            result.append(("on", [str(_count(values[0]))]))
        elif kind in _DEPEND_TYPES:
            if not values or not all(values):
                raise _bad(f"depend {item!r}: expected {kind}:<jobid>[:<jobid>...]")
            result.append((kind, [_depend_job(value, default_server) for value in values]))
        else:
            raise _bad(f"depend {item!r}: unknown dependency type {kind!r}")
    return result


def _depend_job(text: str, default_server: str | None) -> str:
    try:
        job = parse_job_id(text, default_server)
    except UnknownJob:
        raise _bad(f"depend: {text!r} is not a job id") from None
    if job.is_subjob:
        raise _bad(f"depend: {text}: cannot have dependancy on subjob or range")
    return job.format()


_EXEC_TIME_RE = r"(\d{4}|\d{6}|\d{8}|\d{10}|\d{12})(?:\.(\d\d))?"


def parse_exec_time(text: str, now: float | None = None) -> float:
    """``[[[[CC]YY]MM]DD]hhmm[.SS]`` in local time to epoch seconds (Libcmds/cvtdate.c):
    an omitted part defaults to now's; if the given part has already passed, the next
    larger omitted part moves on (hhmm not after now -> tomorrow, DD before today ->
    next month, MM before this month -> next year). YY > 68 is 19YY."""
    match = _fullmatch(_EXEC_TIME_RE, text.strip())
    if match is None:
        raise _bad(f"{text!r} is not a date [[[[CC]YY]MM]DD]hhmm[.SS]")
    digits, seconds = match[1], int(match[2] or 0)
    cur = time.localtime(time.time() if now is None else now)
    pairs = [int(digits[i : i + 2]) for i in range(0, len(digits), 2)]
    hour, minute = pairs[-2:]
    if seconds > 59 or hour > 23 or minute > 59:
        raise _bad(f"{text!r}: time of day out of range")
    year, month, day = cur.tm_year, cur.tm_mon, cur.tm_mday
    given = pairs[:-2]
    if len(given) >= 3:
        yy = given[-3]
        century = given[-4] if len(given) == 4 else (19 if yy > 68 else 20)
        year = century * 100 + yy
    if len(given) >= 2:
        month = given[-2]
        if not 1 <= month <= 12:
            raise _bad(f"{text!r}: month out of range")
        year += 1 if len(given) == 2 and month < cur.tm_mon else 0
    if given:
        if not 1 <= given[-1] <= 31:
            raise _bad(f"{text!r}: day out of range")
        month += 1 if len(given) == 1 and given[-1] < cur.tm_mday else 0
        day = given[-1]
    elif (hour, minute) <= (cur.tm_hour, cur.tm_min):
        day += 1
    # mktime normalises a day or month past the end, as cvtdate relies on.
    return time.mktime((year, month, day, hour, minute, seconds, 0, 0, -1))


_JOB_NAME_RE = r"[A-Za-z0-9._+-]+"
_QUEUE_NAME_RE = r"[A-Za-z0-9][A-Za-z0-9_-]*"


def validate_job_name(name: str) -> str:
    """Job_Name at submit (Libecl verify_value_jobname + Libcmds/ck_job_name.c): 1..230
    characters from letters, digits and ``. _ + -``; a digit may come first."""
    if not name:
        raise _bad("the job name is empty")
    if len(name) > MAX_JOB_NAME:
        raise _bad(f"Job name is too long (more than {MAX_JOB_NAME} characters)")
    if not (name.isascii() and _fullmatch(_JOB_NAME_RE, name)):
        raise _bad(f"job name {name!r} may hold only letters, digits and . _ + -")
    return name


def validate_queue_name(name: str) -> str:
    """Queue names (Libecl pbs_verify_object_name): 1..15 characters, a letter or digit
    first, then letters, digits, ``_`` and ``-``."""
    if len(name) > MAX_QUEUE_NAME:
        raise BadAttributeValue(f"Queue name too long: {name!r}")
    if not (name.isascii() and _fullmatch(_QUEUE_NAME_RE, name)):
        raise BadAttributeValue(f"Invalid object name: {name!r}")
    return name


_DESTINATION_RE = r"([^\s#@]*)(?:@([^\s#@]+))?"


def parse_destination(text: str) -> tuple[str | None, str | None]:
    """``queue``, ``@server`` or ``queue@server`` to (queue, server) (parse_destid.c)."""
    match = _fullmatch(_DESTINATION_RE, text.lstrip())
    if match is None or len(match[1]) > MAX_QUEUE_NAME:
        raise UsageError(f"illegally formed destination: {text}", show_usage=False)
    return match[1] or None, match[2]


def _destination(value: str) -> str:
    parse_destination(value)
    return value


def validate_join(value: str) -> str:
    """``-j oe|eo|n`` (verify_value_joinpath)."""
    if value not in ("oe", "eo", "n"):
        raise _bad(f"join {value!r} is not oe, eo or n")
    return value


def validate_keep(value: str) -> str:
    """``-k``: letters from o e d n; n excludes o/e; d needs o, e or n (verify_keepfiles_common)."""
    letters = set(value)
    if not value or not letters <= set("oedn"):
        raise _bad(f"keep {value!r} is not made of o, e, d, n")
    keeps = bool(letters & {"o", "e"})
    if (keeps and "n" in letters) or ("d" in letters and not (keeps or "n" in letters)):
        raise _bad(f"keep {value!r}: n excludes o/e and d needs o, e or n")
    return value


def validate_mail_points(value: str) -> str:
    """``-m n`` or letters from a b e j, not ``j`` alone (verify_value_mailpoints)."""
    value = value.lstrip()
    if value == "n":
        return value
    if not value or value == "j" or not set(value) <= set("abej"):
        raise _bad(f"mail points {value!r} are not n or a combination of a, b, e, j")
    return value


def parse_priority(value: str) -> int:
    """``-p`` -1024..1023 (verify_value_priority)."""
    try:
        priority = int(value.strip())
    except ValueError:
        raise _bad(f"priority {value!r} is not a whole number") from None
    if not -1024 <= priority <= 1023:
        raise _bad(f"priority {priority} is outside -1024..1023")
    return priority


_CHECKPOINT_RE = r"[nscw]|[cw]=\d+"


def validate_checkpoint(value: str) -> str:
    """``-c n|s|c|w|c=N|w=N`` (verify_value_checkpoint; qsub itself refuses ``u``)."""
    value = value.lstrip()
    if not _fullmatch(_CHECKPOINT_RE, value):
        raise _bad(f"checkpoint {value!r} is not n, s, c, w, c=<minutes> or w=<minutes>")
    return value


def validate_remove_files(value: str) -> str:
    """``-R`` letters from o and e (verify_removefiles_common)."""
    if not value or not set(value) <= {"o", "e"}:
        raise _bad(f"remove files {value!r} is not o, e or oe")
    return value


_AT_ITEM_RE = r"([^\s#@]+)(?:@([^\s#@]+))?"


def _at_items(value: str) -> list[tuple[str, str | None]]:
    """``name[@host][,name[@host]...]`` (Libcmds/parse_at.c)."""
    items: list[tuple[str, str | None]] = []
    for item in value.split(","):
        match = _fullmatch(_AT_ITEM_RE, item.strip())
        if match is None:
            raise _bad(f"{value!r} is not a list of name[@host]")
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
            raise _bad(f"shell {path!r} is not an absolute path")
        if host in hosts:
            raise _bad(f"shell list {value!r} names a host twice")
        hosts.add(host)
    return value


def validate_sandbox(value: str) -> str:
    """``-W sandbox=HOME|O_WORKDIR|PRIVATE`` (case-insensitive; returned upper-case)."""
    if value.upper() not in ("HOME", "O_WORKDIR", "PRIVATE"):
        raise _bad(f"sandbox {value!r} is not HOME, O_WORKDIR or PRIVATE")
    return value.upper()


def validate_umask(value: str) -> str:
    """``-W umask=`` 1..4 octal digits (the MoM reads the value as octal)."""
    if not _fullmatch(r"[0-7]{1,4}", value):
        raise _bad(f"umask {value!r} is not 1 to 4 octal digits")
    return value


_STAGE_ITEM_RE = r"[^@]+@[^\s@:]+:[^@]+"


def validate_stage_list(value: str) -> str:
    """``-W stagein/stageout=local@host:remote[,...]`` (Libcmds/parse_stage.c)."""
    import re

    for item in re.split(r"(?<!\\),", value):
        if not _fullmatch(_STAGE_ITEM_RE, item.strip()):
            raise _bad(f"stage item {item!r} is not local_path@host:remote_path")
    return value


def _validate_bool(value: str) -> str:
    if value.lower() not in ("true", "false"):
        raise _bad(f"{value!r} is not true or false")
    return value.lower()


def _validate_count(value: str) -> str:
    return str(_count(value))


def _validate_depend(value: str) -> str:
    parse_depend(value)
    return value


def parse_variable_list(text: str) -> dict[str, str | None]:
    """``-v "a=1,b='x,y',C"`` to {"a": "1", "b": "x,y", "C": None}: None means "take it
    from the environment". Quotes group and are removed; ``\\,`` is a literal comma
    (qsub.c comma_token / copy_env_value)."""
    variables: dict[str, str | None] = {}
    for item in _split_outside_quotes(text):
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not name or any(c.isspace() or c in "'\"" for c in name):
            raise BadAttributeValue(f"cannot send environment with the job: bad item {item!r}")
        variables[name] = _unquote(raw) if sep else None
    return variables


def _split_outside_quotes(text: str) -> list[str]:
    items: list[str] = []
    current: list[str] = []
    quote = ""
    chars = iter(text)
    for char in chars:
        if char == "\\":
            current.append(char + next(chars, ""))
            continue
        if char in "\"'" and (not quote or char == quote):
            quote = "" if quote else char
        elif char == "," and not quote:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    if quote:
        raise BadAttributeValue(f"cannot send environment with the job: unmatched {quote}")
    items.append("".join(current))
    return items


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
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        name, value, pos = _w_pair(text, pos)
        pairs.append((name, value))
    if not pairs:
        raise UsageError("illegal -W value: empty")
    return pairs


def _w_pair(text: str, pos: int) -> tuple[str, str, int]:
    bad = UsageError(f"illegal -W value: {text!r} is not attribute=value[,attribute=value]")
    equal = text.find("=", pos)
    name = text[pos:equal].rstrip() if equal > pos else ""
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


_QSUB_FIELDS = (
    "name",
    "destination",
    "output_path",
    "error_path",
    "join",
    "keep",
    "resources",
    "hold",
    "exec_time",
    "rerunnable",
    "mail_points",
    "mail_users",
    "account",
    "project",
    "priority",
    "shell",
    "variables",
    "export_env",
    "array",
    "attributes",
    "directive_prefix",
    "quiet",
    "foreground",
    "user_list",
    "checkpoint",
    "remove_files",
    "x11",
)


class QsubOptions(_Frozen):
    """Everything qsub's options (or #PBS directives) say. None / False = not given.
    Immutable; ``resources`` and ``attributes`` default to new empty dicts."""

    _FIELDS = _QSUB_FIELDS
    __slots__ = _QSUB_FIELDS
    name: Final[str | None]  # -N
    destination: Final[str | None]  # -q queue|@server|queue@server
    output_path: Final[str | None]  # -o [host:]path
    error_path: Final[str | None]  # -e [host:]path
    join: Final[str | None]  # -j oe|eo|n
    keep: Final[str | None]  # -k
    resources: Final[Mapping[str, str]]  # -l (accumulated)
    hold: Final[bool]  # -h (Hold_Types=u)
    exec_time: Final[float | None]  # -a (epoch seconds)
    rerunnable: Final[bool | None]  # -r y|n
    mail_points: Final[str | None]  # -m
    mail_users: Final[str | None]  # -M
    account: Final[str | None]  # -A
    project: Final[str | None]  # -P
    priority: Final[int | None]  # -p
    shell: Final[str | None]  # -S
    variables: Final[Mapping[str, str | None] | None]  # -v (the last -v wins, as in PBS)
    export_env: Final[bool]  # -V
    array: Final[ArrayRange | None]  # -J
    attributes: Final[Mapping[str, str]]  # -W name=value
    directive_prefix: Final[str | None]  # -C
    quiet: Final[bool]  # -z
    foreground: Final[bool]  # -f
    user_list: Final[str | None]  # -u
    checkpoint: Final[str | None]  # -c
    remove_files: Final[str | None]  # -R
    x11: Final[bool]  # -X (only accepted, and ignored, in directives)

    def __init__(
        self,
        name: str | None = None,
        destination: str | None = None,
        output_path: str | None = None,
        error_path: str | None = None,
        join: str | None = None,
        keep: str | None = None,
        resources: Mapping[str, str] | None = None,
        hold: bool = False,
        exec_time: float | None = None,
        rerunnable: bool | None = None,
        mail_points: str | None = None,
        mail_users: str | None = None,
        account: str | None = None,
        project: str | None = None,
        priority: int | None = None,
        shell: str | None = None,
        variables: Mapping[str, str | None] | None = None,
        export_env: bool = False,
        array: ArrayRange | None = None,
        attributes: Mapping[str, str] | None = None,
        directive_prefix: str | None = None,
        quiet: bool = False,
        foreground: bool = False,
        user_list: str | None = None,
        checkpoint: str | None = None,
        remove_files: str | None = None,
        x11: bool = False,
    ) -> None:
        self.name = name
        self.destination = destination
        self.output_path = output_path
        self.error_path = error_path
        self.join = join
        self.keep = keep
        self.resources = {} if resources is None else resources
        self.hold = hold
        self.exec_time = exec_time
        self.rerunnable = rerunnable
        self.mail_points = mail_points
        self.mail_users = mail_users
        self.account = account
        self.project = project
        self.priority = priority
        self.shell = shell
        self.variables = variables
        self.export_env = export_env
        self.array = array
        self.attributes = {} if attributes is None else attributes
        self.directive_prefix = directive_prefix
        self.quiet = quiet
        self.foreground = foreground
        self.user_list = user_list
        self.checkpoint = checkpoint
        self.remove_files = remove_files
        self.x11 = x11

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
        for name, value in _resource_items(arg):
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
    for name in _QSUB_FIELDS:
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
