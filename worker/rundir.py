"""The files of one run on a worker: a fresh job directory (PBS_O_WORKDIR), a private
TMPDIR, the stdout/stderr files and the node file. Two directories per run: on an
ext4 disk each mkdir costs a fraction of a millisecond, and a worker runs hundreds
of jobs a second."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from pkbs.models import JobRecord


class RunDir:
    def __init__(self, base: Path, key: str, record: JobRecord, run_token: str) -> None:
        # `<key>.<run>`: the run token is unique, so the name is new (mkdir says so).
        stem = base / f"{key}.{run_token[:12]}"
        self.job = stem
        self.tmp = stem.with_name(f"{stem.name}.tmp")
        os.mkdir(self.job, 0o700)
        os.mkdir(self.tmp, 0o700)
        self.nodefile = stem.with_name(f"{stem.name}.nodes")
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
        for directory in (self.job, self.tmp):
            _remove_tree(directory)
        for path in (self.nodefile, *(p for _, p in self.outputs)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _remove_tree(directory: Path) -> None:
    """rmtree, short-cut for what most jobs leave: a directory of plain files."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    raise IsADirectoryError(entry.path)
                os.unlink(entry.path)
        os.rmdir(directory)
    except FileNotFoundError:
        return
    except OSError:
        shutil.rmtree(directory, ignore_errors=True)
