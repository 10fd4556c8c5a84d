"""Every change of a job's life (pkbs.lifecycle) on records in memory, without a
stack: the state each gives, and all the bookkeeping that goes with it."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from pkbs import lifecycle
from pkbs.lifecycle import RunEnd, RunStart
from pkbs.models import AlterRequest, JobRecord, JobSpec, ResultFile
from pkbs.states import InvalidTransition, JobState, is_pending, shown_state

NOW = 1_700_000_000.0
RUN = RunStart(token="t1", work_seq=41, worker="w1", exec_host="host/0*1")


def spec(**fields: Any) -> JobSpec:
    base = {"name": "job", "kind": "stdin", "entrypoint": "STDIN", "queue": "workq"}
    return JobSpec(**{**base, **fields})


def record(state: JobState = JobState.QUEUED, **fields: Any) -> JobRecord:
    return JobRecord(
        number=7,
        server="pkbs",
        owner="alice",
        spec=fields.pop("spec", spec()),
        state=state,
        submit_id="lifecycle-unit",
        **fields,
    )


def running(**fields: Any) -> JobRecord:
    return lifecycle.started(record(**fields), RUN, NOW - 10)


def test_records_are_frozen() -> None:
    job = record()
    with pytest.raises(pydantic.ValidationError):
        job.state = JobState.RUNNING  # type: ignore[misc]


def test_pbs_exit_codes() -> None:
    assert (
        lifecycle.EXIT_FAILED_BEFORE_START,
        lifecycle.EXIT_RESULTS_NOT_STORED,
        lifecycle.EXIT_LOST_NOT_RERUNNABLE,
    ) == (-1, -2, -20)  # JOB_EXEC_FAIL1, JOB_EXEC_FAIL2, JOB_EXEC_RERUN_MS_FAIL


# -- submission ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "pending", "state", "holds", "enqueued"),
    [
        ({}, {}, JobState.QUEUED, "n", 1),
        ({"exec_time": NOW + 60}, {}, JobState.WAITING, "n", 1),
        ({"exec_time": NOW - 60}, {}, JobState.QUEUED, "n", 1),
        ({"hold": True}, {}, JobState.HELD, "u", 0),
        ({}, {"afterok": [3]}, JobState.HELD, "s", 0),
        ({"hold": True}, {"afterok": [3]}, JobState.HELD, "us", 0),
    ],
)
def test_submitted(
    fields: dict[str, Any], pending: dict[str, list[int]], state: JobState, holds: str,
    enqueued: int,
) -> None:
    job = lifecycle.submitted(7, "pkbs", "alice", spec(**fields), "sub-id-1", pending, NOW)
    assert (job.state, job.hold_types, job.enqueue_count) == (state, holds, enqueued)
    assert (job.number, job.owner, job.submit_id, job.depend_pending) == (
        7, "alice", "sub-id-1", pending
    )
    assert job.run_count == 0 and job.stime is None and job.obittime is None


# -- holds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "holds", "types", "after", "after_holds"),
    [
        (JobState.QUEUED, "n", "u", JobState.HELD, "u"),
        (JobState.WAITING, "n", "o", JobState.HELD, "o"),
        (JobState.HELD, "s", "u", JobState.HELD, "us"),
        (JobState.HELD, "o", "uo", JobState.HELD, "uo"),
        (JobState.RUNNING, "n", "u", JobState.RUNNING, "u"),
    ],
)
def test_held(
    state: JobState, holds: str, types: str, after: JobState, after_holds: str
) -> None:
    job = lifecycle.held(record(state, hold_types=holds), types)
    assert (job.state, job.hold_types, job.enqueue_count) == (after, after_holds, 0)


@pytest.mark.parametrize(
    ("fields", "types", "after", "after_holds", "enqueued"),
    [
        ({"hold_types": "u"}, "u", JobState.QUEUED, "n", 1),
        ({"hold_types": "u", "spec": spec(exec_time=NOW + 5)}, "u", JobState.WAITING, "n", 1),
        ({"hold_types": "uo"}, "u", JobState.HELD, "o", 0),
        ({"hold_types": "us", "depend_pending": {"afterok": [3]}}, "u", JobState.HELD, "s", 0),
        # Releasing every hold of a job with pending dependencies keeps the system hold.
        ({"hold_types": "us", "depend_pending": {"afterok": [3]}}, "us", JobState.HELD, "s", 0),
    ],
)
def test_released(
    fields: dict[str, Any], types: str, after: JobState, after_holds: str, enqueued: int
) -> None:
    job = lifecycle.released(record(JobState.HELD, **fields), types, NOW)
    assert (job.state, job.hold_types, job.enqueue_count) == (after, after_holds, enqueued)


def test_released_job_that_is_not_held_only_loses_the_holds() -> None:
    job = lifecycle.released(record(JobState.RUNNING, hold_types="u"), "u", NOW)
    assert (job.state, job.hold_types, job.enqueue_count) == (JobState.RUNNING, "n", 0)


# -- dependencies ----------------------------------------------------------------------


def test_dependent_added() -> None:
    parent = record(dependents=[5])
    assert lifecycle.dependent_added(parent, 9).dependents == [5, 9]
    assert parent.dependents == [5]


def test_dependencies_met_in_part_keep_the_job_held() -> None:
    child = record(JobState.HELD, hold_types="s", depend_pending={"afterok": [3, 4]})
    job = lifecycle.dependencies_met(child, 3, ["afterok"], NOW)
    assert (job.state, job.hold_types, job.depend_pending) == (
        JobState.HELD, "s", {"afterok": [4]}
    )
    assert child.depend_pending == {"afterok": [3, 4]}


def test_dependencies_met_only_for_the_kinds_given() -> None:
    child = record(JobState.HELD, hold_types="s",
                   depend_pending={"afterok": [3], "afterany": [3]})
    job = lifecycle.dependencies_met(child, 3, ["afterany"], NOW)
    assert job.depend_pending == {"afterok": [3]} and job.state == JobState.HELD


def test_dependencies_all_met_queue_the_job() -> None:
    child = record(JobState.HELD, hold_types="s", depend_pending={"afterok": [3]})
    job = lifecycle.dependencies_met(child, 3, ["afterok"], NOW)
    assert (job.state, job.hold_types, job.depend_pending, job.enqueue_count) == (
        JobState.QUEUED, "n", {}, 1
    )


def test_dependencies_all_met_leave_a_user_hold() -> None:
    child = record(JobState.HELD, hold_types="us", depend_pending={"afterok": [3]})
    job = lifecycle.dependencies_met(child, 3, ["afterok"], NOW)
    assert (job.state, job.hold_types, job.enqueue_count) == (JobState.HELD, "u", 0)


def test_dependency_failed_deletes_the_job() -> None:
    child = record(JobState.HELD, hold_types="s", depend_pending={"afterok": [3]})
    job = lifecycle.dependency_failed(child, "afterok", "3.pkbs", NOW)
    assert (job.state, job.obittime, job.depend_pending) == (JobState.FINISHED, NOW, {})
    assert job.comment == "Job deleted: dependency afterok on 3.pkbs can never be met"


# -- qalter ----------------------------------------------------------------------------


def test_altered_changes_the_spec() -> None:
    job = record(spec=spec(resources={"ncpus": "2"}, attributes={"project": "a"}))
    change = AlterRequest(name="renamed", resources={"walltime": "00:01:00"},
                          attributes={"Account_Name": "b"})
    new = lifecycle.altered(job, change, {}, NOW)
    assert new.spec.name == "renamed"
    assert new.spec.resources == {"ncpus": "2", "walltime": "00:01:00"}
    assert new.spec.attributes == {"project": "a", "Account_Name": "b"}
    assert new.state == JobState.QUEUED and job.spec.name == "job"


def test_altered_dependencies_hold_the_job() -> None:
    change = AlterRequest(depend="afterok:3.pkbs")
    new = lifecycle.altered(record(), change, {"afterok": [3]}, NOW)
    assert (new.state, new.hold_types, new.depend_pending) == (
        JobState.HELD, "s", {"afterok": [3]}
    )
    assert new.spec.depend == "afterok:3.pkbs"


@pytest.mark.parametrize(
    ("state", "exec_time", "after"),
    [
        (JobState.QUEUED, NOW + 60, JobState.WAITING),
        (JobState.QUEUED, NOW - 60, JobState.QUEUED),
        (JobState.WAITING, NOW - 60, JobState.QUEUED),
        (JobState.WAITING, NOW + 60, JobState.WAITING),
        (JobState.HELD, NOW + 60, JobState.HELD),
    ],
)
def test_altered_exec_time(state: JobState, exec_time: float, after: JobState) -> None:
    new = lifecycle.altered(record(state), AlterRequest(exec_time=exec_time), {}, NOW)
    assert new.state == after and new.spec.exec_time == exec_time


def test_work_lost_enqueues_once_more() -> None:
    assert lifecycle.work_lost(record(enqueue_count=2)).enqueue_count == 3


# -- delete and rerun ------------------------------------------------------------------


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.HELD, JobState.WAITING,
                                   JobState.BEGUN])
def test_deleted_before_it_ran(state: JobState) -> None:
    job = lifecycle.deleted(record(state), "bob", NOW)
    assert (job.state, job.obittime, job.deleted_by, job.run_token) == (
        JobState.FINISHED, NOW, "bob", None
    )
    assert job.comment == "Job deleted by bob before it ran"


def test_deleted_after_a_run() -> None:
    job = lifecycle.deleted(record(run_count=1), "bob", NOW)
    assert job.comment == "Job deleted by bob"


def test_deleted_running_job_is_refused() -> None:
    with pytest.raises(InvalidTransition):
        lifecycle.deleted(running(), "bob", NOW)


def test_delete_and_rerun_requested_of_a_running_job() -> None:
    job = lifecycle.delete_requested(running(), "bob")
    assert (job.state, job.delete_requested, job.deleted_by) == (JobState.RUNNING, True, "bob")
    assert lifecycle.rerun_requested(running()).rerun_requested


# -- arrays ----------------------------------------------------------------------------


def test_begun() -> None:
    waiting = lifecycle.not_run(record(spec=spec(array="1-3")), "Not Running: limit")
    assert waiting is not None
    assert (waiting.state, waiting.comment) == (JobState.QUEUED, "Not Running: limit")
    array = lifecycle.begun(waiting, NOW)
    assert (array.state, array.stime) == (JobState.BEGUN, NOW)
    assert array.comment is not None and array.comment.startswith("Job Array Began at ")


@pytest.mark.parametrize(
    ("done", "failed", "state", "exit_status"),
    [
        (2, 1, JobState.BEGUN, None),
        (3, 0, JobState.FINISHED, 0),
        (3, 1, JobState.FINISHED, 1),
    ],
)
def test_subjobs_counted(done: int, failed: int, state: JobState, exit_status: int | None) -> None:
    array = record(JobState.BEGUN, spec=spec(array="1-3"))
    new = lifecycle.subjobs_counted(array, done, failed, NOW)
    assert (new.array_done, new.array_failed, new.state, new.exit_status) == (
        done, failed, state, exit_status
    )
    assert new.obittime == (NOW if state == JobState.FINISHED else None)


# -- runs ------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.WAITING])
def test_started(state: JobState) -> None:
    job = lifecycle.started(record(state, run_count=1, exit_status=3, comment="old"), RUN, NOW)
    assert job.state == JobState.RUNNING
    assert (job.run_count, job.run_token, job.work_seq, job.worker, job.exec_host) == (
        2, "t1", 41, "w1", "host/0*1"
    )
    assert (job.stime, job.exit_status, job.comment) == (NOW, None, None)


@pytest.mark.parametrize("state", [JobState.HELD, JobState.RUNNING, JobState.FINISHED])
def test_started_from_elsewhere_is_refused(state: JobState) -> None:
    with pytest.raises(InvalidTransition):
        lifecycle.started(record(state), RUN, NOW)


def test_restarted() -> None:
    again = RunStart(token="t2", work_seq=41, worker="w2", exec_host="other/0*1")
    job = lifecycle.restarted(running(), again, NOW)
    assert (job.state, job.run_count, job.run_token, job.worker, job.stime) == (
        JobState.RUNNING, 2, "t2", "w2", NOW
    )
    assert job.comment == "Rerun after its worker was lost"


def test_worker_lost() -> None:
    job = lifecycle.worker_lost(running(), NOW)
    assert (job.state, job.exit_status, job.obittime, job.run_token) == (
        JobState.FINISHED, -20, NOW, None
    )
    assert job.comment == "Worker lost while the job ran; job is not rerunnable"


def test_could_not_start() -> None:
    job = lifecycle.could_not_start(running(), "no such file", NOW)
    assert (job.state, job.exit_status, job.obittime, job.run_token) == (
        JobState.FINISHED, -1, NOW, None
    )
    assert job.comment == "Job could not start: no such file" and job.results_path is None


END = RunEnd(
    exit_status=3,
    session_id=1234,
    resources_used={"walltime": "00:00:01"},
    results=[ResultFile(name="job.o7", size=5)],
    results_path="/pkbs/alice/7.pkbs/run-1/",
    results_url="http://dav/pkbs/alice/7.pkbs/run-1/",
    comment="output cut",
)


def test_finished() -> None:
    job = lifecycle.finished(running(), END, NOW)
    assert (job.state, job.obittime, job.run_token, job.exit_status, job.session_id) == (
        JobState.FINISHED, NOW, None, 3, 1234
    )
    assert (job.results, job.results_path, job.results_url) == (
        END.results, END.results_path, END.results_url
    )
    assert (job.resources_used, job.comment, job.stime) == (END.resources_used, "output cut",
                                                           NOW - 10)


def test_finished_after_qdel_says_so() -> None:
    job = lifecycle.finished(lifecycle.delete_requested(running(), "bob"), END, NOW)
    assert job.comment == "Job deleted by bob while running" and job.exit_status == 3


@pytest.mark.parametrize(
    ("reason", "rerun", "comment"),
    [
        (None, True, "Requeued by qrerun"),
        (None, False, "Handed back by a draining worker"),
        ("Worker w1: disk full", False, "Worker w1: disk full"),
    ],
)
def test_requeued(reason: str | None, rerun: bool, comment: str) -> None:
    job = running(enqueue_count=1)
    if rerun:
        job = lifecycle.rerun_requested(job)
    for fresh, enqueued in ((True, 2), (False, 1)):
        new = lifecycle.requeued(job, reason, fresh_message=fresh)
        assert (new.state, new.run_token, new.enqueue_count) == (JobState.QUEUED, None, enqueued)
        assert (new.comment, new.rerun_requested, new.run_count) == (comment, False, 1)


# -- states ----------------------------------------------------------------------------


def test_states_shown_and_pending() -> None:
    assert shown_state(JobState.FINISHED, subjob=True) == JobState.EXPIRED
    assert shown_state(JobState.FINISHED, subjob=False) == JobState.FINISHED
    assert shown_state(JobState.RUNNING, subjob=True) == JobState.RUNNING
    assert [s for s in JobState if is_pending(s)] == [JobState.QUEUED, JobState.WAITING]
