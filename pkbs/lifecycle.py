"""What each change in a job's life does to its record, written once.

Each function takes a record (and what the change needs: the time, the run, how it
ended) and returns the next record: its state from the state machine
(`pkbs.states.next_state`, which refuses a change the table lacks) together with
everything that goes with that change: times, holds, run count and token, exit
status, comment. The functions are pure (no I/O, no clock): JobControl and the worker
call them inside their compare-and-sets; records are frozen, so nothing else edits them.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pkbs.models import AlterRequest, JobRecord, JobSpec, ResultFile
from pkbs.states import JobEvent, JobState, can, is_pending, next_state

# Exit_status of a job that did not end by itself: PBS's JOB_EXEC_* (src/include/job.h).
EXIT_FAILED_BEFORE_START = -1  # JOB_EXEC_FAIL1: it could not start
EXIT_RESULTS_NOT_STORED = -2  # JOB_EXEC_FAIL2 ("after files"): it ran, its results were not stored
EXIT_LOST_NOT_RERUNNABLE = -20  # JOB_EXEC_RERUN_MS_FAIL: its node was lost; it is not rerunnable

# Runs a job may be refused at start (an execjob_begin hook's reject) before it is held
# (PBS: run_count over twice PBS_MAX_HOPCOUNT, req_runjob.c check_failed_attempts).
MAX_RUN_ATTEMPTS = 20
COMMENT_HOOK_REJECTED = "Not Running: PBS Error: Execution server rejected request"
COMMENT_TOO_MANY_ATTEMPTS = "job held, too many failed attempts to run"

# Hold_Types letters: a user hold (qhold, qsub -h) and the system hold kept while
# dependencies are pending; "n" is no hold.
USER_HOLD, SYSTEM_HOLD, NO_HOLD = "u", "s", "n"


@dataclass(frozen=True)
class RunStart:
    """A worker starting a run of a job: what the record keeps of it."""

    token: str  # fences the run: only the worker holding it records the run's end
    work_seq: int  # stream sequence of the work message that started it
    worker: str
    exec_host: str  # `<host>/0*<ncpus>`
    euser: str | None = None  # the account its processes run as, if the worker knows it


@dataclass(frozen=True)
class RunEnd:
    """How a run ended, as its worker records it."""

    exit_status: int
    session_id: int
    resources_used: dict[str, str]
    results: list[ResultFile]  # the files it left, stored in its own collection:
    results_path: str  # ... this WebDAV path
    results_url: str  # ... at this URL
    comment: str | None = None


def _holds(types: str) -> str:
    """Hold_Types as PBS writes them: u, o, s in that order; n for none."""
    return "".join(t for t in "uos" if t in types) or NO_HOLD


def _queued(record: JobRecord, now: float) -> JobRecord:
    """A held job with no holds left: queued, or W while its -a time is ahead; it is
    enqueued once more."""
    state = next_state(record.state, JobEvent.RELEASE)
    if record.spec.exec_time is not None and record.spec.exec_time > now:
        state = next_state(state, JobEvent.DEFER)
    return record.model_copy(update={"state": state, "enqueue_count": record.enqueue_count + 1})


def _ended(record: JobRecord, event: JobEvent, now: float, **changes: Any) -> JobRecord:
    """The job's life ends (FINISH or DELETE): its end time, no run any more."""
    return record.model_copy(
        update={
            "state": next_state(record.state, event),
            "obittime": now,
            "run_token": None,
            **changes,
        }
    )


# -- submission, holds, dependencies ----------------------------------------------------


def submitted(
    number: int,
    server: str,
    owner: str,
    spec: JobSpec,
    submit_id: str,
    depend_pending: dict[str, list[int]],
    now: float,
    comment: str | None = None,
) -> JobRecord:
    """A new job: held (qsub -h, or dependencies pending), else queued (W while its
    -a time is ahead). `comment`: what a queuejob hook wrote."""
    holds = (USER_HOLD if spec.hold else "") + (SYSTEM_HOLD if depend_pending else "")
    record = JobRecord(
        number=number,
        server=server,
        owner=owner,
        spec=spec,
        state=JobState.HELD,
        submit_id=submit_id,
        hold_types=_holds(holds),
        depend_pending=depend_pending,
        comment=comment,
    )
    return record if holds else _queued(record, now)


def held(record: JobRecord, types: str) -> JobRecord:
    """qhold: these holds are added; a queued or waiting job becomes H."""
    state = record.state
    if can(state, JobEvent.HOLD):
        state = next_state(state, JobEvent.HOLD)
    holds = _holds(record.hold_types + types)
    return record.model_copy(update={"hold_types": holds, "state": state})


def released(record: JobRecord, types: str, now: float) -> JobRecord:
    """qrls: these holds go. A held job with none left is queued, unless dependencies
    are pending: then the system hold stays."""
    holds = _holds("".join(t for t in record.hold_types if t not in types))
    new = record.model_copy(update={"hold_types": holds})
    if record.state != JobState.HELD or holds != NO_HOLD:
        return new
    if record.depend_pending:
        return new.model_copy(update={"hold_types": SYSTEM_HOLD})
    return _queued(new, now)


