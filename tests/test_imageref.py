"""Image references as a job gives them (-v CONTAINER_IMAGE=…): the distribution
grammar, and a queue's allow-list."""

from __future__ import annotations

import pytest

from pkbs.imageref import InvalidImage, allowed, check_image

GOOD = [
    "python", "python:3.12-slim", "library/python:3.12", "docker.io/library/python:3.12",
    "registry.example.org:5000/team/tool:1.0.2", "localhost/pkbs-base:bookworm",
    "ghcr.io/org/img@sha256:" + "a" * 64, "img:tag@sha256:" + "0" * 64, "a/b/c/d", "pkbs-base",
]
BAD = [
    "", "Python:3", "python:", ":3", "python::3", "python:3 slim", "-python", "python/",
    "https://registry/x", "img@sha256:abc", "a" * 256, "img:" + "t" * 129, "UPPER/name",
    "name;rm -rf /", "$(id)",
]


@pytest.mark.parametrize("reference", GOOD)
def test_valid_references(reference: str) -> None:
    assert check_image(reference) == reference


@pytest.mark.parametrize("reference", BAD)
def test_invalid_references(reference: str) -> None:
    with pytest.raises(InvalidImage):
        check_image(reference)


def test_allow_list() -> None:
    assert allowed("anything:1", None)
    patterns = ["registry.example.org/*", "python:3.*"]
    assert allowed("registry.example.org/team/tool:1", patterns)
    assert allowed("python:3.12-slim", patterns)
    assert not allowed("python:2.7", patterns)
    assert not allowed("evil.example.com/registry.example.org/x", patterns)
    assert not allowed("x", [])
