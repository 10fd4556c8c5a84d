"""Fuzz the live dispatcher from its own OpenAPI document with schemathesis.

Every operation gets up to 30 generated requests (valid and invalid ones), each sent
with a user's token and with the operator's: no answer may be a 5xx, and no body may
carry a Python traceback. The stack is this module's own: fuzzed submissions create
jobs with random payloads, which must not show up in other tests' listings.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

from tests.apiutil import call  # noqa: E402
from tests.stackutil import Stack, api_endpoint  # noqa: E402

pytestmark = pytest.mark.timeout(120)

# Generated bodies, headers and paths: a long poll (GET .../wait) is cut short, and
# GET .../output is not followed.
MAX_WAIT = 0.5


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("fuzz") / "home")
    stack.up(workers=1, slots=1)
    yield stack
    stack.down()


@pytest.fixture(scope="module")
def tokens(fuzz_stack: Stack) -> dict[str, str]:
    _, admin = api_endpoint(fuzz_stack)
    return {"user": fuzz_stack.token_for("fuzzer"), "admin": admin}


def _document() -> dict[str, Any]:
    """The dispatcher's OpenAPI document, built from its app (no server needed): the
    tests are generated at collection time, before any stack runs. The live server's
    /openapi.json is checked to be the same document."""
    from pkbs.dispatcher.app import create_app

    from pkbs.settings import Settings

    return dict(create_app(Settings()).openapi())


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_live_document_is_the_fuzzed_one(fuzz_stack: Stack) -> None:
    """Every operation the live server documents is fuzzed."""
    endpoint, _ = api_endpoint(fuzz_stack)
    with urllib.request.urlopen(f"{endpoint}/openapi.json", timeout=10) as response:
        live = json.loads(response.read())

    def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
        return {(path, method) for path, ops in document["paths"].items() for method in ops}

    assert operations(live) == operations(DOCUMENT)


@schema.parametrize()
@hypothesis.settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    database=None,
)
def test_no_server_errors_no_tracebacks(case: Any, fuzz_stack: Stack,
                                        tokens: dict[str, str]) -> None:
    endpoint, _ = api_endpoint(fuzz_stack)
    if case.path.endswith("/wait") and isinstance(case.query, dict):
        value = case.query.get("timeout")
        if isinstance(value, int | float) and not isinstance(value, bool) and value > MAX_WAIT:
            case.query["timeout"] = MAX_WAIT
    if case.path.endswith("/output") and isinstance(case.query, dict):
        case.query.pop("follow", None)  # a followed job's output lasts as long as the job
    for role, token in tokens.items():
        response = case.call(base_url=endpoint, timeout=30,
                             headers={"Authorization": f"Bearer {token}"})
        where = f"{case.method} {case.formatted_path} as {role}: {response.status_code}"
        assert response.status_code < 500, f"{where}\n{response.text[:2000]}"
        assert "Traceback" not in response.text, f"{where}\n{response.text[:2000]}"
        assert 'File "' not in response.text, f"{where}\n{response.text[:2000]}"


def test_every_operation_wants_a_valid_token(fuzz_stack: Stack) -> None:
    """No token, a wrong one, a forged job token: 401 with a JSON error, for every
    operation of the document."""
    endpoint, _ = api_endpoint(fuzz_stack)
    with urllib.request.urlopen(f"{endpoint}/openapi.json", timeout=10) as response:
        document = json.loads(response.read())
    forged = "pkbsjob.eyJ1Ijoicm9vdCIsImoiOjEsImUiOjk5OTk5OTk5OTl9.00"
    checked = 0
    for path, operations in document["paths"].items():
        concrete = path.replace("{job_id}", "1.pkbs").replace("{name}", "x")
        for method in operations:
            for token in (None, "wrong", forged):
                status, body = call(endpoint, method.upper(), concrete, token)
                assert status == 401, (method, path, token, status, body)
                assert body["error"]["message"], body
                checked += 1
    assert checked >= 10 * 3
