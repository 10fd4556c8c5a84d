"""Job definitions without a stack: the model, its checks, parameters and the
substitution of placeholders, references, the job a definition makes, and the CLI's
reading and writing of YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pkbs.cli.defs import parameter_summary, parameters, read_definitions, run_options, to_yaml

from pkbs.definitions import (
    Definition,
    check_definition,
    definition_from_data,
    parse_reference,
    render,
    substitute,
)
from pkbs.defjobs import DefinitionSubmitRequest, RunOptions, job_of
from pkbs.errors import BadAttributeValue, InvalidRequest, UsageError
from pkbs.qsuboptions import merge, parse_qsub_args

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "definitions" / "hello.yaml"


def definition(**fields: Any) -> Definition:
    data = {"name": "greet", "command": "echo {{greeting}}, {{who}}", **fields}
    data.setdefault("parameters", {"who": None, "greeting": {"default": "hello"}})
    return check_definition(definition_from_data(data))


def request(parameters: dict[str, str] | None = None, **options: Any) -> DefinitionSubmitRequest:
    return DefinitionSubmitRequest(
        submit_id="0123456789abcdef", parameters=parameters or {}, options=RunOptions(**options)
    )


# -- the model ------------------------------------------------------------------


def test_yaml_scalars_become_text_and_parameter_shorthands_expand() -> None:
    checked = definition(
        resources={"Walltime": 90, "ncpus": 2},
        environment={"PORT": 8080},
        parameters={"who": None, "greeting": "hi", "count": 3},
        command="echo {{greeting}} {{who}} {{count}}",
        retention=3600,
    )
    assert checked.resources == {"walltime": "90", "ncpus": "2"}
    assert checked.environment == {"PORT": "8080"}
    assert checked.parameters["who"].required
    assert checked.parameters["greeting"].default == "hi"
    assert checked.parameters["count"].default == "3"
    assert checked.retention == "01:00:00"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "a.b"}, "'a.b' is not a definition name"),
        ({"name": "-x"}, "is not a definition name"),
        ({"command": "   "}, "command: the command is empty"),
        ({"command": []}, "command: the command has no program to run"),
        ({"parameters": {"a-b": None}}, "parameters.a-b.[key]"),
        ({"environment": {"1X": "y"}}, "environment.1X.[key]"),
        ({"bogus": 1}, "bogus: Extra inputs are not permitted"),
        ({"resources": {"ncpus": True}}, "a boolean: quote it"),
    ],
)
def test_malformed_definitions_are_refused_naming_the_field(
    fields: dict[str, Any], message: str
) -> None:
    data = {"name": "greet", "command": "true", **fields}
    with pytest.raises(BadAttributeValue) as caught:
        definition_from_data(data, "greet.yaml")
    assert caught.value.message.startswith("greet.yaml: ")
    assert message in caught.value.message


def test_a_definition_is_a_mapping() -> None:
    with pytest.raises(BadAttributeValue, match="a definition is a mapping"):
        definition_from_data(["name", "x"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"command": "echo {{whom}}"}, "command uses {{whom}}, which is not one of its parameters"),
        ({"command": ["echo", "{{ x }}"]}, "command word 2 uses {{x}}"),
        ({"environment": {"A": "{{nope}}"}}, "environment A uses {{nope}}"),
        ({"parameters": {"who": {"default": "a\nb"}}, "command": "echo {{who}}"}, "a newline"),
        ({"resources": {"walltime": "soon"}}, "Resource_List.walltime"),
        ({"resources": {"select": "1:ncpus=1", "ncpus": "2"}}, "cannot be used with"),
        ({"image": "Not An Image"}, "not an image reference"),
        ({"queue": "bad queue"}, "Invalid object name"),
        ({"retention": "a week"}, "is not a duration"),
    ],
)
def test_what_a_server_refuses_names_the_definition(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(BadAttributeValue) as caught:
        definition(**fields)
    assert caught.value.message.startswith("definition greet: ")
    assert message in caught.value.message


def test_text_that_is_not_a_placeholder_is_left_alone() -> None:
    checked = definition(command="docker inspect -f '{{.State}}' ${x} {{ who }} {{who}}")
    script = render(checked, {"who": "w"}).script
    assert script == "docker inspect -f '{{.State}}' ${x} w w\n"


# -- parameters and substitution ---------------------------------------------------


def test_given_values_and_defaults_fill_the_command_and_environment() -> None:
    checked = definition(environment={"WHO": "<{{who}}>", "PLAIN": "x"})
    rendered = render(checked, {"who": "world"})
    assert rendered.script == "echo hello, world\n"
    assert rendered.environment == {"WHO": "<world>", "PLAIN": "x"}
    assert render(checked, {"who": "w", "greeting": "bye"}).script == "echo bye, w\n"


def test_substitution_is_one_pass_of_plain_text() -> None:
    checked = definition()
    rendered = render(checked, {"who": "{{greeting}} $HOME `x` 'q\"", "greeting": "g"})
    assert rendered.script == "echo g, {{greeting}} $HOME `x` 'q\"\n"


def test_words_are_quoted_for_the_shell_after_substitution() -> None:
    checked = definition(command=["printf", "%s\\n", "{{who}}", "--{{greeting}}"])
    script = render(checked, {"who": "a b; rm -rf /"}).script
    assert script == "exec printf '%s\\n' 'a b; rm -rf /' --hello\n"


def test_a_missing_required_parameter_is_named() -> None:
    with pytest.raises(InvalidRequest, match="definition greet: parameter who is required"):
        render(definition(), {})


def test_an_unknown_parameter_is_named_with_the_known_ones() -> None:
    with pytest.raises(InvalidRequest, match=r"greet has no parameter whom \(who, greeting\)"):
        render(definition(), {"who": "x", "whom": "y"})


@pytest.mark.parametrize("value", ["a\nb", "a\x00b", "a\rb"])
def test_values_with_newlines_or_nul_are_refused(value: str) -> None:
    with pytest.raises(BadAttributeValue, match="parameter who holds"):
        render(definition(), {"who": value})


def test_a_placeholder_without_value_is_refused_at_substitution() -> None:
    with pytest.raises(BadAttributeValue, match="uses {{y}}, which is not a parameter"):
        substitute("{{x}} {{y}}", {"x": "1"})


def test_references() -> None:
    assert parse_reference("hello") == ("hello", None)
    assert parse_reference("hello@12") == ("hello", 12)
    for bad in ("hello@", "hello@0", "hello@x", "a.b", "@3", "hello@1@2", "héllo"):
        with pytest.raises(BadAttributeValue, match="NAME or NAME@VERSION"):
            parse_reference(bad)


# -- the job of a definition --------------------------------------------------------------


def test_the_job_records_its_definition_and_retention() -> None:
    stored = definition(
        retention="2:00:00", resources={"walltime": "60"}, queue="workq", image="python:3.12"
    ).model_copy(update={"version": 4})
    spec, script = job_of(stored, request({"who": "w"}))
    assert script == b"echo hello, w\n"
    assert (spec.name, spec.queue, spec.kind, spec.payload_format) == (
        "greet", "workq", "stdin", "file"
    )
    assert spec.image == "python:3.12"
    assert spec.resources == {"walltime": "60"}
    assert spec.attributes == {"definition": "greet@4", "history_duration": "02:00:00"}


def test_options_win_over_the_definition() -> None:
    stored = definition(
        resources={"walltime": "60", "ncpus": "1"}, environment={"A": "1", "B": "{{who}}"}
    ).model_copy(update={"version": 1})
    spec, _ = job_of(
        stored,
        request(
            {"who": "w"},
            name="custom",
            queue="other",
            resources={"Walltime": "120"},
            variables={"A": "2"},
            hold=True,
            array="1-3",
            attributes={"project": "p"},
        ),
    )
    assert (spec.name, spec.queue, spec.hold, spec.array) == ("custom", "other", True, "1-3")
    assert spec.resources == {"walltime": "120", "ncpus": "1"}
    assert spec.variables == {"A": "2", "B": "w"}
    assert spec.attributes == {"project": "p", "definition": "greet@1"}


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"name": "bad name"}, BadAttributeValue, "job name 'bad name'"),
        ({"queue": "no queue"}, BadAttributeValue, "Invalid object name"),
        ({"resources": {"mem": "lots"}}, BadAttributeValue, "Resource_List.mem"),
        ({"array": "x"}, BadAttributeValue, "array: String should match pattern"),
    ],
)
def test_bad_options_are_refused_as_qsub_refuses_them(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        job_of(definition(), request({"who": "w"}, **options))


# -- the CLI's side ------------------------------------------------------------------------


def test_the_example_reads_checks_and_renders() -> None:
    (example,) = read_definitions(str(EXAMPLE))
    checked = check_definition(example)
    assert checked.name == "hello"
    assert parameter_summary(checked) == "who, greeting=Hello, times=1"
    rendered = render(checked, {"who": "world", "times": "2"})
    assert rendered.environment == {"WHO": "world"}
    assert 'echo "Hello, $WHO!"' in rendered.script and "seq 2" in rendered.script


def test_show_writes_yaml_that_applies_again(tmp_path: Path) -> None:
    (example,) = read_definitions(str(EXAMPLE))
    stored = check_definition(example).model_copy(update={"version": 7})
    text = to_yaml(stored)
    assert text.startswith("name: hello\nversion: 7\n")
    assert "command: |\n  for i in" in text  # scripts as literal blocks
    again = tmp_path / "again.yaml"
    again.write_text(text)
    (read,) = read_definitions(str(again))
    assert read == stored  # the version is read too; the server ignores it at apply


def test_files_that_are_not_definitions(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(BadAttributeValue, match="broken.yaml is not YAML"):
        list(read_definitions(str(broken)))
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(BadAttributeValue, match="holds no definition"):
        list(read_definitions(str(empty)))
    with pytest.raises(BadAttributeValue, match="cannot read"):
        list(read_definitions(str(tmp_path / "missing.yaml")))
    two = tmp_path / "two.yaml"
    two.write_text(yaml.safe_dump_all([{"name": "a", "command": "true"},
                                       {"name": "b", "command": ["true"]}]))
    assert [d.name for d in read_definitions(str(two))] == ["a", "b"]


def test_run_arguments() -> None:
    assert parameters(["a=1", "b=x=y", "c=", "a=2"]) == {"a": "2", "b": "x=y", "c": ""}
    for bad in (["-N"], ["novalue"], ["=x"]):
        with pytest.raises(UsageError, match="expected KEY=VALUE"):
            parameters(bad)
    cmdline, _ = parse_qsub_args(["-N", "n", "-q", "short", "-l", "mem=1gb", "-h", "-J", "1-4",
                                  "-W", "depend=afterok:3.pkbs", "-v", "X=1", "-P", "proj"])
    options = run_options(merge(cmdline.__class__(), cmdline), ["greet", "--", "-N", "n"])
    assert options["name"] == "n" and options["queue"] == "short"
    assert options["resources"] == {"mem": "1gb"} and options["hold"] is True
    assert options["array"] == "1-4" and options["depend"] == "afterok:3.pkbs"
    assert options["variables"]["X"] == "1" and "PBS_O_WORKDIR" in options["variables"]
    assert options["attributes"] == {"project": "proj"}
    assert options["submit_args"] == "greet -- -N n"
    RunOptions.model_validate(options)  # what the server takes
