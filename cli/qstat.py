"""qstat: show jobs, queues and the server in OpenPBS's formats.

Standard library only (formats.py and the stdlib HTTP client).
"""

from __future__ import annotations

import sys
import urllib.parse
from typing import Any

from pkbs.errors import FinishedJob, PkbsError, UnknownQueue, UsageError

from . import formats
from .client import Client
from .command import options, report, run

USAGE = """usage:
qstat [-f] [-F json|dsv] [-D delim] [-J] [-p] [-t] [-x] [-w]
\t[ job_identifier... | destination... ]
qstat [-a|-i|-r|-H|-T] [-J] [-t] [-u user] [-n] [-s] [-G|-M] [-1] [-w]
\t[ job_identifier... | destination... ]
qstat -Q [-f] [-F json|dsv] [-D delim] [-w] [ destination... ]
qstat -q [-G|-M] [ destination... ]
qstat -B [-f] [-F json|dsv] [-D delim] [-w] [ server_name... ]
qstat --version
"""
ALTERNATE_FLAGS = set("airHTnsGMu")
# The states -i and -r select (qstat.c: "EHQTW" not running, "RS" running or suspended);
# only one of -a -i -r -q -H may be given.
SELECTED_STATES = {"i": frozenset("EHQTW"), "r": frozenset("RS")}
EXCLUSIVE_FLAGS = set("airqH")


def _is_job_id(operand: str) -> bool:
    return operand[:1].isdigit()


def _print(text: str) -> None:
    sys.stdout.write(text)


def main(argv: list[str] | None = None) -> None:
    run("qstat", _qstat, argv, USAGE)


def _qstat(args: list[str]) -> int:
    pairs, operands = options(args, "1aBD:fF:GHiJMnpqQrsTtu:wxz", gnu=True)
    opts: dict[str, str] = {}
    for flag, value in pairs:
        opts[flag[1]] = value
    fmt = opts.get("F", "").lower()
    if fmt and fmt not in ("json", "dsv"):
        raise UsageError("invalid -F value")
    if "1" in opts and not ({"n", "s"} & opts.keys()):
        raise UsageError("conflicting options.")
    if len(EXCLUSIVE_FLAGS & opts.keys()) > 1:
        raise UsageError("conflicting options.")
    client = Client()
    if "B" in opts:
        _server(client, opts)
    elif "Q" in opts or "q" in opts:
        return _queues(client, opts, operands)
    else:
        return _jobs(client, opts, operands)
    return 0


def _jobs(client: Client, opts: dict[str, str], operands: list[str]) -> int:
    history = "x" in opts or "H" in opts
    status = 0
    records: list[formats.Record] = []  # attributes of each job (all but the default table)
    server = client.config.server
    timestamp = 0
    ids = [o for o in operands if _is_job_id(o)]
    arrays: set[str] = set()
    if "t" in opts:  # `qstat -t N[]` shows the array and its subjobs
        arrays = {o.split("[", 1)[0] for o in ids if o.split(".", 1)[0].endswith("[]")}
        ids = [o for o in ids if o.split("[", 1)[0] not in arrays or "[]" not in o]
    destinations = [o for o in operands if not _is_job_id(o)]
    query: dict[str, Any] = {
        "history": "true" if history else "false",
        "subjobs": "true" if "t" in opts else "false",
    }
    if "u" in opts:
        query["user"] = [u.split("@")[0] for u in opts["u"].split(",") if u]
    queues: set[str] = set()
    if destinations:
        info = client.request("GET", "/server")
        for destination in destinations:
            queue, _, host = destination.partition("@")
            if host and host != info["name"]:
                return report("qstat", UnknownQueue(f"Unknown queue destination {destination}"))
            if queue and queue not in info["queues"]:
                return report("qstat", UnknownQueue(job_id=queue))
            if queue:
                queues.add(queue)
    full = "f" in opts or bool(opts.get("F"))
    table = not full and not ALTERNATE_FLAGS & opts.keys()
    rows: list[formats.TableRow] = []  # the default table is printed from rows

    selected = next((SELECTED_STATES[flag] for flag in "ir" if flag in opts), None)

    def wanted(job_id: str, queue: Any, state: Any) -> bool:
        return not (
            (queues and queue not in queues)
            or ("H" in opts and state != "F")
            or (selected is not None and state not in selected)
            or ("J" in opts and "[" not in job_id)
            or (arrays and job_id.split("[", 1)[0] not in arrays)
        )

    if not ids or destinations or arrays:
        if not full:  # the tables need a few columns, which the job index serves
            query["view"] = "table" if table else "summary"
        payload = client.request("GET", "/jobs", query=query)
        server, timestamp = payload["server"], payload["timestamp"]
        if table:
            rows = _table_rows(payload)
            if queues or arrays or selected or "H" in opts or "J" in opts:
                rows = [row for row in rows if wanted(row[0], row[5], row[4])]
        else:
            listed = formats.jobs_from_wire(payload) if full else formats.jobs_from_table(payload)
            records = [(j, a) for j, a in listed if wanted(j, a.get("queue"), a.get("job_state"))]
    for job_id in ids:
        try:
            payload = client.request("GET", "/jobs/" + urllib.parse.quote(job_id, safe=""))
        except PkbsError as error:
            status = report("qstat", error)
            if not error.names_job:  # the connection's or the caller's: said once
                return status
            continue
        server, timestamp = payload["server"], payload["timestamp"]
        for found_id, attrs in formats.jobs_from_wire(payload):
            if attrs.get("job_state") == "F" and not history:
                # PBS's qstat names the job first here, and says what to do.
                finished = f"{found_id} {FinishedJob.default_message}, {FinishedJob.HISTORY_HINT}"
                status = report("qstat", FinishedJob(finished))
                continue
            if table:
                rows.append(formats.table_row(found_id, attrs))
            else:
                records.append((found_id, attrs))
    if table:
        _print(formats.default_table_rows(rows, "w" in opts))
    else:
        _print(_render_jobs(records, opts, server, timestamp))
    return status


