"""A job of a job definition: what `pkbs run NAME KEY=VALUE [-- qsub options]` and
`POST /v1/definitions/{name}/jobs` ask for, and the JobSpec and script it makes. The
job then goes the way of any other submission (queue checks, holds, dependencies,
arrays, container image: pkbs/control.py)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from pkbs.definitions import (
    DEFINITION_ATTRIBUTE,
    MAX_VALUE_CHARS,
    RETENTION_ATTRIBUTE,
    Definition,
    render,
    validation_message,
)
from pkbs.errors import BadAttributeValue
from pkbs.models import JobSpec
from pkbs.pbsvalues import check_resource, check_resources
from pkbs.qsuboptions import validate_job_name, validate_queue_name

# The job's script: a file run by the job's shell, as qsub's script on standard input.
ENTRYPOINT = "STDIN"


class RunOptions(BaseModel):
    """qsub's options for one job of a definition; an absent one is the definition's
    (name, queue, resources, environment) or qsub's default."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=236, description="-N")
    queue: str | None = Field(None, max_length=64, description="-q")
    resources: dict[str, str] = Field(
        default_factory=dict, description="-l, over the definition's resources"
    )
    variables: dict[str, str] = Field(
        default_factory=dict, description="-v, over the definition's environment"
    )
    hold: bool = Field(False, description="-h")
    depend: str | None = Field(None, max_length=65536, description="-W depend=...")
    array: str | None = Field(None, description="-J start-end[:step]")
    exec_time: float | None = Field(None, description="-a, epoch seconds")
    rerunnable: bool = Field(True, description="-r")
    output_path: str | None = Field(None, max_length=4096, description="-o")
    error_path: str | None = Field(None, max_length=4096, description="-e")
    join: str | None = Field(None, max_length=8, description="-j")
    keep: str | None = Field(None, max_length=8, description="-k")
    shell: str | None = Field(None, max_length=4096, description="-S")
    attributes: dict[str, str] = Field(
        default_factory=dict, description="Other PBS attributes (-A, -P, -m, -M, -W ...)"
    )
    submit_host: str | None = Field(None, max_length=255)
    submit_args: str | None = Field(None, max_length=65536)


class DefinitionSubmitRequest(BaseModel):
    """Body of POST /v1/definitions/{name}/jobs."""

    model_config = ConfigDict(extra="forbid")

    submit_id: str = Field(
        min_length=8,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The client's id of this submission: a retry returns the same job",
    )
    version: int | None = Field(None, ge=1, description="The version to run; none: the newest")
    parameters: dict[str, Annotated[str, StringConstraints(max_length=MAX_VALUE_CHARS)]] = Field(
        default_factory=dict, description="Parameter name -> value (text, no newline or NUL)"
    )
    options: RunOptions = Field(default_factory=RunOptions)


def job_of(definition: Definition, request: DefinitionSubmitRequest) -> tuple[JobSpec, bytes]:
    """The job `request` asks of `definition`: its spec and its script (the payload).
    The request's options win over the definition's values; the job records the
    definition (`definition` = NAME@VERSION) and its retention (`history_duration`)
    as attributes. PkbsError for what qsub would refuse, nothing stored."""
    rendered = render(definition, request.parameters)
    options = request.options
    name = validate_job_name(options.name) if options.name is not None else definition.name
    queue = options.queue or definition.queue or ""  # "": the server's default_queue
    if queue:
        validate_queue_name(queue)
    asked = {name.lower(): value for name, value in options.resources.items()}
    for resource, value in asked.items():
        check_resource(resource, value)
    resources = {**definition.resources, **asked}
    check_resources(resources)
    attributes = dict(options.attributes)
    attributes[DEFINITION_ATTRIBUTE] = definition.reference
    if definition.retention is not None:
        attributes[RETENTION_ATTRIBUTE] = definition.retention
    fields = options.model_dump(exclude={"name", "queue", "resources", "variables"})
    fields.update(
        name=name,
        queue=queue,
        kind="stdin",
        entrypoint=ENTRYPOINT,
        payload_format="file",
        resources=resources,
        variables={**rendered.environment, **options.variables},
        image=definition.image,
        join=options.join or "n",
        keep=options.keep or "n",
        submit_host=options.submit_host or "localhost",
        attributes=attributes,
    )
    try:
        spec = JobSpec.model_validate(fields)
    except ValidationError as exc:
        raise BadAttributeValue(validation_message(exc)) from None
    return spec, rendered.script.encode()
