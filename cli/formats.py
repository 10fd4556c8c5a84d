"""qstat's output formats, reproduced from OpenPBS `src/cmds/qstat.c`.

Light to import, as qstat must start fast: the standard library and the value syntax
(`pkbs.pbsvalues`), no pydantic, no pkbs.models.

Every function takes the wire structure the dispatcher serves (GET /v1/jobs):
a sequence of ``(id, attributes)`` pairs, where attributes is the ordered dict
built by `pkbs.pbsattrs` (flattened resource names such as
``"Resource_List.ncpus"``, times as epoch ints, Variable_List as a dict), and
returns the exact text qstat prints, newlines included.

Widths count characters; OpenPBS counts bytes (they differ only for non-ASCII).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

from pkbs.pbsvalues import TIME_ATTRIBUTES

from . import cjson

Attributes: TypeAlias = Mapping[str, Any]
Record: TypeAlias = tuple[str, Attributes]

CHAR_LINE_LIMIT = 78  # qstat.c: wrap limit of `-f` lines
TRUNC = "*"  # DISPLAY_TRUNC_CHAR
ESC_CHAR = "\\"
BLANK = " -- "  # altdsp_statjob's value for a missing field
JSON_STRING_ATTRIBUTES = frozenset({"Job_Name", "project", "Account_Name"})


def jobs_from_wire(payload: Mapping[str, Any]) -> list[Record]:
    """`{"jobs": [{"id": .., "attributes": {..}}]}` → [(id, attributes)]."""
    return [(str(j["id"]), j.get("attributes") or {}) for j in payload.get("jobs") or []]


def jobs_from_table(payload: Mapping[str, Any]) -> list[Record]:
    """`{"columns": ["id", name..], "rows": [[id, value..]]}` (GET /v1/jobs?view=table
    or summary) → [(id, attributes)]; a null value is an attribute that is not set."""
    names = list(payload.get("columns") or [])[1:]
    rows = payload.get("rows") or []
    return [(str(row[0]), dict(zip(names, row[1:], strict=False))) for row in rows]


# ---------------------------------------------------------------------------
# Values


def ctime(epoch: int) -> str:
    """ctime(3) in local time without the newline: `Fri Nov 11 17:57:05 2016`."""
    return time.ctime(epoch)


def _escape_commas(value: str) -> str:
    return value.replace(",", "\\,")


def variable_list(variables: Mapping[str, Any]) -> str:
    """`K=V,K2=V2` with commas inside values escaped as `\\,` (qsub.c)."""
    return ",".join(f"{k}={_escape_commas(_text(v))}" for k, v in variables.items())


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _value_text(name: str, value: Any) -> str:
    if name in TIME_ATTRIBUTES:
        try:
            epoch = int(value)
        except (TypeError, ValueError):
            return _text(value)
        if epoch == 0 and name == "estimated.start_time":
            return "UNKNOWN"
        return ctime(epoch)
    if isinstance(value, Mapping):
        return variable_list(value)
    return _text(value)


def entries(attrs: Attributes) -> list[tuple[str, str | None, str]]:
    """(name, resource or None, printable value) in order; None values are unset.

    Flattened `Resource_List.ncpus` splits at the first dot; a nested mapping under a
    resource attribute name is flattened too.
    """
    out: list[tuple[str, str | None, str]] = []
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and key != "Variable_List":
            for res, val in value.items():
                if val is not None:
                    out.append((key, str(res), _value_text(f"{key}.{res}", val)))
            continue
        name, dot, res = key.partition(".")
        out.append((name, res if dot else None, _value_text(key, value)))
    return out


def show_nonprint(text: str) -> str:
    """Control characters other than newline and tab as `^X` (show_nonprint_chars)."""
    if not any(ord(c) < 32 for c in text):
        return text
    return "".join(f"^{chr(ord(c) + 64)}" if ord(c) < 32 and c not in "\n\t" else c for c in text)


def _feed_chars(text: str) -> str:
    """Newline and form feed as `\\n` / `\\f` (convert_feed_chars)."""
    return text.replace("\n", "\\n").replace("\f", "\\f")


def _trunc(value: str, width: int) -> str:
    """Longer than width → width-1 characters + `*`."""
    return value if len(value) <= width else value[: width - 1] + TRUNC


# ---------------------------------------------------------------------------
# -f


def attribute_line(name: str, resource: str | None, value: str, wide: bool = False) -> str:
    """One `    name = value` line of `qstat -f` without its final newline (prt_attr)."""
    label = f"{name}.{resource}" if resource is not None else name
    if wide:
        buf = _feed_chars(value)
        return f"    {label} = {buf if resource is not None else show_nonprint(buf)}"
    parts = [f"    {label} = "]
    start = len(label) + 7
    tokens = [t for t in value.split(",") if t]  # strtok: empty tokens vanish
    first = True
    for i, token in enumerate(tokens):
        if len(token) + start < CHAR_LINE_LIMIT:
            parts.append(show_nonprint(token))
            start += len(token)
        else:
            if not first:
                parts.append("\n\t")
                start = 9
            for ch in token:
                parts.append(show_nonprint(ch))
                start += 1
                if start > CHAR_LINE_LIMIT:
                    start = 8
                    parts.append("\n\t")
        if i + 1 < len(tokens):
            first = False
            parts.append(",")  # not counted in the line length, as in qstat.c
    return "".join(parts)


def _full_record(label: str, ident: str, attrs: Attributes, wide: bool) -> str:
    lines = [attribute_line(n, r, v, wide) for n, r, v in entries(attrs)]
    return f"{label}: {ident}\n" + "\n".join(lines) + "\n\n"


def full(jobs: Iterable[Record], wide: bool = False) -> str:
    """`qstat -f [-w]`: `Job Id: X`, attribute lines, a blank line after each job."""
    return "".join(_full_record("Job Id", jid, attrs, wide) for jid, attrs in jobs)


def queue_full(queues: Iterable[Record], wide: bool = False) -> str:
    """`qstat -Q -f`."""
    return "".join(_full_record("Queue", name, attrs, wide) for name, attrs in queues)


def server_full(name: str, attrs: Attributes, wide: bool = False) -> str:
    """`qstat -B -f`: `Server: <name>`, attribute lines, a blank line."""
    lines = [attribute_line(n, r, v, wide) + "\n" for n, r, v in entries(attrs)]
    return f"Server: {name}\n" + "".join(lines) + "\n"


# ---------------------------------------------------------------------------
# -F dsv


def escape_delimiter(value: str, delimiter: str) -> str:
    """Backslash before the delimiter and before a backslash not followed by `'`, `"`
    or `,` (misc_utils.c escape_delimiter)."""
    if not value or not delimiter:
        return value
    out: list[str] = []
    i = 0
    n = len(delimiter)
    while i < len(value):
        ch = value[i]
        nxt = value[i + 1] if i + 1 < len(value) else ""
        if (ch == ESC_CHAR and nxt not in ("'", '"', ",")) or (n == 1 and ch == delimiter):
            out.append(ESC_CHAR + ch)
            i += 1
        elif value.startswith(delimiter, i):
            out.append(ESC_CHAR + delimiter)
            i += n
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _dsv_record(label: str, ident: str, attrs: Attributes, delimiter: str) -> str:
    fields = []
    for name, res, value in entries(attrs):
        buf = show_nonprint(_feed_chars(escape_delimiter(value, delimiter)))
        fields.append(f"{name}.{res}={buf}" if res is not None else f"{name}={buf}")
    return f"{label}: {ident}{delimiter}" + delimiter.join(fields) + "\n"


def dsv_full(jobs: Iterable[Record], delimiter: str = "|") -> str:
    """`qstat -f -F dsv [-D delim]`: one line per job, `Job Id: X|name=value|...`."""
    return "".join(_dsv_record("Job Id", jid, attrs, delimiter) for jid, attrs in jobs)


def dsv_queues(queues: Iterable[Record], delimiter: str = "|") -> str:
    return "".join(_dsv_record("Queue", name, attrs, delimiter) for name, attrs in queues)


def dsv_server(name: str, attrs: Attributes, delimiter: str = "|") -> str:
    return _dsv_record("Server", name, attrs, delimiter)


# ---------------------------------------------------------------------------
# -F json: each value parsed as cJSON_ParseWithOpts parses it, the document printed
# as cJSON_Print prints it (`pkbs.cli.cjson`).


def _json_variable_list(value: str) -> cjson.JObject:
    """Variable_List → object, split at unescaped commas, key/value at the first `=`."""
    obj = cjson.JObject()
    i = 0
    while i < len(value):
        key: list[str] = []
        val: list[str] | None = None
        while i < len(value) and value[i] != ",":
            if value[i] == ESC_CHAR and value[i + 1 : i + 2] == ",":
                i += 1
            if val is None and value[i] == "=":
                val = []
            elif val is None:
                key.append(value[i])
            else:
                val.append(value[i])
            i += 1
        obj.append(("".join(key), cjson.parse("".join(val)) if val is not None else ""))
        if i < len(value):
            i += 1
    return obj


def json_object(attrs: Attributes) -> cjson.JObject:
    """One job's (queue's, server's) JSON object as prt_attr builds it."""
    obj = cjson.JObject()
    prev_resc: str | None = None
    current: cjson.JObject | None = None
    for name, res, value in entries(attrs):
        if res is not None:
            if prev_resc != name or current is None:
                current = cjson.JObject()
                obj.append((name, current))
                prev_resc = name
            current.append((res, cjson.parse(value)))
        elif name == "Variable_List":
            obj.append((name, _json_variable_list(value)))
        else:
            prev_resc, current = None, None
            obj.append((name, value if name in JSON_STRING_ATTRIBUTES else cjson.parse(value)))
    return obj


