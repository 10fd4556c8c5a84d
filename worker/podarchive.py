"""A job pod's results on their way to the worker: a tar stream (PAX) of the files the
job created or changed in its job directory (`job/<path>`), its `stdout` and `stderr`,
what it used (`usage.json`) and an `end` marker, base64-encoded so that it crosses the
exec API's text channel intact. Standard library only.

The keeper writes it in the pod (`write_results`); the worker reads it into the run's
own directory (`extract_results`), which the usual results delivery then uploads. The
archive comes from the job's pod, so it is not trusted: only regular files are taken,
only under the job directory (never through a symlink, no `..`, no absolute names),
and it must end with its marker.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pkbs.payload import changed_files

from .podfiles import BEFORE, STDERR, STDOUT, USAGE

JOB_PREFIX = "job/"
END = "end"
CHUNK = 57 * 1024  # bytes per base64 line group: a multiple of 3, so no padding within
MAX_USAGE_BYTES = 64 * 1024


class ArchiveError(Exception):
    """The results archive is cut short or holds what it may not."""


@dataclass(frozen=True)
class Usage:
    """What the job's processes used, as the keeper sampled them."""

    cpu_seconds: float = 0.0
    max_rss_bytes: int = 0


# -------------------------------------------------------------------------- in the pod


class Base64Writer(io.RawIOBase):
    """Bytes in, base64 lines out (to a binary stream)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.pending = b""

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.pending += bytes(data)
        whole = len(self.pending) - len(self.pending) % CHUNK
        if whole:
            self.out.write(base64.encodebytes(self.pending[:whole]))
            self.pending = self.pending[whole:]
        return len(data)

    def close(self) -> None:
        if not self.closed:
            if self.pending:
                self.out.write(base64.encodebytes(self.pending))
                self.pending = b""
            self.out.flush()
        super().close()


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    """A regular file, read without following a symlink put in its place."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return  # gone, or a symlink now: not a result
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return
        member = tarfile.TarInfo(name)
        member.size = info.st_size
        member.mode = info.st_mode & 0o777
        member.mtime = info.st_mtime
        tar.addfile(member, fh)


def write_results(out: IO[bytes], job_dir: Path, control_dir: Path) -> None:
    """The archive of a job's results, base64-encoded, to `out`."""
    try:
        before_json = json.loads((control_dir / BEFORE).read_text())
        before = {rel: (int(sig[0]), int(sig[1])) for rel, sig in before_json.items()}
    except (OSError, ValueError, TypeError, IndexError):
        before = {}  # no snapshot (the payload never came): every file is the job's
    encoder = Base64Writer(out)
    with tarfile.open(fileobj=encoder, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in changed_files(job_dir, before):
            _add_file(tar, JOB_PREFIX + rel, job_dir / rel)
        for name in (STDOUT, STDERR, USAGE):
            _add_file(tar, name, control_dir / name)
        tar.addfile(tarfile.TarInfo(END))
    encoder.close()


# ------------------------------------------------------------------------ on the worker


class Base64Reader(io.RawIOBase):
    """The bytes that base64 text read from `source` stands for (whitespace ignored)."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.text = b""
        self.data = b""
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self.data and not self.done:
            chunk = self.source.read(256 * 1024)
            self.text += b"".join(chunk.split())
            self.done = not chunk
            whole = len(self.text) if self.done else len(self.text) - len(self.text) % 4
            try:
                self.data = base64.b64decode(self.text[:whole], validate=True)
            except ValueError as exc:
                raise ArchiveError(f"the results stream is not base64: {exc}") from None
            self.text = self.text[whole:]
        size = min(len(buffer), len(self.data))
        buffer[:size] = self.data[:size]
        self.data = self.data[size:]
        return size


def _bad_name(rel: str) -> bool:
    parts = rel.split("/")
    return (
        not rel
        or rel.startswith("/")
        or "\\" in rel
        or any(part in ("", ".", "..") for part in parts)
        or any(ord(c) < 32 or ord(c) == 127 for c in rel)
    )


def _open_inside(root: Path, rel: str, mode: int) -> int:
    """A file descriptor to write `rel` under `root`: its directories made as needed,
    none of them followed if it is a symlink; a symlink at `rel` itself is replaced."""
    parts = rel.split("/")
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=dir_fd)
            below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = below
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(parts[-1], flags, mode, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            os.unlink(parts[-1], dir_fd=dir_fd)
            return os.open(parts[-1], flags, mode, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _copy(source: IO[bytes], fd: int) -> None:
    with os.fdopen(fd, "wb") as target:
        while chunk := source.read(256 * 1024):
            try:
                target.write(chunk)
            except OSError as exc:
                raise ArchiveError(f"results not written: {exc.strerror or exc}") from exc


def extract_results(stream: IO[bytes], job_dir: Path, stdout_path: Path,
                    stderr_path: Path) -> Usage:
    """Read a results archive (already decoded) into the run's directories: job files
    into `job_dir`, stdout and stderr into their files. What the job used."""
    usage = Usage()
    ended = False
    outputs = {STDOUT: stdout_path}
    if stderr_path != stdout_path:  # else joined (-j oe / eo): the job's stdout holds both
        outputs[STDERR] = stderr_path
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if member.name == END:
                    ended = True
                    continue
                source = tar.extractfile(member) if member.isreg() else None
                if source is None:
                    continue
                if member.name.startswith(JOB_PREFIX):
                    rel = member.name[len(JOB_PREFIX):]
                    if _bad_name(rel):
                        raise ArchiveError(f"the results name a file outside the job: {rel!r}")
                    try:
                        fd = _open_inside(job_dir, rel, (member.mode & 0o777) | 0o600)
                    except OSError as exc:
                        raise ArchiveError(f"{rel}: {exc.strerror or exc}") from exc
                    _copy(source, fd)
                elif member.name in outputs:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                    try:
                        fd = os.open(outputs[member.name], flags, 0o644)
                    except OSError as exc:
                        raise ArchiveError(f"{member.name}: {exc.strerror or exc}") from exc
                    _copy(source, fd)
                elif member.name == USAGE and member.size <= MAX_USAGE_BYTES:
                    usage = _usage(source.read())
    except tarfile.TarError as exc:
        raise ArchiveError(f"the results archive is damaged: {exc}") from exc
    if not ended:
        raise ArchiveError("the results archive was cut short")
    return usage


def _usage(data: bytes) -> Usage:
    try:
        values = json.loads(data)
        return Usage(float(values["cpu_seconds"]), int(values["max_rss_bytes"]))
    except (ValueError, KeyError, TypeError):
        return Usage()


def receive_results(raw: IO[bytes], job_dir: Path, stdout_path: Path,
                    stderr_path: Path) -> Usage:
    """extract_results of the base64 text `podkeeper pack` writes, read from `raw`."""
    decoded = io.BufferedReader(Base64Reader(raw), buffer_size=256 * 1024)
    return extract_results(decoded, job_dir, stdout_path, stderr_path)
