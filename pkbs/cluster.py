"""pkbs on Kubernetes: what `pkbs cluster status` shows.

Two layers. `connect()` and `fetch()` are the only code that talks to the Kubernetes API
(the `kubernetes` client, imported here and only when they run: `pip install
'pkbs[k8s]'`); they hand back the objects exactly as the API sends them, plain dicts
(what `kubectl get -o json` prints). Everything else is pure and tested offline:
`summarise()` turns those dicts into typed rows and judges each one, `render()` prints
kubectl-like tables and the verdict.

What counts as ready: every pod Running with all containers ready (Completed pods and
pods on their way out do not count against it), every Deployment and StatefulSet rolled
out (as `kubectl rollout status` judges it), the dispatcher, worker and NATS workloads
present, every HPA able to scale on its metrics (an HPA switched off because KEDA
scaled the workers to zero is fine), every ScaledObject Ready and not in fallback (an
inactive one only means the queue is empty), every PDB with its healthy pods.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pkbs.errors import ClusterUnavailable

Obj = dict[str, Any]

# Workloads a pkbs deployment has in its main namespace (manifests/base); WebDAV and
# syslog in the system namespace depend on the overlay (nextcloud, logging).
EXPECTED_WORKLOADS = ("deployment/dispatcher", "deployment/worker", "statefulset/nats")
KEDA = ("keda.sh", "v1alpha1", "scaledobjects")
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
MESSAGE_WIDTH = 200


# --------------------------------------------------------------------------- API layer


@dataclass(frozen=True)
class Snapshot:
    """The API objects `pkbs cluster status` judges, as plain dicts."""

    namespace: str
    system_namespace: str
    pods: list[Obj] = field(default_factory=list)
    deployments: list[Obj] = field(default_factory=list)
    statefulsets: list[Obj] = field(default_factory=list)
    hpas: list[Obj] = field(default_factory=list)
    # None: the cluster has no ScaledObject CRD (KEDA is not installed).
    scaledobjects: list[Obj] | None = None
    pdbs: list[Obj] = field(default_factory=list)


def _kubeconfig_paths() -> list[str]:
    raw = os.environ.get("KUBECONFIG") or "~/.kube/config"
    return [os.path.expanduser(p) for p in raw.split(os.pathsep) if p]


def connect(context: str | None = None) -> Any:
    """An ApiClient from the kubeconfig (KUBECONFIG or ~/.kube/config), else, inside a
    pod, from the service account. ClusterUnavailable with the reason otherwise."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise ClusterUnavailable(
            "the kubernetes Python client is not installed: pip install 'pkbs[k8s]'"
        ) from None
    configuration = client.Configuration()
    paths = _kubeconfig_paths()
    try:
        if not any(os.path.isfile(p) for p in paths):
            raise ClusterUnavailable(f"no kubeconfig at {os.pathsep.join(paths)}")
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.pathsep.join(paths),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except Exception as exc:  # the loader raises many kinds; all mean "no config"
        where = exc.reason if isinstance(exc, ClusterUnavailable) else f"kubeconfig: {exc}"
        if context is not None or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise ClusterUnavailable(where) from None
        try:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except Exception as exc2:
            raise ClusterUnavailable(f"{where}; in-cluster config: {exc2}") from None
    configuration.retries = 1
    return client.ApiClient(configuration)


def _api_message(exc: Any) -> str:
    try:
        message = str(json.loads(exc.body)["message"])
    except (TypeError, ValueError, KeyError):
        message = str(exc.reason)
    return f"{exc.status} {exc.reason}: {message}"