def _json_document(
    key: str, items: Iterable[Record], server: str, timestamp: int, version: str
) -> str:
    root = cjson.JObject(
        [
            ("timestamp", cjson.JNumber(timestamp)),
            ("pbs_version", version),
            ("pbs_server", server),
        ]
    )
    records = list(items)
    if records:  # the key is absent when nothing matched
        objects = cjson.JObject((ident, json_object(attrs)) for ident, attrs in records)
        root.append((key, objects))
    return cjson.dumps(root) + "\n"


def json_full(jobs: Iterable[Record], server: str, timestamp: int, version: str) -> str:
    """`qstat -f -F json`; no "Jobs" key when there are no jobs."""
    return _json_document("Jobs", jobs, server, timestamp, version)


def json_queues(queues: Iterable[Record], server: str, timestamp: int, version: str) -> str:
    """`qstat -Q -f -F json`."""
    return _json_document("Queue", queues, server, timestamp, version)


def json_server(name: str, attrs: Attributes, server: str, timestamp: int, version: str) -> str:
    """`qstat -B -f -F json`."""
    return _json_document("Server", [(name, attrs)], server, timestamp, version)


# ---------------------------------------------------------------------------
# Default job table


def _get(attrs: Attributes, key: str) -> str | None:
    value = attrs.get(key)
    if value is None:
        prefix, dot, res = key.partition(".")
        nested = attrs.get(prefix) if dot else None
        if isinstance(nested, Mapping):
            value = nested.get(res)
    return None if value is None else _text(value)


