"""qdel, qhold, qrls, qsig: act on jobs by id. Silent on success; for each failure
`<cmd>: <message> <id>` on stderr, and the last PBS error as the exit status."""

from __future__ import annotations

import getopt
import urllib.parse
from typing import Any

from pkbs.errors import UsageError

from .client import Client
from .command import each_job, run


def _parse(args: list[str], optstring: str) -> tuple[dict[str, str], list[str]]:
    try:
        pairs, ids = getopt.getopt(args, optstring)
    except getopt.GetoptError as exc:
        raise UsageError(exc.msg) from None
    if not ids:
        raise UsageError()
    return {flag[1]: value for flag, value in pairs}, ids


def _each(
    command: str,
    ids: list[str],
    method: str,
    suffix: str = "",
    body: Any = None,
    query: dict[str, str] | None = None,
) -> int:
    client = Client()

    def act(job_id: str) -> None:
        client.request(method, "/jobs/" + urllib.parse.quote(job_id, safe="") + suffix, body, query)

    return each_job(command, ids, act)


QDEL_USAGE = "usage: qdel [-W force|suppress_email=X] [-x] job_identifier...\n"
QHOLD_USAGE = "usage: qhold [-h hold_list] job_identifier ...\n"
QRLS_USAGE = "usage: qrls [-h hold_list] job_identifier ...\n"
QSIG_USAGE = "usage: qsig [-s signal] job_identifier...\n"
QRERUN_USAGE = "usage: qrerun [-W force] job_identifier...\n"


def qdel(argv: list[str] | None = None) -> None:
    run("qdel", _qdel, argv, QDEL_USAGE)


def qhold(argv: list[str] | None = None) -> None:
    run("qhold", _qhold, argv, QHOLD_USAGE)


def qrls(argv: list[str] | None = None) -> None:
    run("qrls", _qrls, argv, QRLS_USAGE)


def qsig(argv: list[str] | None = None) -> None:
    run("qsig", _qsig, argv, QSIG_USAGE)


def qrerun(argv: list[str] | None = None) -> None:
    run("qrerun", _qrerun, argv, QRERUN_USAGE)


def _qdel(args: list[str]) -> int:
    opts, ids = _parse(args, "W:x")
    query = {}
    if opts.get("W") == "force":
        query["force"] = "true"
    if "x" in opts:
        query["purge"] = "true"
    return _each("qdel", ids, "DELETE", query=query)


def _qhold(args: list[str]) -> int:
    opts, ids = _parse(args, "h:")
    return _each("qhold", ids, "POST", "/hold", {"types": _hold_types(opts)})


def _qrls(args: list[str]) -> int:
    opts, ids = _parse(args, "h:")
    return _each("qrls", ids, "POST", "/release", {"types": _hold_types(opts)})


def _qsig(args: list[str]) -> int:
    opts, ids = _parse(args, "s:")
    return _each("qsig", ids, "POST", "/signal", {"signal": opts.get("s", "SIGTERM")})


def _qrerun(args: list[str]) -> int:
    _, ids = _parse(args, "W:")
    return _each("qrerun", ids, "POST", "/rerun")


def _hold_types(opts: dict[str, str]) -> str:
    types = opts.get("h", "u")
    if types == "n":
        types = "uos"
    if not types or set(types) - set("uos"):
        raise UsageError("illegal -h value")
    return types
