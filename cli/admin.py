"""`pkbs`: the local stack (up/down/status), results (fetch), a job's output (logs:
cli/logs.py), access (login, token), job definitions (def, run: cli/defs.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from pkbs import clientconfig
from pkbs.errors import EXIT_NOT_READY, PkbsError

from .client import Client
from .cluster import cluster
from .completion import completion
from .defs import definitions, run
from .group import Group
from .logs import logs


def _home() -> Path:
    return clientconfig.pkbs_home()


@click.group(
    cls=Group,
    context_settings={"auto_envvar_prefix": "PKBS", "help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="pkbs")
def main() -> None:
    """pkbs: a PBS-compatible batch queue. Jobs are submitted with qsub."""


@main.command()
@click.option(
    "--workers",
    type=click.IntRange(0),
    default=None,
    help="Worker processes (default: 1, whose CPU pool is the whole machine, so one job "
    "may use every CPU; 0: workers are started elsewhere).",
)
@click.option(
    "--slots",
    type=click.IntRange(1),
    default=None,
    help="CPUs in each worker's pool (default: CPUs / workers).",
)
@click.option("--server-name", default="pkbs", show_default=True, help="Server part of job ids.")
def up(workers: int | None, slots: int | None, server_name: str) -> None:
    """Start the local stack: nats-server, WebDAV, dispatcher and workers."""
    from pkbs import local

    cpus = os.cpu_count() or 1
    workers = 1 if workers is None else workers
    slots = slots or max(1, cpus // max(workers, 1))
    config = local.StackConfig(_home(), workers, slots, server_name)
    state = local.up(config, lambda line: click.echo(f"  {line}", err=True))
    click.echo(f"pkbs is up: {state['endpoint']} (state in {config.home})")
    click.echo("Try: echo 'hostname' | qsub -N hello; qstat -x; pkbs fetch <job id>")


@main.command()
def down() -> None:
    """Stop exactly the processes `pkbs up` started (running jobs are handed back)."""
    from pkbs import local

    stopped = local.down(
        _home(), lambda line: click.echo(f"  {line}", err=True), running_jobs=_running_jobs
    )
    click.echo("pkbs is down" if stopped else "pkbs was not running")


def _running_jobs() -> int | None:
    """How many jobs run, by the dispatcher's count (None: it cannot tell)."""
    try:
        server = Client().request("GET", "/queues")["server_attributes"]
    except (PkbsError, OSError, KeyError, TypeError):
        return None
    counts = dict(part.split(":") for part in str(server.get("state_count", "")).split())
    return int(counts.get("Running", 0)) + int(counts.get("Exiting", 0))


@main.command()
@click.option("--logs", "component", metavar="NAME",
              help="Print NAME's log instead (dispatcher, worker-1, nats-server, ...).")
@click.option("-n", "--lines", default=50, show_default=True, help="With --logs: last lines.")
@click.option("--raw", is_flag=True, help="With --logs: the JSON lines as stored.")
def status(component: str | None, lines: int, raw: bool) -> None:
    """Each process of the local stack: pid, port, health, restarts; or with --logs,
    one process's log, readable."""
    from pkbs import local

    if component is not None:
        _print_log(local.log_path(_home(), component), lines, raw)
        return
    rows = local.status(_home())
    if not rows:
        click.echo("pkbs is not running")
        sys.exit(EXIT_NOT_READY)
    click.echo(f"{'process':<14} {'pid':>7} {'port':>6} {'health':<9} restarts")
    for row in rows:
        health = "ok" if row["healthy"] else ("dead" if not row["alive"] else "unhealthy")
        port = row.get("port") or "-"
        click.echo(
            f"{row['name']:<14} {row['pid'] or '-':>7} {port:>6} {health:<9} {row['restarts']}"
        )
    docker = (local.read_state(_home()) or {}).get("docker")
    where = f"Docker at {docker}" if docker else "none (no Docker daemon)"
    click.echo(f"\ncontainer jobs: {where}")
    if not all(r["healthy"] for r in rows):
        sys.exit(EXIT_NOT_READY)


def _print_log(path: Path, lines: int, raw: bool) -> None:
    from collections import deque

    from pkbs.logs import render

    with open(path, encoding="utf-8", errors="replace") as log:
        for line in deque(log, maxlen=max(lines, 0)):
            click.echo(line.rstrip("\n") if raw else render(line.rstrip("\n")))


@main.command()
@click.argument("job_id")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--force", is_flag=True, help="Overwrite files that exist and differ.")
def fetch(job_id: str, dest: Path | None, force: bool) -> None:
    """Download a finished job's results (.o/.e and the files it wrote).

    With DEST, all of them into DEST. Without, .o/.e go to their Output_Path /
    Error_Path when that is on this host, the other files into the submit directory
    (when the job was submitted here, else the current one). An array's finished
    subjobs go each into DEST/<subjob id>/. Existing files are not overwritten
    without --force: the conflicts are listed and nothing is written."""
    from .fetch import fetch as fetch_results

    fetch_results(job_id, dest, force)


@main.command()
@click.option("--endpoint", required=True, help="Dispatcher URL, e.g. http://127.0.0.1:8000")
@click.option("--token", required=True, help="Bearer token (from the cluster's Secret)")
def login(endpoint: str, token: str) -> None:
    """Point the CLI at a dispatcher (a cluster's, via port-forward, LoadBalancer or Ingress)."""
    config = clientconfig.ClientConfig(endpoint.rstrip("/"), token)
    info = Client(config).request("GET", "/server")
    clientconfig.save(
        clientconfig.login_file(), clientconfig.ClientConfig(config.endpoint, token, info["name"])
    )
    click.echo(f"logged in to {info['name']} at {endpoint}")


@main.group()
def token() -> None:
    """Manage user tokens (admin)."""


@token.command("create")
@click.argument("user")
@click.option("--admin", is_flag=True, help="Give the token the operator role.")
def token_create(user: str, admin: bool) -> None:
    """Create a token for USER and print it."""
    role = "admin" if admin else "user"
    result = Client().request("POST", "/tokens", {"user": user, "role": role})
    click.echo(result["token"])


main.add_command(cluster)
main.add_command(definitions)
main.add_command(run)
main.add_command(completion)
main.add_command(logs)
