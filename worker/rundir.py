"""The files of one run on a worker: a job directory (PBS_O_WORKDIR) and a private
TMPDIR, both empty when the job starts, the stdout/stderr files and the node file.

On a disk like ext4 every create and remove of a directory or file costs a
fraction of a millisecond (more under load), and a worker runs hundreds of jobs a
second: it is most of what a trivial job costs the worker. So directories are
reused: a run's directories are emptied when it ends and, if they are exactly as
they were handed out (plain directories, mode 0700, nothing left that cannot be
removed), serve the next run; the node file is one per CPU count, written once.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import stat
from pathlib import Path

from pkbs.models import JobRecord
from pkbs.pbs import job_ncpus

DIR_MODE = 0o700


class DirPool:
    """Empty private directories under `base`, handed out and taken back."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._free: list[Path] = []
        self._names = itertools.count()

    def take(self) -> Path:
        if self._free:
            return self._free.pop()
        while True:
            path = self.base / f"d{next(self._names)}"
            try:
                os.mkdir(path, DIR_MODE)
                return path
            except FileExistsError:
                continue

    def give_back(self, path: Path) -> None:
        """Empty the directory; keep it for another run if it is as it was handed
        out, else remove it."""
        if _emptied(path):
            self._free.append(path)
        else:
            shutil.rmtree(path, ignore_errors=True)


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
    def __init__(
        self, pool: DirPool, nodefiles: NodeFiles, key: str, record: JobRecord, run_token: str
    ) -> None:
        self.pool = pool
        self.job = pool.take()
        self.tmp = pool.take()
        self.nodefile = nodefiles.path(job_ncpus(record.spec.resources))
        # stdout/stderr beside the directories, named `<key>.<run>`: unique per run.
        stem = pool.base / f"{key}.{run_token[:12]}"
        out, err = stem.with_name(f"{stem.name}.o"), stem.with_name(f"{stem.name}.e")
        join = record.spec.join
        # (name on WebDAV, local path) of stdout and stderr; -j oe / eo merge them.
        if join == "oe":
            self.outputs = [(record.output_name, out)]
        elif join == "eo":
            self.outputs = [(record.error_name, err)]
        else:
            self.outputs = [(record.output_name, out), (record.error_name, err)]
        self.stdout = self.outputs[0][1]
        self.stderr = self.outputs[-1][1]

    def cleanup(self) -> None:
        self.pool.give_back(self.job)
        self.pool.give_back(self.tmp)
        for _, path in self.outputs:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


class NodeFiles:
    """PBS_NODEFILE: the host's name once per CPU of the job. One file per CPU count,
    written once (read-only), checked to be there at each use."""

    def __init__(self, base: Path, host: str) -> None:
        self.base = base
        self.host = host

    def path(self, ncpus: int) -> Path:
        path = self.base / f"nodes.{ncpus}"
        try:
            if os.stat(path).st_size == len(self.host) * ncpus + ncpus:
                return path
            os.unlink(path)
        except FileNotFoundError:
            pass
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            os.write(fd, f"{self.host}\n".encode() * ncpus)
        finally:
            os.close(fd)
        return path
