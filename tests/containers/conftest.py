"""Fixtures of the container scenarios: a Docker daemon (its absence fails every
scenario, loudly: a container check that skips is not a check), the images that
`make images` builds, and a System per test."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.containers.system import ROOT, System, images

# Every scenario waits on real containers starting, draining and being rerun.



@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker daemon to run the container scenarios on: {exc} "
                    "(make docker-host installs and starts one)", pytrace=False)
    yield client
    remove_leftovers(client, f"pkbs-t{os.getpid()}-")


def remove_leftovers(client: docker.DockerClient, prefix: str) -> None:
    """Containers, networks and volumes of this session's systems still here (each
    System removes its own; this is for one cut short)."""
    ours = {"label": "pkbs-test"}
    for container in client.containers.list(all=True, filters=ours):
        if container.labels["pkbs-test"].startswith(prefix):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
    for item in [*client.networks.list(filters=ours), *client.volumes.list(filters=ours)]:
        if (item.attrs.get("Labels") or {}).get("pkbs-test", "").startswith(prefix):
            with contextlib.suppress(docker.errors.APIError):
                item.remove()


@pytest.fixture(scope="session")
def built_images(docker_client: docker.DockerClient) -> dict[str, str]:
    """The images `make images` builds; built here when one is missing or was made
    from other sources than the tree's (scripts/images.py current)."""
    script = [sys.executable, str(ROOT / "scripts" / "images.py")]
    if subprocess.run([*script, "current"], capture_output=True).returncode != 0:
        build = subprocess.run([*script, "build"], capture_output=True, text=True,
                               timeout=1200)
        assert build.returncode == 0, f"make images failed:\n{build.stdout}\n{build.stderr}"
    return images()


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient) -> str:
    """The Debian base (python3, bash, procps) for container jobs: made once."""
    script = [sys.executable, str(ROOT / "scripts" / "images.py"), "base"]
    made = subprocess.run(script, capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stdout + made.stderr
    return "pkbs-base:bookworm"


@pytest.fixture
def system(tmp_path: Path, docker_client: docker.DockerClient,
           built_images: dict[str, str], request: pytest.FixtureRequest) -> Iterator[System]:
    made = System(tmp_path, docker_client)
    try:
        yield made
    finally:
        report = request.node.stash.get(_failed, False)
        if report:
            print("\n".join(made.cluster.events))
            print(made.cluster.describe())
        made.down()


_failed = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if getattr(report, "failed", False):
        item.stash[_failed] = True
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every scenario waits on real containers starting, draining and being rerun."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.timeout(300))
