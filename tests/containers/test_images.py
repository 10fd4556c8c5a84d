"""The images `make images` builds, run for real: what they hold and who they run as."""

from __future__ import annotations

import docker

from tests.containers.system import ROOT


def run(client: docker.DockerClient, image: str, *argv: str, **options: object) -> str:
    out: bytes = client.containers.run(image, list(argv), remove=True, network_disabled=True,
                                       **options)
    return out.decode()


def test_images_run_as_non_root_with_the_job_runtime(
        docker_client: docker.DockerClient, built_images: dict[str, str]) -> None:
    worker, dispatcher = built_images["worker"], built_images["dispatcher"]
    for image in (worker, dispatcher):
        assert run(docker_client, image, "id", "-u").strip() == "10001"
        # The manifests' commands exist; the package imports under a read-only root.
        out = run(docker_client, image, "python", "-c",
                  "import pkbs.worker.service, pkbs.dispatcher.app, pkbs.webdav; print('ok')",
                  read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"])
        assert out.strip() == "ok"
    tools = run(docker_client, worker, "bash", "-c",
                "command -v bash ps pkill python3 qsub qstat | xargs -n1 basename")
    assert tools.split() == ["bash", "ps", "pkill", "python3", "qsub", "qstat"]


def test_nats_image_is_the_servers_binary_alone(
        docker_client: docker.DockerClient, built_images: dict[str, str]) -> None:
    image = built_images["nats"]
    version = image.rsplit(":", 1)[1]
    assert run(docker_client, image, "--version").strip() == f"nats-server: v{version}"
    config = docker_client.images.get(image).attrs["Config"]
    assert config["User"] == "10001:10001"


def test_build_context_holds_only_wheels_and_the_server() -> None:
    """Nothing of the tree but what scripts/images.py made reaches a build."""
    context = ROOT / "build" / "image"
    assert {p.name for p in context.iterdir()} == {"wheels", "nats-server"}
    wheels = {p.name.split("-", 1)[0] for p in (context / "wheels").iterdir()}
    assert "pkbs" in wheels and all(p.suffix == ".whl" for p in (context / "wheels").iterdir())
