"""qalter: change the attributes of queued jobs (a running job: only its time limits).
Takes qsub's options."""

from __future__ import annotations

import getopt
import sys
import urllib.parse
from typing import Any

from pkbs.errors import EXIT_USAGE, PkbsError, exit_code
from pkbs.pbsvalues import check_resources
from pkbs.qsuboptions import QSUB_OPTSTRING, QsubOptions, UsageError, parse_qsub_args

from .client import ApiError, connect
from .qsub import attributes_of

USAGE = """usage: qalter [-a date_time] [-A account_string] [-c interval] [-e path]
\t[-h hold_list] [-j oe|eo|n] [-k keep] [-l resource_list] [-m mail_options]
\t[-M user_list] [-N jobname] [-o path] [-p priority] [-P project] [-r y|n]
\t[-S path] [-u user_list] [-W otherattributes=value...] job_identifier...
"""


def _changes(options: QsubOptions) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": options.name,
        "resources": dict(options.resources) or None,
        "exec_time": options.exec_time,
        "rerunnable": options.rerunnable,
        "output_path": options.output_path,
        "error_path": options.error_path,
        "join": options.join,
        "keep": options.keep,
        "shell": options.shell,
        "attributes": attributes_of(options) or None,
        "depend": options.depend,
    }
    return {k: v for k, v in body.items() if v is not None}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        _, ids = getopt.getopt(args, QSUB_OPTSTRING)
        options, _ = parse_qsub_args(args[: len(args) - len(ids)])
        check_resources(options.resources)
    except (getopt.GetoptError, UsageError) as exc:
        sys.stderr.write(f"qalter: {getattr(exc, 'message', None) or exc}\n{USAGE}")
        sys.exit(EXIT_USAGE)
    except PkbsError as exc:
        sys.stderr.write(f"qalter: {exc.message}\n")
        sys.exit(exit_code(exc.pbs_errno))
    if not ids:
        sys.stderr.write(USAGE)
        sys.exit(EXIT_USAGE)
    body = _changes(options)
    client = connect("qalter")
    status = 0
    for job_id in ids:
        path = "/jobs/" + urllib.parse.quote(job_id, safe="")
        try:
            if body:
                client.request("PATCH", path, body)
            if options.hold:
                client.request("POST", path + "/hold", {"types": "u"})
        except ApiError as err:
            sys.stderr.write(f"qalter: {err.message} {err.job_id or job_id}\n")
            status = exit_code(err.pbs_errno)
    sys.exit(status)
