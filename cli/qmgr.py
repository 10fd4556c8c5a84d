"""qmgr: the administrator's command, as PBS's (`qmgr -c "set queue workq enabled =
false"`, or requests on stdin). Each request goes as typed to the dispatcher, which
parses and runs it (dispatcher/qmgrroutes.py) and answers what to print and the
status to exit with; quit, exit and help are answered here."""

from __future__ import annotations

import os
import sys

from pkbs.errors import exit_code
from pkbs.qmgrsyntax import LOCAL_OPERATIONS, operation_of, requests

from .client import Client
from .command import options, run

USAGE = "Usage: qmgr [-a] [-c command] [-e] [-n] [-z] [server...]\n       qmgr --version\n"
EXIT_USAGE = 1  # PBS's qmgr exits 1 after its usage
EXIT_ABORT_SYNTAX = 1  # -a: a request that does not parse
EXIT_ABORT_REFUSED = 2  # -a: a request the server refused
MAX_OPEN_SERVERS = 49  # what PBS's qmgr reports before reading stdin (NCONNECTS - 1)
HELP = """qmgr requests: operation object [name[,name...]] [attribute OP value[,...]]
  operations: create, delete, set, unset, list, print (any prefix: c, d, s, u, l, p),
              help, quit, exit
  objects:    server, queue (s, q)
  OP:         =  +=  -=
  examples:   list server
              print server
              create queue short queue_type = execution, enabled = true, started = true
              set queue short resources_max.walltime = 00:10:00
              set server default_queue = short
              delete queue short
"""


class _Session:
    def __init__(self, abort: bool, echo: bool, check_only: bool, quiet: bool) -> None:
        self.abort = abort
        self.echo = echo
        self.check_only = check_only
        self.quiet = quiet
        self.client: Client | None = None

    def one(self, request: str) -> int | None:
        """Run one request; its status (-1: nothing to run, as PBS's help and blank
        requests), or None after quit / exit."""
        if self.echo:
            print(request, flush=True)
        words = request.split()
        local = operation_of(words[0]) if words else None
        if not words or local in LOCAL_OPERATIONS:
            if local in ("quit", "exit"):
                return None
            if local in ("help", "?"):
                sys.stdout.write(HELP)
            return -1
        if self.client is None:
            self.client = Client()
        body: dict[str, object] = {"command": request, "check_only": self.check_only}
        if len(words) > 3 and words[1].lower() == "hook" and operation_of(words[0]) == "import":
            from pathlib import Path

            from pkbs.hookcommands import parse_hook_command, with_import_file

            body["content"] = with_import_file(parse_hook_command(request), Path.cwd()).content
        reply = self.client.request("POST", "/qmgr", body)
        sys.stdout.write(reply["output"])
        sys.stdout.flush()
        if reply["errors"] and not self.quiet:
            sys.stderr.write(reply["errors"])
            sys.stderr.flush()
        status = int(reply["status"])
        if status and self.abort:
            syntax = reply["errors"].startswith("qmgr: ") and "returned from server" not in (
                reply["errors"]
            )
            sys.exit(EXIT_ABORT_SYNTAX if syntax else EXIT_ABORT_REFUSED)
        return status


def _read_line(prompt: str) -> str | None:
    if os.isatty(0) and os.isatty(1):
        sys.stdout.write(prompt)
        sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
        if os.isatty(0) and os.isatty(1):
            sys.stdout.write("\n")
        return None
    return line.removesuffix("\n")


def _qmgr(args: list[str]) -> int:
    pairs, _servers = options(args, "ac:enz")
    given = dict(pairs)
    flags = {flag for flag, _ in pairs}
    session = _Session("-a" in flags, "-e" in flags, "-n" in flags, "-z" in flags)
    if "-c" in given:
        status = session.one(given["-c"])
        return exit_code(status or 0)
    print(f"Max open servers: {MAX_OPEN_SERVERS}", flush=True)
    status = 0
    for request in requests(_read_line):
        result = session.one(request)
        if result is None:
            return 0
        status = result
    return exit_code(status)


def main(argv: list[str] | None = None) -> None:
    run("qmgr", _qmgr, argv, USAGE, usage_status=EXIT_USAGE)


