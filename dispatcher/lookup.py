"""The jobs a request names: a job, an array (`12[]`), a subjob (`12[3]`, a queued
one included) or a range of subjobs (`12[2-5]`, `12[1-9:2]`), and only if the caller
may act on them."""

from __future__ import annotations

from pkbs.errors import UnknownJob
from pkbs.jobstore import Identity, JobStore
from pkbs.models import JobRecord
from pkbs.pbsvalues import is_subjob_range, parse_job_id, parse_subjob_range
from pkbs.states import is_final

from .auth import check_owner


async def _subjob(store: JobStore, array: JobRecord, index: int) -> JobRecord:
    """A subjob's record, or what it would start from if it has none (never ran): queued
    while its array is unfinished, else ended with it."""
    try:
        subjob, _ = await store.get(array.number, index)
    except UnknownJob:
        subjob = array.subjob(index)
        if is_final(array.state):
            subjob = subjob.model_copy(update={"state": array.state})
    return subjob


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
    return await _subjob(store, record, jid.index)


async def lookup_range(store: JobStore, job_id: str) -> list[JobRecord]:
    """The subjobs of a range, in its order; UnknownJob unless each is in the array."""
    server = store.settings.server_name
    array_id, indices = parse_subjob_range(job_id, server)
    record, _ = await store.get(array_id.number)
    known = record.spec.array_indices() if record.is_array else range(0)
    if not indices or any(index not in known for index in indices):
        raise UnknownJob(job_id=job_id)
    return [await _subjob(store, record, index) for index in indices]


async def owned(store: JobStore, who: Identity, job_id: str) -> JobRecord:
    record = await lookup(store, job_id)
    check_owner(who, record)
    return record


async def owned_all(store: JobStore, who: Identity, job_id: str) -> list[JobRecord]:
    """The job `job_id` names, or each subjob of the range it names."""
    if not is_subjob_range(job_id):
        return [await owned(store, who, job_id)]
    records = await lookup_range(store, job_id)
    for record in records:
        check_owner(who, record)
    return records
