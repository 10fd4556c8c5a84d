"""One attempt to start a job from its work message: what the compare-and-set on the
job's record decides (start it, rerun a run whose worker was lost, wait for its -a
time, or leave it), and what the job takes from the worker's pool in the same step,
so that no other job can take it in between."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pkbs import lifecycle
from pkbs.models import JobRecord
from pkbs.nodes import NodeResources
from pkbs.pbsvalues import job_ncpus
from pkbs.states import is_active, is_pending

from .slots import Grant, Slots, job_request


class NoRoom(Exception):
    """The job asks for more than the worker has free (raised inside a compare-and-set:
    nothing is written)."""

    def __init__(self, record: JobRecord, wanted: NodeResources) -> None:
        super().__init__(record.job_id)
        self.record = record
        self.wanted = wanted


@dataclass
class StartAttempt:
    seq: int  # the work message, as the record names the one that started a run
    token: str  # the run's, if it starts
    worker: str
    host: str
    process_account: str | None  # the account a job's processes run as here, if known
    slots: Slots
    stop_looking: Callable[[], None]  # the CPU counted while the message was looked at
    pool_changed: Callable[[], None]
    owner_asked: bool = False  # the worker of a run in the record was asked and had none
    # What the last decision found (a retried compare-and-set decides afresh):
    defer_for: float = 0.0  # its -a time is this far ahead
    lost: tuple[str, str] | None = None  # (host, run token) of a lost run it replaces
    owner: tuple[str, str] | None = None  # (worker, run token) of a run that may be alive
    grant: Grant | None = None  # what it holds of the pool

    def decide(self, record: JobRecord) -> JobRecord | None:
        """The record with the job started, or None to leave it as it is."""
        self.defer_for, self.lost, self.owner = 0.0, None, None
        self.give_back()
        now = time.time()
        if is_pending(record.state):
            if record.spec.exec_time is not None and record.spec.exec_time > now:
                self.defer_for = record.spec.exec_time - now
                return None
            self._claim(record)
            return lifecycle.started(record, self._run(record), now)
        if not (is_active(record.state) and record.work_seq == self.seq):
            return None  # held, deleted, finished, or a stale duplicate message
        if not self.owner_asked and record.worker and record.run_token:
            self.owner = (record.worker, record.run_token)  # first: is that run alive?
            return None
        # This very message started a run whose worker was lost.
        self.lost = ((record.exec_host or "").split("/", 1)[0], record.run_token or "")
        if not record.spec.rerunnable:
            return lifecycle.worker_lost(record, now)
        self._claim(record)
        return lifecycle.restarted(record, self._run(record), now)

    def give_back(self) -> None:
        """What was taken from the pool goes back (the run did not start)."""
        if self.grant is not None:
            held, self.grant = self.grant, None
            self.slots.give_back(held)
            self.pool_changed()

    def _claim(self, record: JobRecord) -> None:
        self.stop_looking()
        wanted = job_request(record.spec.resources)
        self.grant = self.slots.take(wanted)
        if self.grant is None:
            raise NoRoom(record, wanted)
        self.pool_changed()

    def _run(self, record: JobRecord) -> lifecycle.RunStart:
        exec_host = f"{self.host}/0*{job_ncpus(record.spec.resources)}"
        # A process job runs as the worker's account, whoever submitted it.
        euser = self.process_account if record.spec.image is None else None
        return lifecycle.RunStart(self.token, self.seq, self.worker, exec_host, euser)
