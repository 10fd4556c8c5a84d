"""Where PBS puts a job's stdout and stderr: its Output_Path and Error_Path
(`host:path`), and the file on this host each names, if any.

PBS's rules: by default `<submit dir>/<job name>.o<seq>` (`.e<seq>`); `-o path` that
file; `-o dir/` (or an existing directory) `<dir>/<job id>.OU` (`.ER`); `-j oe` / `-j
eo` one file, at the first one's path. A relative path is relative to the submit
directory. The worker of a local stack delivers them so (worker/delivery.py);
`pkbs fetch` with no destination does the same on the submit host (cli/admin.py).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Collection

    from pkbs.models import JobRecord


def std_path(record: JobRecord, letter: str) -> str:
    """Output_Path (`letter` "o") or Error_Path ("e") as qstat shows it."""
    spec = record.spec
    given = spec.output_path if letter == "o" else spec.error_path
    if given:
        # qsub prefixes a path without a host with the submit host.
        if ":" not in given.split("/", 1)[0]:
            return f"{spec.submit_host}:{given}"
        return given
    workdir = spec.variables.get("PBS_O_WORKDIR") or spec.variables.get("PBS_O_HOME")
    name = f"{spec.name}.{letter}{record.number}"
    if record.index is not None:
        name += f".{record.index}"
    elif record.is_array:
        name += ".^array_index^"  # OpenPBS shows the tag on the array itself
    if not workdir:
        return f"{spec.submit_host}:{name}"
    return f"{spec.submit_host}:{workdir.rstrip('/')}/{name}"


def std_outputs(record: JobRecord) -> list[tuple[str, str]]:
    """(name among the job's result files, Output_Path or Error_Path) of the stdout and
    stderr files a run stores: one of them with -j oe / eo."""
    out = (record.output_name, std_path(record, "o"))
    err = (record.error_name, std_path(record, "e"))
    return {"oe": [out], "eo": [err]}.get(record.spec.join, [out, err])


def local_target(
    path: str, name: str, hosts: Collection[str], workdir: str | None
) -> Path | None:
    """The file `path` (`host:path`) names on this host (`hosts`: its names), `name`
    inside it if it is a directory; None if it is on another host."""
    host, sep, local = path.partition(":")
    if not sep or host not in hosts or not local:
        return None
    target = Path(local)
    if not target.is_absolute():
        if not workdir:
            return None
        target = Path(workdir) / target
    if local.endswith("/") or target.is_dir():
        target = target / name
    return target


@functools.cache
def this_host() -> frozenset[str]:
    """The names a job may give this host as its submit host (looked up once: a
    worker asks for every job)."""
    import socket

    names = {socket.gethostname(), socket.getfqdn(), "localhost"}
    return frozenset({name for name in names if name} | {os.uname().nodename})
