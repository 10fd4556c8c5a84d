"""qdel, qhold, qrls, qsig: act on jobs by id. Silent on success; for each failure
`<cmd>: <message> <id>` on stderr, and the last PBS error as the exit status."""

from __future__ import annotations

import urllib.parse
from typing import Any

from pkbs.errors import UsageError

from .client import Client
from .command import each_job, options, run


def _parse(args: list[str], optstring: str) -> tuple[dict[str, str], list[str]]:
    pairs, ids = options(args, optstring)
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


# PBS's usage texts (src/cmds/q*.c), printed after a usage error.
QDEL_USAGE = (
    "usage:\n\tqdel [-W force|suppress_email=X] [-x] job_identifier...\n\tqdel --version\n"
)
QHOLD_USAGE = "usage: qhold [-h hold_list] job_identifier...\n       qhold --version\n"
QRLS_USAGE = "usage: qrls [-h hold_list] job_identifier...\n       qrls --version\n"
QSIG_USAGE = "usage: qsig [-s signal] job_identifier...\n       qsig --version\n"
QRERUN_USAGE = "usage: qrerun [-W force] job_identifier...\n       qrerun --version\n"


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
    if "W" in opts and not _qdel_w_value(opts["W"]):
        raise UsageError("illegal -W value")
    query = {}
    if opts.get("W") == "force":
        query["force"] = "true"
    if "x" in opts:
        query["purge"] = "true"
    return _each("qdel", ids, "DELETE", query=query)


def _qdel_w_value(value: str) -> bool:
    """What qdel's -W takes: force, suppress_email=N, or a number (a delay PBS ignores)."""
    key, equals, number = value.partition("=")
    return value == "force" or value.isdigit() or (key == "suppress_email" and bool(equals))


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
    opts, ids = _parse(args, "W:")
    if opts.get("W", "force") != "force":
        raise UsageError()  # PBS's qrerun prints only its usage
    return _each("qrerun", ids, "POST", "/rerun")


def _hold_types(opts: dict[str, str]) -> str:
    types = opts.get("h", "u")
    if types == "n":
        types = "uos"
    if not types or set(types) - set("uos"):
        raise UsageError("illegal -h value")
    return types
