"""The files of one run on a worker: a fresh job directory (PBS_O_WORKDIR), a private
TMPDIR, the stdout/stderr files and the node file. Two directories per run: on an
ext4 disk each mkdir costs a fraction of a millisecond, and a worker runs hundreds
of jobs a second."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from pkbs.models import JobRecord


class RunDir:
    def __init__(self, base: Path, key: str, record: JobRecord) -> None:
        self.job = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=base))
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{key}.tmp.", dir=base))
        stem = base / self.job.name
        self.nodefile = stem.with_name(f"{self.job.name}.nodes")
        out, err = stem.with_name(f"{self.job.name}.o"), stem.with_name(f"{self.job.name}.e")
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
        shutil.rmtree(self.job, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        for path in (self.nodefile, *(p for _, p in self.outputs)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
