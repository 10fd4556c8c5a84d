"""pbsnodes: the live workers as PBS's nodes, in OpenPBS's formats.

`pbsnodes -a` (every node, its attributes), `pbsnodes host...` (those), `-S` one line
per node (`-j`: with its jobs and free/total resources; `-L`: values not cut).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping

from pkbs.errors import UnknownNode, UsageError

from .client import Client
from .command import options, run

USAGE = """usage:\tpbsnodes -a[S[j][L]]
\tpbsnodes -[S[j][L]] host host ...
\tpbsnodes --version
"""
EXIT_USAGE = 1  # PBS's pbsnodes exits 1 after its usage
EXIT_UNKNOWN_NODE = 1  # ... and after a node it does not know
Attributes = Mapping[str, object]
SUFFIXES = " kmgtp?"

SUMMARY_HEADER = (
    "vnode           state           OS       hardware host            queue        mem     "
    "ncpus   nmics   ngpus  comment\n"
    "--------------- --------------- -------- -------- --------------- ---------- -------- "
    "------- ------- ------- ---------\n"
)
JOBS_HEADER = (
    "                                                        mem       ncpus   nmics   ngpus\n"
    "vnode           state           njobs   run   susp      f/t        f/t     f/t     f/t   "
    "jobs\n"
    "--------------- --------------- ------ ----- ------ ------------ ------- ------- ------- "
    "-------\n"
)


def main(argv: list[str] | None = None) -> None:
    run("pbsnodes", _pbsnodes, argv, USAGE, usage_status=EXIT_USAGE)


def _pbsnodes(args: list[str]) -> int:
    pairs, hosts = options(args, "aSjLs:")
    flags = {flag[1] for flag, _ in pairs}
    if ("a" in flags) == bool(hosts) or (flags & {"j", "L"} and "S" not in flags):
        raise UsageError()
    reply = Client().request("GET", "/nodes")
    server: str = reply["server"]
    nodes = [(n["name"], n["attributes"]) for n in reply["nodes"]]
    status = 0
    if hosts:
        by_name = dict(nodes)
        chosen = []
        for host in hosts:
            if host in by_name:
                chosen.append((host, by_name[host]))
            else:
                # PBS's words for a host it cannot list (pbsnodes.c, LISTSP)
                sys.stderr.write(f"Node: {host},  Error: {UnknownNode.default_message}\n")
                status = EXIT_UNKNOWN_NODE
        nodes = chosen
    elif not nodes:
        sys.stderr.write("pbsnodes: No nodes found\n")
        return 0
    if "S" in flags:
        sys.stdout.write(summary(nodes, "j" in flags, "L" in flags, server))
    else:
        sys.stdout.write(full(nodes))
    return status


def full(nodes: Iterable[tuple[str, Attributes]]) -> str:
    """`pbsnodes -a`: each node's name, its attributes indented by five spaces, a blank
    line."""
    out = []
    for name, attrs in nodes:
        out.append(f"{name}\n")
        out += [f"     {key} = {value}\n" for key, value in attrs.items()]
        out.append("\n")
    return "".join(out)


def _kb_scaled(value: int, prefix: int) -> tuple[int, int]:
    """PBS's way of showing an amount in at most three digits: halving by 1024 (rounded
    as pbsnodes does), one suffix letter up each time."""
    while value > 999:
        value = ((value % 1024) + value) >> 10
        prefix += 1
    return value, prefix


def _size(text: object) -> tuple[int, int]:
    """`1024kb` -> (1024, 1): the number and the index of its unit in SUFFIXES."""
    raw = str(text).lower()
    digits = len(raw) - len(raw.lstrip("0123456789"))
    unit = raw[digits:digits + 1]
    return int(raw[:digits] or 0), SUFFIXES.find(unit) if unit and unit in "kmgt" else 0


def _memory(attrs: Attributes, jobs: bool) -> str:
    total, prefix = _size(attrs.get("resources_available.mem", "0kb"))
    if not jobs:
        total, prefix = _kb_scaled(total, prefix)
        return f"{total}{SUFFIXES[prefix]}b"
    assigned, assigned_prefix = _size(attrs.get("resources_assigned.mem", "0kb"))
    while assigned_prefix != prefix:
        if assigned_prefix < prefix:
            assigned = ((assigned % 1024) + assigned) >> 10
            assigned_prefix += 1
        else:
            assigned <<= 10
            assigned_prefix -= 1
    free, free_prefix = _kb_scaled(total - assigned, prefix)
    total, prefix = _kb_scaled(total, prefix)
    return f"{free}{SUFFIXES[free_prefix]}b/{total}{SUFFIXES[prefix]}b"


def _count(attrs: Attributes, name: str, jobs: bool) -> str:
    total = int(str(attrs.get(f"resources_available.{name}", 0)))
    if not jobs:
        return str(total)
    return f"{total - int(str(attrs.get(f'resources_assigned.{name}', 0)))}/{total}"


def _job_list(attrs: Attributes, server: str) -> list[str]:
    """Each job once, its id without the server when that is ours."""
    seen: list[str] = []
    for slot in str(attrs.get("jobs", "")).split(", "):
        job_id = slot.split("/", 1)[0]
        number, _, suffix = job_id.partition(".")
        if job_id and suffix == server:
            job_id = number
        if job_id and job_id not in seen:
            seen.append(job_id)
    return seen


def summary(
    nodes: Iterable[tuple[str, Attributes]], jobs: bool, long: bool, server: str
) -> str:
    """`pbsnodes -aS[j][L]`: one line per node, widths as OpenPBS's (cut unless -L)."""
    out = [JOBS_HEADER if jobs else SUMMARY_HEADER]

    def cell(value: object, width: int, left: bool = True) -> str:
        text = str(value) if long else str(value)[:width]
        return text.ljust(width) if left else text.rjust(width)

    for name, attrs in nodes:
        state = str(attrs.get("state", "--"))
        if not long:
            state = state.split(",", 1)[0]
        mem = _memory(attrs, jobs)
        ncpus, ngpus = _count(attrs, "ncpus", jobs), _count(attrs, "ngpus", jobs)
        nmics = "0/0" if jobs else "0"
        if jobs:
            listed = _job_list(attrs, server)
            fields = [
                cell(name, 15), cell(state, 15), f"{len(listed):>6}", f"{len(listed):>5}",
                f"{0:>6}", cell(mem, 12, False), cell(ncpus, 7, False), cell(nmics, 7, False),
                cell(ngpus, 7, False), ",".join(listed) or "--",
            ]
        else:
            host = attrs.get("resources_available.host", "--")
            fields = [
                cell(name, 15), cell(state, 15), cell("--", 8), cell("--", 8), cell(host, 15),
                cell("--", 10), cell(mem, 8, False), cell(ncpus, 7, False),
                cell(nmics, 7, False), cell(ngpus, 7, False), str(attrs.get("comment", "--")),
            ]
        out.append(" ".join(fields) + "\n")
    return "".join(out)
