"""What the pod runner asks of the Kubernetes API, as an interface: the few calls on
the pods of one namespace (worker/kubeapi.py makes them with the `kubernetes`
client; the tests with a fake cluster)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

T = TypeVar("T")


class PodAPIError(Exception):
    """The API refused or failed a call; `status` is its HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class PodFeed(Protocol):
    """One pod as the API last showed it (a dict, as `kubectl get -o json` prints it)."""

    @property
    def pod(self) -> dict[str, Any] | None:
        """None until the pod is first seen."""
        ...

    @property
    def gone(self) -> bool:
        """The pod was seen and is deleted now."""
        ...

    async def changed(self, timeout: float) -> None:
        """Until the pod changes, or `timeout` passes (then it is read afresh)."""
        ...

    def close(self) -> None:
        """No more following it."""
        ...


class PodAPI(Protocol):
    def follow(self, name: str) -> PodFeed:
        """Follow a pod by name (before it is created: no change is missed)."""
        ...

    async def create(self, manifest: dict[str, Any]) -> None: ...

    async def delete(self, name: str, grace_seconds: int = 0) -> None:
        """Delete a pod; one that is gone already is fine."""
        ...

    async def delete_labelled(self, selector: str) -> int:
        """Delete every pod the label selector finds; how many."""
        ...

    async def append_log(self, name: str, container: str, path: Path) -> int:
        """Append a container's log to a file; how many bytes."""
        ...

    async def exec_stdout(
        self, name: str, container: str, command: list[str], consume: Callable[[IO[bytes]], T]
    ) -> T:
        """Run `command` in a container; `consume` reads its stdout as it comes (in a
        thread of its own). PodAPIError if the command does not exit 0."""
        ...
