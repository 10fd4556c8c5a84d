"""The one error tree. Every error pkbs reports is a PkbsError: its PBS error number,
the HTTP status the dispatcher answers with, its message, and the status a command
exits with after printing it (cli/command.py). The dispatcher sends an error as
``to_dict()``; the CLI makes the same class again with ``from_reply``.

Import-light (no typing, no re): every command imports it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pkbs.states import JobEvent, JobState

# PBS error numbers (OpenPBS src/include/pbs_error.h).
PBSE_UNKJOBID = 15001
PBSE_NOATTR = 15002
PBSE_ATTRRO = 15003
PBSE_IVALREQ = 15004
PBSE_PERM = 15007
PBSE_SYSTEM = 15010
PBSE_INTERNAL = 15011
PBSE_UNKSIG = 15013
PBSE_BADATVAL = 15014
PBSE_MODATRRUN = 15015
PBSE_BADSTATE = 15016
PBSE_UNKQUE = 15018
PBSE_BADCRED = 15019
PBSE_QUNOENB = 15021
PBSE_QUEEXIST = 15025
PBSE_OBJBUSY = 15027
PBSE_QUENBIG = 15028
PBSE_UNKRESC = 15035
PBSE_EXCQRESC = 15036
PBSE_QUENODFLT = 15037
PBSE_NORERUN = 15038
PBSE_UNKNODE = 15062
PBSE_HOOKERROR = 15136
PBSE_HISTJOBID = 15139
PBSE_ENTLIMCT = 15142
PBSE_SAVE_ERR = 15161

# Exit statuses of the commands that are not exit(pbs_errno).
EXIT_SCRIPT = 1  # qsub: the script cannot be used (OpenPBS: read or tmp-file error)
EXIT_FAILURE = 1  # pkbs up / down: the local stack did not start or stop
EXIT_NOT_READY = 1  # pkbs status, pkbs cluster status: a part is not running or not ready
EXIT_USAGE = 2  # every command: usage or illegal option (qmgr and pbsnodes: 1, as PBS's)
EXIT_BAD_JOB_ID = 1  # qdel, qhold...: an operand that is not a job id (PBS's any_failed = 1)
EXIT_NO_CLUSTER = 2  # pkbs cluster: no Kubernetes cluster to ask
EXIT_BLOCK_DELETED = 3  # qsub -W block=true: the job was deleted before it ran
EXIT_OPEN_SCRIPT = 8  # qsub: the script file cannot be opened


def exit_code(status: int) -> int:
    """The status a shell sees when a process calls exit(status): its low 8 bits (for
    a PBS command's exit(pbs_errno), 15001 -> 153)."""
    return status & 0xFF


class PkbsError(Exception):
    """Base of every pkbs error."""

    pbs_errno: int = PBSE_SYSTEM
    http_status: int = 500
    default_message: str = "System error"
    # False for an error of the connection or the caller rather than of a job: a command
    # acting on several jobs reports it once, naming no job, and stops (cli/command.py).
    names_job: bool = True

    def __init__(self, message: str | None = None, job_id: str | None = None) -> None:
        self.message = message or self.default_message
        self.job_id = job_id
        super().__init__(str(self))

    def __str__(self) -> str:
        """As PBS's commands print it after `<command>: `: the message, then the job."""
        return self.message if self.job_id is None else f"{self.message} {self.job_id}"

    @property
    def exit_status(self) -> int:
        """What a command exits with after reporting it: exit(pbs_errno), as PBS's do."""
        return exit_code(self.pbs_errno)

    def to_dict(self) -> dict[str, object]:
        return {"pbs_errno": self.pbs_errno, "message": self.message, "job_id": self.job_id}


# --------------------------------------------------------------------------- jobs, queues


class UnknownJob(PkbsError):
    pbs_errno = PBSE_UNKJOBID
    http_status = 404
    default_message = "Unknown Job Id"


class FinishedJob(PkbsError):
    """A request for a job whose history is all that is left. qstat adds PBS's hint after
    it (HISTORY_HINT), naming the job first: `qstat: 5.svr Job has finished, use -x ...`."""

    pbs_errno = PBSE_HISTJOBID
    http_status = 409
    default_message = "Job has finished"
    HISTORY_HINT = "use -x or -H to obtain historical job information"


class UnknownQueue(PkbsError):
    pbs_errno = PBSE_UNKQUE
    http_status = 400
    default_message = "Unknown queue"


class QueueDisabled(PkbsError):
    pbs_errno = PBSE_QUNOENB
    http_status = 400
    default_message = "Queue is not enabled"


class NoDefaultQueue(PkbsError):
    """A job that names no queue, on a server whose default_queue is unset."""

    pbs_errno = PBSE_QUENODFLT
    http_status = 400
    default_message = "No default queue specified"


class QueueExists(PkbsError):
    pbs_errno = PBSE_QUEEXIST
    http_status = 409
    default_message = "Queue already exists"


class QueueNameTooLong(PkbsError):
    pbs_errno = PBSE_QUENBIG
    http_status = 400
    default_message = "Queue name too long"


class ObjectBusy(PkbsError):
    """qmgr: a queue that still holds unfinished jobs cannot be deleted."""

    pbs_errno = PBSE_OBJBUSY
    http_status = 409
    default_message = "Cannot delete busy object"


class BadState(PkbsError):
    pbs_errno = PBSE_BADSTATE
    http_status = 409
    default_message = "Request invalid for state of job"


class InvalidTransition(BadState):
    """An event the job state machine (pkbs/states.py) does not allow in a state."""

    def __init__(self, state: JobState, event: JobEvent) -> None:
        super().__init__(f"cannot {event.value} a job in state {state.value}")
        self.state = state
        self.event = event


class UnknownSignal(PkbsError):
    """qsig of a signal name MoM's table lacks."""

    pbs_errno = PBSE_UNKSIG
    http_status = 400
    default_message = "Unknown/illegal signal name"


class NoOutput(BadState):
    """`pkbs logs` of a job that never ran (deleted while queued, or could not start)."""

    default_message = "Never ran, so there is no output of job"


class ModifyRunning(PkbsError):
    pbs_errno = PBSE_MODATRRUN
    http_status = 409
    default_message = "Cannot modify attribute while job running"


class NotRerunnable(PkbsError):
    pbs_errno = PBSE_NORERUN
    http_status = 409
    default_message = "Job is not rerunnable"


class ExceedsLimits(PkbsError):
    pbs_errno = PBSE_EXCQRESC
    http_status = 400
    default_message = "Job violates queue and/or server resource limits"


class UnknownResource(PkbsError):
    """A resource the server does not know: `Unknown resource Resource_List.foo` (job-wide),
    `Unknown resource: foo` (in a select chunk), as the server's reply names them."""

    pbs_errno = PBSE_UNKRESC
    http_status = 400
    default_message = "Unknown resource"


class HookRejected(PkbsError):
    """A hook rejected the request (queuejob at qsub, modifyjob at qalter), or failed
    (an exception, its alarm): PBS replies with the hook's message, or its own."""

    pbs_errno = PBSE_HOOKERROR
    http_status = 400
    default_message = "hook rejected request"


class HookError(PkbsError):
    """A qmgr hook command the server refuses (a bad attribute value, a name taken, a
    script that is not Python): PBS replies PBSE_HOOKERROR with its message."""

    pbs_errno = PBSE_HOOKERROR
    http_status = 422  # HookRejected's number too: the status tells them apart
    default_message = "hook error"


class UnknownHook(HookError):
    """qmgr names a hook the server does not have ("<name> does not exist!")."""

    http_status = 404
    default_message = "hook does not exist!"


class UnknownNode(PkbsError):
    """A node (a worker) the server does not know."""

    pbs_errno = PBSE_UNKNODE
    http_status = 404
    default_message = "Unknown node"


class EntityLimitReached(PkbsError):
    """A submission that would pass a max_queued limit (pkbs/limits.py): PBS's
    message says which (`Maximum number of jobs for user bob already in queue workq`)."""

    pbs_errno = PBSE_ENTLIMCT
    http_status = 409
    default_message = "would exceed complex's per-user limit"


# --------------------------------------------------------------------------- callers


class Unauthorized(PkbsError):
    """Another user's job, or an operation the caller's role does not allow."""

    pbs_errno = PBSE_PERM
    http_status = 403
    default_message = "Unauthorized Request"


class BadCredential(PkbsError):
    """Missing, unknown or expired token: PBS's words, then why (`because`)."""

    pbs_errno = PBSE_BADCRED
    http_status = 401
    default_message = "Invalid credential"
    names_job = False

    @classmethod
    def because(cls, reason: str) -> BadCredential:
        return cls(f"{cls.default_message}: {reason}")


# --------------------------------------------------------------------------- requests


class BadAttributeValue(PkbsError):
    pbs_errno = PBSE_BADATVAL
    http_status = 400
    default_message = "Illegal attribute or resource value"


class UnknownAttribute(PkbsError):
    pbs_errno = PBSE_NOATTR
    http_status = 400
    default_message = "Undefined attribute"


class ReadOnlyAttribute(PkbsError):
    pbs_errno = PBSE_ATTRRO
    http_status = 400
    default_message = "Cannot set attribute, read only or insufficient permission"


class DirectiveError(BadAttributeValue):
    """A ``#PBS`` line qsub cannot use, or a script with CRLF line endings."""

    exit_status = EXIT_SCRIPT

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


class InvalidRequest(PkbsError):
    pbs_errno = PBSE_IVALREQ
    http_status = 400
    default_message = "Invalid request"


class UnknownDefinition(InvalidRequest):
    """A job definition (pkbs/definitions.py) the server does not have, or not in
    the version asked for."""

    http_status = 404
    default_message = "Unknown job definition"


class PayloadTooLarge(InvalidRequest):
    http_status = 413
    default_message = "Job payload exceeds the 1 MiB limit"


class InvalidPayload(InvalidRequest):
    """A payload archive that is not a zip, or one that would escape its directory; a
    result file that would land outside the directory it is fetched into."""

    default_message = "Invalid job payload"


class WouldOverwrite(InvalidRequest):
    """`pkbs fetch` would replace files that exist (and differ) without --force."""

    default_message = "refusing to overwrite existing files"


class UsageError(InvalidRequest):
    """Command-line misuse: the command prints ``<command>: <message>`` (nothing for an
    empty message), its usage text when ``show_usage``, and exits 2."""

    default_message = ""
    exit_status = EXIT_USAGE

    def __init__(self, message: str = "", *, show_usage: bool = True) -> None:
        super().__init__(message)
        self.show_usage = show_usage


class IllegalJobId(InvalidRequest):
    """An operand of qdel, qhold, ... that is not a job id (PBS's commands check this
    before asking the server): `qdel: illegally formed job identifier: foo`, exit 1."""

    exit_status = EXIT_BAD_JOB_ID

    def __init__(self, operand: str) -> None:
        super().__init__("illegally formed job identifier:", job_id=operand)


class ScriptError(InvalidRequest):
    """A job script qsub cannot submit: empty, not a script, a directory without run.sh."""

    exit_status = EXIT_SCRIPT


class ScriptUnreadable(ScriptError):
    """A job script file qsub cannot open."""

    exit_status = EXIT_OPEN_SCRIPT


# --------------------------------------------------------------------------- the system


class StoreFull(PkbsError):
    """The job store has no room for a submission (pkbs/storage.py): refused, nothing
    of it stored. PBS's answer when it cannot save a job, with the reason after it."""

    pbs_errno = PBSE_SAVE_ERR
    http_status = 507
    default_message = "Failed to save job/resv, refer server logs for details"

    @classmethod
    def because(cls, detail: str) -> StoreFull:
        return cls(
            f"{cls.default_message}: job store full ({detail}); "
            "room is made as finished jobs' history expires"
        )


class Conflict(PkbsError):
    """A compare-and-set lost a race; the caller retries with fresh data."""

    pbs_errno = PBSE_INTERNAL
    http_status = 409
    default_message = "Concurrent update, retry"


class ServiceUnavailable(PkbsError):
    """NATS, WebDAV or the dispatcher cannot be reached; safe to retry."""

    http_status = 503
    default_message = "Service temporarily unavailable, retry"


class Unreachable(ServiceUnavailable):
    """The CLI cannot reach its dispatcher (after its retries): PBS's `cannot connect
    to server <server> (errno=<n>)`, with the endpoint and the reason."""

    names_job = False

    @classmethod
    def connecting(cls, endpoint: str, exc: BaseException) -> Unreachable:
        return cls(f"cannot connect to server {endpoint} ({_reason(exc)})")

    @classmethod
    def lost(cls, endpoint: str, exc: BaseException) -> Unreachable:
        return cls(f"connection to server {endpoint} lost ({_reason(exc)})")


def _reason(exc: BaseException) -> str:
    """`errno=111, Connection refused` for an OSError with a number, else its text."""
    if isinstance(exc, OSError) and exc.errno and exc.strerror:
        return f"errno={exc.errno}, {exc.strerror}"
    return str(exc) or type(exc).__name__


class NoConfig(PkbsError):
    """The CLI knows no dispatcher to ask (pkbs/clientconfig.py)."""

    names_job = False

    default_message = (
        "no pkbs endpoint configured: run `pkbs up` or `pkbs login`, "
        "or set PKBS_ENDPOINT and PKBS_TOKEN"
    )


class StackError(PkbsError):
    """`pkbs up` / `pkbs down`: the local stack did not start or stop (pkbs/local.py)."""

    exit_status = EXIT_FAILURE


class ClusterUnavailable(PkbsError):
    """No cluster to ask: no kubeconfig, an API that does not answer or refuses us
    (pkbs/cluster.py)."""

    exit_status = EXIT_NO_CLUSTER

    def __init__(self, reason: str) -> None:
        super().__init__(f"no Kubernetes cluster to ask: {reason}")
        self.reason = reason


# The errors a dispatcher replies with, each class before its subclasses: from_reply
# takes the first with the reply's PBS error number and HTTP status, else the first
# with its number.
REPLY_ERRORS: tuple[type[PkbsError], ...] = (
    UnknownJob,
    FinishedJob,
    UnknownQueue,
    QueueDisabled,
    NoDefaultQueue,
    QueueExists,
    QueueNameTooLong,
    ObjectBusy,
    BadState,
    UnknownSignal,
    ModifyRunning,
    NotRerunnable,
    ExceedsLimits,
    HookRejected,
    HookError,
    UnknownHook,
    EntityLimitReached,
    Unauthorized,
    BadCredential,
    BadAttributeValue,
    UnknownAttribute,
    ReadOnlyAttribute,
    UnknownResource,
    InvalidRequest,
    UnknownDefinition,
    PayloadTooLarge,
    StoreFull,
    Conflict,
    PkbsError,
    ServiceUnavailable,
)


def from_reply(
    pbs_errno: int, message: str | None, job_id: str | None, http_status: int
) -> PkbsError:
    """The error a dispatcher's error reply (``to_dict()`` and its HTTP status) stands
    for, as its class: ``except UnknownJob`` works on either side of the API."""
    same_errno = [cls for cls in REPLY_ERRORS if cls.pbs_errno == pbs_errno]
    same_status = [cls for cls in same_errno if cls.http_status == http_status]
    cls = (same_status or same_errno or [PkbsError])[0]
    error = cls(message, job_id)
    error.pbs_errno = pbs_errno  # a number this client has no class for stays itself
    error.http_status = http_status
    return error
