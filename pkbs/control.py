"""Job operations shared by the dispatcher and the workers: submit, hold, release,
delete, signal, and telling dependent jobs that a job started or ended.

Every change is a compare-and-set through JobStore of a record that pkbs.lifecycle
makes. Ownership checks are the caller's (the dispatcher's) business.
"""

from __future__ import annotations

import logging
import signal as signals
import time
from collections.abc import AsyncIterator, Callable, Sequence

from pkbs import constants as C
from pkbs import depend, lifecycle
from pkbs.errors import (
    BadAttributeValue,
    BadState,
    FinishedJob,
    ModifyRunning,
    NotRerunnable,
    StoreFull,
    Unauthorized,
    UnknownJob,
    UnknownSignal,
)
from pkbs.jobstore import JobStore
from pkbs.models import AlterRequest, JobRecord, JobSpec
from pkbs.pbsvalues import (
    RESUME,
    SUSPEND,
    format_job_id,
    parse_depend,
    parse_job_id,
    signal_number,
)
from pkbs.states import JobEvent, JobState, can, is_active, is_final, is_pending
from pkbs.storage import record_bytes

log = logging.getLogger(__name__)


def _queued_spans(present: set[str], number: int) -> list[tuple[int, int]]:
    """The (first, last) index spans of array `number` waiting in the work queue."""
    found = []
    for key in present:
        head, _, span = key.partition(".")
        if head == str(number) and "-" in span:
            first, _, last = span.partition("-")
            found.append((int(first), int(last)))
    return found


