"""The job a request names: a job, an array (`12[]`) or a subjob (`12[3]`, a queued
one included), and only if the caller may act on it."""

from __future__ import annotations

from pkbs.errors import UnknownJob
from pkbs.jobstore import Identity, JobStore
from pkbs.models import JobRecord
from pkbs.pbsvalues import parse_job_id
from pkbs.states import is_final

from .auth import check_owner


async def lookup(store: JobStore, job_id: str) -> JobRecord:
    server = store.settings.server_name
    jid = parse_job_id(job_id, server)
    record, _ = await store.get(jid.number)
    if jid.is_array and not record.is_array:
        raise UnknownJob(job_id=jid.format(server))
    if jid.index is None:
        return record
    if not record.is_array or jid.index not in record.spec.array_indices():
        raise UnknownJob(job_id=jid.format(server))
    try:
        subjob, _ = await store.get(jid.number, jid.index)
    except UnknownJob:
        subjob = record.subjob(jid.index)
        if is_final(record.state):
            subjob = subjob.model_copy(update={"state": record.state})
    return subjob


async def owned(store: JobStore, who: Identity, job_id: str) -> JobRecord:
    record = await lookup(store, job_id)
    check_owner(who, record)
    return record
