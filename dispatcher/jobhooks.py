"""The server's hook events: queuejob before a submission is checked and stored,
modifyjob before a qalter is applied (pkbs/hookrun.py runs them, each hook in a
process of its own). No hook for the event: nothing is run and the request is as it
came."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pydantic import ValidationError

from pkbs.errors import BadAttributeValue, HookRejected
from pkbs.hookjobs import (
    altered_job,
    changed_comment,
    changed_request,
    changed_spec,
    queued_job,
    record_job,
)
from pkbs.hookrun import HookOutcome, run_hooks
from pkbs.hookstore import MODIFYJOB, QUEUEJOB, HookTable
from pkbs.jobstore import Identity
from pkbs.models import AlterRequest, JobRecord, JobSpec

T = TypeVar("T")


def _outcome(
    event: str, outcome: HookOutcome, changed: Callable[[], T], job_id: str | None = None
) -> tuple[T, str | None]:
    """What the hooks made of the request (`changed` applies their changes) and the
    comment they gave the job; HookRejected if one rejected it."""
    if not outcome.accepted:
        raise HookRejected(outcome.message, job_id)
    try:
        result = changed()
    except ValidationError as exc:
        raise BadAttributeValue(f"{event} hook: {exc.errors()[0]['msg']}") from None
    return result, changed_comment(outcome.changes)[1]


async def queuejob(
    hooks: HookTable, who: Identity, spec: JobSpec
) -> tuple[JobSpec, str | None]:
    """The submission as the queuejob hooks leave it, and the comment they gave it;
    HookRejected if one rejects it."""
    chosen = hooks.for_event(QUEUEJOB)
    if not chosen:
        return spec, None
    outcome = await run_hooks(
        chosen,
        QUEUEJOB,
        queued_job(who.user, spec),
        requestor=who.user,
        requestor_host=spec.submit_host,
    )
    return _outcome(QUEUEJOB, outcome, lambda: changed_spec(spec, outcome.changes))


async def modifyjob(
    hooks: HookTable, who: Identity, record: JobRecord, change: AlterRequest
) -> tuple[AlterRequest, str | None]:
    """The qalter request as the modifyjob hooks leave it, and the comment they gave
    the job; HookRejected if one rejects it."""
    chosen = hooks.for_event(MODIFYJOB)
    if not chosen:
        return change, None
    outcome = await run_hooks(
        chosen,
        MODIFYJOB,
        altered_job(record, change),
        requestor=who.user,
        job_o=record_job(record),
    )
    return _outcome(
        MODIFYJOB, outcome, lambda: changed_request(change, outcome.changes), record.job_id
    )