def dependent_added(parent: JobRecord, child: int) -> JobRecord:
    """Job `child` waits for `parent`: it is told when the parent starts and ends."""
    return parent.model_copy(update={"dependents": [*parent.dependents, child]})


def dependencies_met(
    child: JobRecord, parent: int, kinds: Collection[str], now: float
) -> JobRecord:
    """Job `parent` met these kinds of `child`'s dependencies on it. With none left
    the system hold goes; with no hold left the child is queued."""
    pending = {}
    for kind, numbers in child.depend_pending.items():
        left = [n for n in numbers if n != parent] if kind in kinds else numbers
        if left:
            pending[kind] = left
    new = child.model_copy(update={"depend_pending": pending})
    if pending:
        return new
    new = new.model_copy(update={"hold_types": _holds(new.hold_types.replace(SYSTEM_HOLD, ""))})
    return _queued(new, now) if new.hold_types == NO_HOLD else new


def dependency_failed(child: JobRecord, kind: str, parent_id: str, now: float) -> JobRecord:
    """A dependency of a held job can never be met: the job is deleted, saying why."""
    return _ended(
        child,
        JobEvent.DELETE,
        now,
        depend_pending={},
        comment=f"Job deleted: dependency {kind} on {parent_id} can never be met",
    )


def altered(
    record: JobRecord, change: AlterRequest, depend_pending: dict[str, list[int]], now: float
) -> JobRecord:
    """qalter: the spec takes the changed attributes. New dependencies (pending:
    `depend_pending`) replace the old, with a system hold until they are met; a new
    -a time moves the job between Q and W."""
    new = record
    if change.depend is not None:
        new = new.model_copy(update={"depend_pending": depend_pending})
        if depend_pending:
            new = held(new, SYSTEM_HOLD)
    spec = record.spec
    values = change.model_dump(exclude_none=True, exclude={"resources", "attributes"})
    values["resources"] = {**spec.resources, **(change.resources or {})}
    values["attributes"] = {**spec.attributes, **(change.attributes or {})}
    new = new.model_copy(update={"spec": JobSpec.model_validate({**spec.model_dump(), **values})})
    if change.exec_time is not None:
        due = change.exec_time <= now
        if new.state == JobState.WAITING and due:
            new = new.model_copy(update={"state": next_state(new.state, JobEvent.RELEASE)})
        elif new.state == JobState.QUEUED and not due:
            new = new.model_copy(update={"state": next_state(new.state, JobEvent.DEFER)})
    return new


def work_lost(record: JobRecord) -> JobRecord:
    """A queued job whose work message was lost: it is enqueued once more."""
    return record.model_copy(update={"enqueue_count": record.enqueue_count + 1})


# -- delete and rerun -------------------------------------------------------------------


def deleted(record: JobRecord, by: str, now: float) -> JobRecord:
    """qdel of a job that is not running (or of a subjob that never started): it ends.
    A begun array's comment (PBS's "Job Array Began at …") says it was terminated."""
    if record.is_array and record.state == JobState.BEGUN:
        began = record.comment or "Job Array Began"
        comment = f"{began} and terminated by {by}"
    else:
        before = "" if record.run_count else " before it ran"
        comment = f"Job deleted by {by}{before}"
    return _ended(record, JobEvent.DELETE, now, deleted_by=by, comment=comment)


def delete_requested(record: JobRecord, by: str) -> JobRecord:
    """qdel of a running job: its worker kills it and records the end."""
    return record.model_copy(update={"deleted_by": by, "delete_requested": True})


def rerun_requested(record: JobRecord) -> JobRecord:
    """qrerun of a running job: its worker kills it and queues it again."""
    return record.model_copy(update={"rerun_requested": True})


# -- arrays -----------------------------------------------------------------------------


def begun(array: JobRecord, now: float) -> JobRecord:
    """The first subjob of an array started: the array is B, and says when (the
    comment PBS's server gives it, in the server's local time)."""
    began = time.strftime("%a %b %d at %H:%M", time.localtime(now))
    return array.model_copy(
        update={
            "state": next_state(array.state, JobEvent.BEGIN),
            "stime": now,
            "comment": f"Job Array Began at {began}",
        }
    )


def subjobs_counted(
    array: JobRecord, done: int, failed: int, now: float, running: int = 0
) -> JobRecord:
    """`done` subjobs of the array have ended, `failed` of them not with exit status 0;
    `running` run. With the last one the array ends: Exit_status 0 if every subjob's
    was, else 1 (and its comment, PBS's "Job Array Began at …", says it finished)."""
    new = array.model_copy(
        update={"array_done": done, "array_failed": failed, "array_running": running}
    )
    if done < len(array.spec.array_indices()):
        return new
    comment = f"{array.comment} and finished" if array.comment else None
    return _ended(new, JobEvent.FINISH, now, exit_status=1 if failed else 0, comment=comment,
                  array_running=0)


