"""The syntax of PBS values: job ids and subjob ranges, qsig's signal names, durations,
times, sizes, resources (the known ones and the kind of each one's value), ``-l``
lists, select and place, array ranges and dependency lists.

Pure functions on strings, standard library only: ``qsub`` and ``qstat`` import this on
their fast path. Behaviour follows OpenPBS (openpbs/openpbs @cd7ab5e, the snapshot
PBS.md was written from); the source file behind each rule is named where the rule is
implemented.

Errors: ``BadAttributeValue`` for a bad value; ``UnknownJob`` for text that is not a
job id (PBS says "Unknown Job Id").
"""

from __future__ import annotations

import time

from pkbs.errors import BadAttributeValue, UnknownJob, UnknownResource
from pkbs.frozen import Frozen

# typing is not imported at run time: it costs milliseconds, and this module is on
# qsub's start-up path. Neither is re: it is imported where a pattern is matched
# (`echo true | qsub` matches none), as importing it costs several milliseconds (enum,
# functools, collections).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Iterator, Mapping

BAD_VALUE = "Illegal attribute or resource value"
WORD_BYTES = 8  # the "w" size unit: sizeof(long) on the 64-bit platforms PBS runs on


def bad_value(detail: str) -> BadAttributeValue:
    """``Illegal attribute or resource value: <detail>``."""
    return BadAttributeValue(f"{BAD_VALUE}: {detail}")


def fullmatch(pattern: str, text: str, ignorecase: bool = False) -> re.Match[str] | None:
    """ASCII regex match of the whole text. Patterns compile on first use (re caches
    them), keeping the import of the modules that match them cheap."""
    import re

    return re.fullmatch(pattern, text, re.ASCII | re.IGNORECASE if ignorecase else re.ASCII)


def parse_count(text: str) -> int:
    """A whole number >= 0 (decode_l with verify_value_zero_or_positive)."""
    if not (text.isascii() and text.isdigit()):
        raise bad_value(f"{text!r} is not a whole number >= 0")
    return int(text)


def split_outside_quotes(text: str, sep: str) -> list[str]:
    """``text`` split at each ``sep`` outside single or double quotes; a backslash keeps
    the next character from splitting. Quotes and backslashes stay in the parts.
    ValueError ("unmatched '") for a quote that is not closed."""
    parts: list[str] = []
    current: list[str] = []
    quote = ""
    chars = iter(text)
    for char in chars:
        if char == "\\":
            current.append(char + next(chars, ""))
            continue
        if char in "\"'" and (not quote or char == quote):
            quote = "" if quote else char
        elif char == sep and not quote:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quote:
        raise ValueError(f"unmatched {quote}")
    parts.append("".join(current))
    return parts


# --------------------------------------------------------------------------- job ids

# number, optional [index] or [], optional .server (first component kept) + .domain parts.
_JOB_ID_RE = r"(\d+)(?:\[(\d*)\])?(?:\.([^\s.@#\[\]]+)(?:\.[^\s@#\[\]]*)*)?"


def format_job_id(
    number: int, server: str | None = None, *, index: int | None = None, array: bool = False
) -> str:
    """``123.svr``, an array ``123[].svr`` (array), a subjob ``123[4].svr`` (index);
    without a server, ``123``."""
    text = str(number)
    if index is not None:
        text += f"[{index}]"
    elif array:
        text += "[]"
    return f"{text}.{server}" if server else text


class JobId(Frozen):
    """``123.pkbs`` / array ``123[].pkbs`` (is_array) / subjob ``123[4].pkbs`` (is_array,
    index)."""

    number: int
    index: int | None = None
    is_array: bool = False
    server: str | None = None

    def __post_init__(self) -> None:
        if self.number < 0:
            raise ValueError("a job number cannot be negative")
        if self.index is not None and (self.index < 0 or not self.is_array):
            raise ValueError("a subjob index needs is_array=True and index >= 0")

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
        server = self.server or default_server
        return format_job_id(self.number, server, index=self.index, array=self.is_array)

    def __str__(self) -> str:
        return self.format()


