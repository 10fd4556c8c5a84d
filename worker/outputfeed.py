"""A running job's live output, published only while someone watches it.

A watcher (a dispatcher serving `pkbs logs`) asks the job's worker on
`pkbs.watch.<n>[.<i>]` and renews the ask while it watches. Then the worker reads
what the job writes to its stdout/stderr files and publishes it to the in-memory,
bounded stream PKBS_OUTPUT (`pkbs.output.<n>[.<i>].<stdout|stderr>`): first what the
job wrote before (at most CATCHUP_BYTES of it), then every POLL_SECONDS what is new
(at most CHUNK_BYTES a time, so at most 10 publishes and 320 KiB a second per stream;
beyond that the oldest new bytes are skipped, with a marker line saying how many).
When the job ends, the rest and an end marker. A run nobody watches costs nothing
but this object: no file is read, nothing is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

import nats.errors
from nats.js import JetStreamContext

from pkbs import constants as C
from pkbs.jobstore import output_subject

log = logging.getLogger("pkbs.worker")

POLL_SECONDS = 0.1
CHUNK_BYTES = 32 * 1024
CATCHUP_BYTES = 256 * 1024


def skipped_line(count: int) -> bytes:
    return (f"=>> pkbs: {count} bytes of output skipped here (live output is limited; "
            "the job's output file keeps them)\n").encode()


class _Source:
    """One output file of a run, read from where the last read stopped."""

    def __init__(self, path: Path, subject: str) -> None:
        self.path = path
        self.subject = subject
        self.offset = 0
        self.fd: int | None = None

    def read_new(self, limit: int) -> bytes:
        """What was written since the last read: at most `limit` bytes, the newest
        (from a line's start where one is in reach), after a marker if some were skipped."""
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return b""
        size = os.fstat(self.fd).st_size
        if size <= self.offset:
            return b""
        skipped = max(0, size - self.offset - limit)
        self.offset += skipped
        data = os.pread(self.fd, size - self.offset, self.offset)
        self.offset += len(data)
        if not skipped:
            return data
        newline = data.find(b"\n")
        if 0 <= newline < len(data) - 1:
            skipped += newline + 1
            data = data[newline + 1 :]
        return skipped_line(skipped) + data

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class OutputFeed:
    """The live output of one run: `files` maps stream names (stdout, stderr; one of
    them for a job that joins them) to the run's files."""

    def __init__(
        self, js: JetStreamContext, number: int, index: int | None, files: dict[str, Path]
    ) -> None:
        self.js = js
        self.sources = [_Source(path, output_subject(number, index, name))
                        for name, path in files.items()]
        self.lease_until = 0.0
        self.watched = False  # published anything for this run (its subjects purged first)
        self.ended = False  # the job has ended; its end marker is out once watched
        self.gone = False  # its files are handed to another run: never read again
        self._lock = asyncio.Lock()
        self._pump: asyncio.Task[None] | None = None

    async def watch(self) -> None:
        """Someone watches: what the job wrote since the last publish is published
        before this returns, and new output for OUTPUT_WATCH_LEASE seconds more."""
        self.lease_until = time.monotonic() + C.OUTPUT_WATCH_LEASE
        async with self._lock:
            if not self.watched:
                # The subjects may hold an earlier run's output (a rerun job).
                for source in self.sources:
                    await self.js.purge_stream(C.OUTPUT_STREAM, subject=source.subject)
                self.watched = True
                await self._publish_new(CATCHUP_BYTES)
                if self.ended:
                    await self._publish_end()
                    return
            else:
                await self._publish_new(CATCHUP_BYTES)
        if not self.ended and (self._pump is None or self._pump.done()):
            self._pump = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        try:
            while not self.ended and time.monotonic() < self.lease_until:
                await asyncio.sleep(POLL_SECONDS)
                async with self._lock:
                    if not self.ended:
                        await self._publish_new(CHUNK_BYTES)
        except (OSError, nats.errors.Error) as exc:  # the watcher asks again
            log.warning("live output not published: %s", exc)

    async def end(self) -> None:
        """The job has ended: if it was watched, the rest of its output and the end
        marker (whoever follows it stops there)."""
        if self.ended:
            return
        self.ended = True
        async with self._lock:
            if self.watched:
                try:
                    await self._publish_new(CATCHUP_BYTES)
                except (OSError, nats.errors.Error) as exc:  # never the job's trouble
                    log.warning("live output not published: %s", exc)
                await self._publish_end()

    def release(self) -> None:
        """The run's files go back to the pool (another run may write them next)."""
        self.ended = self.gone = True
        if self._pump is not None:
            self._pump.cancel()
        for source in self.sources:
            source.close()

    async def _publish_new(self, limit: int) -> None:
        for source in self.sources:
            if self.gone:
                return
            data = source.read_new(limit)
            if data:
                await self.js.publish(source.subject, data)

    async def _publish_end(self) -> None:
        for source in self.sources:
            with contextlib.suppress(nats.errors.Error):
                await self.js.publish(source.subject, b"", headers={C.OUTPUT_END_HEADER: "1"})
