"""qalter: change the attributes of queued jobs (a running job: only its time limits).
Takes qsub's options."""

from __future__ import annotations

import getopt
import urllib.parse
from typing import Any

from pkbs.errors import UsageError
from pkbs.pbsvalues import check_resources
from pkbs.qsuboptions import QSUB_OPTSTRING, QsubOptions, parse_qsub_args

from .client import Client
from .command import each_job, run
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
    run("qalter", _alter, argv, USAGE)


def _alter(args: list[str]) -> int:
    try:
        _, ids = getopt.getopt(args, QSUB_OPTSTRING)
        options, _ = parse_qsub_args(args[: len(args) - len(ids)])
    except getopt.GetoptError as exc:
        raise UsageError(exc.msg) from None
    except UsageError as exc:
        exc.show_usage = True  # qalter shows its usage after every usage error
        raise
    check_resources(options.resources)
    if not ids:
        raise UsageError()
    body = _changes(options)
    client = Client()

    def alter(job_id: str) -> None:
        path = "/jobs/" + urllib.parse.quote(job_id, safe="")
        if body:
            client.request("PATCH", path, body)
        if options.hold:
            client.request("POST", path + "/hold", {"types": "u"})

    return each_job("qalter", ids, alter)
