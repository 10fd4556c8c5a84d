"""Bounded storage: the limits of pkbs's streams and buckets, derived from one
setting, and the check that refuses a submission the store has no room for.

`PKBS_MAX_STORE_BYTES` is the JetStream file store pkbs may fill (nats-server's
`max_file_store`). It is split by `SHARES` into the limits (`max_bytes`) of the
streams and of the buckets' streams. nats-server reserves each limit out of its
`max_file_store`, so their sum must fit it. A stream at its limit refuses new messages
(discard new); it never drops old ones to make room.

A submission is admitted (`Capacity.admit`) only if
- its payloads fit under the submit stream's limit,
- the jobs bucket stays under `ADMIT_FRACTION` of its limit with its records added:
  the rest is kept for the records of jobs already accepted (a record grows as its job
  runs and ends; an array's subjobs get records of their own when they start), and
- the work queue is under `ADMIT_FRACTION` of its limit;
else it is refused with StoreFull and nothing is stored. The usage is read from the
server at most once a second (and again after a refusal), so the check costs a
submission nothing; a burst between two readings is stopped by the server's own refusal
at a limit, after which the submission's parts are removed (pkbs/jobstore.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.js import JetStreamContext
from nats.js import errors as jserr

from pkbs import constants as C
from pkbs.errors import StoreFull
from pkbs.models import JobSpec

log = logging.getLogger(__name__)

JOBS_STREAM = f"KV_{C.JOBS_BUCKET}"
# The share of PKBS_MAX_STORE_BYTES each stream may hold (they add up to 1).
SHARES: dict[str, float] = {
    C.SUBMIT_STREAM: 0.60,  # payloads: up to 1 MiB per job
    JOBS_STREAM: 0.25,  # one record per job and per started subjob (~2-3 KB)
    C.WORK_STREAM: 0.10,  # one message per queued job (a short payload rides along)
    f"KV_{C.DEFINITIONS_BUCKET}": 0.02,
    f"KV_{C.CONFIG_BUCKET}": 0.02,  # the server's configuration and hooks
    f"KV_{C.TOKENS_BUCKET}": 0.01,
}
ADMIT_FRACTION = 0.8
USAGE_MAX_AGE = 1.0  # seconds a reading of the usage is used for
# A record's bytes beyond its JobSpec's JSON (times, run, results list: it grows).
RECORD_OVERHEAD = 1536

# JetStream's refusals for want of room: the stream's limit (10077 carries the
# store's error, "maximum bytes exceeded"), the server's or account's store (10047,
# 10023).
STORE_FULL_CODES = (10047, 10023)


def stream_limit(total: int | None, stream: str) -> int | None:
    """The `max_bytes` of `stream` out of a store of `total` bytes (None: no limit)."""
    if total is None or stream not in SHARES:
        return None
    return int(total * SHARES[stream])


def is_store_full(error: BaseException) -> bool:
    """A JetStream refusal because a stream or the server's store is full."""
    if not isinstance(error, jserr.APIError):
        return False
    text = (error.description or "").lower()
    return error.err_code in STORE_FULL_CODES or "maximum bytes" in text


def record_bytes(spec: JobSpec) -> int:
    """What the records of one job take in the jobs bucket, at most: its own and one
    per subjob of an array."""
    per_record = len(spec.model_dump_json()) + RECORD_OVERHEAD
    return per_record * (1 + len(spec.array_indices()))


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f} MB"


class Capacity:
    """The admission check of one process (a dispatcher) against the stored usage."""

    def __init__(self, js: JetStreamContext, total: int | None) -> None:
        self.js = js
        self.limits = {name: stream_limit(total, name) for name in SHARES}
        self._usage: dict[str, int] = {}
        self._read_at = -USAGE_MAX_AGE
        self._lock = asyncio.Lock()

    @property
    def bounded(self) -> bool:
        return any(limit is not None for limit in self.limits.values())

    def forget(self) -> None:
        """Read the usage again before the next check (a refusal: it changed)."""
        self._read_at = -USAGE_MAX_AGE

    async def usage(self) -> dict[str, int]:
        """Bytes stored in the submit stream, the jobs bucket and the work queue."""
        async with self._lock:
            if time.monotonic() - self._read_at >= USAGE_MAX_AGE:
                names = (C.SUBMIT_STREAM, JOBS_STREAM, C.WORK_STREAM)
                infos = await asyncio.gather(*(self.js.stream_info(n) for n in names))
                self._usage = {n: int(i.state.bytes) for n, i in zip(names, infos, strict=True)}
                self._read_at = time.monotonic()
            return self._usage

    async def admit(self, payload_bytes: int, records: int) -> None:
        """StoreFull unless payloads of `payload_bytes` and records of `records` bytes
        fit (see the module's doc); a submission with no limits set always fits."""
        if not self.bounded:
            return
        used = await self.usage()
        checks = (
            (C.SUBMIT_STREAM, payload_bytes, 1.0, "job payloads"),
            (JOBS_STREAM, records, ADMIT_FRACTION, "job records"),
            (C.WORK_STREAM, 0, ADMIT_FRACTION, "work queue"),
        )
        for stream, adding, fraction, what in checks:
            limit = self.limits[stream]
            if limit is None or used.get(stream, 0) + adding <= limit * fraction:
                continue
            self.forget()
            detail = (
                f"{what} {_mb(used.get(stream, 0))} of {_mb(limit * fraction)}"
                + (f", this submission {_mb(adding)}" if adding else "")
            )
            log.warning("submission refused: job store full (%s)", detail)
            raise StoreFull.because(detail)
