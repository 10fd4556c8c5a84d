"""Job definitions end to end: `pkbs def apply|list|show|delete`, `pkbs run` and the
REST endpoints, against the session stack (real nats-server and WsgiDAV). Each test
uses definitions of its own names: tests share the stack."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from pkbs import errors, servers
from tests.apiutil import call
from tests.stackutil import (
    Stack,
    api_endpoint,
    cli,
    fetch_results,
    job_as,
    job_number,
    submit,
    write_file,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "definitions" / "hello.yaml"
EXIT_BAD_VALUE = errors.exit_code(errors.PBSE_BADATVAL)
EXIT_INVALID = errors.exit_code(errors.PBSE_IVALREQ)
EXIT_PERM = errors.exit_code(errors.PBSE_PERM)


def _apply(stack: Stack, path: Path, env: dict[str, str] | None = None) -> str:
    result = cli(stack, "pkbs", "def", "apply", str(path), env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _define(stack: Stack, tmp_path: Path, **fields: Any) -> str:
    """Apply a definition of these fields; `NAME version N` as printed."""
    path = write_file(tmp_path / f"{fields['name']}-{os.urandom(4).hex()}.yaml",
                      yaml.safe_dump(fields))
    return _apply(stack, path)


def _run(stack: Stack, *args: str, env: dict[str, str] | None = None) -> str:
    """`pkbs run ARGS`, which must print exactly a job id."""
    result = cli(stack, "pkbs", "run", *args, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    job_id = result.stdout.removesuffix("\n")
    assert job_id.endswith(".pkbs") and job_id.split(".")[0].isdigit(), result.stdout
    return job_id


def _last_number(stack: Stack) -> int:
    """The newest job number (a held probe job, deleted): a request that queued
    nothing leaves the next probe exactly one number after the previous one."""
    probe = submit(stack, "-h", "-N", "probe", input="true\n")
    assert cli(stack, "qdel", probe).returncode == 0
    return job_number(probe)


def _output(stack: Stack, job_id: str, tmp_path: Path) -> str:
    job = stack.wait_state(job_id, "F")
    assert job["Exit_status"] == 0, job
    dest = tmp_path / f"out-{job_number(job_id)}"
    fetch_results(stack, job_id, dest)
    return (dest / f"{job['Job_Name']}.o{job_number(job_id)}").read_text()


# -- the CLI ----------------------------------------------------------------------------


def test_the_example_applies_and_runs_with_its_parameters(stack: Stack, tmp_path: Path) -> None:
    applied = _apply(stack, EXAMPLE)
    assert applied.startswith("hello version ") and applied.endswith("\n")
    version = applied.split()[-1]
    job_id = _run(stack, "hello", "who=world", "times=2")
    assert _output(stack, job_id, tmp_path) == "Hello, world!\nHello, world!\n"
    job = stack.job(job_id)
    assert job["Job_Name"] == "hello"
    assert job["definition"] == f"hello@{version}"
    assert job["history_duration"] == "24:00:00"
    assert job["Resource_List"]["walltime"] == "00:05:00"
    assert job["Submit_arguments"] == "hello who=world times=2"


def test_apply_list_show_delete_and_versions(stack: Stack, tmp_path: Path) -> None:
    first = _define(stack, tmp_path, name="lifecycle", command="echo one",
                    parameters={"x": {"default": "1", "description": "a number"}})
    assert first == "lifecycle version 1\n"
    second = _define(stack, tmp_path, name="lifecycle", command=["echo", "two", "{{x}}"],
                     parameters={"x": None}, image="python:3.12-slim")
    assert second == "lifecycle version 2\n"

    listing = cli(stack, "pkbs", "def", "list")
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["NAME", "VERSION", "IMAGE", "PARAMETERS"]
    assert ["lifecycle", "2", "python:3.12-slim", "x"] in [row.split() for row in rows]

    newest = cli(stack, "pkbs", "def", "show", "lifecycle")
    assert newest.returncode == 0, newest.stderr
    assert yaml.safe_load(newest.stdout) == {
        "name": "lifecycle", "version": 2, "image": "python:3.12-slim",
        "parameters": {"x": {}}, "command": ["echo", "two", "{{x}}"],
    }
    old = cli(stack, "pkbs", "def", "show", "lifecycle@1")
    assert yaml.safe_load(old.stdout)["command"] == "echo one"
    assert yaml.safe_load(old.stdout)["parameters"] == {
        "x": {"default": "1", "description": "a number"}
    }

    deleted = cli(stack, "pkbs", "def", "delete", "lifecycle")
    assert (deleted.returncode, deleted.stdout) == (0, "lifecycle deleted\n"), deleted.stderr
    for ref in ("lifecycle", "lifecycle@1"):
        gone = cli(stack, "pkbs", "def", "show", ref)
        assert gone.returncode == EXIT_INVALID
        assert gone.stderr == f"pkbs def show: Unknown job definition {ref}\n"
    assert "lifecycle" not in cli(stack, "pkbs", "def", "list").stdout
    again = cli(stack, "pkbs", "def", "delete", "lifecycle")
    assert again.returncode == EXIT_INVALID, again.stderr
    # A number never names two definitions: applied again, it goes on from 3.
    assert _define(stack, tmp_path, name="lifecycle", command="true") == "lifecycle version 3\n"


def test_run_with_parameters_and_qsub_options(stack: Stack, tmp_path: Path) -> None:
    _define(stack, tmp_path, name="optioned",
            command='echo "{{greeting}} $WHO in $PBS_QUEUE"',
            environment={"WHO": "{{who}}"},
            parameters={"who": None, "greeting": {"default": "hi"}},
            resources={"walltime": "00:02:00"})
    job_id = _run(stack, "optioned", "who=it's me", "--", "-N", "custom", "-l", "walltime=90",
                  "-v", "EXTRA=1")
    assert _output(stack, job_id, tmp_path) == "hi it's me in workq\n"
    job = stack.job(job_id)
    assert job["Job_Name"] == "custom"
    assert job["Resource_List"]["walltime"] == "00:01:30"
    assert str(job["Variable_List"]["EXTRA"]) == "1"  # qstat -F json prints numbers as such
    assert job["Variable_List"]["WHO"] == "it's me"
    # A version by number; quiet (-z) prints nothing.
    quiet = cli(stack, "pkbs", "run", "optioned@1", "who=x", "--", "-z")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_holds_and_dependencies_go_the_way_of_qsub(stack: Stack, tmp_path: Path) -> None:
    _define(stack, tmp_path, name="chained", command="echo {{word}}",
            parameters={"word": None})
    parent = _run(stack, "chained", "word=first", "--", "-h")
    assert stack.job(parent)["job_state"] == "H"
    child = _run(stack, "chained", "word=second", "--", "-W", f"depend=afterok:{parent}")
    assert stack.job(child)["job_state"] == "H"
    assert cli(stack, "qrls", parent).returncode == 0
    assert _output(stack, parent, tmp_path) == "first\n"
    assert _output(stack, child, tmp_path) == "second\n"


def test_a_definition_with_an_image_makes_container_jobs(stack: Stack, tmp_path: Path) -> None:
    _define(stack, tmp_path, name="contained", image="python:3.12-slim",
            command=["python3", "-c", "print({{n}})"], parameters={"n": "42"})
    job_id = _run(stack, "contained", "--", "-h")  # held: it need not run here
    job = stack.job(job_id)
    assert job["container_image"] == "python:3.12-slim"
    assert job["Variable_List"]["CONTAINER_IMAGE"] == "python:3.12-slim"
    assert cli(stack, "qdel", job_id).returncode == 0


def test_refusals_are_clear_and_queue_nothing(stack: Stack, tmp_path: Path) -> None:
    _define(stack, tmp_path, name="strict", command="echo {{who}}", parameters={"who": None})
    before = _last_number(stack)
    cases = [
        (["strict"], EXIT_INVALID,
         "pkbs run: definition strict@1: parameter who is required (it has no default)\n"),
        (["strict", "who=x", "whom=y"], EXIT_INVALID,
         "pkbs run: definition strict@1 has no parameter whom (who)\n"),
        (["strict", "who=two\nlines"], EXIT_BAD_VALUE,
         "pkbs run: definition strict@1: parameter who holds a newline:"
         " a parameter value may not\n"),
        (["nosuchdef", "who=x"], EXIT_INVALID, "pkbs run: Unknown job definition nosuchdef\n"),
        (["strict@9", "who=x"], EXIT_INVALID, "pkbs run: Unknown job definition strict@9\n"),
        (["strict", "who=x", "--", "-l", "mem=lots"], EXIT_BAD_VALUE, None),
        (["strict", "-N", "x"], errors.EXIT_USAGE,
         "pkbs run: expected KEY=VALUE, not '-N' (qsub options go after --)\n"),
        (["strict", "who=x", "--", "-q", "nosuchqueue"], errors.exit_code(errors.PBSE_UNKQUE),
         "pkbs run: Unknown queue\n"),
    ]
    for args, status, stderr in cases:
        result = cli(stack, "pkbs", "run", *args)
        assert (result.returncode, result.stdout) == (status, ""), (args, result.stderr)
        if stderr is not None:
            assert result.stderr == stderr, args

    # A placeholder of no parameter, at apply.
    bad = write_file(tmp_path / "bad.yaml", "name: strict\ncommand: echo {{whom}}\n"
                     "parameters: {who: }\n")
    refused = cli(stack, "pkbs", "def", "apply", str(bad))
    assert refused.returncode == EXIT_BAD_VALUE
    assert refused.stderr == (
        "pkbs def apply: definition strict: command uses {{whom}}, which is not one of its"
        " parameters (who)\n"
    )
    malformed = write_file(tmp_path / "malformed.yaml", "name: a.b\ncommand: true\n")
    refused = cli(stack, "pkbs", "def", "apply", str(malformed))
    assert refused.returncode == EXIT_BAD_VALUE
    assert refused.stderr.startswith(
        f"pkbs def apply: {malformed}: name: 'a.b' is not a definition"
    )
    shown = cli(stack, "pkbs", "def", "show", "strict")
    assert yaml.safe_load(shown.stdout)["version"] == 1  # not applied
    assert _last_number(stack) == before + 1  # nothing queued in between


def test_only_operators_apply_and_delete(stack: Stack, tmp_path: Path) -> None:
    _define(stack, tmp_path, name="guarded", command="echo guarded")
    alice = stack.as_user("defs-alice")
    path = write_file(tmp_path / "mine.yaml", "name: guarded\ncommand: echo mine\n")
    refused = cli(stack, "pkbs", "def", "apply", str(path), env=alice)
    assert refused.returncode == EXIT_PERM
    assert refused.stderr == "pkbs def apply: Only operators apply job definitions\n"
    refused = cli(stack, "pkbs", "def", "delete", "guarded", env=alice)
    assert refused.returncode == EXIT_PERM
    assert refused.stderr == "pkbs def delete: Only operators delete job definitions\n"
    # Users read and run them; the job is theirs.
    assert "guarded" in cli(stack, "pkbs", "def", "list", env=alice).stdout
    assert cli(stack, "pkbs", "def", "show", "guarded", env=alice).returncode == 0
    job_id = _run(stack, "guarded", env=alice)
    assert job_as(stack, job_id, alice)["Job_Owner"].startswith("defs-alice@")


def test_an_applied_definition_is_used_at_once(stack: Stack, tmp_path: Path) -> None:
    _define(stack, tmp_path, name="edited", command="echo before")
    first = _run(stack, "edited")
    _define(stack, tmp_path, name="edited", command="echo after")
    second = _run(stack, "edited")
    assert _output(stack, first, tmp_path) == "before\n"
    assert _output(stack, second, tmp_path) == "after\n"
    assert stack.job(second)["definition"] == "edited@2"


# -- the REST endpoints ---------------------------------------------------------------------


def test_rest_endpoints(stack: Stack, tmp_path: Path) -> None:
    endpoint, admin = api_endpoint(stack)
    user = stack.token_for("defs-rest")
    body = {"name": "rest", "command": "echo {{a}}", "parameters": {"a": {"default": "x"}},
            "retention": "90"}
    status, reply = call(endpoint, "PUT", "/v1/definitions/rest", admin, body)
    assert (status, reply) == (200, {"name": "rest", "version": 1})
    status, reply = call(endpoint, "PUT", "/v1/definitions/rest", user, body)
    assert status == 403 and reply["error"]["pbs_errno"] == errors.PBSE_PERM
    status, reply = call(endpoint, "PUT", "/v1/definitions/other", admin, body)
    assert status == 400 and "named rest, not other" in reply["error"]["message"]
    status, reply = call(endpoint, "PUT", "/v1/definitions/rest", admin,
                         {**body, "command": "echo {{b}}"})
    assert status == 400 and reply["error"]["pbs_errno"] == errors.PBSE_BADATVAL

    status, reply = call(endpoint, "GET", "/v1/definitions/rest", user)
    assert status == 200
    assert (reply["version"], reply["retention"]) == (1, "00:01:30")
    status, reply = call(endpoint, "GET", "/v1/definitions", user)
    assert {"rest": 1}.items() <= {d["name"]: d["version"] for d in reply["definitions"]}.items()
    status, reply = call(endpoint, "GET", "/v1/definitions/rest?version=2", user)
    assert status == 404 and reply["error"]["message"] == "Unknown job definition rest@2"

    submission = {"submit_id": os.urandom(16).hex(), "parameters": {"a": "y"},
                  "options": {"name": "viarest", "hold": True}}
    status, first = call(endpoint, "POST", "/v1/definitions/rest/jobs", user, submission)
    assert status == 201 and first["duplicate"] is False, first
    status, again = call(endpoint, "POST", "/v1/definitions/rest/jobs", user, submission)
    assert status == 201 and (again["job_id"], again["duplicate"]) == (first["job_id"], True)
    job = stack.job(first["job_id"])
    assert (job["Job_Name"], job["job_state"], job["definition"]) == ("viarest", "H", "rest@1")
    assert job["history_duration"] == "00:01:30"
    assert cli(stack, "qdel", first["job_id"]).returncode == 0

    status, reply = call(endpoint, "POST", "/v1/definitions/nope/jobs", user,
                         {**submission, "submit_id": os.urandom(16).hex()})
    assert status == 404 and reply["error"]["pbs_errno"] == errors.PBSE_IVALREQ
    status, _ = call(endpoint, "DELETE", "/v1/definitions/rest", user)
    assert status == 403
    status, _ = call(endpoint, "DELETE", "/v1/definitions/rest", admin)
    assert status == 204
    status, _ = call(endpoint, "GET", "/v1/definitions/rest", user)
    assert status == 404


def test_applies_at_once_get_distinct_versions(stack: Stack) -> None:
    endpoint, admin = api_endpoint(stack)

    def apply(i: int) -> int:
        body = {"name": "racing", "command": f"echo {i}"}
        status, reply = call(endpoint, "PUT", "/v1/definitions/racing", admin, body)
        assert status == 200, reply
        return int(reply["version"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        versions = list(pool.map(apply, range(16)))
    assert sorted(versions) == list(range(1, 17))
    for i, version in enumerate(versions):  # each version holds what its apply sent
        _, reply = call(endpoint, "GET", f"/v1/definitions/racing?version={version}", admin)
        assert reply["command"] == f"echo {i}"


def test_another_dispatcher_sees_a_definition_at_once(stack: Stack, tmp_path: Path) -> None:
    from tests.test_dispatcher_api import _start_second_dispatcher

    endpoint, admin = api_endpoint(stack)
    second, endpoint2 = _start_second_dispatcher(stack, tmp_path / "dispatcher2.log")
    try:
        for version, word in ((1, "one"), (2, "two")):
            body = {"name": "replicated", "command": f"echo {word}"}
            status, reply = call(endpoint, "PUT", "/v1/definitions/replicated", admin, body)
            assert (status, reply["version"]) == (200, version)
            status, reply = call(endpoint2, "GET", "/v1/definitions/replicated", admin)
            assert (status, reply["version"], reply["command"]) == (200, version, f"echo {word}")
    finally:
        servers.stop(second)
