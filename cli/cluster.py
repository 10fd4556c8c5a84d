"""`pkbs cluster`: a pkbs deployment on Kubernetes, seen through the Kubernetes API.

Only click is imported here; pkbs.cluster (and through it the `kubernetes` client) is
imported when a command runs, so `pkbs` and the q* commands start as fast as before.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from pkbs.errors import EXIT_NOT_READY

from .group import Group


@click.group(cls=Group)
def cluster() -> None:
    """A pkbs deployment on Kubernetes (needs `pip install 'pkbs[k8s]'`)."""


@cluster.command()
@click.option(
    "-n", "--namespace", default="pkbs", show_default=True, help="NATS, dispatcher, workers."
)
@click.option(
    "--system-namespace", default="pkbs-system", show_default=True, help="WebDAV, syslog."
)
@click.option("--context", default=None, help="kubeconfig context (default: the current one).")
def status(namespace: str, system_namespace: str, context: str | None) -> None:
    """Pods, rollouts, autoscaling (HPA or KEDA) and PDBs of pkbs.

    Exit status 0 when everything is ready, 1 when something is not (each listed at the
    end), 2 when no cluster can be asked (no kubeconfig, API unreachable or refusing).
    """
    from pkbs import cluster as k8s

    snapshot = k8s.fetch(k8s.connect(context), namespace, system_namespace)
    report = k8s.summarise(snapshot)
    click.echo(k8s.render(report, datetime.now(UTC)), nl=False)
    sys.exit(0 if report.ready else EXIT_NOT_READY)
