"""The files of one run on a worker: a job directory (PBS_O_WORKDIR) and a private
TMPDIR, both empty when the job starts, the stdout/stderr files and the node file.

On a disk like ext4 every create and remove of a directory or file costs a
fraction of a millisecond (more under load), and a worker runs hundreds of jobs a
second: it is most of what a trivial job costs the worker. So a run's
workspace (its two directories and its stdout/stderr files) is reused: emptied when
the run ends and, if its directories are exactly as they were handed out (plain
directories, mode 0700, nothing in them but files) and no process of an ended job
still runs on the worker (a daemon could still hold them), given to the next run; the
node file is one per CPU count, written once.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import stat
from pathlib import Path
from typing import NamedTuple

from pkbs.models import JobRecord
from pkbs.pbsvalues import job_ncpus

DIR_MODE = 0o700


class Workspace(NamedTuple):
    """What one run works in: `w<n>/` (the job directory), `w<n>.tmp/` (TMPDIR) and
    `w<n>.o`, `w<n>.e` (where stdout and stderr are written)."""

    job: Path
    tmp: Path
    out: Path
    err: Path


class WorkspacePool:
    """Workspaces under `base`, handed out and taken back."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._free: list[Workspace] = []
        self._names = itertools.count()

    def take(self) -> Workspace:
        if self._free:
            return self._free.pop()
        while True:
            stem = self.base / f"w{next(self._names)}"
            try:
                os.mkdir(stem, DIR_MODE)
            except FileExistsError:
                continue
            tmp = stem.with_name(f"{stem.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            os.mkdir(tmp, DIR_MODE)
            return Workspace(stem, tmp, stem.with_name(f"{stem.name}.o"),
                             stem.with_name(f"{stem.name}.e"))

    def give_back(self, space: Workspace, reuse: bool = True) -> None:
        """Empty the workspace; keep it for another run if its directories are as they
        were handed out (and `reuse`: no process of the run may still hold them), else
        remove it. Output files are truncated, not removed: opening an existing file
        costs far less than creating one."""
        kept = reuse and _emptied(space.job) & _emptied(space.tmp)
        for path in (space.out, space.err):
            with contextlib.suppress(FileNotFoundError):
                info = os.lstat(path)
                if kept and stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                    if info.st_size:
                        os.truncate(path, 0)
                else:  # gone astray (a link made to it, or put in its place): not reused
                    os.unlink(path)
        if kept:
            self._free.append(space)
        else:
            shutil.rmtree(space.job, ignore_errors=True)
            shutil.rmtree(space.tmp, ignore_errors=True)


def _emptied(path: Path) -> bool:
    """Remove the plain files in `path`: whether it is now an empty 0700 directory."""
    try:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or stat.S_IMODE(info.st_mode) != DIR_MODE:
            return False
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    return False
                os.unlink(entry.path)
        return True
    except OSError:
        return False


class RunDir:
    def __init__(self, pool: WorkspacePool, nodefiles: NodeFiles, record: JobRecord) -> None:
        self.pool = pool
        self.space = pool.take()
        self.job, self.tmp = self.space.job, self.space.tmp
        self.nodefile = nodefiles.path(job_ncpus(record.spec.resources))
        join = record.spec.join
        # (name on WebDAV, local path) of stdout and stderr; -j oe / eo merge them.
        if join == "oe":
            self.outputs = [(record.output_name, self.space.out)]
        elif join == "eo":
            self.outputs = [(record.error_name, self.space.err)]
        else:
            self.outputs = [
                (record.output_name, self.space.out),
                (record.error_name, self.space.err),
            ]
        self.stdout = self.outputs[0][1]
        self.stderr = self.outputs[-1][1]

    def cleanup(self, reuse: bool = True) -> None:
        self.pool.give_back(self.space, reuse)


class NodeFiles:
    """PBS_NODEFILE: the host's name once per CPU of the job. One file per CPU count,
    written once (read-only), checked to be there at each use."""

    def __init__(self, base: Path, host: str) -> None:
        self.base = base
        self.line = f"{host}\n".encode()

    def path(self, ncpus: int) -> Path:
        path = self.base / f"nodes.{ncpus}"
        try:
            if os.stat(path).st_size == len(self.line) * ncpus:
                return path
            os.unlink(path)
        except FileNotFoundError:
            pass
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            os.write(fd, self.line * ncpus)
        finally:
            os.close(fd)
        return path
