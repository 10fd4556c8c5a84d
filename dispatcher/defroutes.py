"""Job definitions: apply, list, read and delete them (any caller reads, operators
apply and delete), and submit a job of one by name with parameters."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel

from pkbs import constants as C
from pkbs.definitions import NAME_PATTERN, Definition, check_definition
from pkbs.defjobs import DefinitionSubmitRequest, job_of
from pkbs.errors import InvalidRequest, Unauthorized
from pkbs.jobstore import Identity
from pkbs.models import SubmitRequest, SubmitResponse

from .context import Caller, Definitions
from .submission import Submitting

router = APIRouter(prefix=C.API_PREFIX)

Name = Annotated[str, Path(pattern=NAME_PATTERN, description="The definition's name")]


class DefinitionList(BaseModel):
    definitions: list[Definition]  # the newest version of each, by name


class AppliedDefinition(BaseModel):
    name: str
    version: int


def operator_only(who: Identity, action: str) -> None:
    if not who.is_admin:
        raise Unauthorized(f"Only operators {action} job definitions")


@router.put("/definitions/{name}", response_model=AppliedDefinition)
async def apply_definition(
    name: Name, body: Definition, who: Caller, defs: Definitions
) -> AppliedDefinition:
    """Store the definition as the next version of `name` (its `version` is ignored)."""
    operator_only(who, "apply")
    if body.name != name:
        raise InvalidRequest(f"the definition is named {body.name}, not {name}")
    stored = await defs.apply(check_definition(body))
    assert stored.version is not None
    return AppliedDefinition(name=stored.name, version=stored.version)


@router.get("/definitions", response_model=DefinitionList)
async def list_definitions(who: Caller, defs: Definitions) -> DefinitionList:
    return DefinitionList(definitions=await defs.newest())


@router.get("/definitions/{name}", response_model=Definition)
async def get_definition(
    name: Name,
    who: Caller,
    defs: Definitions,
    version: Annotated[int | None, Query(ge=1, description="None: the newest")] = None,
) -> Definition:
    return await defs.get(name, version)


@router.delete("/definitions/{name}", status_code=204)
async def delete_definition(name: Name, who: Caller, defs: Definitions) -> Response:
    """Delete every version of `name`. Jobs made from it are not touched."""
    operator_only(who, "delete")
    await defs.delete(name)
    return Response(status_code=204)


@router.post("/definitions/{name}/jobs", response_model=SubmitResponse, status_code=201)
async def submit_from_definition(
    name: Name,
    body: DefinitionSubmitRequest,
    defs: Definitions,
    submitter: Submitting,
) -> SubmitResponse:
    """Submit a job of the definition with these parameters and qsub options: checked
    (queuejob hooks too) and queued as POST /v1/jobs queues a job. A retry with the
    same submit_id returns the same job."""
    spec, script = job_of(await defs.get(name, body.version), body)
    request = SubmitRequest(
        submit_id=body.submit_id, spec=spec, payload_b64=base64.b64encode(script).decode()
    )
    return await submitter.submit(request)