def parse_job_id(text: str, default_server: str | None = None) -> JobId:
    """Parse ``123``, ``123.svr``, ``123.svr.example.com`` (server ``svr``), ``123[]``,
    ``123[4].svr``. Ranges (``123[1-5]``) and ``@server`` are rejected."""
    match = fullmatch(_JOB_ID_RE, text.strip())
    if match is None:
        raise UnknownJob(job_id=text)
    number, index, server = match.groups()
    return JobId(
        number=int(number),
        index=int(index) if index else None,
        is_array=index is not None,
        server=server or default_server,
    )


# number, [ranges], optional .server as in _JOB_ID_RE.
_SUBJOB_RANGE_RE = r"(\d+)\[([\d:,-]*-[\d:,-]*)\](?:\.([^\s.@#\[\]]+)(?:\.[^\s@#\[\]]*)*)?"
_RANGE_ITEM_RE = r"(\d+)(?:-(\d+)(?::(\d+))?)?"


def parse_subjob_range(text: str, default_server: str | None = None) -> tuple[JobId, list[int]]:
    """``123[2-3]``, ``123[1-10:2].svr``, ``123[1-3,7]``: the array (``123[]``) and the
    indices the range names, in order (parse_subjob_index in OpenPBS's array_func.c:
    ``X-Y[:Z]`` items, comma-separated). UnknownJob for text that is no range."""
    match = fullmatch(_SUBJOB_RANGE_RE, text.strip())
    if match is None:
        raise UnknownJob(job_id=text)
    number, ranges, server = match.groups()
    indices: list[int] = []
    seen: set[int] = set()
    for item in ranges.split(","):
        part = fullmatch(_RANGE_ITEM_RE, item)
        if part is None:
            raise UnknownJob(job_id=text)
        first = int(part[1])
        last = int(part[2]) if part[2] else first
        step = int(part[3]) if part[3] else 1
        if last < first or step < 1:
            raise UnknownJob(job_id=text)
        fresh = [i for i in range(first, last + 1, step) if i not in seen]
        indices.extend(fresh)
        seen.update(fresh)
    return JobId(int(number), None, True, server or default_server), indices


def is_subjob_range(text: str) -> bool:
    """Whether `text` names a range of subjobs (``123[1-5]``) rather than one job."""
    head, _, rest = text.partition("[")
    return head.isdigit() and "-" in rest.partition("]")[0]


# --------------------------------------------------------------------------- qsig signals

SUSPEND, RESUME = "suspend", "resume"  # qsig's pseudo signals


def signal_number(name: str) -> int | None:
    """A qsig signal as its number: a name of MoM's table with or without ``SIG``
    (``SIGUSR1``, ``USR1``, upper case) or a number; None for one it does not know
    (PBSE_UNKSIG). `suspend` and `resume` are not signals: see SUSPEND, RESUME."""
    import signal

    if name.isascii() and name.isdigit():
        number = int(name)
        return number if number < signal.NSIG else None
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        return None


# --------------------------------------------------------------------------- durations and times

_DURATION_RE = r"(\d+(?::\d+){0,2})(?:\.(\d*))?"


def parse_duration(text: str) -> float:
    """``[[hh:]mm:]ss[.ms]`` to seconds (attr_fn_time.c decode_time; fields may exceed 59)."""
    match = fullmatch(_DURATION_RE, text.strip())
    if match is None:
        raise bad_value(f"{text!r} is not a duration [[hh:]mm:]ss[.ms]")
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


def normalize_duration(text: str) -> str:
    """A duration as the server stores it (decode_time + encode_time): ``90`` ->
    ``00:01:30``; a bad value unchanged."""
    try:
        return format_duration(parse_duration(text))
    except BadAttributeValue:
        return text


# Attributes whose values are times: int epoch seconds on the wire, printed with
# ctime(3) (qstat.c display_statjob).
TIME_ATTRIBUTES = frozenset(
    {
        "ctime",
        "etime",
        "stime",
        "obittime",
        "mtime",
        "qtime",
        "Execution_Time",
        "reserve_start",
        "reserve_end",
        "credential_validity",
        "estimated.start_time",
    }
)

_EXEC_TIME_RE = r"(\d{4}|\d{6}|\d{8}|\d{10}|\d{12})(?:\.(\d\d))?"


