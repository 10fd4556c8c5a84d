"""The running jobs that run limits count (max_run, max_run_res), in KV `PKBS_RUNNING`.

One key per ledger (`u.<user>`, or `all` while an overall limit is set: see
pkbs/limits.py), its value every recorded run: `{run token: [run key, owner, queue,
ncpus]}`. A worker starting a job of a queue under a run limit first *reserves* the
run here - a compare-and-set that checks the limits against the entries and adds the
run's token in one step - and only then takes the job (its Q->R compare-and-set); it
*releases* the token when the run ends, is handed back, or was not started after all.
So any number of workers never start more than the limits allow: two reservations
racing for the last place are two compare-and-sets on one key, and one of them
reads again and is refused.

A worker that dies leaves its token behind. The dispatchers' periodic repair
(`repair`) compares each ledger with the running jobs' records: a token no running
record carries is dropped once two passes in a row have found it so (a reservation
made a moment before its job's compare-and-set is not a leak), a running job of a
limited queue that is missing (limits set while it ran) is added, and the fields of
the others follow their records. A run restarted after its worker was lost has a
new token; its job is counted once meanwhile (entries count distinct run keys).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable

from nats.js import JetStreamContext
from nats.js import errors as jserr
from nats.js.kv import KeyValue

from pkbs import constants as C
from pkbs.control import run_key
from pkbs.errors import Conflict, UnknownJob
from pkbs.jobstore import JobStore
from pkbs.limits import Running, ledger_key, run_limited
from pkbs.models import JobRecord
from pkbs.pbsvalues import job_ncpus
from pkbs.serverconfig import ServerConfig
from pkbs.states import is_active

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 50
Entries = dict[str, Running]  # run token -> the run


def running_of(record: JobRecord) -> Running:
    """A job's run as a ledger records it."""
    return Running(run_key(record), record.owner, record.spec.queue,
                   job_ncpus(record.spec.resources))


def _decode(value: bytes | None) -> Entries:
    if not value:
        return {}
    return {token: Running(*fields) for token, fields in json.loads(value).items()}


def _encode(entries: Entries) -> bytes:
    return json.dumps({token: list(run) for token, run in entries.items()}).encode()


class RunLedger:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> RunLedger:
        """The ledgers in the bucket pkbs.jobstore.ensure_layout made."""
        return cls(await js.key_value(C.RUNNING_BUCKET))

    async def read(self, key: str) -> tuple[Entries, int]:
        """The ledger's entries and revision (0: no such ledger yet)."""
        try:
            entry = await self.kv.get(key)
        except (jserr.KeyNotFoundError, jserr.KeyDeletedError):
            return {}, 0
        return _decode(entry.value), int(entry.revision or 0)

    async def _write(self, key: str, entries: Entries, revision: int) -> bool:
        """Store `entries` if the ledger is still at `revision`; False if it moved on."""
        try:
            if revision == 0:
                await self.kv.create(key, _encode(entries))
            else:
                await self.kv.update(key, _encode(entries), last=revision)
        except jserr.KeyWrongLastSequenceError:
            return False
        return True

    async def _change(self, key: str, edit: Callable[[Entries], Entries | None]) -> Entries | None:
        """Compare-and-set loop: `edit` a copy of the entries, None to leave them."""
        for _ in range(CAS_ATTEMPTS):
            entries, revision = await self.read(key)
            new = edit(dict(entries))
            if new is None:
                return None
            if await self._write(key, new, revision):
                return new
        raise Conflict(f"run ledger {key}: concurrent changes, retry")

    async def reserve(
        self, key: str, token: str, run: Running,
        refusal: Callable[[Iterable[Running]], str | None],
    ) -> str | None:
        """Record the run unless `refusal` of the runs recorded says why not: None
        (recorded), or the reason (nothing recorded)."""
        reason: str | None = None

        def add(entries: Entries) -> Entries | None:
            nonlocal reason
            reason = refusal(entries.values())
            if reason is not None:
                return None
            entries[token] = run
            return entries

        await self._change(key, add)
        return reason

    async def release(self, key: str, token: str) -> None:
        def drop(entries: Entries) -> Entries | None:
            return None if entries.pop(token, None) is None else entries

        await self._change(key, drop)

    async def keys(self) -> list[str]:
        try:
            return list(await self.kv.keys())
        except jserr.NoKeysError:
            return []

    async def repair(
        self,
        store: JobStore,
        config: ServerConfig,
        running: Iterable[JobRecord],
        stale: set[tuple[str, str]] | None = None,
    ) -> set[tuple[str, str]]:
        """Make the ledgers agree with the running jobs' records (see the module's
        text). `stale`: the (ledger, token) pairs the last pass found without a
        running job, dropped now if still so; None: drop nothing (a pass right after
        a configuration change). Returns the pairs found stale now."""
        wanted: dict[str, Entries] = {}
        for record in running:
            if record.run_token and is_active(record.state) and run_limited(
                config, record.spec.queue
            ):
                key = ledger_key(config, record.owner)
                wanted.setdefault(key, {})[record.run_token] = running_of(record)
        found_stale: set[tuple[str, str]] = set()
        for key in sorted(set(await self.keys()) | set(wanted)):
            want = wanted.get(key, {})
            added: list[str] = []

            def agree(entries: Entries, key: str = key, want: Entries = want,
                      added: list[str] = added) -> Entries | None:
                found_stale.difference_update({p for p in found_stale if p[0] == key})
                added.clear()
                new: Entries = {}
                for token, run in entries.items():
                    if token in want:
                        new[token] = want[token]
                    elif stale is None or (key, token) not in stale:
                        new[token] = run
                        found_stale.add((key, token))
                for token, run in want.items():
                    if token not in entries:
                        new[token] = run
                        added.append(token)
                return None if new == entries else new

            if await self._change(key, agree) is not None:
                await self._confirm(store, key, {t: want[t] for t in added})
        return found_stale

    async def _confirm(self, store: JobStore, key: str, added: Entries) -> None:
        """A run added by a repair may have ended between the read of its record and
        the write (its worker's release then found nothing to drop): read it again."""
        for token, run in added.items():
            number, _, index = run.job.partition(".")
            try:
                record, _ = await store.get(int(number), int(index) if index else None)
            except UnknownJob:
                record = None
            if record is None or record.run_token != token or not is_active(record.state):
                await self.release(key, token)
