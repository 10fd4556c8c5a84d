"""The harness fails where a cluster would: a manifest that names a missing Secret
key or a Service port no pod declares is refused before anything starts, and a pod
whose readiness probe asks the wrong path never becomes ready."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.containers.kubelet import Cluster, ManifestError
from tests.containers.system import System

Doc = dict[str, Any]


def workload(docs: list[Doc], name: str) -> Doc:
    return next(d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
                and d["metadata"]["name"] == name)


def cluster_of(docs: list[Doc], system: System, tmp_path: Path) -> Cluster:
    return Cluster(docs, f"{system.cluster.prefix}-x", tmp_path,
                   system.cluster.substitutes, system.cluster.client)


def test_a_missing_secret_key_is_refused(system: System, tmp_path: Path) -> None:
    docs = copy.deepcopy(system.docs)
    env = workload(docs, "dispatcher")["spec"]["template"]["spec"]["containers"][0]["env"]
    ref = next(e for e in env if e["name"] == "PKBS_ADMIN_TOKEN")
    ref["valueFrom"]["secretKeyRef"]["key"] = "tokn"
    cluster = cluster_of(docs, system, tmp_path)
    try:
        with pytest.raises(ManifestError, match="has no key 'tokn'"):
            cluster.apply(("dispatcher",))
    finally:
        cluster.close()


def test_a_service_port_no_pod_declares_is_refused(system: System, tmp_path: Path) -> None:
    docs = copy.deepcopy(system.docs)
    service = next(d for d in docs if d["kind"] == "Service"
                   and d["metadata"]["name"] == "dispatcher")
    service["spec"]["ports"][0]["targetPort"] = "https"
    cluster = cluster_of(docs, system, tmp_path)
    try:
        with pytest.raises(ManifestError, match="targetPort 'https'"):
            cluster.apply()
    finally:
        cluster.close()


def test_a_wrong_probe_path_never_gets_ready(system: System, tmp_path: Path) -> None:
    docs = copy.deepcopy(system.docs)
    container = workload(docs, "nats")["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["path"] = "/healthz/ready"
    container["readinessProbe"].update(periodSeconds=1, failureThreshold=1)
    cluster = cluster_of(docs, system, tmp_path)
    try:
        cluster.scale("nats", 1)
        cluster.start_probes()
        with pytest.raises(TimeoutError, match="0 of 1 pods ready"):
            cluster.wait_ready("nats", timeout=8)
        (pod,) = cluster.pods("nats")
        assert pod.started and any("readiness failed" in line for line in pod.probe_log)
    finally:
        cluster.close()
