"""The server's configuration: its attributes and its queues, by their PBS names.

One value, `ServerConfig`, kept in KV `PKBS_CONFIG` under `server` (pkbs/configstore.py),
changed by `qmgr` with a compare-and-set and followed live by every dispatcher and
worker. The settings (`PKBS_QUEUES`, ...) only seed an empty store.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pkbs.constants import DEFAULT_QUEUE
from pkbs.errors import UnknownQueue
from pkbs.queues import QueueConfig

# PBS's default job_history_duration: two weeks.
DEFAULT_HISTORY_DURATION = "336:00:00"


class ServerAttrs(BaseModel):
    """The server's own attributes (`qmgr -c "set server ..."`)."""

    model_config = ConfigDict(extra="forbid")

    default_queue: str = DEFAULT_QUEUE
    scheduling: bool = True
    job_history_enable: bool = True
    job_history_duration: str = DEFAULT_HISTORY_DURATION
    resources_default: dict[str, str] = Field(default_factory=dict)
    resources_max: dict[str, str] = Field(default_factory=dict)
    # PBS limit syntax (pkbs/limits.py), across every queue.
    max_run: str | None = None
    max_queued: str | None = None
    max_run_res: dict[str, str] = Field(default_factory=dict)
    comment: str | None = None


class ServerConfig(BaseModel):
    """Everything qmgr sets but hooks (each hook is a key of its own: pkbs/configstore.py)."""

    model_config = ConfigDict(extra="forbid")

    server: ServerAttrs = Field(default_factory=ServerAttrs)
    queues: dict[str, QueueConfig] = Field(
        default_factory=lambda: {DEFAULT_QUEUE: QueueConfig()}
    )

    def queue(self, name: str) -> QueueConfig:
        """The queue `name`, or PBS's Unknown queue."""
        found = self.queues.get(name)
        if found is None:
            raise UnknownQueue()
        return found

    @classmethod
    def seeded(cls, queues: dict[str, QueueConfig]) -> ServerConfig:
        """The first configuration of a store: the settings' queues; the default queue
        workq if there is one, else the first."""
        default = DEFAULT_QUEUE if DEFAULT_QUEUE in queues or not queues else next(iter(queues))
        return cls(server=ServerAttrs(default_queue=default), queues=dict(queues))
