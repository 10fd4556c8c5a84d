"""The one settings object of the server side (dispatcher, worker, local stack).

Every field is read from the environment with the prefix `PKBS_` (e.g.
`PKBS_NATS_URL`). The CLI does not import this module: it only needs an endpoint
and a token (see pkbs.clientconfig).
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pkbs.constants import DEFAULT_QUEUE, DEFAULT_SERVER_NAME
from pkbs.pbsvalues import parse_size
from pkbs.queues import QueueConfig


def default_home() -> Path:
    return Path(os.path.expanduser("~/.local/share/pkbs"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PKBS_", extra="ignore")

    # General
    home: Path = Field(default_factory=default_home, description="State directory")
    server_name: str = Field(DEFAULT_SERVER_NAME, description="PBS server name in job ids")
    queues: dict[str, QueueConfig] = Field(
        default_factory=lambda: {DEFAULT_QUEUE: QueueConfig()},
        description='Queues: JSON list of names, or {"name": {limits}}',
    )
    # How often each dispatcher looks for jobs a crash left without a work message,
    # and how long a queued job must have been idle before it counts (0: never).
    reconcile_seconds: float = Field(60.0, ge=0)
    # The most CPUs one job may ask: what one worker offers (None: no check).
    max_job_ncpus: int | None = Field(None, ge=1)
    # Subjob messages queued at once per array; the rest wait in one span message
    # that a worker expands when it gets there (a huge array is quick to submit).
    array_chunk: int = Field(1024, ge=1)
    # How often each dispatcher deletes the jobs whose history has expired (the
    # server's job_history_duration: pkbs/retention.py), and each worker what it kept
    # under pkbs-undelivered/ as long; 0: never.
    retention_sweep_seconds: float = Field(60.0, ge=0)
    log_level: str = "INFO"
    # Also ship the JSON log lines to syslog: tcp://HOST:PORT or udp://HOST:PORT
    # (the logging component's receiver); stderr keeps them all either way.
    syslog_url: str | None = None

    # NATS
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    # A connection whose server stopped answering (a network partition leaves no
    # reset behind) is given up after two unanswered pings and made again.
    nats_ping_seconds: float = Field(5.0, gt=0)
    stream_replicas: int = Field(1, ge=1, le=5)
    # The JetStream file store pkbs may fill (nats-server's max_file_store, which the
    # local stack writes): split among the streams and buckets as their limits
    # (pkbs/storage.py). Bytes, or a PBS size such as 8gb; None: no limits.
    max_store_bytes: int | None = Field(None, ge=1024 * 1024)

    # Container jobs (-v CONTAINER_IMAGE=...): the Docker or Podman daemon a worker runs
    # them on, e.g. unix:///var/run/docker.sock; unset, a worker runs none.
    docker_host: str | None = None

    # WebDAV (results)
    webdav_url: str = "http://127.0.0.1:8080"
    webdav_user: str | None = None
    webdav_password: SecretStr | None = None
    webdav_base: str = Field("/pkbs", description="Collection under which results live")
    # The built-in WebDAV server (python -m pkbs.webdav)
    webdav_root: Path | None = Field(None, description="Directory served by the built-in server")
    webdav_listen_host: str = "127.0.0.1"
    webdav_listen_port: int = 8080

    # Dispatcher
    dispatcher_host: str = "127.0.0.1"
    dispatcher_port: int = 8000
    # Bootstrap admin token (a Kubernetes Secret or the local stack's config).
    admin_token: SecretStr | None = None
    admin_user: str = "admin"
    # Shared by dispatcher and workers to sign job-scoped tokens (jobs that submit jobs).
    job_token_secret: SecretStr | None = None

    # Worker
    worker_name: str = Field(default_factory=socket.gethostname)
    # What the worker offers its jobs (resources_available): CPUs, GPUs (None: those
    # found on the host, /dev/nvidia<N>) and memory (None: the host's, e.g. 16gb).
    worker_slots: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    worker_ngpus: int | None = Field(None, ge=0)
    worker_mem: str | None = None
    # How long a worker's entry in the node registry outlives its last renewal (it
    # renews it every third of that): a dead worker drops out of pbsnodes after it.
    node_ttl_seconds: float = Field(30.0, gt=0)
    worker_dir: Path | None = Field(None, description="Where job directories are made")
    # JetStream ack wait; the worker sends in-progress heartbeats at a third of it.
    ack_wait_seconds: float = Field(30.0, gt=0)
    # Grace between SIGTERM and SIGKILL when a job is deleted.
    kill_grace_seconds: float = Field(10.0, ge=0)
    # On SIGTERM, how long running jobs may go on before they are handed back.
    drain_grace_seconds: float = Field(25.0, ge=0)
    # Dispatcher endpoint given to jobs so they can submit jobs.
    job_endpoint: str | None = None
    # A job's stdout/stderr beyond this is cut before upload, with a note.
    max_output_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    # How long a finished job's results wait on the worker, retried with backoff, while
    # WebDAV is unreachable; after that the job ends F with Exit_status -2 and a comment.
    results_retry_seconds: float = Field(600.0, gt=0)
    # The worker runs on the submitters' host, as their account (the local stack sets
    # it): it also puts stdout/stderr at their Output_Path / Error_Path on this host.
    deliver_local: bool = False
    # A running job's resources_used and session_id are written into its record a
    # second after it starts, then every this many seconds (qstat -f, qstat -a's Elap).
    usage_update_seconds: float = Field(10.0, gt=0)
    # Memory the live-output stream PKBS_OUTPUT may hold for all jobs together (the
    # oldest chunks go first); each job's streams keep their last 200 chunks.
    output_stream_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    # Port of the worker's /healthz and /metrics (0: none).
    worker_metrics_port: int = 0
    # Where jobs run: `process`, as process groups on the worker (worker/runner.py), or
    # `pod`, every job a pod of its own in `job_namespace` (worker/podrunner.py,
    # docs/containers.md), so no job runs inside the worker's pod.
    job_runner: Literal["process", "pod"] = "process"
    # pod: the namespace of job pods; the image of jobs that name none and of each job
    # pod's helper containers (the worker's own image); how long a pod may take to get
    # its job running (scheduling, image pull, payload) before the job ends unstarted.
    job_namespace: str = "pkbs-jobs"
    job_image: str | None = None
    pod_start_seconds: float = Field(600.0, gt=0)

    @field_validator("max_store_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        """A PBS size (`8gb`, `500mb`) as well as a number of bytes."""
        if isinstance(value, str) and value.strip() and not value.strip().isdigit():
            return parse_size(value)
        return value

    @field_validator("queues", mode="before")
    @classmethod
    def _queue_names(cls, value: Any) -> Any:
        """A plain list of names means queues without limits."""
        if isinstance(value, list):
            return {name: {} for name in value}
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