class JobControl:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.server = store.settings.server_name

    # -- submit -----------------------------------------------------------------

    def dependencies(self, text: str | None) -> dict[str, list[int]]:
        """`-W depend=` text to {type: [job numbers]}; refuses types pkbs lacks."""
        if not text:
            return {}
        pending: dict[str, list[int]] = {}
        for kind, ids in parse_depend(text, self.server):
            if kind not in depend.SUPPORTED:
                raise BadAttributeValue(f"dependency type {kind!r} is not supported by pkbs")
            waited = pending.setdefault(kind, [])
            for job_id in ids:
                number = parse_job_id(job_id, self.server).number
                if number not in waited:
                    waited.append(number)
        return pending

    async def submit(
        self,
        owner: str,
        spec: JobSpec,
        payload: bytes,
        submit_id: str,
        comment: str | None = None,
    ) -> tuple[JobRecord, bool]:
        pending = self.dependencies(spec.depend)
        for numbers in pending.values():
            for number in numbers:
                await self.store.get(number)  # UnknownJob for a missing parent
        await self.store.capacity.admit(len(payload), record_bytes(spec))
        now = time.time()

        def build(number: int) -> JobRecord:
            return lifecycle.submitted(
                number, self.server, owner, spec, submit_id, pending, now, comment
            )

        record, revision, duplicate = await self.store.create(payload, submit_id, build)
        if record.enqueue_count and not is_final(record.state):
            try:
                await self._enqueue(record, payload, revision)  # deduplicated if a retry
            except StoreFull:
                if not duplicate:  # refused: nothing of it stays
                    await self.store.discard([(record.number, None, revision)], [record.number])
                raise
        if record.depend_pending:
            await self._link_parents(record)
        return record, duplicate

    async def submit_many(
        self,
        owner: str,
        jobs: Sequence[tuple[JobSpec, bytes, str]],
        comments: Sequence[str | None] = (),
    ) -> list[tuple[JobRecord, bool]]:
        """Submit (spec, payload, submit_id) each as `submit` would, numbered in
        order, with one JetStream round trip per stage for the whole lot. Jobs with
        dependencies (rare in a batch) make it go one job at a time. `comments`: the
        comment each job starts with (queuejob hooks'), if any."""
        notes = list(comments) or [None] * len(jobs)
        if any(spec.depend for spec, _, _ in jobs):
            return [
                await self.submit(owner, *job, comment)
                for job, comment in zip(jobs, notes, strict=True)
            ]
        await self.store.capacity.admit(
            sum(len(payload) for _, payload, _ in jobs),
            sum(record_bytes(spec) for spec, _, _ in jobs),
        )
        now = time.time()

        def build(position: int, number: int) -> JobRecord:
            spec, _, submit_id = jobs[position]
            return lifecycle.submitted(
                number, self.server, owner, spec, submit_id, {}, now, notes[position]
            )

        created = await self.store.create_many(
            [(payload, submit_id) for _, payload, submit_id in jobs], build
        )
        singles = []
        try:
            for (record, revision, _), (_, payload, _) in zip(created, jobs, strict=True):
                if not record.enqueue_count or is_final(record.state):
                    continue
                if record.is_array:
                    await self._enqueue(record)
                else:
                    singles.append((record, payload, revision))
            await self.store.enqueue_many(singles)  # deduplicated if a retry
        except StoreFull:  # refused: nothing of the batch stays
            fresh = [(record, revision) for record, revision, dup in created if not dup]
            await self.store.discard(
                [(record.number, None, revision) for record, revision in fresh],
                [record.number for record, _ in fresh],
            )
            raise
        return [(record, duplicate) for record, _, duplicate in created]

    async def _link_parents(self, child: JobRecord) -> None:
        """Register the child with each parent, then judge the parent as it is now.
        Both are compare-and-set, so a parent ending meanwhile is never missed."""
        for numbers in list(child.depend_pending.values()):
            for number in numbers:

                def link(parent: JobRecord) -> JobRecord | None:
                    if child.number in parent.dependents or is_final(parent.state):
                        return None
                    return lifecycle.dependent_added(parent, child.number)

                await self.store.update(number, link)
                parent, _ = await self.store.get(number)
                await self.dependency_event(child.number, parent)

    async def _enqueue(
        self, record: JobRecord, payload: bytes | None = None, revision: int | None = None
    ) -> None:
        """Queue a job, or every subjob of an array that has not started yet (of an
        array with max_run_subjobs, only as many as may run: see top_up)."""
        if not record.is_array:
            await self.store.enqueue(record, payload=payload, revision=revision)
            return
        started = await self.store.subjob_indices(record.number)
        if record.spec.max_run_subjobs is not None:
            await self.top_up(record, started, await self._unfinished_subjobs(record, started))
            return
        indices = record.spec.array_indices()
        await self.store.enqueue(
            record, [i for i in indices if i not in started] if started else indices
        )

    # -- repair ----------------------------------------------------------------------

    async def reconcile(
        self, grace: float, unfinished: list[tuple[int, int | None]] | None = None
    ) -> int:
        """Repair what a crash between two steps can leave behind; returns the number
        of jobs repaired. A queued job (or subjob) idle for `grace` seconds with no
        message in the work queue is queued again; a held job whose dependencies
        have ended is judged again. Safe to run in every dispatcher replica.
        `unfinished`: the (number, index) keys of the jobs not finished, when the
        caller knows them (the dispatcher's job index); else every record is read."""
        present = await self.store.queued_work()
        started: dict[int, set[int]] | None = None if unfinished is not None else {}
        waiting: list[JobRecord] = []
        records = self.store.iter_records() if unfinished is None else self._read(unfinished)
        async for record in records:
            if record.index is not None:
                if started is not None:
                    started.setdefault(record.number, set()).add(record.index)
                if is_pending(record.state) and run_key(record) not in present:
                    waiting.append(record)
            elif not is_final(record.state):
                waiting.append(record)
        cutoff = time.time() - grace
        repaired = 0
        for record in waiting:
            if record.mtime > cutoff:
                continue
            if record.is_array and record.state in (JobState.QUEUED, JobState.BEGUN):
                if started is None:
                    have = await self.store.subjob_indices(record.number)
                else:
                    have = started.get(record.number, set())
                if record.spec.max_run_subjobs is not None:
                    unfinished_count = await self._unfinished_subjobs(record, have)
                    if await self.top_up(record, have, unfinished_count):
                        repaired += 1
                    continue
                queued = _queued_spans(present, record.number)
                lost = [
                    i
                    for i in record.spec.array_indices()
                    if i not in have
                    and f"{record.number}.{i}" not in present
                    and not any(first <= i <= last for first, last in queued)
                ]
                if lost:
                    await self.store.enqueue(record, lost)
                    repaired += 1
            elif is_pending(record.state) and run_key(record) not in present:
                if await self._requeue_lost(record):
                    repaired += 1
            elif record.state == JobState.HELD and record.depend_pending:
                for numbers in list(record.depend_pending.values()):
                    for number in numbers:
                        try:
                            parent, _ = await self.store.get(number)
                        except UnknownJob:
                            continue  # (retention keeps a parent a held job names)
                        await self.dependency_event(record.number, parent)
        return repaired

    async def _read(self, keys: list[tuple[int, int | None]]) -> AsyncIterator[JobRecord]:
        for number, index in keys:
            try:
                record, _ = await self.store.get(number, index)
            except UnknownJob:
                continue  # deleted meanwhile
            yield record

    async def _requeue_lost(self, seen: JobRecord) -> bool:
        def bump(record: JobRecord) -> JobRecord | None:
            if not is_pending(record.state) or record.mtime != seen.mtime:
                return None  # it moved on meanwhile
            return lifecycle.work_lost(record)

        record = await self.store.update(seen.number, bump, seen.index)
        if record is None:
            return False
        log.warning("queued job had no work message; queued again", extra={"job": record.job_id})
        await self.store.enqueue(record)
        return True

    # -- arrays ----------------------------------------------------------------------

    async def subjob_started(self, number: int) -> None:
        """The array is begun (B) once a subjob runs."""

        def begin(array: JobRecord) -> JobRecord | None:
            if not can(array.state, JobEvent.BEGIN):
                return None
            return lifecycle.begun(array, time.time())

        array = await self.store.update(number, begin)
        if array is not None and array.dependents:
            await self.notify_dependents(array)

    async def count_subjobs(self, number: int, done: int, failed: int, running: int = 0) -> None:
        """Write how many of an array's subjobs have ended, `failed` of them not with
        exit status 0, and how many run (the dispatcher counts them in its job index:
        dispatcher/arrays.py). The array ends with its last subjob: Exit_status 0 if
        every subjob's was, else 1."""
        counts = (done, failed, running)

        def count(array: JobRecord) -> JobRecord | None:
            known = (array.array_done, array.array_failed, array.array_running)
            if is_final(array.state) or known == counts:
                return None
            return lifecycle.subjobs_counted(array, done, failed, time.time(), running)

        array = await self.store.update(number, count)
        if array is not None and is_final(array.state):
            await self.notify_dependents(array)

    async def top_up(self, array: JobRecord, have: set[int], unfinished: int) -> int:
        """Queue the next subjobs of an array with max_run_subjobs N: the first of those
        that never started (`have`: the indices with a record), as many as N less
        the `unfinished` subjobs with a record (running, or queued again). Nothing
        else queues its subjobs, and what is queued and not started is always the
        first of the never-started: so at most N run at once, whoever calls this
        with whatever (older) view. A subjob queued twice is started once (its
        start is a compare-and-set; the message ids deduplicate most). Returns how
        many were queued."""
        limit = array.spec.max_run_subjobs
        if limit is None or array.state not in (JobState.QUEUED, JobState.BEGUN):
            return 0
        free = limit - unfinished
        if free <= 0:
            return 0
        indices = []
        for index in array.spec.array_indices():
            if index not in have:
                indices.append(index)
                if len(indices) == free:
                    break
        if indices:
            await self.store.enqueue(array, indices)
        return len(indices)

    async def _unfinished_subjobs(self, array: JobRecord, have: set[int]) -> int:
        count = 0
        for index in have:
            try:
                record, _ = await self.store.get(array.number, index)
            except UnknownJob:
                continue
            count += not is_final(record.state)
        return count

    async def running_subjobs(self, array: JobRecord) -> list[JobRecord]:
        found = []
        for index in sorted(await self.store.subjob_indices(array.number)):
            record, _ = await self.store.get(array.number, index)
            if is_active(record.state):
                found.append(record)
        return found

    # -- dependencies -------------------------------------------------------------

    async def notify_dependents(self, parent: JobRecord) -> None:
        for child in list(parent.dependents):
            await self.dependency_event(child, parent)

    async def dependency_event(self, child_number: int, parent: JobRecord) -> None:
        def judge(child: JobRecord) -> JobRecord | None:
            if child.state != JobState.HELD:
                return None
            met = []
            for kind, numbers in child.depend_pending.items():
                if parent.number not in numbers:
                    continue
                result = depend.outcome(kind, parent)
                if result is False:
                    return lifecycle.dependency_failed(child, kind, parent.job_id, time.time())
                if result:
                    met.append(kind)
            if not met:
                return None
            return lifecycle.dependencies_met(child, parent.number, met, time.time())

        try:
            child = await self.store.update(child_number, judge)
        except UnknownJob:
            return  # it ended and its history expired (pkbs/retention.py)
        if child is None:
            return
        if is_pending(child.state):  # it was held: released
            await self._enqueue(child)
        elif is_final(child.state):
            await self.notify_dependents(child)

    # -- holds ---------------------------------------------------------------------

    async def hold(self, number: int, types: str) -> JobRecord:
        def change(record: JobRecord) -> JobRecord:
            if is_final(record.state):
                raise FinishedJob(job_id=record.job_id)
            return lifecycle.held(record, types)

        result = await self.store.update(number, change)
        assert result is not None
        return result

    async def release(self, number: int, types: str) -> JobRecord:
        released = False

        def change(record: JobRecord) -> JobRecord:
            nonlocal released
            released = False  # a retried compare-and-set decides afresh
            if is_final(record.state):
                raise FinishedJob(job_id=record.job_id)
            new = lifecycle.released(record, types, time.time())
            released = new.enqueue_count > record.enqueue_count  # it left H: enqueue it
            return new

        result = await self.store.update(number, change)
        assert result is not None
        if released:
            await self._enqueue(result)
        return result

    # -- delete and signals ----------------------------------------------------------

    async def delete(self, number: int, by: str, index: int | None = None) -> JobRecord:
        """qdel: a job that is not running ends at once; a running one is killed by its
        worker (SIGTERM, SIGKILL after the grace), which records the end. Deleting an
        array ends it and kills its running subjobs; its queued ones never start."""
        if index is not None:
            return await self._delete_subjob(number, index, by)

        def change(record: JobRecord) -> JobRecord | None:
            if is_final(record.state):
                raise FinishedJob(job_id=record.job_id)
            if can(record.state, JobEvent.DELETE):
                return lifecycle.deleted(record, by, time.time())
            if is_active(record.state):
                return lifecycle.delete_requested(record, by)
            raise BadState(job_id=record.job_id)

        record = await self.store.update(number, change)
        assert record is not None
        if record.is_array:
            for subjob in await self.running_subjobs(record):
                await self.delete(number, by, subjob.index)
        if is_final(record.state):
            await self.notify_dependents(record)
        else:
            await self._tell_run(record, C.KILL_REQUEST)
        return record

    async def _delete_subjob(self, number: int, index: int, by: str) -> JobRecord:
        array, _ = await self.store.get(number)
        if not array.is_array or index not in array.spec.array_indices():
            raise UnknownJob(job_id=format_job_id(number, self.server, index=index))
        deleted = lifecycle.deleted(array.subjob(index), by, time.time())
        if not is_final(array.state) and await self.store.create_subjob(deleted) is not None:
            return deleted  # counted as ended by the dispatchers' job index

        def change(record: JobRecord) -> JobRecord | None:
            if is_final(record.state):
                raise FinishedJob(job_id=record.job_id)
            return lifecycle.delete_requested(record, by)

        record = await self.store.update(number, change, index)
        assert record is not None
        await self._tell_run(record, C.KILL_REQUEST)
        return record

    async def alter(
        self,
        number: int,
        change: AlterRequest,
        check: Callable[[JobSpec], None],
        comment: str | None = None,
        privileged: bool = False,
    ) -> JobRecord:
        """qalter: change a job that has not started; a running one only its time limits,
        which only an operator (`privileged`) may raise (PBS's req_modify). The running
        job's worker applies a new walltime at once. `check` validates the new spec
        (queue limits) before it is stored. `comment`: the job's new comment (a
        modifyjob hook's), if any."""

        pending: dict[str, list[int]] = {}
        if change.depend is not None:
            pending = self.dependencies(change.depend)
            for numbers in pending.values():
                for parent in numbers:
                    await self.store.get(parent)  # UnknownJob for a missing parent

        def apply(record: JobRecord) -> JobRecord:
            if is_final(record.state):
                raise FinishedJob(job_id=record.job_id)
            if is_active(record.state):
                if not change.touches_only_running_limits():
                    raise ModifyRunning(job_id=record.job_id)
                if not privileged and change.raises_limits(record.spec.resources):
                    raise Unauthorized(job_id=record.job_id)
            new = lifecycle.altered(record, change, pending, time.time())
            check(new.spec)
            return new if comment is None else new.model_copy(update={"comment": comment})

        record = await self.store.update(number, apply)
        assert record is not None
        if is_active(record.state):
            await self._tell_run(record, C.CHANGED_REQUEST)
        if pending:
            await self._link_parents(record)
            record, _ = await self.store.get(number)
        return record

    async def rerun(self, number: int, index: int | None = None) -> JobRecord:
        """qrerun: kill the running job; its worker queues it again (not rerunnable: refused)."""

        def change(record: JobRecord) -> JobRecord:
            if not is_active(record.state):
                raise BadState(job_id=record.job_id)
            if not record.spec.rerunnable:
                raise NotRerunnable(job_id=record.job_id)
            return lifecycle.rerun_requested(record)

        record = await self.store.update(number, change, index)
        assert record is not None
        await self._tell_run(record, C.RERUN_REQUEST)
        return record

    async def signal(self, record: JobRecord, name: str) -> None:
        """qsig: a signal to the job's processes (refused unless it runs; a suspended
        job takes only SIGKILL, as MoM's req_signaljob), or suspend / resume: the
        record says S or R again and the worker stops or continues the processes. An
        array: each of its running subjobs (PBS's req_signaljob)."""
        if record.is_array:
            if record.state != JobState.BEGUN:
                raise BadState(job_id=record.job_id)
            for subjob in await self.running_subjobs(record):
                try:
                    await self.signal(subjob, name)
                except BadState:
                    continue  # e.g. suspended already: skipped, as PBS does
            return
        if name in (SUSPEND, RESUME):
            await self._suspend(record, name == SUSPEND)
            return
        if not is_active(record.state):
            raise BadState(job_id=record.job_id)
        number = signal_number(name)
        if number is None:
            raise UnknownSignal(job_id=record.job_id)
        if record.state == JobState.SUSPENDED and number != signals.SIGKILL:
            raise BadState(job_id=record.job_id)
        await self._tell_run(record, name)

    async def _suspend(self, record: JobRecord, suspend: bool) -> None:
        event = JobEvent.SUSPEND if suspend else JobEvent.RESUME

        def change(current: JobRecord) -> JobRecord:
            if not can(current.state, event):
                raise BadState(job_id=current.job_id)
            return lifecycle.suspended(current) if suspend else lifecycle.resumed(current)

        new = await self.store.update(record.number, change, record.index)
        assert new is not None
        await self._tell_run(new, C.CHANGED_REQUEST)

    async def _tell_run(self, record: JobRecord, request: str) -> None:
        """Tell the worker running the job: a signal name, or one of the requests in
        pkbs.constants (kill, rerun, the record changed)."""
        if not is_active(record.state):
            raise BadState(job_id=record.job_id)
        subject = f"{C.SIGNAL_SUBJECT_PREFIX}.{run_key(record)}"
        await self.store.nc.publish(subject, request.encode())


def run_key(record: JobRecord) -> str:
    """`12` or, for a subjob, `12.7`: names a run in signal subjects and on workers."""
    return str(record.number) if record.index is None else f"{record.number}.{record.index}"
