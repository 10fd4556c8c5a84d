"""qalter: change the attributes of queued jobs (a running job: only its time limits).
Takes qsub's options."""

from __future__ import annotations

import urllib.parse
from typing import Any

from pkbs.errors import PkbsError, UsageError
from pkbs.pbsvalues import check_resources
from pkbs.qsuboptions import QSUB_OPTSTRING, QsubOptions, parse_qsub_args

from .client import Client
from .command import each_job, options, report, run
from .qsub import attributes_of

# PBS's (src/cmds/qalter.c).
USAGE = """usage: qalter [-a date_time] [-A account_string] [-c interval] [-e path]
\t[-h hold_list] [-j y|n] [-k keep] [-l resource_list]
\t[-m mail_options] [-M user_list] [-N jobname] [-o path] [-p priority]
\t[-R o|e|oe] [-r y|n] [-S path] [-u user_list] [-W dependency_list]
\t[-P project_name] job_identifier...
       qalter --version
"""


def _changes(given: QsubOptions) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": given.name,
        "resources": dict(given.resources) or None,
        "exec_time": given.exec_time,
        "rerunnable": given.rerunnable,
        "output_path": given.output_path,
        "error_path": given.error_path,
        "join": given.join,
        "keep": given.keep,
        "shell": given.shell,
        "attributes": attributes_of(given) or None,
        "depend": given.depend,
    }
    return {k: v for k, v in body.items() if v is not None}


def main(argv: list[str] | None = None) -> None:
    run("qalter", _alter, argv, USAGE)


def _alter(args: list[str]) -> int:
    _, ids = options(args, QSUB_OPTSTRING)
    try:
        given, _ = parse_qsub_args(args[: len(args) - len(ids)])
    except UsageError as exc:
        exc.show_usage = True  # qalter shows its usage after every usage error
        raise
    if not ids:
        raise UsageError()
    try:
        check_resources(given.resources)
    except PkbsError as error:  # PBS's qalter names the job and stops
        return report("qalter", error, job_id=ids[0])
    body = _changes(given)
    client = Client()

    def alter(job_id: str) -> None:
        path = "/jobs/" + urllib.parse.quote(job_id, safe="")
        if body:
            client.request("PATCH", path, body)
        if given.hold:
            client.request("POST", path + "/hold", {"types": "u"})

    return each_job("qalter", ids, alter)
