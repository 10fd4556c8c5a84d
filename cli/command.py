"""How every command reports an error (pkbs/errors.py) and exits: PBS's way, the line
`<command>: <message>` on stderr and the status the error names.

Standard library only and cheap to import: every q-command starts here. `pkbs` (click)
uses `report` through its group class (cli/admin.py).
"""

from __future__ import annotations

import sys

from pkbs.errors import PkbsError, UsageError

TYPE_CHECKING = False  # typing is not imported at run time (qsub's start)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable


def report(command: str, error: PkbsError, usage: str = "", job_id: str | None = None) -> int:
    """Print `error` as `command` reports it, `<command>: <message> [<job id>]`, where
    `job_id` (the job acted on) is named if the error names none; then `usage` after a
    UsageError that asks for it (a UsageError without a message prints only that).
    Returns the status to exit with."""
    text = f"{error.message} {job_id}" if job_id and not error.job_id else str(error)
    if text:
        sys.stderr.write(f"{command}: {text}\n")
    if usage and isinstance(error, UsageError) and error.show_usage:
        sys.stderr.write(usage)
    return error.exit_status


def run(
    command: str,
    body: Callable[[list[str]], int | None],
    argv: list[str] | None,
    usage: str = "",
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
        status = report(command, error, usage)
    if status:
        sys.exit(status)


def each_job(command: str, job_ids: Iterable[str], act: Callable[[str], object]) -> int:
    """`act` on each job in turn; an error is reported for its job and the next one is
    acted on. The status of the last error, else 0 (PBS's qdel, qhold... exit so)."""
    status = 0
    for job_id in job_ids:
        try:
            act(job_id)
        except PkbsError as error:
            status = report(command, error, job_id=job_id)
    return status
