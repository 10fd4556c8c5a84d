"""Job definitions: named, versioned templates of a job (its image, command, resources,
environment, queue, retention) with parameters, which `pkbs run NAME KEY=VALUE` and
`POST /v1/definitions/{name}/jobs` fill in.

A placeholder `{{name}}` (spaces inside the braces allowed) in the command or in an
environment value is replaced by the parameter's value as plain text, once: a value
holding `{{...}}` is not expanded again. Other text with braces (`{{.State}}`,
`${x}`) is left as it is. A definition may use only the parameters it declares; a
parameter without a default must be given.

The model checks the form of a definition (pydantic: what the API's schema says);
`check_definition` what a server must refuse beyond it (placeholders, resources,
image, retention) as PBS errors. The store is pkbs/defstore.py; the job a definition
makes, pkbs/defjobs.py.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from pkbs.errors import BadAttributeValue, InvalidRequest
from pkbs.imageref import InvalidImage, check_image
from pkbs.pbsvalues import (
    BAD_VALUE,
    check_resource,
    check_resources,
    format_duration,
    parse_duration,
)
from pkbs.qsuboptions import validate_queue_name

# A definition's name: a KV key token and a valid PBS job name (its jobs' default name).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
PARAMETER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
VARIABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
MAX_COMMAND_BYTES = 256 * 1024
MAX_VALUE_CHARS = 64 * 1024
# Characters no parameter value (or default) may hold: they would end a shell word or
# a line of the script the value goes into, or a C string.
FORBIDDEN_IN_VALUES = {"\x00": "a NUL", "\n": "a newline", "\r": "a carriage return"}
# The job attributes a definition's job records (qstat -f shows them).
DEFINITION_ATTRIBUTE = "definition"  # NAME@VERSION
RETENTION_ATTRIBUTE = "history_duration"  # the definition's retention, HH:MM:SS


def _text(value: Any) -> Any:
    """YAML scalars as text: `ncpus: 2` and `default: 3` mean "2" and "3". A YAML
    boolean (true, no ...) is refused: it is rarely meant as the text True."""
    if isinstance(value, bool):
        raise ValueError("a boolean: quote it to give it as text")
    if isinstance(value, int | float):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_text)]
ParameterName = Annotated[str, StringConstraints(pattern=PARAMETER_PATTERN)]
VariableName = Annotated[str, StringConstraints(pattern=VARIABLE_PATTERN, max_length=255)]
ResourceName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Value = Annotated[Text, StringConstraints(max_length=MAX_VALUE_CHARS)]


class Parameter(BaseModel):
    """A parameter of a definition: without a default it must be given at each run.
    In YAML, `name:` alone is a required parameter and `name: text` one whose default
    is the text."""

    model_config = ConfigDict(extra="forbid")

    default: Value | None = None
    description: str | None = Field(None, max_length=1000)

    @property
    def required(self) -> bool:
        return self.default is None


def _parameter(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return {"default": value}
    return value


class Definition(BaseModel):
    """A job definition, as applied (`pkbs def apply`, `PUT /v1/definitions/{name}`)
    and as stored, one record per version."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        json_schema_extra={"pattern": NAME_PATTERN},
        description="Letters, digits, _ and -, up to 63; also its jobs' default name",
    )
    version: int | None = Field(
        None, ge=1, description="Given by the server at each apply (1, 2, ...); ignored in one"
    )
    description: str | None = Field(None, max_length=4000)
    image: str | None = Field(
        None, max_length=512, description="Container image; none: a process job"
    )
    command: str | list[Annotated[str, StringConstraints(max_length=MAX_VALUE_CHARS)]] = Field(
        description="A shell script, or the words of a command (each word a shell word)"
    )
    resources: dict[ResourceName, Text] = Field(
        default_factory=dict, description="PBS resources (-l), e.g. walltime, ncpus, mem"
    )
    environment: dict[VariableName, Value] = Field(
        default_factory=dict, description="Job variables (-v); values may hold placeholders"
    )
    parameters: dict[ParameterName, Annotated[Parameter, BeforeValidator(_parameter)]] = Field(
        default_factory=dict, description="Parameter name -> its default and description"
    )
    queue: str | None = Field(None, max_length=64, description="Default queue of its jobs")
    retention: Text | None = Field(
        None,
        max_length=64,
        description="How long its finished jobs are kept, a PBS duration [[hh:]mm:]ss",
    )

    @field_validator("name")
    @classmethod
    def _pbs_safe_name(cls, value: str) -> str:
        if not re.fullmatch(NAME_PATTERN, value):
            raise ValueError(
                f"{value!r} is not a definition name (letters, digits, _ and -, up to 63"
                " characters, a letter or digit first)"
            )
        return value

    @field_validator("command")
    @classmethod
    def _some_command(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("the command is empty")
            if len(value.encode()) > MAX_COMMAND_BYTES:
                raise ValueError(f"the command is longer than {MAX_COMMAND_BYTES} bytes")
        elif not value or not value[0]:
            raise ValueError("the command has no program to run")
        elif len(value) > 4096:
            raise ValueError("the command has more than 4096 words")
        return value

    @property
    def reference(self) -> str:
        """NAME@VERSION (the stored version), or NAME."""
        return self.name if self.version is None else f"{self.name}@{self.version}"

    def templates(self) -> dict[str, str]:
        """Every text placeholders may appear in, by where it is (for messages)."""
        if isinstance(self.command, str):
            found = {"command": self.command}
        else:
            found = {f"command word {i}": word for i, word in enumerate(self.command, 1)}
        found.update({f"environment {k}": v for k, v in self.environment.items()})
        return found


def definition_from_data(data: object, source: str = "definition") -> Definition:
    """A Definition from parsed YAML or JSON, its form checked; BadAttributeValue naming
    each field that is wrong (`source`: where the data came from, for the message)."""
    if not isinstance(data, dict):
        raise BadAttributeValue(f"{source}: a definition is a mapping (name, command, ...)")
    try:
        return Definition.model_validate(data)
    except ValidationError as exc:
        raise BadAttributeValue(f"{source}: {validation_message(exc)}") from None


def validation_message(exc: ValidationError) -> str:
    """pydantic's errors as one line: `field.path: message; ...`."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "value"
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def _refuse(definition: Definition, detail: str) -> BadAttributeValue:
    return BadAttributeValue(f"definition {definition.name}: {detail}")


def check_value(where: str, value: str) -> None:
    """BadAttributeValue if a parameter's value (or default) cannot go into a script."""
    for char, what in FORBIDDEN_IN_VALUES.items():
        if char in value:
            raise BadAttributeValue(f"{where} holds {what}: a parameter value may not")


def check_definition(definition: Definition) -> Definition:
    """What a server refuses beyond the model (BadAttributeValue, the definition and the
    field named): placeholders of undeclared parameters, bad defaults, resources qsub
    would refuse, a malformed image or queue name, a retention that is not a duration.
    The definition with resource names in lower case and retention as HH:MM:SS."""
    for where, text in definition.templates().items():
        for match in PLACEHOLDER.finditer(text):
            if match[1] not in definition.parameters:
                raise _refuse(
                    definition,
                    f"{where} uses {{{{{match[1]}}}}}, which is not one of its parameters"
                    f" ({', '.join(definition.parameters) or 'it has none'})",
                )
        if "\x00" in text:
            raise _refuse(definition, f"{where} holds a NUL")
    for name, parameter in definition.parameters.items():
        if parameter.default is not None:
            try:
                check_value(f"the default of parameter {name}", parameter.default)
            except BadAttributeValue as exc:
                raise _refuse(definition, exc.message) from None
    resources = {name.lower(): value for name, value in definition.resources.items()}
    try:
        for name, value in resources.items():
            check_resource(name, value)
        check_resources(resources)
        if definition.queue is not None:
            validate_queue_name(definition.queue)
        retention = definition.retention
        if retention is not None:
            retention = format_duration(parse_duration(retention))
    except BadAttributeValue as exc:
        raise _refuse(definition, exc.message.removeprefix(f"{BAD_VALUE}: ")) from None
    if definition.image is not None:
        try:
            check_image(definition.image)
        except InvalidImage as exc:
            raise _refuse(definition, str(exc)) from None
    return definition.model_copy(update={"resources": resources, "retention": retention})


@dataclass(frozen=True)
class Rendered:
    """A definition filled in: the job's script and its environment."""

    script: str
    environment: dict[str, str]


def parameter_values(definition: Definition, given: Mapping[str, str]) -> dict[str, str]:
    """Each parameter's value: given, else its default. InvalidRequest for a parameter
    the definition does not have or a required one not given; BadAttributeValue for a
    value no script may hold."""
    known = ", ".join(definition.parameters) or "it has none"
    for name in given:
        if name not in definition.parameters:
            raise InvalidRequest(
                f"definition {definition.reference} has no parameter {name} ({known})"
            )
    values: dict[str, str] = {}
    for name, parameter in definition.parameters.items():
        value = given.get(name, parameter.default)
        if value is None:
            raise InvalidRequest(
                f"definition {definition.reference}: parameter {name} is required"
                " (it has no default)"
            )
        check_value(f"definition {definition.reference}: parameter {name}", value)
        values[name] = value
    return values


def substitute(text: str, values: Mapping[str, str], where: str = "text") -> str:
    """`text` with each `{{name}}` replaced by values[name], in one pass;
    BadAttributeValue for a placeholder without a value."""

    def value(match: re.Match[str]) -> str:
        try:
            return values[match[1]]
        except KeyError:
            raise BadAttributeValue(
                f"{where} uses {{{{{match[1]}}}}}, which is not a parameter"
            ) from None

    return PLACEHOLDER.sub(value, text)


def render(definition: Definition, given: Mapping[str, str]) -> Rendered:
    """The script and environment of a job of `definition` with the parameters
    `given` (see parameter_values). A command given as words runs as `exec WORDS`,
    each word quoted for the shell after its placeholders are filled in."""
    values = parameter_values(definition, given)
    where = f"definition {definition.reference}:"
    if isinstance(definition.command, str):
        script = substitute(definition.command, values, f"{where} command")
        if not script.endswith("\n"):
            script += "\n"
    else:
        words = [substitute(w, values, f"{where} command") for w in definition.command]
        script = "exec " + shlex.join(words) + "\n"
    environment = {
        name: substitute(text, values, f"{where} environment {name}")
        for name, text in definition.environment.items()
    }
    return Rendered(script, environment)


def parse_reference(text: str) -> tuple[str, int | None]:
    """`NAME` (the newest version) or `NAME@VERSION` to (name, version or None)."""
    name, at, version = text.partition("@")
    if re.fullmatch(NAME_PATTERN, name) and (
        not at or (version.isascii() and version.isdigit() and int(version) > 0)
    ):
        return name, int(version) if at else None
    raise BadAttributeValue(
        f"not a job definition: {text!r} (NAME or NAME@VERSION; a name is letters, digits,"
        " _ and -)"
    )
