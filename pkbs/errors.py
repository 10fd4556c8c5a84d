"""The one error tree. Every error a user can cause carries its PBS error number.

Import-light: the CLI uses it.
"""

from __future__ import annotations

# PBS error numbers (OpenPBS pbs_error.h); commands exit with number & 0xFF.
PBSE_UNKJOBID = 15001
PBSE_IVALREQ = 15004
PBSE_PERM = 15007
PBSE_SYSTEM = 15010
PBSE_INTERNAL = 15011
PBSE_BADATVAL = 15014
PBSE_BADSTATE = 15016
PBSE_UNKQUE = 15018
PBSE_BADCRED = 15019
PBSE_EXCQRESC = 15036
PBSE_HISTJOBID = 15139

# Exit codes of the commands themselves.
EXIT_USAGE = 2
EXIT_SCRIPT = 1


def exit_code(pbs_errno: int) -> int:
    """The status a shell sees when a PBS command calls exit(pbs_errno)."""
    return pbs_errno & 0xFF


class PkbsError(Exception):
    """Base of every pkbs error."""

    pbs_errno: int = PBSE_SYSTEM
    http_status: int = 500
    default_message: str = "System error"

    def __init__(self, message: str | None = None, job_id: str | None = None) -> None:
        self.message = message or self.default_message
        self.job_id = job_id
        super().__init__(self.message if job_id is None else f"{self.message} {job_id}")

    def to_dict(self) -> dict[str, object]:
        return {"pbs_errno": self.pbs_errno, "message": self.message, "job_id": self.job_id}


class UnknownJob(PkbsError):
    pbs_errno = PBSE_UNKJOBID
    http_status = 404
    default_message = "Unknown Job Id"


class FinishedJob(PkbsError):
    pbs_errno = PBSE_HISTJOBID
    http_status = 409
    default_message = "Job has finished, use -x or -H to obtain historical job information"


class UnknownQueue(PkbsError):
    pbs_errno = PBSE_UNKQUE
    http_status = 400
    default_message = "Unknown queue"


class QueueDisabled(PkbsError):
    pbs_errno = 15021  # PBSE_QUNOENB
    http_status = 400
    default_message = "Queue is not enabled"


class Unauthorized(PkbsError):
    """Another user's job, or an operation the caller's role does not allow."""

    pbs_errno = PBSE_PERM
    http_status = 403
    default_message = "Unauthorized Request"


class BadCredential(PkbsError):
    """Missing, unknown or expired token."""

    pbs_errno = PBSE_BADCRED
    http_status = 401
    default_message = "Invalid credential"


class BadAttributeValue(PkbsError):
    pbs_errno = PBSE_BADATVAL
    http_status = 400
    default_message = "Illegal attribute or resource value"


class InvalidRequest(PkbsError):
    pbs_errno = PBSE_IVALREQ
    http_status = 400
    default_message = "Invalid request"


class PayloadTooLarge(PkbsError):
    pbs_errno = PBSE_IVALREQ
    http_status = 413
    default_message = "Job payload exceeds the 1 MiB limit"


class InvalidPayload(PkbsError):
    """A payload archive that is not a zip, or one that would escape its directory."""

    pbs_errno = PBSE_IVALREQ
    http_status = 400
    default_message = "Invalid job payload"


class BadState(PkbsError):
    pbs_errno = PBSE_BADSTATE
    http_status = 409
    default_message = "Request invalid for state of job"


class ModifyRunning(PkbsError):
    pbs_errno = 15015  # PBSE_MODATRRUN
    http_status = 409
    default_message = "Cannot modify attribute while job running"


class NotRerunnable(PkbsError):
    pbs_errno = 15038  # PBSE_NORERUN
    http_status = 409
    default_message = "Job is not rerunnable"


class ExceedsLimits(PkbsError):
    pbs_errno = PBSE_EXCQRESC
    http_status = 400
    default_message = "Job violates queue and/or server resource limits"


class Conflict(PkbsError):
    """A compare-and-set lost a race; the caller retries with fresh data."""

    pbs_errno = PBSE_INTERNAL
    http_status = 409
    default_message = "Concurrent update, retry"


class ServiceUnavailable(PkbsError):
    """NATS or WebDAV cannot be reached; safe to retry."""

    pbs_errno = PBSE_SYSTEM
    http_status = 503
    default_message = "Service temporarily unavailable, retry"


ERRORS_BY_NAME: dict[str, type[PkbsError]] = {
    cls.__name__: cls
    for cls in (
        UnknownJob,
        FinishedJob,
        UnknownQueue,
        QueueDisabled,
        Unauthorized,
        BadCredential,
        BadAttributeValue,
        InvalidRequest,
        PayloadTooLarge,
        InvalidPayload,
        BadState,
        ExceedsLimits,
        NotRerunnable,
        ModifyRunning,
        Conflict,
        ServiceUnavailable,
    )
}
