"""`pkbs def apply|list|show|delete`: job definitions (pkbs/definitions.py), and
`pkbs run NAME [KEY=VALUE ...] [-- qsub options]`: a job of one, its id printed as
qsub prints it. YAML is read and written here only (JSON is YAML too).

pydantic (pkbs.definitions) and yaml are imported when a command runs, so `pkbs`
starts as fast without them."""

from __future__ import annotations

import os
import sys
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import click

from pkbs.errors import BadAttributeValue, UsageError
from pkbs.qsuboptions import QsubOptions, merge, parse_destination, parse_qsub_args

from .client import Client
from .group import Command, Group
from .qsub import (
    array_option,
    attributes_of,
    block_until_done,
    check_supported,
    job_variables,
    submit_host,
    submit_workdir,
)

if TYPE_CHECKING:
    from pkbs.definitions import Definition

# The order of a definition's fields in `pkbs def show`.
FIELD_ORDER = (
    "name",
    "version",
    "description",
    "image",
    "queue",
    "resources",
    "environment",
    "retention",
    "parameters",
    "command",
)


@click.group("def", cls=Group)
def definitions() -> None:
    """Job definitions: named, versioned job templates with parameters (pkbs run)."""


@definitions.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
def apply(file: str) -> None:
    """Apply the definition(s) in FILE (YAML or JSON; - for standard input), each as
    the next version of its name (operators only). Prints NAME version N."""
    client = Client()
    for definition in read_definitions(file):
        body = definition.model_dump(mode="json", exclude_none=True, exclude={"version"})
        reply = client.request("PUT", f"/definitions/{definition.name}", body)
        click.echo(f"{reply['name']} version {reply['version']}")


@definitions.command("list")
def list_definitions() -> None:
    """The definitions: name, newest version, image, parameters (NAME=DEFAULT)."""
    from pkbs.definitions import Definition

    reply = Client().request("GET", "/definitions")
    rows = [("NAME", "VERSION", "IMAGE", "PARAMETERS")]
    for item in reply["definitions"]:
        definition = Definition.model_validate(item)
        rows.append(
            (
                definition.name,
                str(definition.version),
                definition.image or "-",
                parameter_summary(definition) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[3]]))


@definitions.command()
@click.argument("definition")
def show(definition: str) -> None:
    """A definition as YAML: DEFINITION is NAME (the newest version) or NAME@VERSION."""
    from pkbs.definitions import Definition, parse_reference

    name, version = parse_reference(definition)
    query = {} if version is None else {"version": version}
    reply = Client().request("GET", f"/definitions/{name}", query=query)
    click.echo(to_yaml(Definition.model_validate(reply)), nl=False)


@definitions.command()
@click.argument("name")
def delete(name: str) -> None:
    """Delete every version of the definition NAME (operators only)."""
    from pkbs.definitions import parse_reference

    name, version = parse_reference(name)
    if version is not None:
        raise UsageError("delete takes a NAME: every version is deleted", show_usage=False)
    Client().request("DELETE", f"/definitions/{name}")
    click.echo(f"{name} deleted")


@click.command(
    cls=Command,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.argument("definition")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(definition: str, args: tuple[str, ...]) -> None:
    """Submit a job of DEFINITION (NAME or NAME@VERSION) with its parameters as
    KEY=VALUE, and after -- qsub's options (-N, -q, -l, -v, -h, -J, -W depend=...,
    -W block=true ...). Prints the job id, as qsub does."""
    from pkbs.definitions import parse_reference

    name, version = parse_reference(definition)
    words = list(args)
    cut = words.index("--") if "--" in words else len(words)
    options = qsub_options(words[cut + 1 :])
    body: dict[str, Any] = {
        "submit_id": os.urandom(16).hex(),
        "parameters": parameters(words[:cut]),
        "options": run_options(options, [definition, *args]),
    }
    if version is not None:
        body["version"] = version
    client = Client()
    reply = client.request("POST", f"/definitions/{urllib.parse.quote(name)}/jobs", body)
    job_id = str(reply["job_id"])
    if not options.quiet:
        click.echo(job_id)
    if options.block:
        sys.exit(block_until_done(client, job_id))


# --------------------------------------------------------------------------- helpers


def read_definitions(file: str) -> Iterator[Definition]:
    """Each definition in a YAML (or JSON) file, its form checked (BadAttributeValue)."""
    import yaml

    from pkbs.definitions import definition_from_data

    try:
        if file == "-":
            text = sys.stdin.read()
        else:
            with open(file, encoding="utf-8") as handle:
                text = handle.read()
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as exc:
        raise BadAttributeValue(f"cannot read {file}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise BadAttributeValue(f"{file} is not YAML: {detail}") from None
    if not documents:
        raise BadAttributeValue(f"{file} holds no definition")
    for document in documents:
        yield definition_from_data(document, file)


def parameter_summary(definition: Definition) -> str:
    """`who, greeting=hello`: required parameters by name, others with their default."""
    return ", ".join(
        name if parameter.default is None else f"{name}={parameter.default}"
        for name, parameter in definition.parameters.items()
    )


def to_yaml(definition: Definition) -> str:
    """The definition as YAML, fields in FIELD_ORDER, scripts as literal blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    data = definition.model_dump(mode="json", exclude_none=True)
    if not data.get("resources"):
        data.pop("resources", None)
    if not data.get("environment"):
        data.pop("environment", None)
    ordered = {key: data[key] for key in FIELD_ORDER if key in data}
    return str(yaml.dump(ordered, Dumper=Dumper, sort_keys=False, allow_unicode=True))


def parameters(words: Sequence[str]) -> dict[str, str]:
    """KEY=VALUE words to {KEY: VALUE} (a later one wins)."""
    values: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UsageError(
                f"expected KEY=VALUE, not {word!r} (qsub options go after --)", show_usage=False
            )
        values[key] = value
    return values


def qsub_options(args: Sequence[str]) -> QsubOptions:
    """qsub's options after `--`, checked as qsub checks them; no script operand."""
    cmdline, operands = parse_qsub_args(list(args))
    if operands:
        raise UsageError(
            f"unexpected {operands[-1]!r}: the definition gives the job's command",
            show_usage=False,
        )
    options = merge(QsubOptions(), cmdline)
    check_supported(options)
    return options


def run_options(options: QsubOptions, argv: Sequence[str]) -> dict[str, Any]:
    """The `options` of a POST /v1/definitions/{name}/jobs (pkbs.defjobs.RunOptions)
    for qsub's options: what qsub would send for them, PBS_O_* variables included."""
    host = submit_host()
    queue = parse_destination(options.destination)[0] if options.destination else None
    fields = {
        "name": options.name,
        "queue": queue or None,
        "resources": dict(options.resources),
        "variables": job_variables(options, submit_workdir(), host),
        "hold": options.hold,
        "depend": options.depend,
        "array": array_option(options),
        "exec_time": options.exec_time,
        "rerunnable": True if options.rerunnable is None else options.rerunnable,
        "output_path": options.output_path,
        "error_path": options.error_path,
        "join": options.join,
        "keep": options.keep,
        "shell": options.shell,
        "attributes": attributes_of(options),
        "submit_host": host,
        "submit_args": " ".join(argv),
    }
    return {key: value for key, value in fields.items() if value is not None}