def _table_rows(payload: dict[str, Any]) -> list[formats.TableRow]:
    """The rows of GET /v1/jobs?view=table as (id, *formats.TABLE_COLUMNS)."""
    rows: list[formats.TableRow] = payload.get("rows") or []
    columns = payload.get("columns") or []
    wanted = ["id", *formats.TABLE_COLUMNS]
    if columns != wanted:  # another order, or more columns: pick them by name
        at = [columns.index(name) if name in columns else None for name in wanted]
        rows = [[None if i is None else row[i] for i in at] for row in rows]
    return rows


def _render_jobs(
    records: list[formats.Record], opts: dict[str, str], server: str, timestamp: int
) -> str:
    wide = "w" in opts
    fmt = opts.get("F", "").lower()
    if "f" in opts or fmt:
        if fmt == "json":
            from pkbs import __version__

            return formats.json_full(records, server, timestamp, __version__)
        if fmt == "dsv":
            return formats.dsv_full(records, opts.get("D", "|"))
        return formats.full(records, wide)
    if ALTERNATE_FLAGS & opts.keys():
        if not records:
            return ""
        return formats.alternate(
            records,
            server,
            show_nodes="n" in opts,
            show_comment="s" in opts,
            one_line="1" in opts,
            wide=wide,
        )
    return formats.default_table(records, wide)


def _queues(client: Client, opts: dict[str, str], destinations: list[str]) -> int:
    """qstat -Q / -q: every queue, or those named (`workq`, `workq@server`, `@server`);
    `qstat: Unknown queue <name>` for each one the server lacks, as PBS's."""
    payload = client.request("GET", "/queues")
    queues = [(q["name"], q["attributes"]) for q in payload["queues"]]
    status = 0
    if destinations:
        by_name = dict(queues)
        chosen: list[tuple[str, Any]] = []
        for destination in destinations:
            name = destination.partition("@")[0]
            if not name:
                chosen += queues
            elif name in by_name:
                chosen.append((name, by_name[name]))
            else:
                status = report("qstat", UnknownQueue(job_id=name))
        queues = chosen
    fmt = opts.get("F", "").lower()
    if "q" in opts:
        _print(formats.queue_summary(payload["server"], queues))
    elif fmt == "json":
        from pkbs import __version__

        _print(formats.json_queues(queues, payload["server"], payload["timestamp"], __version__))
    elif fmt == "dsv":
        _print(formats.dsv_queues(queues, opts.get("D", "|")))
    elif "f" in opts:
        _print(formats.queue_full(queues, "w" in opts))
    else:
        _print(formats.queue_table(queues))
    return status


def _server(client: Client, opts: dict[str, str]) -> None:
    payload = client.request("GET", "/queues")
    name, attrs = payload["server"], payload["server_attributes"]
    fmt = opts.get("F", "").lower()
    if fmt == "json":
        from pkbs import __version__

        _print(formats.json_server(name, attrs, name, payload["timestamp"], __version__))
    elif fmt == "dsv":
        _print(formats.dsv_server(name, attrs, opts.get("D", "|")))
    elif "f" in opts:
        _print(formats.server_full(name, attrs, "w" in opts))
    else:
        _print(formats.server_table([(name, attrs)]))


if __name__ == "__main__":
    main()