def parse_exec_time(text: str, now: float | None = None) -> float:
    """``[[[[CC]YY]MM]DD]hhmm[.SS]`` in local time to epoch seconds (Libcmds/cvtdate.c):
    an omitted part defaults to now's; if the given part has already passed, the next
    larger omitted part moves on (hhmm not after now -> tomorrow, DD before today ->
    next month, MM before this month -> next year). YY > 68 is 19YY."""
    match = fullmatch(_EXEC_TIME_RE, text.strip())
    if match is None:
        raise bad_value(f"{text!r} is not a date [[[[CC]YY]MM]DD]hhmm[.SS]")
    digits, seconds = match[1], int(match[2] or 0)
    cur = time.localtime(time.time() if now is None else now)
    pairs = [int(digits[i : i + 2]) for i in range(0, len(digits), 2)]
    hour, minute = pairs[-2:]
    if seconds > 59 or hour > 23 or minute > 59:
        raise bad_value(f"{text!r}: time of day out of range")
    year, month, day = cur.tm_year, cur.tm_mon, cur.tm_mday
    given = pairs[:-2]
    if len(given) >= 3:
        yy = given[-3]
        century = given[-4] if len(given) == 4 else (19 if yy > 68 else 20)
        year = century * 100 + yy
    if len(given) >= 2:
        month = given[-2]
        if not 1 <= month <= 12:
            raise bad_value(f"{text!r}: month out of range")
        year += 1 if len(given) == 2 and month < cur.tm_mon else 0
    if given:
        if not 1 <= given[-1] <= 31:
            raise bad_value(f"{text!r}: day out of range")
        month += 1 if len(given) == 1 and given[-1] < cur.tm_mday else 0
        day = given[-1]
    elif (hour, minute) <= (cur.tm_hour, cur.tm_min):
        day += 1
    # mktime normalises a day or month past the end, as cvtdate relies on.
    return time.mktime((year, month, day, hour, minute, seconds, 0, 0, -1))


# --------------------------------------------------------------------------- sizes

_SIZE_RE = r"(\d+)([kmgtp]?)([bw]?)"
_SIZE_SHIFTS = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}
_SIZE_UNITS = {"b": 0, "kb": 10, "mb": 20, "gb": 30, "tb": 40, "pb": 50}


def parse_size(text: str) -> int:
    """``<int>[k|m|g|t|p][b|w]`` to bytes, case-insensitive, binary multiples, w = 8-byte
    words, no suffix = bytes (attr_fn_size.c to_size)."""
    match = fullmatch(_SIZE_RE, text.strip(), ignorecase=True)
    if match is None:
        raise bad_value(f"{text!r} is not a size <int>[k|m|g|t|p][b|w]")
    number, scale, unit = match.groups()
    nbytes = int(number) << _SIZE_SHIFTS[scale.lower()]
    return nbytes * WORD_BYTES if unit.lower() == "w" else nbytes


def normalize_size(text: str) -> str:
    """A size as the server stores it (to_size + from_size): ``1GB`` -> ``1gb``, ``1024``
    -> ``1024b``, ``4kw`` stays; a bad value unchanged."""
    match = fullmatch(_SIZE_RE, text.strip(), ignorecase=True)
    if match is None:
        return text
    number, scale, unit = match.groups()
    return f"{int(number)}{scale.lower()}{'w' if unit.lower() == 'w' else 'b'}"


def format_size(nbytes: int, unit: str = "kb") -> str:
    """Bytes as text, in ``unit``:

    - ``b``, ``kb``, ``mb``, ``gb``, ``tb``, ``pb``: a PBS size in that unit, rounded up
      as get_kilobytes does (``1234kb``);
    - ``exact``: a PBS size in the largest unit that holds it whole, as the server
      encodes sizes (``1536mb``, ``2gb``);
    - ``iec``: for people, in B, KiB or MiB (``512 B``, ``1.5 KiB``, ``3.0 MiB``).
    """
    if nbytes < 0:
        raise ValueError("a size cannot be negative")
    if unit == "exact":
        for scale in ("p", "t", "g", "m", "k"):
            if nbytes and nbytes % (1 << _SIZE_SHIFTS[scale]) == 0:
                return f"{nbytes >> _SIZE_SHIFTS[scale]}{scale}b"
        return f"{nbytes}b"
    if unit == "iec":
        if nbytes < 1 << 10:
            return f"{nbytes} B"
        if nbytes < 1 << 20:
            return f"{nbytes / (1 << 10):.1f} KiB"
        return f"{nbytes / (1 << 20):.1f} MiB"
    shift = _SIZE_UNITS.get(unit)
    if shift is None:
        raise ValueError(f"unknown size unit {unit!r}")
    return f"{(nbytes + (1 << shift) - 1) >> shift}{unit}"


