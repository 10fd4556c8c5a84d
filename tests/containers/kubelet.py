"""Run rendered Kubernetes manifests as Docker containers, as a kubelet would.

`Cluster(docs, ...)` takes the documents `kubectl kustomize` printed for an overlay
and runs every Deployment's and StatefulSet's pods as containers on one Docker
network made for it (`--internal`: nothing inside reaches out):

- image, command (ENTRYPOINT) and args (CMD) with `$(VAR)` expansion;
- env and envFrom resolved from the rendered ConfigMaps and Secrets (value, secretKeyRef,
  configMapKeyRef, fieldRef, resourceFieldRef); a missing key is an error, as the
  kubelet's CreateContainerConfigError;
- volumes: emptyDir as a directory of the pod's (mode 0777, kept across container
  restarts; medium Memory as a tmpfs), hostPath, ConfigMap and Secret volumes as
  read-only files, a PersistentVolumeClaim (or a StatefulSet's claim template) as a
  named Docker volume that outlives the pod, group-owned by fsGroup;
- pod and container securityContext: runAsUser/Group, fsGroup as a supplementary
  group, runAsNonRoot checked against the image's user, readOnlyRootFilesystem
  (--read-only), capabilities dropped/added, no-new-privileges; cpu/memory limits;
- each pod its own container, hostname and address; every Service that selects it
  names it on the network (`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`,
  and `pod.svc...` for a headless service); a Service port whose targetPort is not a
  port of the pods it selects is an error;
- startup, liveness and readiness probes (httpGet, tcpSocket) polled from the host
  with the manifests' periods and thresholds; a container that exits or fails its
  liveness probe is restarted (restartPolicy Always), and counted;
- scale (new pods, or SIGTERM and the pod's terminationGracePeriodSeconds, then
  SIGKILL), kill, partition (cut off the network) and heal.

What it cannot show is listed in docs/deploy.md ("What the container harness proves").
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import itertools
import math
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from tests.tcpproxy import TcpProxy

Doc = dict[str, Any]
CLUSTER_DOMAIN = "cluster.local"
# Where an image the manifests name cannot be had here, what stands in for it.
Substitutes = dict[str, str]


class ManifestError(AssertionError):
    """The manifests ask for something a kubelet would refuse (or cannot serve)."""


def parse_quantity(text: str | int | float) -> float:
    """A Kubernetes quantity (`500m`, `2`, `1Gi`, `256Mi`, `1G`) as a number."""
    value = str(text)
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    found = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", value)
    if not found or (found[2] and found[2] not in suffixes):
        raise ManifestError(f"not a quantity: {text!r}")
    return float(found[1]) * (suffixes[found[2]] if found[2] else 1)


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion (`$$` escapes); unknown names stay as they are."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


@dataclass
class Probe:
    kind: str  # startup | liveness | readiness
    spec: Doc

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold", 3))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))


@dataclass
class Pod:
    """One pod: one container (the manifests have one per pod)."""

    workload: Workload
    name: str
    container: Container
    ip: str = ""
    ready: bool = False
    started: bool = False  # the startup probe passed (or there is none)
    restarts: int = 0
    partitioned: bool = False
    terminating: bool = False
    restart_after: float = 0.0  # crash-loop back-off: not restarted before (monotonic)
    failures: dict[str, int] = field(default_factory=dict)
    next_probe: dict[str, float] = field(default_factory=dict)
    probe_log: list[str] = field(default_factory=list)

    def logs(self, tail: int = 200) -> str:
        try:
            raw: bytes = self.container.logs(tail=tail)
        except docker.errors.NotFound:
            return "(container gone)"
        return raw.decode(errors="replace")


@dataclass
class Workload:
    kind: str
    name: str
    namespace: str
    doc: Doc
    pods: list[Pod] = field(default_factory=list)
    serial: Iterator[int] = field(default_factory=itertools.count)

    @property
    def template(self) -> Doc:
        return dict(self.doc["spec"]["template"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.template["metadata"].get("labels", {}))


def selects(service: Doc, workload: Workload) -> bool:
    """Whether a Service's selector picks this workload's pods."""
    selector = service["spec"].get("selector") or {}
    return bool(selector) and all(workload.labels.get(k) == v for k, v in selector.items())


class Cluster:
    """The pods of one rendered overlay, on a Docker network of their own."""

    def __init__(self, docs: list[Doc], prefix: str, workdir: Path,
                 substitutes: Substitutes | None = None,
                 client: docker.DockerClient | None = None) -> None:
        self.docs = docs
        self.prefix = prefix
        self.workdir = workdir
        self.substitutes = substitutes or {}
        self.client = client or docker.from_env()
        self.workloads: dict[str, Workload] = {}
        self.volumes: set[str] = set()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None
        self.events: list[str] = []
        self.network = self.client.networks.create(
            f"{prefix}-net", driver="bridge", internal=True, labels={"pkbs-test": prefix})
        for doc in docs:
            if doc["kind"] in ("Deployment", "StatefulSet"):
                meta = doc["metadata"]
                self.workloads[meta["name"]] = Workload(
                    doc["kind"], meta["name"], meta.get("namespace", "default"), doc)

    # ------------------------------------------------------------ rendered objects

    def _find(self, kind: str, namespace: str, name: str) -> Doc:
        """By name; a generated ConfigMap or Secret also by the name it was given
        before kustomize added its content hash."""
        generated = re.compile(re.escape(name) + r"(-[a-z0-9]{10})?")
        for doc in self.docs:
            meta = doc["metadata"]
            if doc["kind"] == kind and generated.fullmatch(meta["name"]) and meta.get(
                    "namespace", "default") == namespace:
                return doc
        raise ManifestError(f"{kind} {namespace}/{name} is not in the rendered manifests")

    def _data(self, kind: str, namespace: str, name: str) -> dict[str, str]:
        doc = self._find(kind, namespace, name)
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}
            return {**data, **doc.get("stringData", {})}
        return dict(doc.get("data", {}))

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        return self._data("Secret", namespace, name)[key]

    def _services_for(self, workload: Workload) -> list[Doc]:
        found = []
        for doc in self.docs:
            if doc["kind"] != "Service" or doc["metadata"].get("namespace") != workload.namespace:
                continue
            if selects(doc, workload):
                found.append(doc)
        return found

    def check_services(self) -> None:
        """Every Service port must land on a port the selected pods declare, and the
        same number (a Docker alias cannot remap ports)."""
        for doc in self.docs:
            if doc["kind"] != "Service":
                continue
            namespace = doc["metadata"].get("namespace", "default")
            backends = [w for w in self.workloads.values()
                        if w.namespace == namespace and selects(doc, w)]
            if not backends:
                raise ManifestError(f"Service {namespace}/{doc['metadata']['name']} "
                                    f"selects no pods ({doc['spec'].get('selector')})")
            for port in doc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                for workload in backends:
                    declared = {(p.get("name"), p["containerPort"])
                                for c in workload.template["spec"]["containers"]
                                for p in c.get("ports", [])}
                    numbers = {n for name, n in declared if name == target or n == target}
                    if numbers != {port["port"]}:
                        raise ManifestError(
                            f"Service {namespace}/{doc['metadata']['name']} port "
                            f"{port['port']} -> targetPort {target!r}: pods of "
                            f"{workload.name} declare {sorted(declared, key=str)}")

    # ------------------------------------------------------------ pods

    def _aliases(self, workload: Workload, pod_name: str) -> list[str]:
        names: list[str] = []
        ns = workload.namespace
        for svc in self._services_for(workload):
            svc_name = svc["metadata"]["name"]
            fqdn = [svc_name, f"{svc_name}.{ns}", f"{svc_name}.{ns}.svc",
                    f"{svc_name}.{ns}.svc.{CLUSTER_DOMAIN}"]
            if svc["spec"].get("clusterIP") == "None":
                names += [f"{pod_name}.{name}" for name in fqdn]
            names += fqdn
        return names

    def _env(self, workload: Workload, pod_name: str, container: Doc) -> dict[str, str]:
        ns = workload.namespace
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self._data("ConfigMap", ns, source["configMapRef"]["name"])
            else:
                data = self._data("Secret", ns, source["secretRef"]["name"])
            env.update({prefix + k: v for k, v in data.items()})
        for var in container.get("env", []):
            name = var["name"]
            if "value" in var:
                env[name] = expand(str(var["value"]), env)
                continue
            ref = var["valueFrom"]
            if "secretKeyRef" in ref or "configMapKeyRef" in ref:
                kind = "Secret" if "secretKeyRef" in ref else "ConfigMap"
                key_ref = ref.get("secretKeyRef") or ref["configMapKeyRef"]
                data = self._data(kind, ns, key_ref["name"])
                if key_ref["key"] not in data:
                    raise ManifestError(f"{workload.name}: env {name}: {kind} "
                                        f"{key_ref['name']} has no key {key_ref['key']!r}")
                env[name] = data[key_ref["key"]]
            elif "fieldRef" in ref:
                path = ref["fieldRef"]["fieldPath"]
                fields = {"metadata.name": pod_name, "metadata.namespace": ns,
                          "spec.nodeName": "docker", "spec.serviceAccountName": "default"}
                if path not in fields:
                    raise ManifestError(f"{workload.name}: env {name}: fieldRef {path}")
                env[name] = fields[path]
            elif "resourceFieldRef" in ref:
                res = ref["resourceFieldRef"]
                section, _, resource = res["resource"].partition(".")
                value = container.get("resources", {}).get(section, {}).get(resource)
                if value is None:
                    raise ManifestError(f"{workload.name}: env {name}: no {res['resource']}")
                divisor = parse_quantity(res.get("divisor", "1"))
                env[name] = str(math.ceil(parse_quantity(value) / divisor))
            else:
                raise ManifestError(f"{workload.name}: env {name}: unsupported {ref}")
        return env

    def _image(self, image: str) -> str:
        try:
            self.client.images.get(image)
            return image
        except docker.errors.ImageNotFound:
            pass
        for pattern, substitute in self.substitutes.items():
            if re.fullmatch(pattern, image):
                return substitute
        raise ManifestError(f"image {image} is not here and nothing stands in for it "
                            "(make images)")

    def _image_user(self, image: str) -> str:
        config = self.client.images.get(image).attrs.get("Config") or {}
        return str(config.get("User") or "0")

    def volume_name(self, claim: str) -> str:
        return f"{self.prefix}-{claim}"

    def _ensure_volume(self, claim: str, fs_group: int | None, image: str) -> str:
        name = self.volume_name(claim)
        if name in self.volumes:
            return name
        self.client.volumes.create(name, labels={"pkbs-test": self.prefix})
        self.volumes.add(name)
        if fs_group is not None:  # the kubelet makes a volume group-owned by fsGroup
            self.client.containers.run(
                image, ["sh", "-c", f"chgrp {fs_group} /v && chmod 2775 /v"], user="0",
                entrypoint=[], volumes={name: {"bind": "/v", "mode": "rw"}}, remove=True,
                network_disabled=True)
        return name

    def _mounts(self, workload: Workload, pod_name: str, container: Doc,
                helper_image: str) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        """(Docker volumes/binds, tmpfs mounts) for the container's volumeMounts."""
        spec = workload.template["spec"]
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in workload.doc["spec"].get(
            "volumeClaimTemplates", [])}
        binds: dict[str, dict[str, str]] = {}
        tmpfs: dict[str, str] = {}
        for mount in container.get("volumeMounts", []):
            name, path = mount["name"], mount["mountPath"]
            mode = "ro" if mount.get("readOnly") else "rw"
            if name in claims:  # a StatefulSet's claim: <template>-<pod>
                volume = self._ensure_volume(f"{name}-{pod_name}", fs_group, helper_image)
                binds[volume] = {"bind": path, "mode": mode}
                continue
            if name not in volumes:
                raise ManifestError(f"{workload.name}: volumeMount {name} has no volume")
            source = volumes[name]
            if "emptyDir" in source:
                size = source["emptyDir"].get("sizeLimit")
                if source["emptyDir"].get("medium") == "Memory":
                    options = "mode=1777" + (f",size={int(parse_quantity(size))}" if size else "")
                    tmpfs[path] = options
                    continue
                # On the node's disk, kept while the pod lives (container restarts too).
                folder = self.workdir / "volumes" / pod_name / name
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(0o777)
                binds[str(folder)] = {"bind": path, "mode": mode}
            elif "persistentVolumeClaim" in source:
                claim = source["persistentVolumeClaim"]["claimName"]
                self._find("PersistentVolumeClaim", workload.namespace, claim)
                volume = self._ensure_volume(claim, fs_group, helper_image)
                binds[volume] = {"bind": path, "mode": mode}
            elif "hostPath" in source:
                host = Path(source["hostPath"]["path"])
                if source["hostPath"].get("type") == "Directory" and not host.is_dir():
                    raise ManifestError(f"{workload.name}: hostPath {host} is not a directory")
                binds[str(host)] = {"bind": path, "mode": mode}
            elif "configMap" in source or "secret" in source:
                kind = "ConfigMap" if "configMap" in source else "Secret"
                ref = source.get("configMap") or source["secret"]
                data = self._data(kind, workload.namespace,
                                  ref.get("name") or ref.get("secretName"))
                folder = self.workdir / "volumes" / pod_name / name
                folder.mkdir(parents=True, exist_ok=True)
                items = ref.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    target = folder / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(data[item["key"]])
                    target.chmod(int(ref.get("defaultMode", 0o644)))
                folder.chmod(0o755)
                binds[str(folder)] = {"bind": path, "mode": "ro"}
            else:
                raise ManifestError(f"{workload.name}: volume {name}: unsupported {source}")
        return binds, tmpfs

    def _create_pod(self, workload: Workload, pod_name: str) -> Pod:
        template = workload.template
        spec = template["spec"]
        containers = spec["containers"]
        if len(containers) != 1:
            raise ManifestError(f"{workload.name}: {len(containers)} containers per pod")
        container = containers[0]
        image = self._image(container["image"])
        pod_sc = spec.get("securityContext") or {}
        sc = {**pod_sc, **(container.get("securityContext") or {})}
        env = self._env(workload, pod_name, container)
        user = sc.get("runAsUser")
        group = sc.get("runAsGroup")
        effective = str(user) if user is not None else self._image_user(image).split(":")[0]
        if sc.get("runAsNonRoot") and effective in ("0", "root", ""):
            raise ManifestError(f"{workload.name}: runAsNonRoot, but the image runs as root")
        helper = self._image(self._helper_image())
        binds, tmpfs = self._mounts(workload, pod_name, container, helper)
        limits = (container.get("resources") or {}).get("limits") or {}
        caps = sc.get("capabilities") or {}
        options: dict[str, Any] = {
            "name": f"{self.prefix}-{pod_name}",
            "hostname": pod_name,
            "environment": env,
            "volumes": binds,
            "tmpfs": tmpfs,
            "read_only": bool(sc.get("readOnlyRootFilesystem")),
            "cap_drop": caps.get("drop") or None,
            "cap_add": caps.get("add") or None,
            "security_opt": (["no-new-privileges"]
                             if sc.get("allowPrivilegeEscalation") is False else None),
            "labels": {"pkbs-test": self.prefix, "pkbs-workload": workload.name},
            "detach": True,
            "network": self.network.name,
            "stop_signal": "SIGTERM",
        }
        if user is not None:
            options["user"] = f"{user}:{group}" if group is not None else str(user)
        if pod_sc.get("fsGroup") is not None:
            options["group_add"] = [str(pod_sc["fsGroup"])]
        if "cpu" in limits:
            options["nano_cpus"] = int(parse_quantity(limits["cpu"]) * 1e9)
        if "memory" in limits:
            options["mem_limit"] = int(parse_quantity(limits["memory"]))
        if "command" in container:
            options["entrypoint"] = [expand(a, env) for a in container["command"]]
        if "args" in container:
            options["command"] = [expand(a, env) for a in container["args"]]
        elif "command" in container:
            options["command"] = []
        created = self.client.containers.create(image, **options)
        # Aliases: connect again with the Service names (create takes no aliases).
        self.network.disconnect(created)
        self.network.connect(created, aliases=self._aliases(workload, pod_name))
        created.start()
        pod = Pod(workload, pod_name, created)
        self._refresh(pod)
        self.events.append(f"start {pod_name}")
        return pod

    def _helper_image(self) -> str:
        """An image with a shell, for volume preparation (the dispatcher's)."""
        for workload in self.workloads.values():
            image = workload.template["spec"]["containers"][0]["image"]
            if "dispatcher" in image:
                return str(image)
        raise ManifestError("no dispatcher image in the manifests")

    def _refresh(self, pod: Pod) -> None:
        pod.container.reload()
        networks = pod.container.attrs["NetworkSettings"]["Networks"]
        pod.ip = (networks.get(self.network.name) or {}).get("IPAddress", "") or pod.ip

    def _pod_name(self, workload: Workload) -> str:
        index = next(workload.serial)
        if workload.kind == "StatefulSet":
            return f"{workload.name}-{index}"
        return f"{workload.name}-{index}{secrets.token_hex(2)}"

    def _replicas(self, workload: Workload) -> int:
        replicas = workload.doc["spec"].get("replicas")
        if replicas is not None:
            return int(replicas)
        for doc in self.docs:  # no replicas: an autoscaler owns the count; start at its min
            target = doc.get("spec", {}).get("scaleTargetRef", {})
            if doc["kind"] == "HorizontalPodAutoscaler" and target.get("name") == workload.name:
                return int(doc["spec"].get("minReplicas", 1))
        return 1

    # ------------------------------------------------------------ lifecycle

    def apply(self, order: tuple[str, ...] = ()) -> None:
        """Start every workload at its replica count (`order` first), then the probes."""
        self.check_services()
        names = [*order, *(n for n in self.workloads if n not in order)]
        for name in names:
            self.scale(name, self._replicas(self.workloads[name]))
        self.start_probes()

    def start_probes(self) -> None:
        """The kubelet's loop: probes, restarts of exited containers."""
        if self._prober is None:
            self._prober = threading.Thread(target=self._probe_loop, daemon=True)
            self._prober.start()

    def scale(self, name: str, replicas: int) -> None:
        """As a ReplicaSet would: new pods, or the newest terminated gracefully."""
        workload = self.workloads[name]
        with self._lock:
            while len(workload.pods) < replicas:
                workload.pods.append(self._create_pod(workload, self._pod_name(workload)))
            doomed = workload.pods[replicas:]
            del workload.pods[replicas:]
        threads = [threading.Thread(target=self._terminate, args=(pod,)) for pod in doomed]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _terminate(self, pod: Pod) -> None:
        """SIGTERM, up to terminationGracePeriodSeconds, then SIGKILL; the pod is gone."""
        pod.terminating = True
        grace = int(pod.workload.template["spec"].get("terminationGracePeriodSeconds", 30))
        self.events.append(f"terminate {pod.name} (grace {grace} s)")
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            pod.container.stop(timeout=grace)
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            pod.container.remove(force=True)

    def pods(self, name: str) -> list[Pod]:
        with self._lock:
            return list(self.workloads[name].pods)

    def kill(self, pod: Pod) -> None:
        """SIGKILL the container; the kubelet restarts it (restartPolicy Always)."""
        self.events.append(f"kill {pod.name}")
        pod.container.kill("SIGKILL")

    def delete_pod(self, pod: Pod) -> Pod:
        """SIGKILL the pod and let its ReplicaSet make a new one (a node lost)."""
        workload = pod.workload
        with self._lock:
            workload.pods.remove(pod)
        pod.terminating = True
        with contextlib.suppress(docker.errors.NotFound):
            pod.container.remove(force=True)
        self.events.append(f"delete {pod.name}")
        with self._lock:
            fresh = self._create_pod(workload, self._pod_name(workload))
            workload.pods.append(fresh)
        return fresh

    def partition(self, pod: Pod) -> None:
        """Cut the pod off the network: it runs on, reaching nothing, reached by nothing."""
        self.events.append(f"partition {pod.name}")
        pod.partitioned = True
        self.network.disconnect(pod.container)

    def heal(self, pod: Pod) -> None:
        self.events.append(f"heal {pod.name}")
        self.network.connect(pod.container, aliases=self._aliases(pod.workload, pod.name))
        pod.partitioned = False
        self._refresh(pod)

    def restart(self, pod: Pod, timeout: int = 30) -> None:
        """The container stopped gracefully and started again, its volumes kept."""
        self._start_again(pod, f"restart {pod.name}", stop=timeout)

    def _start_again(self, pod: Pod, event: str, stop: int | None = None) -> None:
        """The same container started afresh (stopped first with `stop` seconds of
        grace, unless it has exited): not ready or started until its probes say so."""
        self.events.append(event)
        pod.ready = pod.started = False
        pod.failures.clear()
        if stop is None:
            pod.container.start()
        else:
            pod.container.restart(timeout=stop)
        self._refresh(pod)

    def wait_ready(self, name: str, count: int | None = None, timeout: float = 90) -> list[Pod]:
        deadline = time.monotonic() + timeout
        while True:
            pods = self.pods(name)
            want = len(pods) if count is None else count
            ready = [p for p in pods if p.ready]
            if len(ready) >= want and want > 0 or (want == 0 and not pods):
                return ready
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: {len(ready)} of {want} pods ready after "
                                   f"{timeout:.0f} s\n{self.describe(name)}")
            time.sleep(0.2)

    def describe(self, name: str | None = None) -> str:
        lines = []
        for workload in self.workloads.values():
            if name is not None and workload.name != name:
                continue
            for pod in workload.pods:
                with contextlib.suppress(docker.errors.NotFound):
                    pod.container.reload()
                lines.append(f"--- {pod.name} ({pod.container.status}, ready={pod.ready}, "
                             f"restarts={pod.restarts}) probes: {pod.probe_log[-5:]}")
                lines.append(pod.logs(60))
        return "\n".join(lines)

    def close(self) -> None:
        self._stop.set()
        if self._prober is not None:
            self._prober.join(timeout=10)
        for container in self.client.containers.list(
                all=True, filters={"label": f"pkbs-test={self.prefix}"}):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self.network.remove()
        for volume in self.client.volumes.list(filters={"label": f"pkbs-test={self.prefix}"}):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                volume.remove(force=True)

    # ------------------------------------------------------------ the kubelet's loop

    def _probe_loop(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                pods = [p for w in self.workloads.values() for p in w.pods]
            for pod in pods:
                if pod.terminating:
                    continue
                try:
                    self._tend(pod)
                except (docker.errors.NotFound, docker.errors.APIError):
                    continue

    def _tend(self, pod: Pod) -> None:
        pod.container.reload()
        if pod.container.status in ("exited", "dead") and not pod.terminating:
            if time.monotonic() < pod.restart_after:
                return
            # CrashLoopBackOff: 10 s, doubling up to 5 min, the first restart at once.
            pod.restart_after = time.monotonic() + min(10 * 2 ** pod.restarts, 300)
            pod.restarts += 1
            self._start_again(pod, f"restart {pod.name} (exited {pod.container.attrs['State']})")
            return
        if pod.container.status != "running":
            return
        container = pod.workload.template["spec"]["containers"][0]
        probes = {kind: Probe(kind, container[f"{kind}Probe"])
                  for kind in ("startup", "liveness", "readiness") if f"{kind}Probe" in container}
        if "startup" not in probes:
            pod.started = True
        now = time.monotonic()
        for kind, probe in probes.items():
            if (kind == "startup") == pod.started:
                continue  # startup probes until it passes, then the other two
            if now < pod.next_probe.get(kind, 0):
                continue
            pod.next_probe[kind] = now + probe.period
            ok = self._probe(pod, probe.spec, container, probe.timeout)
            if ok:
                pod.failures[kind] = 0
                if kind == "startup":
                    pod.started = True
                elif kind == "readiness":
                    pod.ready = True
                continue
            pod.failures[kind] = pod.failures.get(kind, 0) + 1
            pod.probe_log.append(f"{kind} failed ({pod.failures[kind]})")
            if pod.failures[kind] < probe.failure_threshold:
                continue
            if kind == "readiness":
                pod.ready = False
            else:  # liveness or startup: the kubelet kills and restarts the container
                pod.restarts += 1
                self._start_again(pod, f"{kind} probe failed: restart {pod.name}", stop=0)
                return
        if "readiness" not in probes and pod.started:
            pod.ready = True

    def _probe(self, pod: Pod, spec: Doc, container: Doc, timeout: float) -> bool:
        if pod.partitioned or not pod.ip:
            return False
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        if "httpGet" in spec:
            get = spec["httpGet"]
            port = get["port"] if isinstance(get["port"], int) else ports.get(get["port"])
            if port is None:
                raise ManifestError(f"{pod.name}: probe port {get['port']!r} is not declared")
            conn = http.client.HTTPConnection(pod.ip, int(port), timeout=timeout)
            try:
                conn.request("GET", get.get("path", "/"))
                status = conn.getresponse().status
            except OSError:
                return False
            finally:
                conn.close()
            return 200 <= status < 400
        if "tcpSocket" in spec:
            sock = spec["tcpSocket"]
            port = sock["port"] if isinstance(sock["port"], int) else ports.get(sock["port"])
            if port is None:
                raise ManifestError(f"{pod.name}: probe port {sock['port']!r} is not declared")
            try:
                socket.create_connection((pod.ip, int(port)), timeout=timeout).close()
            except OSError:
                return False
            return True
        if "exec" in spec:
            result = pod.container.exec_run(spec["exec"]["command"])
            return bool(result.exit_code == 0)
        raise ManifestError(f"{pod.name}: unsupported probe {spec}")


def service_proxy(cluster: Cluster, workload: str, port: int) -> TcpProxy:
    """A Service as the host sees it (a LoadBalancer's address): a loopback port that
    forwards each connection to a ready pod of the workload, in turn."""
    turn = itertools.count()

    def backend() -> tuple[str, int] | None:
        ready = [p.ip for p in cluster.pods(workload) if p.ready and not p.terminating and p.ip]
        return (ready[next(turn) % len(ready)], port) if ready else None

    return TcpProxy(backend, lifetime=900)
