"""`pkbs logs JOBID`: what a job has written to its stdout (or stderr) so far, and
with -f until it ends, then exiting with its Exit_status (dispatcher/outputroutes.py
serves it as server-sent events)."""

from __future__ import annotations

import sys
import urllib.parse
from collections.abc import Iterable, Iterator

import click

from pkbs import wirejson
from pkbs.errors import PBSE_SYSTEM, ServiceUnavailable, exit_code, from_reply

from .client import Client
from .group import Command


def sse_events(body: Iterable[bytes]) -> Iterator[tuple[str, str]]:
    """(event, data) of each server-sent event in `body` (comments skipped)."""
    buffer = b""
    for chunk in body:
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            event, data = "message", []
            for line in block.decode().split("\n"):
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
            if data:
                yield event, "\n".join(data)


@click.command(cls=Command)
@click.argument("job_id")
@click.option("-e", "stderr", is_flag=True, help="The job's stderr instead of its stdout.")
@click.option("-f", "--follow", is_flag=True,
              help="Keep going until the job ends, then exit with its Exit_status.")
@click.option("--tail", type=click.IntRange(0), default=None, metavar="N",
              help="Only the last N lines written so far.")
def logs(job_id: str, stderr: bool, follow: bool, tail: int | None) -> None:
    """Print what job JOB_ID has written to its stdout so far (of a finished job, its
    stored .o). Works for subjobs (`12[3]`)."""
    query: dict[str, object] = {"stream": "stderr" if stderr else "stdout"}
    if tail is not None:
        query["tail"] = tail
    if follow:
        query["follow"] = "true"
    path = f"/jobs/{urllib.parse.quote(job_id, safe='')}/output"
    out = sys.stdout.buffer
    for event, data in sse_events(Client().stream(path, query)):
        if event == "output":
            out.write(str(wirejson.loads(data)).encode())
            out.flush()
        elif event == "error":
            error = wirejson.loads(data)
            raise from_reply(int(error.get("pbs_errno") or PBSE_SYSTEM), error["message"],
                             None, 500)
        elif event == "end":
            status = wirejson.loads(data).get("Exit_status")
            sys.exit(exit_code(int(status)) if follow and status is not None else 0)
    if follow:
        raise ServiceUnavailable(f"the output of {job_id} was cut off before the job ended")