# --------------------------------------------------------------------------- known resources

DURATION = "duration"
SIZE = "size"
COUNT = "count"
TEXT = "text"
SELECT = "select"
PLACE = "place"

# Every resource pkbs knows: its name, the kind of its value, and whether it is
# host-level, that is asked per chunk: the server puts it into the select it builds
# from job-wide resources, and refuses it job-wide next to select or place
# (ATR_DFLAG_CVTSLT in master_resc_def_all.xml; ngpus and hbmem as sites define them).
# The server refuses any other resource (check_resources).
KNOWN_RESOURCES: tuple[tuple[str, str, bool], ...] = (
    ("walltime", DURATION, False),
    ("cput", DURATION, False),
    ("pcput", DURATION, False),
    ("soft_walltime", DURATION, False),
    ("min_walltime", DURATION, False),
    ("max_walltime", DURATION, False),
    ("mem", SIZE, True),
    ("vmem", SIZE, True),
    ("pmem", SIZE, False),
    ("pvmem", SIZE, False),
    ("file", SIZE, False),
    ("hbmem", SIZE, True),
    ("accelerator_memory", SIZE, True),
    ("ncpus", COUNT, True),
    ("ngpus", COUNT, True),
    ("naccelerators", COUNT, True),
    ("mpiprocs", COUNT, True),
    ("ompthreads", COUNT, True),
    ("nchunk", COUNT, True),
    ("nodect", COUNT, False),
    ("arch", TEXT, True),
    ("host", TEXT, True),
    ("vnode", TEXT, True),
    ("vntype", TEXT, True),
    ("aoe", TEXT, True),
    ("eoe", TEXT, True),
    ("accelerator", TEXT, True),
    ("accelerator_model", TEXT, True),
    ("accelerator_group", TEXT, True),
    ("nodes", TEXT, False),
    ("software", TEXT, False),
    ("site", TEXT, False),
    ("nice", TEXT, False),
    ("select", SELECT, False),
    ("place", PLACE, False),
)
RESOURCE_KINDS = {name: kind for name, kind, _ in KNOWN_RESOURCES}
HOST_LEVEL_RESOURCES = frozenset(name for name, _, host_level in KNOWN_RESOURCES if host_level)
# What a select chunk may not ask (decode_select: job-wide only).
_NOT_IN_CHUNK = frozenset(
    {name for name, kind, _ in KNOWN_RESOURCES if kind in (DURATION, SELECT, PLACE)}
    | {"nodes", "nodect"}
)
_PLACE_ARRANGEMENTS = frozenset({"free", "pack", "scatter", "vscatter"})
_PLACE_SHARING = frozenset({"excl", "shared", "exclhost"})


def resource_kind(name: str) -> str:
    """The kind of a resource's value: DURATION, SIZE, COUNT, SELECT, PLACE or TEXT
    (any resource pkbs does not know). Names are case-insensitive."""
    return RESOURCE_KINDS.get(name.lower(), TEXT)


def check_resource_value(name: str, value: str) -> None:
    """BadAttributeValue unless ``value`` is of the kind of resource ``name``."""
    kind = resource_kind(name)
    if kind == DURATION:
        parse_duration(value)
    elif kind == SIZE:
        parse_size(value)
    elif kind == COUNT:
        parse_count(value)
    elif kind == SELECT:
        parse_select(value)
    elif kind == PLACE:
        parse_place(value)


def check_resource(name: str, value: str) -> None:
    """One `-l` item as qsub checks it: a value, and one its resource accepts."""
    if not value:
        raise bad_value(f"resource {name!r} has no value")
    try:
        check_resource_value(name, value)
    except BadAttributeValue as exc:
        detail = exc.message.removeprefix(f"{BAD_VALUE}: ")
        raise BadAttributeValue(f"{BAD_VALUE} Resource_List.{name}: {detail}") from exc


