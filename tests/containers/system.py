"""pkbs as a system of containers: the kind overlay rendered by kustomize, run by the
Docker kubelet (tests/containers/kubelet.py), driven from the host by the real CLI.

A test overlay on top of `manifests/overlays/kind` (written into the test's copy of
the tree) changes only what a test needs: a shorter ack wait and drain grace, so that
faults resolve in seconds, and a hostPath volume on the workers where jobs append the
run log the audit reads (tests.stackutil.logged_job).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import yaml

from tests.containers.kubelet import Cluster, Pod, service_proxy
from tests.stackutil import BIN, Stack, poll
from tests.tcpproxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
# Inside the worker containers: where jobs write the run log (a hostPath volume).
AUDIT_DIR = "/audit"
START_ORDER = ("nats", "webdav", "dispatcher", "worker")

TEST_OVERLAY = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../kind
configMapGenerator:
  - name: pkbs-config
    namespace: pkbs
    behavior: merge
    literals:
      - PKBS_ACK_WAIT_SECONDS={ack_wait}
      - PKBS_RECONCILE_SECONDS=5
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: worker
        namespace: pkbs
      spec:
        template:
          spec:
            terminationGracePeriodSeconds: {grace}
            containers:
              - name: worker
                env:
                  - name: PKBS_DRAIN_GRACE_SECONDS
                    value: "{drain}"
                volumeMounts:
                  - name: audit
                    mountPath: {audit}
            volumes:
              - name: audit
                hostPath:
                  path: {audit_host}
                  type: Directory
"""


def images() -> dict[str, str]:
    """The image references `make images` builds (scripts/images.py names)."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "images.py"), "names"],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.split())


def write_secrets(tree: Path) -> None:
    """Random secrets, as `make secrets` writes them."""
    script = ROOT / "scripts" / "k8s-secrets.py"
    subprocess.run([sys.executable, str(script), "--dir", str(tree / "base" / "secrets")],
                   check=True, capture_output=True, timeout=30)


def render(workdir: Path, ack_wait: float = 4, drain: float = 20) -> list[dict[str, Any]]:
    """The kind overlay plus the test overlay, rendered by kubectl's kustomize."""
    tree = workdir / "manifests"
    shutil.copytree(ROOT / "manifests", tree,
                    ignore=shutil.ignore_patterns(".generated", "*.env", "__pycache__"))
    write_secrets(tree)
    audit = workdir / "audit"
    audit.mkdir()
    audit.chmod(0o777)
    overlay = tree / "overlays" / "containers"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(TEST_OVERLAY.format(
        ack_wait=ack_wait, grace=int(drain) + 30, drain=drain, audit=AUDIT_DIR,
        audit_host=audit))
    out = subprocess.run([str(BIN / "kubectl"), "kustomize", str(overlay)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


class System(Stack):
    """A Stack (the CLI helpers of the local-stack tests) whose processes are
    containers: `up` runs the rendered manifests, `down` removes everything."""

    def __init__(self, workdir: Path, client: docker.DockerClient, **render_args: Any) -> None:
        home = workdir / "home"
        home.mkdir(parents=True)
        super().__init__(home, extra_env={"XDG_CONFIG_HOME": str(home / "config")})
        self.workdir = workdir
        self.docs = render(workdir, **render_args)
        self.audit_log = workdir / "audit" / "runs.log"
        refs = images()
        prefix = f"pkbs-t{os.getpid()}-{secrets.token_hex(3)}"
        nats_pattern = r"nats:[0-9.]+-alpine[0-9.]*"
        self.cluster = Cluster(self.docs, prefix, workdir, {nats_pattern: refs["nats"]}, client)
        self.proxy: TcpProxy | None = None

    # -- Stack's interface ----------------------------------------------------

    def up(self, workers: int = 2, slots: int = 2) -> None:
        del slots  # a worker's slots are its CPU limit (resourceFieldRef)
        self.cluster.apply(START_ORDER)
        self.cluster.scale("worker", workers)
        for name in ("nats", "webdav", "dispatcher", "worker"):
            self.cluster.wait_ready(name, timeout=120)
        self.proxy = service_proxy(self.cluster, "dispatcher", 8000)
        login = self.run(str(BIN / "pkbs"), "login", "--endpoint",
                         f"http://{self.proxy_address}", "--token", self.admin_token)
        assert login.returncode == 0, login.stderr + login.stdout

    def down(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        self.cluster.close()

    @property
    def admin_token(self) -> str:
        return self.cluster.secret_value("pkbs", "admin-token", "token")

    @property
    def proxy_address(self) -> str:
        """host:port where the dispatcher Service is reached from this host."""
        assert self.proxy is not None, "the system is not up"
        return self.proxy.address

    @property
    def webdav_root(self) -> Path:
        """The WebDAV server's data, on this host: its volume's directory."""
        volume = self.cluster.client.volumes.get(self.cluster.volume_name("webdav-data"))
        return Path(volume.attrs["Mountpoint"])

    # -- containers -----------------------------------------------------------

    def pods(self, name: str) -> list[Pod]:
        return self.cluster.pods(name)

    def pod_running(self, job_id: str) -> Pod:
        """The worker pod whose hostname qstat -f names in exec_host."""
        host = str(self.job(job_id).get("exec_host", "")).split("/", 1)[0]
        for pod in self.pods("worker"):
            if pod.name == host:
                return pod
        raise AssertionError(f"{job_id} runs on {host!r}, not a worker pod here")

    def in_pod(self, pod: Pod, *argv: str, user: str | None = None) -> tuple[int, str]:
        result = pod.container.exec_run(list(argv), user=user or "")
        return int(result.exit_code), result.output.decode(errors="replace")

    def webdav_tree(self) -> dict[str, int]:
        """Every file on the WebDAV volume: relative path -> size."""
        root = self.webdav_root
        return {str(p.relative_to(root)): p.stat().st_size
                for p in root.rglob("*") if p.is_file()}

    def wait_started(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        def running() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["job_state"] == "R" else None

        return dict(poll(running, timeout, 0.2, f"{job_id} to run"))

    def logged_starts(self, job_id: str) -> int:
        if not self.audit_log.exists():
            return 0
        pattern = re.compile(rf"^start {re.escape(job_id)} ", re.M)
        return len(pattern.findall(self.audit_log.read_text()))

    def qstat_all(self) -> dict[str, Any]:
        result = self.run(str(BIN / "qstat"), "-f", "-F", "json", "-x")
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout).get("Jobs", {}))
