"""The job state machine, written once, as data.

Every component asks this module whether a change is allowed; nobody compares
state letters by hand. Letters are PBS's (qstat's `S` column).
"""

from __future__ import annotations

from enum import StrEnum

from pkbs.errors import InvalidTransition


class JobState(StrEnum):
    QUEUED = "Q"  # eligible to run, waiting for a worker slot
    HELD = "H"  # held by qhold / qsub -h or by an unmet dependency
    WAITING = "W"  # waiting for its execution time (qsub -a)
    RUNNING = "R"  # a worker runs it
    SUSPENDED = "S"  # running, its processes stopped (qsig -s suspend)
    EXITING = "E"  # the job ended; its results are being stored
    FINISHED = "F"  # completed, failed or deleted: history only
    BEGUN = "B"  # array with at least one subjob started
    EXPIRED = "X"  # finished subjob of an array


class JobEvent(StrEnum):
    HOLD = "hold"  # qhold
    RELEASE = "release"  # qrls, or the dependency / execution time is met
    START = "start"  # a worker takes the job
    RESTART = "restart"  # a worker takes a job whose previous run was lost
    EXIT = "exit"  # the job's processes ended; results are being stored
    FINISH = "finish"  # final state recorded
    REQUEUE = "requeue"  # handed back unfinished (worker drained, qrerun)
    DELETE = "delete"  # qdel of a job that is not running
    DEFER = "defer"  # its execution time (qsub -a) is still ahead
    BEGIN = "begin"  # the first subjob of an array started
    SUSPEND = "suspend"  # qsig -s suspend: the job's processes are stopped
    RESUME = "resume"  # qsig -s resume: they continue


Q, H, W, R, S, E, F = (
    JobState.QUEUED,
    JobState.HELD,
    JobState.WAITING,
    JobState.RUNNING,
    JobState.SUSPENDED,
    JobState.EXITING,
    JobState.FINISHED,
)

TRANSITIONS: dict[tuple[JobState, JobEvent], JobState] = {
    (Q, JobEvent.HOLD): H,
    (W, JobEvent.HOLD): H,
    (H, JobEvent.RELEASE): Q,
    (W, JobEvent.RELEASE): Q,
    (Q, JobEvent.START): R,
    (R, JobEvent.RESTART): R,
    (S, JobEvent.RESTART): R,  # a suspended job whose worker was lost runs afresh
    (E, JobEvent.RESTART): R,
    (R, JobEvent.EXIT): E,
    (R, JobEvent.FINISH): F,
    (E, JobEvent.FINISH): F,
    (S, JobEvent.FINISH): F,  # ended while suspended (qdel, or before the stop took)
    (R, JobEvent.REQUEUE): Q,
    (E, JobEvent.REQUEUE): Q,
    (S, JobEvent.REQUEUE): Q,
    (R, JobEvent.SUSPEND): S,
    (S, JobEvent.RESUME): R,
    (Q, JobEvent.DEFER): W,
    (Q, JobEvent.BEGIN): JobState.BEGUN,
    (JobState.BEGUN, JobEvent.FINISH): F,
    (JobState.BEGUN, JobEvent.DELETE): F,
    (Q, JobEvent.FINISH): F,  # an array whose subjobs all ended before it was marked begun
    (Q, JobEvent.DELETE): F,
    (H, JobEvent.DELETE): F,
    (W, JobEvent.DELETE): F,
}

# States a job can be in while a worker holds its message.
ACTIVE_STATES = frozenset({R, S, E})
# States in which the job will still run without anybody's help.
PENDING_STATES = frozenset({Q, W})
# States that end a job's life; shown only with qstat -x.
FINAL_STATES = frozenset({F, JobState.EXPIRED})


def can(state: JobState, event: JobEvent) -> bool:
    return (state, event) in TRANSITIONS


def next_state(state: JobState, event: JobEvent) -> JobState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


def is_final(state: JobState) -> bool:
    return state in FINAL_STATES


def is_active(state: JobState) -> bool:
    return state in ACTIVE_STATES


def is_pending(state: JobState) -> bool:
    return state in PENDING_STATES


def shown_state(state: JobState, subjob: bool) -> JobState:
    """The state qstat shows: X (expired) for a finished subjob."""
    return JobState.EXPIRED if subjob and state == F else state