# The attributes the default table prints, in the order of a table row after the id
# (the columns of GET /v1/jobs?view=table).
TABLE_COLUMNS = ("Job_Name", "Job_Owner", "resources_used.cput", "job_state", "queue")
TableRow: TypeAlias = Sequence[Any]  # (id, *TABLE_COLUMNS): text, or None when not set


def table_row(jid: str, attrs: Attributes) -> list[str | None]:
    """A job's (id, *TABLE_COLUMNS) row for default_table_rows."""
    return [jid, *(_get(attrs, key) for key in TABLE_COLUMNS)]


def default_table(
    jobs: Sequence[Record],
    wide: bool = False,
    comment: str | None = None,
    long_ids: bool = False,
) -> str:
    """`qstat` with no options (or -x/-t/-J): header and one row per job; "" if none.

    `comment` is the server's comment, printed first; `long_ids` is the 22-wide id
    column used when max_job_sequence_id > 9,999,999.
    """
    rows = [table_row(jid, attrs) for jid, attrs in jobs]
    return default_table_rows(rows, wide, comment, long_ids)


def default_table_rows(
    rows: Sequence[TableRow],
    wide: bool = False,
    comment: str | None = None,
    long_ids: bool = False,
) -> str:
    """default_table of (id, *TABLE_COLUMNS) rows, values as text or None (a job
    listing of 100 000 is printed straight from the JSON the dispatcher sends)."""
    if not rows:
        return ""
    out: list[str] = []
    if comment is not None:
        out.append(show_nonprint(comment) + "\n")
    if wide:
        out.append(
            "Job id                         Name            User             Time Use S Queue\n"
            "-----------------------------  --------------- ---------------  -------- - "
            "---------------\n"
        )
        id_w, name_w, user_w, queue_w = 30, 15, 15, 15
    elif long_ids:
        out.append(
            "Job id                 Name             User              Time Use S Queue\n"
            "---------------------  ---------------- ----------------  -------- - -----\n"
        )
        id_w, name_w, user_w, queue_w = 22, 16, 16, 16
    else:
        out.append(
            "Job id            Name             User              Time Use S Queue\n"
            "----------------  ---------------- ----------------  -------- - -----\n"
        )
        id_w, name_w, user_w, queue_w = 17, 16, 16, 16
    line = f"%-{id_w}s %-{name_w}s %-{user_w}s  %8s %1s %-{queue_w}s\n"
    add = out.append
    for jid, name, owner, used, state, queue in rows:
        if jid.count(".") > 1:
            jid = jid[: jid.index(".", jid.index(".") + 1)]  # cut at the second dot
        if len(jid) > id_w:
            jid = jid[: id_w - 1] + TRUNC
        if name is None:
            name = ""
        elif len(name) >= name_w:  # >= : a name of exactly the width is cut too
            name = name[: name_w - 1] + TRUNC
        owner = (owner or "").partition("@")[0]
        if len(owner) > user_w:
            owner = owner[: user_w - 1] + TRUNC
        if used is None:
            used = "0"
        elif len(used) > 8:
            used = used[:7] + TRUNC
        if state is None:
            state = ""
        elif len(state) > 1:
            state = TRUNC
        queue = (queue or "").partition("@")[0]
        if len(queue) > queue_w:
            queue = queue[: queue_w - 1] + TRUNC
        add(line % (jid, name, owner, used, state, queue))
    return "".join(out)


