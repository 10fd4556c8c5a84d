from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stackutil import Stack, bare_nats


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A bare nats-server with JetStream (no auth) for the session: for tests of one
    store or client, without the rest of the stack."""
    with bare_nats(tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One local stack (nats-server, WsgiDAV, dispatcher, 2 workers) for the session."""
    # A short kill grace (default 10 s) keeps qdel of a job ignoring SIGTERM quick; a
    # small array chunk makes every array test go through span messages too.
    s = Stack(
        tmp_path_factory.mktemp("pkbs-home"),
        extra_env={"PKBS_KILL_GRACE_SECONDS": "3", "PKBS_ARRAY_CHUNK": "3"},
    )
    s.up(workers=2, slots=2)
    yield s
    s.down()


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own, for tests that kill or restart parts of it."""
    s = Stack(tmp_path / "home")
    yield s
    if (s.home / "run" / "stack.json").exists():
        s.down()


@pytest.fixture(autouse=True)
def _outside_the_checkout(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test runs in a directory of its own: a local stack delivers a job's .o/.e
    to the directory it was submitted from, as PBS does, and that is never the checkout."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd", numbered=True))
