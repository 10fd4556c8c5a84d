"""How every command reports an error (pkbs/errors.py) and exits: PBS's way, the line
`<command>: <message>` on stderr and the status the error names. Also what every
q-command shares before that: its options read as glibc's getopt reads them (and
worded as it words a bad one), a job id told from what is not one.

Standard library only and cheap to import: every q-command starts here. `pkbs` (click)
uses `report` through its click classes (cli/group.py).
"""

from __future__ import annotations

import sys

from pkbs.errors import EXIT_USAGE, IllegalJobId, PkbsError, UsageError

TYPE_CHECKING = False  # typing is not imported at run time (qsub's start)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable


def report(
    command: str,
    error: PkbsError,
    usage: str = "",
    job_id: str | None = None,
    usage_status: int = EXIT_USAGE,
) -> int:
    """Print `error` as `command` reports it, `<command>: <message> [<job id>]`, where
    `job_id` (the job acted on) is named if the error names none and is one of a job;
    then `usage` after a UsageError that asks for it (a UsageError without a message
    prints only that). Returns the status to exit with (`usage_status` after a
    UsageError: 2, PBS's qmgr and pbsnodes 1)."""
    named = job_id and not error.job_id and error.names_job
    text = f"{error.message} {job_id}" if named else str(error)
    if text:
        sys.stderr.write(f"{command}: {text}\n")
    if isinstance(error, UsageError):
        if usage and error.show_usage:
            sys.stderr.write(usage)
        return usage_status
    return error.exit_status


def options(
    args: list[str], optstring: str, gnu: bool = False
) -> tuple[list[tuple[str, str]], list[str]]:
    """getopt's (flag, value) pairs and operands of `args` (`gnu`: options may follow
    operands, as glibc's getopt takes them). A bad option is a UsageError worded as
    glibc's getopt prints it for PBS's commands: `invalid option -- 'z'`, `option
    requires an argument -- 'W'`, `unrecognized option '--foo'`."""
    import getopt

    try:
        return (getopt.gnu_getopt if gnu else getopt.getopt)(args, optstring)
    except getopt.GetoptError as exc:
        if exc.msg.startswith("option --"):
            message = f"unrecognized option '--{exc.opt}'"
        elif exc.msg.endswith("requires argument"):
            message = f"option requires an argument -- '{exc.opt}'"
        else:
            message = f"invalid option -- '{exc.opt}'"
        raise UsageError(message) from None


def check_job_id(operand: str) -> None:
    """IllegalJobId unless `operand` starts as a job id does (digits, after blanks):
    what PBS's commands refuse before asking the server."""
    if not operand.lstrip()[:1].isdigit():
        raise IllegalJobId(operand)


def run(
    command: str,
    body: Callable[[list[str]], int | None],
    argv: list[str] | None,
    usage: str = "",
    usage_status: int = EXIT_USAGE,
) -> None:
    """Run `command`: `body` on its arguments (`argv`, else the process's), after
    answering `--version` as PBS's commands do. A PkbsError is reported (`report`); the
    process exits with its status, or with what `body` returns when that is not 0."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        from pkbs import __version__

        print(f"pbs_version = pkbs {__version__}")
        return
    try:
        status = body(args)
    except PkbsError as error:
        status = report(command, error, usage, usage_status=usage_status)
    if status:
        sys.exit(status)


def each_job(command: str, job_ids: Iterable[str], act: Callable[[str], object]) -> int:
    """`act` on each job in turn; an error is reported for its job and the next one is
    acted on, but for an error of the connection or the caller (not `names_job`):
    reported once, it ends the loop. An operand that is no job id is refused here.
    The status of the last error, else 0 (PBS's qdel, qhold... exit so)."""
    status = 0
    for job_id in job_ids:
        try:
            check_job_id(job_id)
            act(job_id)
        except PkbsError as error:
            status = report(command, error, job_id=job_id)
            if not error.names_job:
                break
    return status