# ---------------------------------------------------------------------------
# Alternate job table (-a -n -s -1 -u -H -i -r -G -M)

_SUFFIX_LETTERS = " kmgtp?"


def cnv_size(value: str, unit: str | None = None) -> str:
    """A size as the alternate table's Memory column shows it (qstat.c cnv_size).

    unit: None (keep the magnitude), "mw" (-M) or "gb" (-G).
    """
    m = re.match(r"\s*[+-]?\d+", value)
    nval = int(m.group()) if m else 0
    if nval < 0:
        nval %= 2**64
    rest = value[m.end() :] if m else value
    c0 = rest[:1]
    mag_in = {"k": 1, "m": 2, "g": 3, "t": 4}.get(c0, 0)
    suffix2 = "b"
    if c0 == "w" or (c0 and rest[1:2] == "w"):
        nval <<= 3
        suffix2 = "w"
    if unit in ("mb", "mw"):
        out = 2
        suffix2 = "w" if unit == "mw" else "b"
    elif unit == "gb":
        out = 3
        suffix2 = "b"
    else:
        out = mag_in
    sft = 10 * (mag_in - out)
    if sft < 0:
        nval = (nval + (1 << -sft) - 1) >> -sft
    elif sft > 0:
        nval <<= sft
    if suffix2 == "w":
        nval = (nval + 7) >> 3
    while nval > 9999:
        nval = (nval + 1023) >> 10
        out += 1
    return f"{nval}{_SUFFIX_LETTERS[min(out, 6)]}{suffix2}"


