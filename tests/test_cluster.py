"""`pkbs cluster status` offline: the pure summaries and tables over realistic API
objects (what `kubectl get -o json` returns), and the real command end to end against a
fake Kubernetes API server (plain HTTP, the real `kubernetes` client), against an
empty kubeconfig and against an API that is not there. No cluster needed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pkbs import cluster as k8s

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
BIN = Path(sys.executable).parent


def ts(ago: timedelta, now: datetime = NOW) -> str:
    return (now - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- fixtures


def running(ready: bool = True, restarts: int = 0, started: timedelta = timedelta(days=2)) -> Any:
    return {
        "name": "main",
        "ready": ready,
        "started": True,
        "restartCount": restarts,
        "image": "docker.io/library/pkbs-dispatcher:0.1.0",
        "imageID": "sha256:4c1f0e6b2a",
        "containerID": "containerd://9a7e3c",
        "state": {"running": {"startedAt": ts(started)}},
        "lastState": {},
    }


def pod(
    name: str,
    namespace: str = "pkbs",
    *,
    app: str | None = None,
    phase: str = "Running",
    containers: list[Any] | None = None,
    age: timedelta = timedelta(days=2),
    node: str | None = "kind-worker",
    now: datetime = NOW,
    **extra: Any,
) -> Any:
    app = app or name.split("-")[0]
    statuses = [running()] if containers is None else containers
    ready = bool(statuses) and all(c["ready"] for c in statuses)
    obj: Any = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "creationTimestamp": ts(age, now),
            "labels": {
                "app.kubernetes.io/name": app,
                "app.kubernetes.io/part-of": "pkbs",
                "pod-template-hash": "7c9d5b8f6d",
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": app}],
        },
        "spec": {
            "containers": [{"name": "main", "image": "pkbs-dispatcher:0.1.0"}],
            "restartPolicy": "Always",
            "serviceAccountName": "default",
            **({"nodeName": node} if node else {}),
        },
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "PodScheduled", "status": "True" if node else "False"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
            "containerStatuses": statuses,
            **({"podIP": "10.244.1.7", "hostIP": "172.18.0.3"} if node else {}),
            **({"startTime": ts(age, now)} if node else {}),
        },
    }
    for key, value in extra.items():
        section, _, field = key.partition("__")
        obj[section][field] = value
    return obj


def deployment(
    name: str,
    namespace: str = "pkbs",
    *,
    replicas: int = 1,
    updated: int | None = None,
    ready: int | None = None,
    available: int | None = None,
    total: int | None = None,
    generation: int = 3,
    observed: int = 3,
    progressing: tuple[str, str] = ("True", "NewReplicaSetAvailable"),
) -> Any:
    updated = replicas if updated is None else updated
    ready = replicas if ready is None else ready
    available = ready if available is None else available
    status: Any = {
        "observedGeneration": observed,
        "replicas": replicas if total is None else total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "conditions": [
            {
                "type": "Available",
                "status": "True" if available >= replicas else "False",
                "reason": "MinimumReplicasAvailable",
            },
            {"type": "Progressing", "status": progressing[0], "reason": progressing[1]},
        ],
    }
    status = {k: v for k, v in status.items() if v != 0}  # the API leaves zero counts out
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "generation": generation,
            "creationTimestamp": ts(timedelta(days=3)),
            "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "pkbs"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": name}},
                "spec": {"containers": [{"name": name, "image": f"pkbs-{name}:0.1.0"}]},
            },
        },
        "status": status,
    }


def nats(replicas: int = 1, ready: int = 1, current: str = "a1", update: str = "a1") -> Any:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": "nats",
            "namespace": "pkbs",
            "generation": 2,
            "creationTimestamp": ts(timedelta(days=3)),
            "labels": {"app.kubernetes.io/name": "nats", "app.kubernetes.io/part-of": "pkbs"},
        },
        "spec": {
            "replicas": replicas,
            "serviceName": "nats",
            "selector": {"matchLabels": {"app.kubernetes.io/name": "nats"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "nats"}},
                "spec": {"containers": [{"name": "nats", "image": "nats:2.14.5-alpine3.22"}]},
            },
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "podManagementPolicy": "Parallel",
        },
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": replicas if current == update else replicas - 1,
            "updatedReplicas": replicas if current == update else 1,
            "currentRevision": f"nats-{current}",
            "updateRevision": f"nats-{update}",
            "collisionCount": 0,
        },
    }


def cpu_hpa(current: int | None = 35, replicas: int = 2, desired: int | None = None) -> Any:
    conditions = [
        {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"},
        {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"},
        {"type": "ScalingLimited", "status": "False", "reason": "DesiredWithinRange"},
    ]
    status: Any = {
        "currentReplicas": replicas,
        "desiredReplicas": replicas if desired is None else desired,
        "conditions": conditions,
    }
    if current is None:  # just deployed, or no metrics-server
        conditions[1] = {
            "type": "ScalingActive",
            "status": "False",
            "reason": "FailedGetResourceMetric",
            "message": "the HPA was unable to compute the replica count: failed to get cpu "
            "utilization: unable to get metrics for resource cpu: no metrics returned from "
            "resource metrics API",
        }
    else:
        status["currentMetrics"] = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "current": {"averageUtilization": current, "averageValue": "702m"},
                },
            }
        ]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "worker-hpa", "namespace": "pkbs"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
            "minReplicas": 1,
            "maxReplicas": 10,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
        "status": status,
    }


def keda_hpa(replicas: int = 0, lag: str | None = None) -> Any:
    """The HPA KEDA creates and owns for the ScaledObject."""
    metric = {"name": "s0-nats-jetstream-PKBS_WORK", "selector": {"matchLabels": {"x": "y"}}}
    status: Any = {"currentReplicas": replicas, "desiredReplicas": replicas}
    if replicas == 0:
        status["conditions"] = [
            {"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale"},
            {
                "type": "ScalingActive",
                "status": "False",
                "reason": "ScalingDisabled",
                "message": "scaling is disabled since the replica count of the target is zero",
            },
        ]
    else:
        status["conditions"] = [
            {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"},
            {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"},
            {"type": "ScalingLimited", "status": "True", "reason": "TooManyReplicas"},
        ]
        status["currentMetrics"] = [
            {"type": "External", "external": {"metric": metric, "current": {"averageValue": lag}}}
        ]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "worker-hpa",
            "namespace": "pkbs",
            "labels": {"app.kubernetes.io/managed-by": "keda-operator"},
            "ownerReferences": [{"kind": "ScaledObject", "name": "worker-scaler"}],
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
            "minReplicas": 1,
            "maxReplicas": 20,
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": metric,
                        "target": {"type": "AverageValue", "averageValue": "2"},
                    },
                }
            ],
        },
        "status": status,
    }


def scaledobject(
    ready: tuple[str, str, str] = (
        "True",
        "ScaledObjectReady",
        "ScaledObject is defined correctly",
    ),
    active: str = "False",
    fallback: str = "False",
) -> Any:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "worker-scaler", "namespace": "pkbs", "generation": 1},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
            "minReplicaCount": 0,
            "maxReplicaCount": 20,
            "triggers": [{"type": "nats-jetstream", "metadata": {"stream": "PKBS_WORK"}}],
        },
        "status": {
            "scaleTargetKind": "apps/v1.Deployment",
            "hpaName": "worker-hpa",
            "originalReplicaCount": 1,
            "conditions": [
                {"type": "Ready", "status": ready[0], "reason": ready[1], "message": ready[2]},
                {"type": "Active", "status": active, "reason": "ScalerNotActive"},
                {"type": "Fallback", "status": fallback, "reason": "NoFallbackFound"},
                {"type": "Paused", "status": "False", "reason": "ScaledObjectUnpaused"},
            ],
        },
    }


def pdb(
    name: str, *, min_available: Any = None, max_unavailable: Any = None, healthy: int, want: int
) -> Any:
    spec: Any = {"selector": {"matchLabels": {"app.kubernetes.io/name": name}}}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    expected = max(healthy, want)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "pkbs", "generation": 1},
        "spec": spec,
        "status": {
            "observedGeneration": 1,
            "currentHealthy": healthy,
            "desiredHealthy": want,
            "expectedPods": expected,
            "disruptionsAllowed": max(0, healthy - want),
            "conditions": [{"type": "DisruptionAllowed", "status": "True", "reason": "Sufficient"}],
        },
    }


def healthy_snapshot(now: datetime = NOW) -> k8s.Snapshot:
    return k8s.Snapshot(
        "pkbs",
        "pkbs-system",
        pods=[
            pod("worker-5f8b9c7d4-h2x9l", age=timedelta(minutes=5, seconds=30), now=now),
            pod("dispatcher-7c9d5b8f6d-9mz7q", node="kind-worker2", now=now),
            pod("dispatcher-7c9d5b8f6d-4xk2p", now=now),
            pod("nats-0", containers=[running(restarts=1)], age=timedelta(days=3), now=now),
            pod(
                "webdav-6d5f7b9c8-qq8vw", "pkbs-system", age=timedelta(hours=3, minutes=5), now=now
            ),
        ],
        deployments=[
            deployment("dispatcher", replicas=2),
            deployment("worker"),
            deployment("webdav", "pkbs-system"),
        ],
        statefulsets=[nats()],
        hpas=[cpu_hpa(replicas=1)],
        scaledobjects=None,
        pdbs=[
            pdb("dispatcher", min_available=1, healthy=2, want=1),
            pdb("nats", max_unavailable=1, healthy=1, want=0),
            pdb("worker", max_unavailable=1, healthy=1, want=0),
        ],
    )


HEALTHY_TEXT = """\
NAMESPACE     POD                           READY   STATUS    RESTARTS   AGE     NODE
pkbs          dispatcher-7c9d5b8f6d-4xk2p   1/1     Running   0          2d      kind-worker
pkbs          dispatcher-7c9d5b8f6d-9mz7q   1/1     Running   0          2d      kind-worker2
pkbs          nats-0                        1/1     Running   1          3d      kind-worker
pkbs          worker-5f8b9c7d4-h2x9l        1/1     Running   0          5m30s   kind-worker
pkbs-system   webdav-6d5f7b9c8-qq8vw        1/1     Running   0          3h5m    kind-worker

