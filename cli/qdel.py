"""qdel: delete jobs. Silent on success; `qdel: <msg> <id>` and PBS's exit status otherwise."""

from __future__ import annotations

import getopt
import sys
import urllib.parse

from pkbs.errors import EXIT_USAGE, exit_code

from .client import ApiError, connect

USAGE = "usage: qdel [-W force|suppress_email=X] [-x] job_identifier...\n       qdel --version\n"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        opts, ids = getopt.getopt(args, "W:x", ["version"])
    except getopt.GetoptError:
        sys.stderr.write(USAGE)
        sys.exit(EXIT_USAGE)
    if any(o == "--version" for o, _ in opts):
        from pkbs import __version__

        print(f"pbs_version = pkbs {__version__}")
        return
    if not ids:
        sys.stderr.write(USAGE)
        sys.exit(EXIT_USAGE)
    query = {}
    for opt, value in opts:
        if opt == "-W" and value == "force":
            query["force"] = "true"
        elif opt == "-x":
            query["purge"] = "true"
    client = connect("qdel")
    status = 0
    for job_id in ids:
        try:
            client.request("DELETE", "/jobs/" + urllib.parse.quote(job_id, safe=""), query=query)
        except ApiError as err:
            sys.stderr.write(f"qdel: {err.message} {err.job_id or job_id}\n")
            status = exit_code(err.pbs_errno)
    sys.exit(status)