def normalize_resource(name: str, value: str) -> str:
    """A resource value as the server stores it: durations as ``HH:MM:SS``, sizes in
    lower case with their unit; other values, and bad ones, unchanged."""
    kind = resource_kind(name)
    if kind == DURATION:
        return normalize_duration(value)
    if kind == SIZE:
        return normalize_size(value)
    return value


# --------------------------------------------------------------------------- -l lists


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
        raise bad_value(f"unterminated quote in {text!r}")
    if "&" in out:
        raise bad_value(f"illegal character '&' in {text!r}")
    return "".join(out), pos


def resource_items(text: str) -> list[tuple[str, str]]:
    """One ``-l`` argument as (name, value) pairs in order, each value checked against
    its resource's kind (Libcmds/set_resource.c); names lower-cased (PBS looks
    resource names up case-insensitively)."""
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
            raise bad_value(f"expected resource=value in {text!r}")
        value, pos = _resource_value(text, end + 1)
        check_resource(name, value)
        items.append((name, value))
        if pos < len(text) and text[pos] == ",":
            pos += 1
            if pos >= len(text):
                raise bad_value(f"trailing comma in {text!r}")
    if not items:
        raise bad_value("empty resource list")
    return items


def parse_resource_list(text: str) -> dict[str, str]:
    """``ncpus=4,mem=2gb,walltime=01:00:00`` / ``select=2:ncpus=4+1:ncpus=1`` /
    ``place=scatter:excl`` to a dict; known resources are checked."""
    return dict(resource_items(text))


# --------------------------------------------------------------------------- select and place


def parse_select(text: str) -> list[tuple[int, dict[str, str]]]:
    """``[N:]res=val[:res=val][+[N:]...]`` to (count, resources) chunks; a quoted value
    may hold ``+`` and ``:``. Names are lower-cased, values checked against their
    resource's kind."""
    chunks: list[tuple[int, dict[str, str]]] = []
    for chunk in _split_select(text, "+"):
        if not chunk:
            raise bad_value(f"empty chunk in select {text!r}")
        parts = _split_select(chunk, ":")
        count = 1
        if parts[0].isascii() and parts[0].isdigit():
            count = int(parts.pop(0))
            if count < 1:
                raise bad_value(f"select chunk {chunk!r} has a count below 1")
        chunks.append((count, _chunk_resources(chunk, parts)))
    return chunks


def _split_select(text: str, sep: str) -> list[str]:
    try:
        return split_outside_quotes(text, sep)
    except ValueError as exc:
        raise bad_value(f"select {text!r}: {exc}") from None


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _chunk_resources(chunk: str, parts: list[str]) -> dict[str, str]:
    spec: dict[str, str] = {}
    for part in parts:
        name, sep, value = part.partition("=")
        name, value = name.lower(), _unquoted(value)
        if not (sep and name and value):
            raise bad_value(f"select chunk {chunk!r}: expected resource=value, got {part!r}")
        if name in _NOT_IN_CHUNK:
            raise bad_value(f'Resource invalid in "select" specification: {name}')
        if name in spec:
            raise bad_value(
                "duplicated resource within a section of a select specification, "
                f"resource is: {name}"
            )
        check_resource_value(name, value)
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
            raise bad_value(
                f"place {text!r}: {part!r} is not free|pack|scatter|vscatter, "
                "excl|shared|exclhost or group=<resource>"
            )
        if key in place:
            raise bad_value(f"place {text!r} gives the {key} twice")
        place[key] = value
    return place