NAMESPACE     WORKLOAD                DESIRED   READY   UP-TO-DATE   AVAILABLE   ROLLOUT
pkbs          deployment/dispatcher   2         2       2            2           complete
pkbs          statefulset/nats        1         1       1            1           complete
pkbs          deployment/worker       1         1       1            1           complete
pkbs-system   deployment/webdav       1         1       1            1           complete

NAMESPACE   AUTOSCALER       MIN   MAX   REPLICAS   METRICS        STATE
pkbs        hpa/worker-hpa   1     10    1          cpu: 35%/70%   ok

NAMESPACE   PDB          MIN-AVAILABLE   MAX-UNAVAILABLE   HEALTHY   ALLOWED
pkbs        dispatcher   1               N/A               2/2       1
pkbs        nats         N/A             1                 1/1       1
pkbs        worker       N/A             1                 1/1       1

ready: 5 pods, 4 workloads, 1 autoscaler, 3 PDBs
"""


# --------------------------------------------------------------------------- pure parts


def test_healthy_deployment_renders_exactly() -> None:
    report = k8s.summarise(healthy_snapshot())
    assert report.ready and report.problems == []
    assert k8s.render(report, NOW) == HEALTHY_TEXT


BROKEN_TEXT = """\
NAMESPACE   POD                           READY   STATUS              RESTARTS   AGE   NODE
pkbs        dispatcher-7c9d5b8f6d-4xk2p   0/1     Running             0          2d    kind-worker
pkbs        nats-0                        0/1     Pending             0          12m   <none>
pkbs        worker-5f8b9c7d4-h2x9l        0/1     CrashLoopBackOff    7          20m   kind-worker
pkbs        worker-5f8b9c7d4-old01        1/1     Terminating         0          9h    kind-worker
pkbs        worker-6a7b8c9d0-zz1xk        0/1     ContainerCreating   0          40s   kind-worker