def fetch(api_client: Any, namespace: str, system_namespace: str) -> Snapshot:
    """List what `summarise` needs from both namespaces (raw JSON, no model classes)."""
    import urllib3
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    host = api_client.configuration.host
    timeout = (CONNECT_TIMEOUT, READ_TIMEOUT)

    def items(call: Any, *args: str, optional: bool = False) -> list[Obj] | None:
        try:
            resp = call(*args, _preload_content=False, _request_timeout=timeout)
        except ApiException as exc:
            if optional and exc.status == 404:
                return None
            raise ClusterUnavailable(
                f"the Kubernetes API at {host} refused: {_api_message(exc)}"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ClusterUnavailable(
                f"cannot reach the Kubernetes API at {host}: {reason}"
            ) from None
        data = json.loads(resp.data)
        return list(data.get("items") or [])

    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    autoscaling = client.AutoscalingV2Api(api_client)
    policy = client.PolicyV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    found: dict[str, list[Obj]] = {}
    scaled: list[Obj] | None = None
    for ns in dict.fromkeys((namespace, system_namespace)):
        for key, call in (
            ("pods", core.list_namespaced_pod),
            ("deployments", apps.list_namespaced_deployment),
            ("statefulsets", apps.list_namespaced_stateful_set),
            ("hpas", autoscaling.list_namespaced_horizontal_pod_autoscaler),
            ("pdbs", policy.list_namespaced_pod_disruption_budget),
        ):
            found.setdefault(key, []).extend(items(call, ns) or [])
        so = items(
            custom.list_namespaced_custom_object, KEDA[0], KEDA[1], ns, KEDA[2], optional=True
        )
        if so is not None:
            scaled = [*(scaled or []), *so]
    return Snapshot(
        namespace,
        system_namespace,
        pods=found["pods"],
        deployments=found["deployments"],
        statefulsets=found["statefulsets"],
        hpas=found["hpas"],
        scaledobjects=scaled,
        pdbs=found["pdbs"],
    )


# --------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class PodRow:
    namespace: str
    name: str
    ready: int
    total: int
    status: str
    restarts: int
    created: datetime | None
    node: str
    problem: str | None = None


@dataclass(frozen=True)
class WorkloadRow:
    namespace: str
    kind: str  # deployment | statefulset
    name: str
    desired: int
    ready: int
    updated: int
    available: int
    rollout: str
    problem: str | None = None


@dataclass(frozen=True)
class AutoscalerRow:
    namespace: str
    kind: str  # hpa | scaledobject
    name: str
    min_replicas: int
    max_replicas: int
    replicas: str
    metrics: str
    state: str
    problem: str | None = None


@dataclass(frozen=True)
class PdbRow:
    namespace: str
    name: str
    min_available: str
    max_unavailable: str
    healthy: int
    desired_healthy: int
    expected: int
    allowed: int
    problem: str | None = None


@dataclass(frozen=True)
class Report:
    pods: list[PodRow]
    workloads: list[WorkloadRow]
    autoscalers: list[AutoscalerRow]
    pdbs: list[PdbRow]
    problems: list[str]

    @property
    def ready(self) -> bool:
        return not self.problems


def _meta(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _conditions(obj: Obj) -> dict[str, Obj]:
    status = obj.get("status") or {}
    return {str(c.get("type")): c for c in status.get("conditions") or [] if c.get("type")}


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MESSAGE_WIDTH else text[: MESSAGE_WIDTH - 1] + "…"


def _exit_reason(terminated: Obj) -> str:
    if terminated.get("reason"):
        return str(terminated["reason"])
    if terminated.get("signal"):
        return f"Signal:{terminated['signal']}"
    return f"ExitCode:{terminated.get('exitCode', '?')}"


def pod_row(pod: Obj) -> PodRow:
    """One pod as `kubectl get pods` shows it, and what is wrong with it, if anything."""
    namespace, name = _meta(pod)
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Unknown")
    reason = str(status.get("reason") or phase)
    detail = ""
    statuses = list(status.get("containerStatuses") or [])
    total = len(spec.get("containers") or []) or len(statuses)
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)

    init_specs = spec.get("initContainers") or []
    initializing = False
    for i, c in enumerate(status.get("initContainerStatuses") or []):
        state = c.get("state") or {}
        term, wait = state.get("terminated"), state.get("waiting")
        if term and term.get("exitCode") == 0:
            continue
        if c.get("started") and (init_specs[i : i + 1] or [{}])[0].get("restartPolicy") == "Always":
            continue  # a sidecar: runs alongside the main containers
        initializing = True
        if term:
            reason = "Init:" + _exit_reason(term)
        elif wait and wait.get("reason") and wait.get("reason") != "PodInitializing":
            reason = "Init:" + str(wait["reason"])
            detail = str(wait.get("message") or "")
        else:
            reason = f"Init:{i}/{len(init_specs) or i + 1}"
        break

    if not initializing:
        running = False
        for c in reversed(statuses):
            state = c.get("state") or {}
            term, wait = state.get("terminated"), state.get("waiting")
            if wait and wait.get("reason"):
                reason = str(wait["reason"])
                last = (c.get("lastState") or {}).get("terminated")
                if last:
                    code = last.get("exitCode")
                    detail = f"last exit: {_exit_reason(last)}" + (
                        f", code {code}" if code not in (None, 0) and last.get("reason") else ""
                    )
                elif wait.get("message"):
                    detail = str(wait["message"])
            elif term:
                reason = _exit_reason(term)
            elif state.get("running") and c.get("ready"):
                running = True
        if reason == "Completed" and running:
            reason = "Running"

    if phase == "Pending" and not statuses and not initializing:
        sched = _conditions(pod).get("PodScheduled") or {}
        if sched.get("status") == "False":  # STATUS stays Pending, as kubectl shows it
            detail = f"{sched.get('reason') or 'not scheduled'}: {sched.get('message') or ''}"

    terminating = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    if terminating:
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"

    problem = None
    if not terminating and phase != "Succeeded" and (phase != "Running" or ready < total):
        problem = f"{reason}, {ready}/{total} ready"
        if restarts:
            problem += f", {restarts} restart{'s' if restarts != 1 else ''}"
        if phase == "Failed" and status.get("message"):
            detail = detail or str(status["message"])
        if detail:
            problem += f" ({_short(detail)})"
    return PodRow(
        namespace,
        name,
        ready,
        total,
        reason,
        restarts,
        _time((pod.get("metadata") or {}).get("creationTimestamp")),
        str(spec.get("nodeName") or "<none>"),
        problem,
    )


def _observed(obj: Obj) -> bool:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    return int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)