def check_resources(resources: Mapping[str, str]) -> None:
    """Rules across resources that the server enforces at submit (req_quejob.c): every
    resource known, select and place not mixed with job-wide host-level resources."""
    for name in resources:
        if name.lower() not in RESOURCE_KINDS:
            raise UnknownResource(f"Unknown resource Resource_List.{name}")
    for _, chunk in parse_select(resources["select"]) if "select" in resources else ():
        for name in chunk:
            if name not in RESOURCE_KINDS:
                raise UnknownResource(f"Unknown resource: {name}")
    has_select = "select" in resources
    if not (has_select or "place" in resources):
        return
    if "nodes" in resources:
        raise BadAttributeValue("nodes: Cannot be used with select or place")
    job_wide = sorted(HOST_LEVEL_RESOURCES.intersection(resources))
    if job_wide:
        raise BadAttributeValue(
            f'"-lresource=" cannot be used with "select" or "place", resource is: {job_wide[0]}'
        )
    if not has_select:
        raise BadAttributeValue('Cannot have "place" without "select"')


# --------------------------------------------------------------------------- what a job asks


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
        return parse_count(resources["ncpus"])
    nodes = resources.get("nodes")
    return _nodes_ncpus(nodes) if nodes else 1


def job_ngpus(resources: Mapping[str, str]) -> int:
    """GPUs the job takes: sum of N*ngpus over select chunks, else ngpus, else 0."""
    select = resources.get("select")
    if select:
        return sum(n * parse_count(spec.get("ngpus", "0")) for n, spec in parse_select(select))
    return parse_count(resources["ngpus"]) if "ngpus" in resources else 0


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


# --------------------------------------------------------------------------- array ranges


class ArrayRange(Frozen):
    """``-J X-Y[:Z][%max]``: indices start..end (inclusive) by step; unpacks as a 4-tuple."""

    start: int
    end: int
    step: int = 1
    max_running: int | None = None

    def __iter__(self) -> Iterator[int | None]:
        return iter((self.start, self.end, self.step, self.max_running))

    def indices(self) -> range:
        return range(self.start, self.end + 1, self.step)

    def format(self) -> str:
        text = f"{self.start}-{self.end}" + (f":{self.step}" if self.step != 1 else "")
        return text + (f"%{self.max_running}" if self.max_running is not None else "")


_ARRAY_RE = r"(\d+)-(\d+)(?::(\d+))?(?:%(\d+))?"
# The largest subjob index (PBS keeps indices in a C int) and the most subjobs one array
# may have (PBS's max_array_size is 10 000 by default; pkbs queues 100 000 in one request).
MAX_ARRAY_INDEX = 2**31 - 1
MAX_ARRAY_SIZE = 1_000_000


def parse_array_range(text: str) -> ArrayRange:
    """``X-Y[:Z][%max]`` (Libcmds/chk_Jrange.c: X < Y, Z >= 1; %max is max_run_subjobs)."""
    match = fullmatch(_ARRAY_RE, text.strip())
    if match is None:
        raise bad_value(f"{text!r} is not an array range X-Y[:Z][%max]")
    start, end = int(match[1]), int(match[2])
    step = int(match[3]) if match[3] else 1
    if start >= end:
        raise bad_value(f"array range {text!r}: the first index must be below the last")
    if step < 1:
        raise bad_value(f"array range {text!r}: the step must be at least 1")
    if end > MAX_ARRAY_INDEX:
        raise bad_value(f"array range {text!r}: the last index may be at most {MAX_ARRAY_INDEX}")
    if (end - start) // step + 1 > MAX_ARRAY_SIZE:
        raise bad_value(f"array range {text!r}: an array may have at most {MAX_ARRAY_SIZE} "
                        "subjobs")
    return ArrayRange(start, end, step, int(match[4]) if match[4] else None)


# --------------------------------------------------------------------------- dependencies

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
                raise bad_value(f"depend {item!r}: expected on:<count>")
            result.append(("on", [str(parse_count(values[0]))]))
        elif kind in _DEPEND_TYPES:
            if not values or not all(values):
                raise bad_value(f"depend {item!r}: expected {kind}:<jobid>[:<jobid>...]")
            result.append((kind, [_depend_job(value, default_server) for value in values]))
        else:
            raise bad_value(f"depend {item!r}: unknown dependency type {kind!r}")
    return result


def _depend_job(text: str, default_server: str | None) -> str:
    try:
        job = parse_job_id(text, default_server)
    except UnknownJob:
        raise bad_value(f"depend: {text!r} is not a job id") from None
    if job.is_subjob:
        raise bad_value(f"depend: {text}: cannot have dependancy on subjob or range")
    return job.format()
