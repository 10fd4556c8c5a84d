"""qdel, qhold, qrls, qsig: act on jobs by id. Silent on success; for each failure
`<cmd>: <message> <id>` on stderr, and the last PBS error as the exit status."""

from __future__ import annotations

import getopt
import sys
import urllib.parse
from typing import Any

from pkbs.errors import EXIT_USAGE, exit_code

from .client import ApiError, connect, version_asked


def _run(
    command: str, usage: str, optstring: str, argv: list[str] | None
) -> tuple[dict[str, str], list[str]]:
    args = sys.argv[1:] if argv is None else argv
    if version_asked(args):
        sys.exit(0)
    try:
        pairs, ids = getopt.getopt(args, optstring)
    except getopt.GetoptError as exc:
        sys.stderr.write(f"{command}: {exc.msg}\n{usage}")
        sys.exit(EXIT_USAGE)
    if not ids:
        sys.stderr.write(usage)
        sys.exit(EXIT_USAGE)
    return {flag[1]: value for flag, value in pairs}, ids


def _each(
    command: str,
    ids: list[str],
    method: str,
    suffix: str = "",
    body: Any = None,
    query: dict[str, str] | None = None,
) -> None:
    client = connect(command)
    status = 0
    for job_id in ids:
        path = "/jobs/" + urllib.parse.quote(job_id, safe="") + suffix
        try:
            client.request(method, path, body, query)
        except ApiError as err:
            sys.stderr.write(f"{command}: {err.message} {err.job_id or job_id}\n")
            status = exit_code(err.pbs_errno)
    sys.exit(status)


def qdel(argv: list[str] | None = None) -> None:
    usage = "usage: qdel [-W force|suppress_email=X] [-x] job_identifier...\n"
    opts, ids = _run("qdel", usage, "W:x", argv)
    query = {}
    if opts.get("W") == "force":
        query["force"] = "true"
    if "x" in opts:
        query["purge"] = "true"
    _each("qdel", ids, "DELETE", query=query)


def _hold_types(command: str, usage: str, opts: dict[str, str]) -> str:
    types = opts.get("h", "u")
    if types == "n":
        types = "uos"
    if not types or set(types) - set("uos"):
        sys.stderr.write(f"{command}: illegal -h value\n{usage}")
        sys.exit(EXIT_USAGE)
    return types


def qhold(argv: list[str] | None = None) -> None:
    usage = "usage: qhold [-h hold_list] job_identifier ...\n"
    opts, ids = _run("qhold", usage, "h:", argv)
    _each("qhold", ids, "POST", "/hold", {"types": _hold_types("qhold", usage, opts)})


def qrls(argv: list[str] | None = None) -> None:
    usage = "usage: qrls [-h hold_list] job_identifier ...\n"
    opts, ids = _run("qrls", usage, "h:", argv)
    _each("qrls", ids, "POST", "/release", {"types": _hold_types("qrls", usage, opts)})


def qsig(argv: list[str] | None = None) -> None:
    usage = "usage: qsig [-s signal] job_identifier...\n"
    opts, ids = _run("qsig", usage, "s:", argv)
    _each("qsig", ids, "POST", "/signal", {"signal": opts.get("s", "SIGTERM")})


def qrerun(argv: list[str] | None = None) -> None:
    usage = "usage: qrerun [-W force] job_identifier...\n"
    _, ids = _run("qrerun", usage, "W:", argv)
    _each("qrerun", ids, "POST", "/rerun")