NAMESPACE   WORKLOAD                DESIRED   READY   UP-TO-DATE   AVAILABLE   ROLLOUT
pkbs        deployment/dispatcher   2         1       2            1           stalled: progress deadline exceeded
pkbs        statefulset/nats        1         0       1            0           progressing: 0 of 1 ready
pkbs        deployment/worker       2         1       1            1           progressing: 1 of 2 updated

NAMESPACE   AUTOSCALER       MIN   MAX   REPLICAS   METRICS              STATE
pkbs        hpa/worker-hpa   1     10    2          cpu: <unknown>/70%   no metrics: FailedGetResourceMetric

NAMESPACE   PDB          MIN-AVAILABLE   MAX-UNAVAILABLE   HEALTHY   ALLOWED
pkbs        dispatcher   1               N/A               1/1       0
pkbs        nats         N/A             1                 0/1       0

NOT READY (9):
  pod pkbs/dispatcher-7c9d5b8f6d-4xk2p: Running, 0/1 ready
  pod pkbs/nats-0: Pending, 0/1 ready (Unschedulable: 0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims.)
  pod pkbs/worker-5f8b9c7d4-h2x9l: CrashLoopBackOff, 0/1 ready, 7 restarts (last exit: Error, code 1)
  pod pkbs/worker-6a7b8c9d0-zz1xk: ContainerCreating, 0/1 ready
  deployment pkbs/dispatcher: rollout stalled: progress deadline exceeded, 1/2 ready
  statefulset pkbs/nats: rollout progressing: 0 of 1 ready, 0/1 ready
  deployment pkbs/worker: rollout progressing: 1 of 2 updated, 1/2 ready
  hpa pkbs/worker-hpa: no metrics: FailedGetResourceMetric (the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: no metrics returned from resource metrics API)
  pdb pkbs/nats: 0 healthy pods, needs 1
