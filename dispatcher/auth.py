"""Bearer-token authentication and the ownership rule."""

from __future__ import annotations

import hmac

from fastapi import Request

from pkbs import tokens
from pkbs.errors import BadCredential, Unauthorized, UnknownJob
from pkbs.jobstore import Identity, JobStore
from pkbs.models import JobRecord
from pkbs.settings import Settings
from pkbs.states import JobState, is_active


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise BadCredential.because("no bearer token")
    return token.strip()


async def authenticate(token: str, settings: Settings, store: JobStore) -> Identity:
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        return Identity(settings.admin_user, "admin")
    if token.startswith(tokens.PREFIX):
        return await _job_identity(token, settings, store)
    identity = await store.identity(token)
    if identity is None:
        raise BadCredential.because("the token is unknown or expired")
    return identity


def check_owner(identity: Identity, record: JobRecord) -> None:
    """Users touch only their own jobs; admins touch any."""
    if identity.is_admin or identity.user == record.owner:
        return
    raise Unauthorized(job_id=record.job_id)


async def _job_identity(token: str, settings: Settings, store: JobStore) -> Identity:
    """A job-scoped token is valid while its job runs (an array's, while the array is
    begun: its subjobs run with it)."""
    secret = settings.job_token_secret
    claim = tokens.verify(secret.get_secret_value(), token) if secret else None
    if claim is None:
        raise BadCredential.because("the token is unknown or expired")
    user, job = claim
    try:
        record, _ = await store.get(job)
    except UnknownJob:
        raise BadCredential.because("the token's job is unknown") from None
    if record.owner != user or not (is_active(record.state) or record.state == JobState.BEGUN):
        raise BadCredential.because("the token's job is no longer running")
    return Identity(user, "job", job=job)


def check_hold_types(identity: Identity, types: str, record: JobRecord) -> None:
    """Users set and clear their own (u) holds; o and s holds are the operators'."""
    if not identity.is_admin and set(types) - {"u"}:
        raise Unauthorized(job_id=record.job_id)
