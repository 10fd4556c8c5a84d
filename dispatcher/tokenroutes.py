"""User tokens: operators create them (`pkbs token create`)."""

from __future__ import annotations

import secrets

from fastapi import APIRouter

from pkbs import constants as C
from pkbs.errors import Unauthorized
from pkbs.jobstore import Identity
from pkbs.models import TokenRequest, TokenResponse

from .context import Caller, Store

router = APIRouter(prefix=C.API_PREFIX)


@router.post("/tokens", response_model=TokenResponse, status_code=201)
async def create_token(body: TokenRequest, who: Caller, st: Store) -> TokenResponse:
    if not who.is_admin:
        raise Unauthorized("Only operators create tokens")
    token = secrets.token_urlsafe(32)
    await st.add_token(token, Identity(body.user, body.role))
    return TokenResponse(user=body.user, role=body.role, token=token)