"""  # noqa: E501


def test_broken_deployment_lists_every_problem() -> None:
    crash = running(ready=False, restarts=7)
    crash["state"] = {
        "waiting": {
            "reason": "CrashLoopBackOff",
            "message": "back-off 5m0s restarting failed container=main pod=worker-...",
        }
    }
    crash["lastState"] = {
        "terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ts(timedelta(minutes=1))}
    }
    creating = running(ready=False)
    creating["state"] = {"waiting": {"reason": "ContainerCreating"}}
    gone = pod("worker-5f8b9c7d4-old01", age=timedelta(hours=9))
    gone["metadata"]["deletionTimestamp"] = ts(timedelta(seconds=-300))
    snap = k8s.Snapshot(
        "pkbs",
        "pkbs-system",
        pods=[
            pod("worker-5f8b9c7d4-h2x9l", containers=[crash], age=timedelta(minutes=20)),
            pod(
                "worker-6a7b8c9d0-zz1xk",
                phase="Pending",
                containers=[creating],
                age=timedelta(seconds=40),
            ),
            gone,
            pod("dispatcher-7c9d5b8f6d-4xk2p", containers=[running(ready=False)]),
            pod(
                "nats-0",
                phase="Pending",
                containers=[],
                node=None,
                age=timedelta(minutes=12),
                status__conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: pod has unbound immediate "
                        "PersistentVolumeClaims.",
                    }
                ],
            ),
        ],
        deployments=[
            deployment(
                "dispatcher",
                replicas=2,
                ready=1,
                available=1,
                progressing=("False", "ProgressDeadlineExceeded"),
            ),
            deployment("worker", replicas=2, updated=1, ready=1, total=3),
        ],
        statefulsets=[nats(ready=0, update="b2")],
        hpas=[cpu_hpa(current=None, replicas=2)],
        scaledobjects=None,
        pdbs=[
            pdb("dispatcher", min_available=1, healthy=1, want=1),
            pdb("nats", max_unavailable=1, healthy=0, want=1),
        ],
    )
    report = k8s.summarise(snap)
    assert not report.ready
    assert k8s.render(report, NOW) == BROKEN_TEXT


KEDA_IDLE_TEXT = """\
NAMESPACE   WORKLOAD                DESIRED   READY   UP-TO-DATE   AVAILABLE   ROLLOUT
pkbs        deployment/dispatcher   1         1       1            1           complete
pkbs        statefulset/nats        1         1       1            1           complete
pkbs        deployment/worker       0         0       0            0           complete

NAMESPACE   AUTOSCALER                   MIN   MAX   REPLICAS   METRICS                                          STATE
pkbs        hpa/worker-hpa               1     20    0          s0-nats-jetstream-PKBS_WORK: <unknown>/2 (avg)   scaling disabled
pkbs        scaledobject/worker-scaler   0     20    -          nats-jetstream                                   ready, idle

NAMESPACE   PDB      MIN-AVAILABLE   MAX-UNAVAILABLE   HEALTHY   ALLOWED
pkbs        worker   N/A             1                 0/0       0

