"""The init container of a job's pod: `python -m pkbs.worker.podinit JOB_DIR CONTROL_DIR`.

Fetches the job's payload from the dispatcher (`GET /v1/jobs/{id}/payload`, with the
job's own job-scoped token from PKBS_TOKEN, which only this container is given) and
lays it out in the job directory as the worker would: a zip unpacked by
`pkbs.payload.safe_unpack` (names, symlinks, sizes and ratios checked), a single file
written executable. Then the node file (PBS_NODEFILE) and the snapshot the results
are measured against, in the control directory.

Exit 0; EXIT_PAYLOAD_REFUSED when the payload cannot be laid out (the job cannot
run); EXIT_PAYLOAD_NOT_FETCHED when the dispatcher would not give it (the job is tried
again). The reason goes to the container's termination message.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx

from pkbs.constants import API_PREFIX, ENTRYPOINT_HEADER, PAYLOAD_FORMAT_HEADER
from pkbs.errors import InvalidPayload
from pkbs.payload import safe_unpack, snapshot

from .podfiles import BEFORE, EXIT_PAYLOAD_NOT_FETCHED, EXIT_PAYLOAD_REFUSED, NODEFILE

FETCH_SECONDS = 120.0  # how long an unreachable or busy dispatcher is tried
TERMINATION_LOG = "/dev/termination-log"


class NotFetched(Exception):
    """The dispatcher did not give the payload; says why."""


def payload_url(endpoint: str, job_id: str) -> str:
    return f"{endpoint.rstrip('/')}{API_PREFIX}/jobs/{quote(job_id, safe='')}/payload"


def fetch(endpoint: str, job_id: str, token: str,
          patience: float = FETCH_SECONDS) -> tuple[bytes, str, str]:
    """(payload, format, entry point) of a running job. Connection failures and 5xx
    answers are tried again with backoff for `patience` seconds; a refusal is final."""
    deadline = time.monotonic() + patience
    pause = 0.5
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=30.0) as client:
        while True:
            try:
                response = client.get(payload_url(endpoint, job_id), headers=headers)
            except httpx.TransportError as exc:
                why = f"dispatcher at {endpoint} unreachable: {exc or type(exc).__name__}"
            else:
                if response.status_code == 200:
                    return (response.content,
                            response.headers.get(PAYLOAD_FORMAT_HEADER, "zip"),
                            response.headers.get(ENTRYPOINT_HEADER, ""))
                why = f"dispatcher answered {response.status_code}: {response.text.strip()}"
                if response.status_code < 500:
                    raise NotFetched(why)
            if time.monotonic() + pause > deadline:
                raise NotFetched(why)
            time.sleep(pause)
            pause = min(pause * 2, 10.0)


def lay_out(data: bytes, payload_format: str, entrypoint: str, job_dir: Path) -> None:
    """The payload in the job directory, as the worker lays it out (InvalidPayload
    when it cannot be)."""
    if payload_format == "zip":
        safe_unpack(data, job_dir)
        return
    if payload_format != "file" or not entrypoint or "/" in entrypoint or entrypoint in (
        ".", ".."
    ):
        raise InvalidPayload(f"payload format {payload_format!r} with entry point {entrypoint!r}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(job_dir / entrypoint, flags, 0o755)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def write_control_files(job_dir: Path, control_dir: Path, ncpus: int) -> None:
    """The node file (this pod's host name once per CPU) and the job directory's
    snapshot before the job runs."""
    nodefile = control_dir / NODEFILE
    nodefile.write_text(f"{socket.gethostname()}\n" * ncpus)
    nodefile.chmod(0o444)
    before = {rel: list(sig) for rel, sig in snapshot(job_dir).items()}
    (control_dir / BEFORE).write_text(json.dumps(before))


def fail(status: int, message: str) -> int:
    print(f"podinit: {message}", file=sys.stderr)
    try:
        with open(TERMINATION_LOG, "w") as fh:
            fh.write(message[:4000])
    except OSError:
        pass  # not in a pod
    return status


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        return fail(64, "usage: python -m pkbs.worker.podinit JOB_DIR CONTROL_DIR")
    job_dir, control_dir = Path(argv[0]), Path(argv[1])
    job_id = os.environ.get("PBS_JOBID", "")
    endpoint, token = os.environ.get("PKBS_ENDPOINT"), os.environ.get("PKBS_TOKEN")
    if not (job_id and endpoint and token):
        return fail(EXIT_PAYLOAD_NOT_FETCHED, "PBS_JOBID, PKBS_ENDPOINT or PKBS_TOKEN not set")
    try:
        data, payload_format, entrypoint = fetch(endpoint, job_id, token)
    except NotFetched as exc:
        return fail(EXIT_PAYLOAD_NOT_FETCHED, f"payload of {job_id} not fetched: {exc}")
    try:
        lay_out(data, payload_format, entrypoint, job_dir)
    except (InvalidPayload, OSError) as exc:
        return fail(EXIT_PAYLOAD_REFUSED, f"payload of {job_id} refused: {exc}")
    write_control_files(job_dir, control_dir, int(os.environ.get("NCPUS") or 1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
