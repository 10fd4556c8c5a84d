"""`pkbs fetch JOB [DEST] [--force]`: a finished job's results, where PBS would put them.

- With DEST: every result file into DEST (its stdout/stderr by their file names).
- Without: stdout/stderr at their Output_Path / Error_Path when that is on this host,
  the other files into the submit directory when the job was submitted here, else
  into the current directory.
- An array: each finished subjob into `<DEST or .>/<subjob id>/`.
- A queued or running job has no results yet: said so, non-zero exit.
- Nothing is overwritten unless `--force`: every file is downloaded first, then an
  existing file that differs is a conflict; conflicts are listed and nothing is written.
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from pkbs.errors import BadState, InvalidPayload, UnknownJob, WouldOverwrite
from pkbs.pbsvalues import format_job_id, parse_array_range, parse_job_id
from pkbs.stdpaths import local_target, this_host

from .client import Client

FINISHED = ("F", "X")
STATE_NAMES = {"Q": "queued", "H": "held", "W": "waiting", "R": "running", "B": "begun",
               "E": "exiting", "S": "suspended"}


@dataclass(frozen=True)
class Download:
    job_id: str
    name: str  # among the job's result files
    size: int
    target: Path


def _quoted(job_id: str) -> str:
    return urllib.parse.quote(job_id, safe="")


def _attributes(client: Client, job_id: str) -> tuple[str, dict[str, Any]]:
    reply = client.request("GET", f"/jobs/{_quoted(job_id)}")
    job = reply["jobs"][0]
    return job["id"], job["attributes"]


def _not_finished(job_id: str, state: str) -> BadState:
    shown = STATE_NAMES.get(state, state)
    return BadState(f"{BadState.default_message} {job_id}: it is {shown} ({state}); "
                    "its results are stored when it ends")


def _inside(base: Path, name: str) -> Path:
    target = (base / name).resolve()
    if base.resolve() not in target.parents:
        raise InvalidPayload(f"refusing to write outside {base}: {name}")
    return target


def _plan_job(client: Client, job_id: str, attrs: dict[str, Any],
              dest: Path | None) -> list[Download]:
    listing = client.request("GET", f"/jobs/{_quoted(job_id)}/files")
    outputs: dict[str, str] = listing.get("outputs", {})
    hosts = this_host()
    workdir: str | None = (attrs.get("Variable_List") or {}).get("PBS_O_WORKDIR")
    base = dest
    if base is None:
        here = attrs.get("Submit_Host") in hosts and workdir and Path(workdir).is_dir()
        base = Path(workdir) if here and workdir else Path(".")
    plan = []
    for item in listing["files"]:
        name = item["name"]
        target = None
        if dest is None and name in outputs:
            target = local_target(outputs[name], name, hosts, workdir)
        plan.append(Download(job_id, name, int(item["size"]),
                             target or _inside(base, name)))
    return plan


def _plan_array(client: Client, array_id: str, attrs: dict[str, Any],
                dest: Path | None) -> list[Download]:
    """Every finished subjob's results into `<dest>/<subjob id>/`."""
    base = dest or Path(".")
    parsed = parse_job_id(array_id)
    plan: list[Download] = []
    waiting = []
    for index in parse_array_range(str(attrs["array_indices_submitted"])).indices():
        sub_id = format_job_id(parsed.number, parsed.server, index=index)
        try:
            sub_id, sub = _attributes(client, sub_id)
        except UnknownJob:
            waiting.append(sub_id)  # not started yet: no record
            continue
        if sub["job_state"] not in FINISHED:
            waiting.append(sub_id)
            continue
        plan += _plan_job(client, sub_id, sub, base / sub_id)
    if waiting:
        click.echo(f"pkbs fetch: {len(waiting)} subjobs not finished, not fetched: "
                   f"{' '.join(waiting)}", err=True)
    if not plan and waiting:
        raise BadState(f"{BadState.default_message} {array_id}: none of its subjobs "
                       "has finished yet")
    return plan


def fetch(job_id: str, dest: Path | None, force: bool) -> None:
    client = Client()
    job_id, attrs = _attributes(client, job_id)
    if attrs.get("array") == "True":
        plan = _plan_array(client, job_id, attrs, dest)
    elif attrs["job_state"] not in FINISHED:
        raise _not_finished(job_id, str(attrs["job_state"]))
    else:
        plan = _plan_job(client, job_id, attrs, dest)
    with tempfile.TemporaryDirectory(prefix="pkbs-fetch-") as staging:
        staged = [_download(client, item, Path(staging) / str(i)) for i, item in enumerate(plan)]
        conflicts = [item.target for item, path in zip(plan, staged, strict=True)
                     if item.target.exists()
                     and not (item.target.is_file() and filecmp.cmp(path, item.target, False))]
        if conflicts and not force:
            listed = "".join(f"\n  {path}" for path in conflicts)
            raise WouldOverwrite(f"refusing to overwrite {len(conflicts)} existing "
                                 f"file{'s' if len(conflicts) > 1 else ''} (--force "
                                 f"overwrites them):{listed}")
        for item, path in zip(plan, staged, strict=True):
            item.target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, item.target)
            click.echo(str(item.target))


def _download(client: Client, item: Download, path: Path) -> Path:
    remote = f"/jobs/{_quoted(item.job_id)}/files/{urllib.parse.quote(item.name)}"
    if item.size == 0:
        path.write_bytes(b"")
    elif item.size > 1024 * 1024:
        with click.progressbar(length=item.size, label=item.name, file=sys.stderr) as bar:
            client.download(remote, path, bar.update)
    else:
        client.download(remote, path, None)
    return path