ready: 2 pods, 3 workloads, 2 autoscalers, 1 PDB
"""  # noqa: E501


def test_keda_scaled_to_zero_is_ready() -> None:
    snap = k8s.Snapshot(
        "pkbs",
        "pkbs-system",
        pods=[pod("dispatcher-7c9d5b8f6d-4xk2p"), pod("nats-0")],
        deployments=[deployment("dispatcher"), deployment("worker", replicas=0)],
        statefulsets=[nats()],
        hpas=[keda_hpa(replicas=0)],
        scaledobjects=[scaledobject(active="False")],
        pdbs=[pdb("worker", max_unavailable=1, healthy=0, want=0)],
    )
    report = k8s.summarise(snap)
    assert report.problems == []
    assert k8s.render(report, NOW).split("\n\n", 1)[1] == KEDA_IDLE_TEXT


def test_keda_busy_and_broken() -> None:
    busy = k8s.hpa_row(keda_hpa(replicas=20, lag="3500m"))
    assert (busy.replicas, busy.metrics, busy.state, busy.problem) == (
        "20",
        "s0-nats-jetstream-PKBS_WORK: 3500m/2 (avg)",
        "at max",
        None,
    )
    active = k8s.scaledobject_row(scaledobject(active="True"))
    assert (active.state, active.problem) == ("ready, active", None)
    broken = k8s.scaledobject_row(
        scaledobject(
            ready=(
                "False",
                "ScaledObjectCheckFailed",
                "ScaledObject doesn't have correct triggers specification",
            ),
            fallback="True",
        )
    )
    assert broken.state == "not ready: ScaledObjectCheckFailed, fallback"
    assert broken.problem == (
        "not ready: ScaledObjectCheckFailed (ScaledObject doesn't have correct triggers "
        "specification)"
    )
    fresh = scaledobject()
    del fresh["status"]
    assert k8s.scaledobject_row(fresh).problem == "not ready: no status yet"


@pytest.mark.parametrize(
    ("state", "last", "phase", "expected_status", "expected_problem"),
    [
        (
            {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x:1"'}},
            None,
            "Pending",
            "ImagePullBackOff",
            'ImagePullBackOff, 0/1 ready (Back-off pulling image "x:1")',
        ),
        (
            {"waiting": {"reason": "CrashLoopBackOff"}},
            {"exitCode": 137, "reason": "OOMKilled"},
            "Running",
            "CrashLoopBackOff",
            "CrashLoopBackOff, 0/1 ready, 3 restarts (last exit: OOMKilled, code 137)",
        ),
        (
            {"terminated": {"exitCode": 0, "reason": "Completed"}},
            None,
            "Succeeded",
            "Completed",
            None,
        ),
        (
            {"terminated": {"exitCode": 2, "signal": 0}},
            None,
            "Failed",
            "ExitCode:2",
            "ExitCode:2, 0/1 ready, 3 restarts",
        ),
    ],
)
def test_pod_states(
    state: Any, last: Any, phase: str, expected_status: str, expected_problem: str | None
) -> None:
    c = running(ready=False, restarts=0 if "waiting" in state and last is None else 3)
    c["state"] = state
    if last:
        c["lastState"] = {"terminated": last}
    row = k8s.pod_row(pod("worker-5f8b9c7d4-h2x9l", phase=phase, containers=[c]))
    assert (row.status, row.problem) == (expected_status, expected_problem)


def test_pod_init_and_eviction() -> None:
    waiting = running(ready=False)
    waiting["state"] = {"waiting": {"reason": "PodInitializing"}}
    init = pod("nats-0", phase="Pending", containers=[waiting])
    init["spec"]["initContainers"] = [{"name": "config", "image": "busybox:1.37"}]
    init["status"]["initContainerStatuses"] = [
        {"name": "config", "ready": False, "restartCount": 0, "state": {"running": {}}}
    ]
    assert k8s.pod_row(init).status == "Init:0/1"
    init["status"]["initContainerStatuses"][0]["state"] = {
        "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}
    }
    assert k8s.pod_row(init).problem == "Init:CrashLoopBackOff, 0/1 ready (back-off 10s)"

    evicted = pod(
        "worker-5f8b9c7d4-h2x9l",
        phase="Failed",
        containers=[],
        status__reason="Evicted",
        status__message="The node was low on resource: ephemeral-storage.",
    )
    row = k8s.pod_row(evicted)
    assert row.status == "Evicted"
    assert row.problem == ("Evicted, 0/1 ready (The node was low on resource: ephemeral-storage.)")


def test_missing_workloads_and_empty_namespace() -> None:
    report = k8s.summarise(k8s.Snapshot("pkbs", "pkbs-system"))
    assert report.problems == [
        "deployment pkbs/dispatcher: missing (is pkbs deployed here?)",
        "deployment pkbs/worker: missing (is pkbs deployed here?)",
        "statefulset pkbs/nats: missing (is pkbs deployed here?)",
    ]
    assert k8s.render(report, NOW).startswith("NOT READY (3):\n")


def test_rollouts() -> None:
    old_pending = k8s.deployment_row(deployment("worker", replicas=2, total=3))
    assert old_pending.rollout == "progressing: 1 old pending termination"
    not_available = k8s.deployment_row(deployment("worker", replicas=2, ready=2, available=1))
    assert not_available.rollout == "progressing: 1 of 2 available"
    unobserved = k8s.deployment_row(deployment("worker", generation=4, observed=3))
    assert unobserved.rollout == "waiting for the controller"
    rolling = k8s.statefulset_row(nats(replicas=3, ready=3, current="a1", update="b2"))
    assert (rolling.rollout, rolling.updated) == ("progressing: 1 of 3 updated", 1)
    done = k8s.statefulset_row(nats(replicas=3, ready=3, current="b2", update="b2"))
    assert (done.rollout, done.problem) == ("complete", None)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"),
        (330, "5m30s"), (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"),
        (3 * 3600 + 300, "3h5m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (2 * 86400, "2d"),
        (2 * 86400 + 3 * 3600, "2d3h"), (8 * 86400, "8d"), (400 * 86400, "400d"),
        (730 * 86400, "2y"), (740 * 86400, "2y10d"), (9 * 365 * 86400, "9y"),
    ],
)  # fmt: skip
def test_human_age_matches_kubectl(seconds: int, text: str) -> None:
    assert k8s.human_age(seconds) == text


# --------------------------------------------------------------------------- the command


def pkbs_cmd() -> str:
    exe = BIN / "pkbs"
    if not exe.exists():
        pytest.skip(f"{exe} missing: run `make install`")
    return str(exe)


def run_status(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("kubernetes", reason="kubernetes client missing: pip install -e '.[dev]'")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(KUBECONFIG=str(kubeconfig), HOME=str(kubeconfig.parent))
    return subprocess.run(
        [pkbs_cmd(), "cluster", "status", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_no_cluster_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "kubeconfig"
    empty.write_text("")
    proc = run_status(empty)
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("pkbs cluster status: no Kubernetes cluster to ask: kubeconfig:")

    proc = run_status(tmp_path / "absent")
    assert (proc.returncode, proc.stderr) == (
        2,
        "pkbs cluster status: no Kubernetes cluster to ask: "
        f"no kubeconfig at {tmp_path / 'absent'}\n",
    )


def kubeconfig(path: Path, port: int, *, current: str = "fake") -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}},
                    {"name": "other", "cluster": {"server": "http://127.0.0.1:1"}},
                ],
                "users": [{"name": "me", "user": {"token": "fake-token-123"}}],
                "contexts": [
                    {"name": "fake", "context": {"cluster": "fake", "user": "me"}},
                    {"name": "other", "context": {"cluster": "other", "user": "me"}},
                ],
                "current-context": current,
            }
        )
    )
    return path


def test_api_unreachable_exits_2(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_status(kubeconfig(tmp_path / "config", port))
    assert proc.returncode == 2, proc
    assert proc.stderr.startswith(
        f"pkbs cluster status: no Kubernetes cluster to ask: cannot reach the Kubernetes API at "
        f"http://127.0.0.1:{port}: "
    ), proc.stderr
    assert proc.stderr.count("\n") == 1


class FakeApi(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, snap: k8s.Snapshot, forbid: set[str] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), FakeApiHandler)
        self.snap = snap
        self.forbid = forbid or set()
        self.seen: list[tuple[str, str]] = []


class FakeApiHandler(BaseHTTPRequestHandler):
    server: FakeApi

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.server.seen.append((path, self.headers.get("Authorization", "")))
        parts = path.strip("/").split("/")
        # /api/v1/namespaces/NS/pods, /apis/GROUP/VERSION/namespaces/NS/RESOURCE
        ns, resource = parts[-2], parts[-1]
        snap = self.server.snap
        lists = {
            "pods": snap.pods,
            "deployments": snap.deployments,
            "statefulsets": snap.statefulsets,
            "horizontalpodautoscalers": snap.hpas,
            "poddisruptionbudgets": snap.pdbs,
            "scaledobjects": snap.scaledobjects,
        }
        if resource in self.server.forbid:
            self.reply(403, status(f'{resource} is forbidden: User "me" cannot list resource'))
        elif lists.get(resource) is None:
            self.reply(404, status("the server could not find the requested resource"))
        else:
            items = [o for o in lists[resource] or [] if o["metadata"]["namespace"] == ns]
            self.reply(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})

    def reply(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def status(message: str) -> Any:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message}


@pytest.fixture
def fake_api(request: pytest.FixtureRequest) -> Iterator[FakeApi]:
    snap, forbid = request.param
    server = FakeApi(snap, forbid)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# Ages in whole days or hours: the command's clock is the real one.
LIVE = datetime.now(UTC).replace(microsecond=0)


def _live_snapshot() -> k8s.Snapshot:
    snap = healthy_snapshot(LIVE)
    for p in snap.pods:
        p["metadata"]["creationTimestamp"] = ts(timedelta(days=2, hours=1), LIVE)
    return snap


@pytest.mark.parametrize("fake_api", [(_live_snapshot(), None)], indirect=True)
def test_status_against_fake_api(fake_api: FakeApi, tmp_path: Path) -> None:
    """The real command, the real client: the exact tables for a healthy deployment."""
    config = kubeconfig(tmp_path / "config", fake_api.server_address[1], current="other")
    proc = run_status(config, "--context", "fake")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    expected = k8s.render(k8s.summarise(fake_api.snap), datetime.now(UTC))
    assert proc.stdout == expected
    assert "2d1h" in proc.stdout
    assert proc.stdout.endswith("ready: 5 pods, 4 workloads, 1 autoscaler, 3 PDBs\n")
    assert {auth for _, auth in fake_api.seen} == {"Bearer fake-token-123"}
    assert sorted({path for path, _ in fake_api.seen}) == sorted(
        f"{prefix}/namespaces/{ns}/{res}"
        for ns in ("pkbs", "pkbs-system")
        for prefix, res in (
            ("/api/v1", "pods"),
            ("/apis/apps/v1", "deployments"),
            ("/apis/apps/v1", "statefulsets"),
            ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
            ("/apis/policy/v1", "poddisruptionbudgets"),
            ("/apis/keda.sh/v1alpha1", "scaledobjects"),
        )
    )


def _broken_live() -> k8s.Snapshot:
    snap = _live_snapshot()
    crash = running(ready=False, restarts=4)
    crash["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    snap.pods[0]["status"]["containerStatuses"] = [crash]
    return snap


@pytest.mark.parametrize("fake_api", [(_broken_live(), None)], indirect=True)
def test_status_not_ready_exits_1(fake_api: FakeApi, tmp_path: Path) -> None:
    proc = run_status(kubeconfig(tmp_path / "config", fake_api.server_address[1]))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.endswith(
        "NOT READY (1):\n  pod pkbs/worker-5f8b9c7d4-h2x9l: CrashLoopBackOff, 0/1 ready, "
        "4 restarts\n"
    )


@pytest.mark.parametrize("fake_api", [(_live_snapshot(), {"pods"})], indirect=True)
def test_status_forbidden_exits_2(fake_api: FakeApi, tmp_path: Path) -> None:
    port = fake_api.server_address[1]
    proc = run_status(kubeconfig(tmp_path / "config", port))
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        f"pkbs cluster status: no Kubernetes cluster to ask: the Kubernetes API at "
        f'http://127.0.0.1:{port} refused: 403 Forbidden: pods is forbidden: User "me" cannot '
        f"list resource\n"
    )


def test_cli_does_not_import_kubernetes(tmp_path: Path) -> None:
    probe = (
        "import sys, pkbs.cli.admin\n"
        "assert 'cluster' in pkbs.cli.admin.main.commands\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'pkbs')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, check=True, capture_output=True, text=True
    ).stdout
    assert "kubernetes" not in out and "pkbs.cluster'" not in out, out
