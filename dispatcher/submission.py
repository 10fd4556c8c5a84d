"""Submitting jobs, for every route that does (one job, a batch, a job of a
definition): each is checked (its queuejob hooks run, then its queue's checks) and
queued within the max_queued limits."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends

from pkbs.control import JobControl
from pkbs.errors import InvalidRequest, NoDefaultQueue, PkbsError, QueueDisabled
from pkbs.models import BatchSubmitResponse, JobRecord, SubmitRequest, SubmitResponse
from pkbs.payload import check_size
from pkbs.queues import admit_image, apply_defaults, check_request
from pkbs.serverconfig import ServerConfig
from pkbs.settings import Settings

from . import jobhooks, metrics
from .context import Caller, Config, Hooks, Queued, ServerConf, Store


def admitted(settings: Settings, config: ServerConfig, body: SubmitRequest) -> bytes:
    """Check a submission against its queue (the server's default_queue when it names
    none); its payload."""
    if not body.spec.queue:
        if not config.server.default_queue:
            raise NoDefaultQueue()
        body.spec.queue = config.server.default_queue
    queue = config.queue(body.spec.queue)
    if not queue.enabled:
        raise QueueDisabled()
    apply_defaults(queue, body.spec.resources)
    check_request(body.spec.queue, queue, body.spec.resources, settings.max_job_ncpus)
    admit_image(body.spec.queue, queue, body.spec)
    try:
        payload = base64.b64decode(body.payload_b64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("payload_b64 is not valid base64") from None
    check_size(payload)
    return payload


def submitted(record: JobRecord, duplicate: bool) -> SubmitResponse:
    if not duplicate:
        metrics.SUBMITTED.labels(record.spec.queue).inc()
    return SubmitResponse(job_id=record.job_id, duplicate=duplicate)


class Submitter:
    """A caller's submissions."""

    def __init__(self, who: Caller, st: Store, settings: Config, conf: ServerConf,
                 hooks: Hooks, queued: Queued) -> None:
        self.who = who
        self.control = JobControl(st)
        self.settings = settings
        self.conf = conf
        self.hooks = hooks
        self.queued = queued

    async def checked(self, item: SubmitRequest) -> tuple[SubmitRequest, bytes, str | None]:
        """The submission as its queuejob hooks leave it, its payload, and the comment
        the hooks gave it; the error that refuses it otherwise."""
        spec, comment = await jobhooks.queuejob(self.hooks, self.who, item.spec)
        if spec is not item.spec:
            item = item.model_copy(update={"spec": spec})
        return item, admitted(self.settings, self.conf.config, item), comment

    async def submit(self, item: SubmitRequest) -> SubmitResponse:
        item, payload, comment = await self.checked(item)
        async with self.queued.admit(self.conf.config, self.who.user, [item.spec]):
            record, duplicate = await self.control.submit(
                self.who.user, item.spec, payload, item.submit_id, comment
            )
        return submitted(record, duplicate)

    async def submit_many(self, items: Sequence[SubmitRequest]) -> BatchSubmitResponse:
        """All of them or none: the first refused names its position."""
        checked = []
        for position, item in enumerate(items):
            try:
                checked.append(await self.checked(item))
            except PkbsError as exc:
                exc.message = f"batch job {position}: {exc.message}"
                raise
        jobs = [(item.spec, payload, item.submit_id) for item, payload, _ in checked]
        specs = [item.spec for item, _, _ in checked]
        async with self.queued.admit(self.conf.config, self.who.user, specs, batch=True):
            done = await self.control.submit_many(
                self.who.user, jobs, [comment for _, _, comment in checked]
            )
        return BatchSubmitResponse(jobs=[submitted(*job) for job in done])


Submitting = Annotated[Submitter, Depends()]