def _short_host(token: str) -> str:
    pieces = [p for p in token.split("/") if p]
    subtoken = pieces[0] if pieces else ""
    chunk = token[len(subtoken) :]
    if _is_ipv4(subtoken):
        return subtoken + chunk
    return next((p for p in subtoken.split(".") if p), "") + chunk


_IPV4_PART = re.compile(r"0|[1-9][0-9]{0,2}")


def _is_ipv4(text: str) -> bool:
    """inet_pton(AF_INET): four decimal parts 0-255, no leading zeros."""
    parts = text.split(".")
    return len(parts) == 4 and all(
        _IPV4_PART.fullmatch(p) is not None and int(p) <= 255 for p in parts
    )


def nodes_text(nodes: str, one_line: bool = False) -> str:
    """exec_host with domains stripped, lines broken at `+` (qstat.c prt_nodes)."""
    if not nodes:
        return ""
    out: list[str] = []
    line = ""
    for token in (t for t in nodes.split("+") if t):
        name = _short_host(token)
        if len(line) + len(name) < CHAR_LINE_LIMIT - 1:
            line += name + "+"
        else:
            out.append(show_nonprint(line) if one_line else f"   {show_nonprint(line)}\n")
            line = name + "+"
    if line:
        line = line[:-1]
        out.append(f"{show_nonprint(line)}\n" if one_line else f"   {show_nonprint(line)}\n")
    elif one_line:
        out.append("\n")
    return "".join(out)


def _alt_comment(comment: str, wide: bool) -> str:
    if len(comment) > 74:  # COMMENTLENSCOPE_SHORT
        if not wide:
            return comment[:70] + "..."  # pbs_strncpy(buf, c, 71) keeps 70
        if len(comment) > 114:  # COMMENTLENSCOPE_WIDE
            return comment[:110] + "..."
    return comment


def alternate(
    jobs: Sequence[Record],
    server: str,
    comment: str | None = None,
    show_nodes: bool = False,
    show_comment: bool = False,
    one_line: bool = False,
    wide: bool = False,
    long_ids: bool = False,
    size_unit: str | None = None,
) -> str:
    """`qstat -a` and friends (-n nodes, -s comment, -1 same line, -w wide); "" if no
    jobs. `comment` is the server's comment; size_unit is None, "mw" (-M) or "gb" (-G).
    """
    if one_line and not (show_nodes or show_comment):
        raise ValueError("-1 is legal only with -n or -s")
    if not jobs:
        return ""
    out = [f"\n{server}: {show_nonprint(comment or '')}"]
    if wide:
        widths = (30, 15, 15, 15, 8, 4, 5)
        names = ("Job ID", "Username", "Queue", "Jobname", "SessID", "NDS", "TSK")
        out.append("\n" + " " * (sum(widths) + len(widths)) + "Req'd  Req'd   Elap\n")
        out.append(" ".join(f"{n:<{w}.{w}}" for n, w in zip(names, widths, strict=True)))
        out.append(" Memory Time  S Time\n")
        out.append(" ".join("-" * w for w in widths) + " ------ ----- - -----\n")
    elif long_ids:
        out.append("\n" + " " * 65 + "Req'd  Req'd   Elap\n")
        out.append(
            "Job ID               Username Queue    Jobname    SessID NDS TSK Memory Time  S Time\n"
            "-------------------- -------- -------- ---------- ------ --- --- ------ ----- - "
            "-----\n"
        )
    else:
        out.append("\n" + " " * 60 + "Req'd  Req'd   Elap\n")
        out.append(
            "Job ID          Username Queue    Jobname    SessID NDS TSK Memory Time  S Time\n"
            "--------------- -------- -------- ---------- ------ --- --- ------ ----- - -----\n"
        )
    for jid, attrs in jobs:
        out.append(_alt_row(jid, attrs, wide, long_ids, size_unit))
        out.append(" " if one_line else "\n")
        if show_nodes:
            out.append(nodes_text(_get(attrs, "exec_host") or BLANK, one_line))
        if show_comment:
            text = _get(attrs, "comment")
            text = BLANK if text is None else _alt_comment(text, wide)
            if text:
                out.append(f"   {show_nonprint(text)}\n")
    return "".join(out)