# -- runs -------------------------------------------------------------------------------


def _running(
    record: JobRecord, state: JobState, run: RunStart, now: float, comment: str | None
) -> JobRecord:
    return record.model_copy(
        update={
            "state": state,
            "run_count": record.run_count + 1,
            "run_token": run.token,
            "work_seq": run.work_seq,
            "worker": run.worker,
            "exec_host": run.exec_host,
            "euser": run.euser,
            "stime": now,
            "exit_status": None,
            "comment": comment,
        }
    )


def started(record: JobRecord, run: RunStart, now: float) -> JobRecord:
    """A worker takes a queued job (or one whose -a time has come): run_count + 1."""
    state = record.state
    if state == JobState.WAITING:
        state = next_state(state, JobEvent.RELEASE)
    return _running(record, next_state(state, JobEvent.START), run, now, None)


def restarted(record: JobRecord, run: RunStart, now: float) -> JobRecord:
    """A worker takes a job whose run was lost with its worker: a new run."""
    state = next_state(record.state, JobEvent.RESTART)
    return _running(record, state, run, now, "Rerun after its worker was lost")


def usage_noted(record: JobRecord, resources_used: dict[str, str], session_id: int | None
                ) -> JobRecord:
    """What the running job has used so far, and its session (qstat -f while it runs)."""
    return record.model_copy(update={"resources_used": resources_used,
                                     "session_id": session_id or record.session_id})


def worker_lost(record: JobRecord, now: float) -> JobRecord:
    """The worker running a job that is not rerunnable was lost: the job ends."""
    return _ended(
        record,
        JobEvent.FINISH,
        now,
        exit_status=EXIT_LOST_NOT_RERUNNABLE,
        comment="Worker lost while the job ran; job is not rerunnable",
    )


def could_not_start(record: JobRecord, reason: str, now: float) -> JobRecord:
    """The job can never start (a bad payload, a missing program): it ends."""
    return _ended(
        record,
        JobEvent.FINISH,
        now,
        exit_status=EXIT_FAILED_BEFORE_START,
        comment=f"Job could not start: {reason}",
    )


def finished(record: JobRecord, end: RunEnd, now: float) -> JobRecord:
    """The run ended and its results are stored: the job ends with them."""
    comment = end.comment
    if record.delete_requested:
        comment = f"Job deleted by {record.deleted_by or 'request'} while running"
    return _ended(
        record,
        JobEvent.FINISH,
        now,
        exit_status=end.exit_status,
        session_id=end.session_id,
        resources_used=end.resources_used,
        results=end.results,
        results_path=end.results_path,
        results_url=end.results_url,
        comment=comment,
    )


def suspended(record: JobRecord) -> JobRecord:
    """qsig -s suspend: the job's processes are stopped (its worker stops them and its
    walltime clock) until it is resumed."""
    return record.model_copy(update={"state": next_state(record.state, JobEvent.SUSPEND)})


def resumed(record: JobRecord) -> JobRecord:
    """qsig -s resume: the suspended job's processes continue, and its walltime clock."""
    return record.model_copy(update={"state": next_state(record.state, JobEvent.RESUME)})


def suspend_refused(record: JobRecord, reason: str) -> JobRecord:
    """Its worker cannot stop the job's processes: it runs on, saying why."""
    return resumed(record).model_copy(update={"comment": f"Job not suspended: {reason}"})


def requeued(record: JobRecord, reason: str | None, *, fresh_message: bool) -> JobRecord:
    """The run is handed back unfinished and the job queued again: by qrerun, a
    draining worker, or one that cannot run it now (`reason`). `fresh_message`: a new
    work message goes out (an enqueue), rather than the same one coming back."""
    comment = reason or (
        "Requeued by qrerun" if record.rerun_requested else "Handed back by a draining worker"
    )
    return record.model_copy(
        update={
            "state": next_state(record.state, JobEvent.REQUEUE),
            "run_token": None,
            "enqueue_count": record.enqueue_count + (1 if fresh_message else 0),
            "comment": comment,
            "rerun_requested": False,
        }
    )


def not_run(record: JobRecord, why: str) -> JobRecord | None:
    """A queued job that does not start now: why, as PBS's scheduler comments it (`Not
    Running: ...` for a limit or resources busy now, `Can Never Run: ...` for more than
    any worker has); starting clears it. None if it is not waiting to start any more,
    or already says so."""
    if not is_pending(record.state) or record.comment == why:
        return None
    return record.model_copy(update={"comment": why})


def start_rejected(record: JobRecord) -> JobRecord:
    """An execjob_begin hook refused the run before the job started: the job is queued
    again (the same work message comes back), and held with a system hold once it
    has been refused more than MAX_RUN_ATTEMPTS times, as PBS does."""
    queued = requeued(record, COMMENT_HOOK_REJECTED, fresh_message=False)
    if record.run_count <= MAX_RUN_ATTEMPTS:
        return queued
    return held(queued, SYSTEM_HOLD).model_copy(update={"comment": COMMENT_TOO_MANY_ATTEMPTS})