def deployment_row(dep: Obj) -> WorkloadRow:
    """A Deployment and its rollout, judged as `kubectl rollout status` does."""
    namespace, name = _meta(dep)
    spec = dep.get("spec") or {}
    status = dep.get("status") or {}
    desired = 1 if spec.get("replicas") is None else int(spec["replicas"])
    replicas = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    progressing = _conditions(dep).get("Progressing") or {}
    if not _observed(dep):
        rollout = "waiting for the controller"
    elif progressing.get("reason") == "ProgressDeadlineExceeded":
        rollout = "stalled: progress deadline exceeded"
    elif updated < desired:
        rollout = f"progressing: {updated} of {desired} updated"
    elif replicas > updated:
        rollout = f"progressing: {replicas - updated} old pending termination"
    elif available < updated:
        rollout = f"progressing: {available} of {updated} available"
    else:
        rollout = "complete"
    problem = None if rollout == "complete" else f"rollout {rollout}, {ready}/{desired} ready"
    return WorkloadRow(
        namespace, "deployment", name, desired, ready, updated, available, rollout, problem
    )


def statefulset_row(sts: Obj) -> WorkloadRow:
    """A StatefulSet and its rollout, judged as `kubectl rollout status` does."""
    namespace, name = _meta(sts)
    spec = sts.get("spec") or {}
    status = sts.get("status") or {}
    desired = 1 if spec.get("replicas") is None else int(spec["replicas"])
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    partition = int(
        ((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition") or 0
    )
    if not status.get("observedGeneration") or not _observed(sts):
        rollout = "waiting for the controller"
    elif ready < desired:
        rollout = f"progressing: {ready} of {desired} ready"
    elif strategy != "RollingUpdate":
        rollout = "complete"
    elif partition:
        rollout = (
            "complete"
            if updated >= desired - partition
            else f"progressing: {updated} of {desired - partition} updated (partition {partition})"
        )
    elif status.get("updateRevision") != status.get("currentRevision"):
        rollout = f"progressing: {updated} of {desired} updated"
    else:
        rollout = "complete"
    problem = None if rollout == "complete" else f"rollout {rollout}, {ready}/{desired} ready"
    return WorkloadRow(
        namespace, "statefulset", name, desired, ready, updated, available, rollout, problem
    )


def _quantity(value: Obj | None, kind: str) -> str:
    if not value:
        return "<unknown>"
    if kind == "Utilization" and value.get("averageUtilization") is not None:
        return f"{value['averageUtilization']}%"
    if kind == "AverageValue" and value.get("averageValue") is not None:
        return str(value["averageValue"])
    if value.get("value") is not None:
        return str(value["value"])
    for key in ("averageUtilization", "averageValue"):
        if value.get(key) is not None:
            return f"{value[key]}%" if key == "averageUtilization" else str(value[key])
    return "<unknown>"


def _metric_key(metric: Obj) -> tuple[str, str, Obj]:
    """(type, metric name, the type's own block) of one HPA spec or status metric."""
    mtype = str(metric.get("type") or "")
    block = metric.get(mtype[:1].lower() + mtype[1:]) or {}
    name = block.get("name") or (block.get("metric") or {}).get("name") or mtype.lower()
    return mtype, str(name), block


def hpa_metrics(hpa: Obj) -> str:
    """`cpu: 35%/70%` per metric, as `kubectl get hpa` prints TARGETS."""
    spec = hpa.get("spec") or {}
    current = {
        _metric_key(m)[:2]: _metric_key(m)[2].get("current")
        for m in (hpa.get("status") or {}).get("currentMetrics") or []
    }
    parts = []
    for m in spec.get("metrics") or []:
        mtype, name, block = _metric_key(m)
        target = block.get("target") or {}
        kind = str(target.get("type") or "")
        now = _quantity(current.get((mtype, name)), kind)
        want = _quantity(target, kind)
        suffix = " (avg)" if kind == "AverageValue" and mtype != "Resource" else ""
        parts.append(f"{name}: {now}/{want}{suffix}")
    return ", ".join(parts) or "-"


def hpa_row(hpa: Obj) -> AutoscalerRow:
    namespace, name = _meta(hpa)
    spec = hpa.get("spec") or {}
    status = hpa.get("status") or {}
    cond = _conditions(hpa)
    current = int(status.get("currentReplicas") or 0)
    desired = int(status.get("desiredReplicas") or 0)
    replicas = str(current) if desired == current else f"{current}->{desired}"
    able, active, limited = (
        cond.get("AbleToScale"),
        cond.get("ScalingActive"),
        cond.get("ScalingLimited"),
    )
    problem = None
    if not cond:
        state = "no status yet"
        problem = "no status yet (the controller has not looked at it)"
    elif able and able.get("status") == "False":
        state = f"cannot scale: {able.get('reason')}"
        problem = f"{state} ({_short(str(able.get('message') or ''))})"
    elif active and active.get("status") != "True":
        if active.get("reason") == "ScalingDisabled":
            state = "scaling disabled"  # the target is at 0 replicas (KEDA: idle)
        else:
            state = f"no metrics: {active.get('reason')}"
            problem = f"{state} ({_short(str(active.get('message') or ''))})"
    elif limited and limited.get("status") == "True" and limited.get("reason") == "TooManyReplicas":
        state = "at max"
    else:
        state = "ok"
    return AutoscalerRow(
        namespace,
        "hpa",
        name,
        1 if spec.get("minReplicas") is None else int(spec["minReplicas"]),
        int(spec.get("maxReplicas") or 0),
        replicas,
        hpa_metrics(hpa),
        state,
        problem,
    )


def scaledobject_row(so: Obj) -> AutoscalerRow:
    namespace, name = _meta(so)
    spec = so.get("spec") or {}
    cond = _conditions(so)
    ready, active = cond.get("Ready") or {}, cond.get("Active") or {}
    fallback, paused = cond.get("Fallback") or {}, cond.get("Paused") or {}
    problem = None
    if ready.get("status") != "True":
        state = f"not ready: {ready.get('reason') or 'no status yet'}"
        problem = state + (f" ({_short(str(ready['message']))})" if ready.get("message") else "")
    else:
        state = "ready, " + ("active" if active.get("status") == "True" else "idle")
    if fallback.get("status") == "True":
        state += ", fallback"
        problem = problem or f"in fallback ({_short(str(fallback.get('message') or ''))})"
    if paused.get("status") == "True":
        state += ", paused"
    triggers = ", ".join(str(t.get("type")) for t in spec.get("triggers") or []) or "-"
    return AutoscalerRow(
        namespace,
        "scaledobject",
        name,
        int(spec.get("minReplicaCount") or 0),  # KEDA's defaults
        100 if spec.get("maxReplicaCount") is None else int(spec["maxReplicaCount"]),
        "-",
        triggers,
        state,
        problem,
    )


def pdb_row(pdb: Obj) -> PdbRow:
    namespace, name = _meta(pdb)
    spec = pdb.get("spec") or {}
    status = pdb.get("status") or {}
    healthy = int(status.get("currentHealthy") or 0)
    desired = int(status.get("desiredHealthy") or 0)
    problem = None
    if healthy < desired:
        problem = f"{healthy} healthy pod{'s' if healthy != 1 else ''}, needs {desired}"
    return PdbRow(
        namespace,
        name,
        str(spec.get("minAvailable", "N/A")),
        str(spec.get("maxUnavailable", "N/A")),
        healthy,
        desired,
        int(status.get("expectedPods") or 0),
        int(status.get("disruptionsAllowed") or 0),
        problem,
    )


def _order(row: Any, snap: Snapshot) -> tuple[int, str, str]:
    return (0 if row.namespace == snap.namespace else 1, row.namespace, row.name)


def summarise(snap: Snapshot) -> Report:
    """Typed rows for every object in the snapshot, and the list of what is not ready."""
    pods = sorted((pod_row(p) for p in snap.pods), key=lambda r: _order(r, snap))
    workloads = sorted(
        [
            *(deployment_row(d) for d in snap.deployments),
            *(statefulset_row(s) for s in snap.statefulsets),
        ],
        key=lambda r: (*_order(r, snap), r.kind),
    )
    autoscalers = sorted(
        [
            *(hpa_row(h) for h in snap.hpas),
            *(scaledobject_row(s) for s in snap.scaledobjects or []),
        ],
        key=lambda r: (*_order(r, snap), r.kind),
    )
    pdbs = sorted((pdb_row(p) for p in snap.pdbs), key=lambda r: _order(r, snap))
    problems: list[str] = []
    have = {f"{w.kind}/{w.name}" for w in workloads if w.namespace == snap.namespace}
    for ref in EXPECTED_WORKLOADS:
        if ref not in have:
            problems.append(
                f"{ref.replace('/', f' {snap.namespace}/')}: missing (is pkbs deployed here?)"
            )
    for p in pods:
        if p.problem:
            problems.append(f"pod {p.namespace}/{p.name}: {p.problem}")
    for w in workloads:
        if w.problem:
            problems.append(f"{w.kind} {w.namespace}/{w.name}: {w.problem}")
    for a in autoscalers:
        if a.problem:
            problems.append(f"{a.kind} {a.namespace}/{a.name}: {a.problem}")
    for b in pdbs:
        if b.problem:
            problems.append(f"pdb {b.namespace}/{b.name}: {b.problem}")
    return Report(pods, workloads, autoscalers, pdbs, problems)


# --------------------------------------------------------------------------- formatting


def human_age(seconds: float) -> str:
    """kubectl's AGE column (k8s.io/apimachinery duration.HumanDuration)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded with three spaces, as kubectl's printer does."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [headers, *rows]
    )


def render(report: Report, now: datetime) -> str:
    """The tables and the verdict `pkbs cluster status` prints."""
    sections = []
    if report.pods:
        sections.append(
            table(
                ["NAMESPACE", "POD", "READY", "STATUS", "RESTARTS", "AGE", "NODE"],
                [
                    [
                        p.namespace,
                        p.name,
                        f"{p.ready}/{p.total}",
                        p.status,
                        str(p.restarts),
                        human_age((now - p.created).total_seconds()) if p.created else "<unknown>",
                        p.node,
                    ]
                    for p in report.pods
                ],
            )
        )
    if report.workloads:
        sections.append(
            table(
                ["NAMESPACE", "WORKLOAD", "DESIRED", "READY", "UP-TO-DATE", "AVAILABLE", "ROLLOUT"],
                [
                    [
                        w.namespace,
                        f"{w.kind}/{w.name}",
                        str(w.desired),
                        str(w.ready),
                        str(w.updated),
                        str(w.available),
                        w.rollout,
                    ]
                    for w in report.workloads
                ],
            )
        )
    if report.autoscalers:
        sections.append(
            table(
                ["NAMESPACE", "AUTOSCALER", "MIN", "MAX", "REPLICAS", "METRICS", "STATE"],
                [
                    [
                        a.namespace,
                        f"{a.kind}/{a.name}",
                        str(a.min_replicas),
                        str(a.max_replicas),
                        a.replicas,
                        a.metrics,
                        a.state,
                    ]
                    for a in report.autoscalers
                ],
            )
        )
    if report.pdbs:
        sections.append(
            table(
                ["NAMESPACE", "PDB", "MIN-AVAILABLE", "MAX-UNAVAILABLE", "HEALTHY", "ALLOWED"],
                [
                    [
                        b.namespace,
                        b.name,
                        b.min_available,
                        b.max_unavailable,
                        f"{b.healthy}/{b.expected}",
                        str(b.allowed),
                    ]
                    for b in report.pdbs
                ],
            )
        )
    if report.ready:
        counts = (
            (report.pods, "pod"),
            (report.workloads, "workload"),
            (report.autoscalers, "autoscaler"),
            (report.pdbs, "PDB"),
        )
        verdict = "ready: " + ", ".join(
            f"{len(rows)} {noun}{'' if len(rows) == 1 else 's'}" for rows, noun in counts
        )
    else:
        verdict = "\n".join(
            [f"NOT READY ({len(report.problems)}):", *(f"  {p}" for p in report.problems)]
        )
    return "\n\n".join([*sections, verdict]) + "\n"