def _alt_row(jid: str, attrs: Attributes, wide: bool, long_ids: bool, size_unit: str | None) -> str:
    def field(key: str, width: int, wide_width: int) -> str:
        value = _get(attrs, key)
        return BLANK if value is None else _trunc(value, wide_width if wide else width)

    user_raw = _get(attrs, "Job_Owner")
    user = BLANK if user_raw is None else _trunc(user_raw.split("@", 1)[0], 15 if wide else 8)
    queue = field("queue", 8, 15)
    jobn = field("Job_Name", 10, 15)
    sess = field("session_id", 6, 8)
    nodect = field("Resource_List.nodect", 3, 4)
    ncpus = _get(attrs, "Resource_List.ncpus")
    tasks = BLANK if ncpus in (None, "0") else _trunc(ncpus or "", 5 if wide else 3)
    mem = _get(attrs, "Resource_List.mem")
    rqmem = BLANK if mem is None else cnv_size(mem, size_unit)
    usecput = _get(attrs, "Resource_List.cput") is not None
    kind = "cput" if usecput else "walltime"
    req = _get(attrs, f"Resource_List.{kind}") or BLANK
    elap = _get(attrs, f"resources_used.{kind}") or BLANK
    state = _get(attrs, "job_state") or BLANK
    if wide:
        ident = _trunc(jid, 30)
        return (
            f"{ident:<30.30} {user:<15.15} {queue:<15.15} {jobn:<15.15} "
            f"{sess:>8.8} {nodect:>4.4} {tasks:>5.5} "
            f"{rqmem:>6.6} {req:>5.5} {state:>1} {elap:>5.5}"
        )
    id_w = 20 if long_ids else 15
    ident = _trunc(jid, id_w)
    return (
        f"{ident:<{id_w}.{id_w}} {user:<8.8} {queue:<8.8} {jobn:<10.10} "
        f"{sess:>6.6} {nodect:>3.3} {tasks:>3.3} "
        f"{rqmem:>6.6} {req:>5.5} {state:>1.1} {elap:>5.5}"
    )


# ---------------------------------------------------------------------------
# Queues (-Q, -q) and servers (-B)


def _istrue(value: str | None) -> bool:
    return value in ("TRUE", "True", "true", "1")


def _state_counts(value: str, width: int = 5) -> dict[str, str]:
    """Parse `Transit:0 Queued:1 ...` as qstat.c states() does (values cut to width)."""
    known = ("Queued", "Running", "Held", "Waiting", "Transit", "Exiting")
    found: dict[str, str] = {}
    s = value
    i = 0
    while i < len(s) and s[i].isspace():
        i += 1
    while i < len(s):
        colon = s.find(":", i)
        if colon < 0:
            break
        name = s[i:colon]
        i = colon + 1
        end = s.find(" ", i)
        end = len(s) if end < 0 else end
        if name in known:
            found[name] = _trunc(s[i:end], width)
            i = end + 1 if end < len(s) else end
        else:
            i = end  # qstat.c does not skip the space after an unknown name
    return found


def queue_table(queues: Sequence[Record]) -> str:
    """`qstat -Q`; "" when there are no queues."""
    if not queues:
        return ""
    out = [
        "Queue              Max   Tot Ena Str   Que   Run   Hld   Wat   Trn   Ext Type\n"
        "---------------- ----- ----- --- --- ----- ----- ----- ----- ----- ----- ----\n"
    ]
    for name, attrs in queues:
        counts = _state_counts(_get(attrs, "state_count") or "")
        qtype = _get(attrs, "queue_type")
        row = (
            _trunc(name, 16),
            _trunc(_get(attrs, "max_running") or "0", 5),
            _trunc(_get(attrs, "total_jobs") or "0", 5),
            "yes" if _istrue(_get(attrs, "enabled")) else "no",
            "yes" if _istrue(_get(attrs, "started")) else "no",
            *(counts.get(k, "0") for k in ("Queued", "Running", "Held", "Waiting")),
            *(counts.get(k, "0") for k in ("Transit", "Exiting")),
            "not defined" if qtype is None else _trunc(qtype, 4),
        )
        out.append(
            "{:<16} {:>5} {:>5} {:>3} {:>3} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:<4}\n".format(
                *row
            )
        )
    return "".join(out)


def _atoi(text: str) -> int:
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


def _ct(value: str) -> tuple[int, int]:
    """(queued + held + waiting, running) from state_count: the numbers after the 2nd to
    5th colons (qstat.c get_ct)."""
    nums = [_atoi(part) for part in value.split(":")[1:6]]
    nums += [0] * (5 - len(nums))
    return nums[1] + nums[2] + nums[3], nums[4]


def queue_summary(server: str, queues: Sequence[Record], size_unit: str | None = None) -> str:
    """`qstat -q`; "" when there are no queues."""
    if not queues:
        return ""
    out = [
        f"\nserver: {server}\n\n"
        "Queue            Memory CPU Time Walltime Node   Run   Que   Lm  State\n"
        "---------------- ------ -------- -------- ---- ----- ----- ----  -----\n"
    ]
    tot_run = tot_que = 0
    for name, attrs in queues:
        mem = _get(attrs, "resources_max.mem")
        rmem = "--  " if mem is None else cnv_size(mem, size_unit)
        cput = _get(attrs, "resources_max.cput") or "  --   "
        wall = _get(attrs, "resources_max.walltime") or "  --   "
        nodect = _get(attrs, "resources_max.nodect") or "-- "
        jmax = _get(attrs, "max_running") or "  --   "
        que, run = _ct(_get(attrs, "state_count") or "")
        tot_que += que
        tot_run += run
        enabled = "E" if (_get(attrs, "enabled") or "").startswith("T") else "D"
        started = "R" if (_get(attrs, "started") or "").startswith("T") else "S"
        out.append(
            f"{name:<16.16} {rmem:>6.6} {cput:>8.8} {wall:>8.8} {nodect:>4.4} "
            f"{run:>5d} {que:>5d} {jmax:>4.4}   {enabled} {started}\n"
        )
    out.append(" " * 47 + "----- -----\n")
    out.append(" " * 47 + f"{tot_run:>5d} {tot_que:>5d}\n")
    return "".join(out)


def server_table(servers: Sequence[Record]) -> str:
    """`qstat -B`; "" when there is no server."""
    if not servers:
        return ""
    out = [
        "Server             Max   Tot   Que   Run   Hld   Wat   Trn   Ext Status\n"
        "---------------- ----- ----- ----- ----- ----- ----- ----- ----- -----------\n"
    ]
    for name, attrs in servers:
        counts = _state_counts(_get(attrs, "state_count") or "")
        row = (
            _trunc(name, 16),
            _trunc(_get(attrs, "max_running") or "0", 5),
            _trunc(_get(attrs, "total_jobs") or "0", 5),
            *(counts.get(k, "0") for k in ("Queued", "Running", "Held", "Waiting")),
            *(counts.get(k, "0") for k in ("Transit", "Exiting")),
            _trunc(_get(attrs, "server_state") or "", 10),
        )
        out.append("{:<16} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:<10}\n".format(*row))
    return "".join(out)
