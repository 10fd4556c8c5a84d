"""Container image references (`[registry[:port]/]path[:tag][@digest]`), checked at
submit as the image distribution format defines them, and a queue's allow-list."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

# The grammar of github.com/distribution/reference, without IPv6 registries.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
MAX_NAME = 255
# The job variable that names a job's image (PBS Professional's container support).
IMAGE_VARIABLE = "CONTAINER_IMAGE"


class InvalidImage(ValueError):
    """Not an image reference; says why."""


def check_image(reference: str) -> str:
    """The reference as given, if it is one; else InvalidImage."""
    found = _REFERENCE.fullmatch(reference)
    if not found:
        raise InvalidImage(f"not an image reference: {reference!r}")
    domain = found["domain"]
    registry = domain and ("." in domain or ":" in domain or domain == "localhost")
    if domain and not registry and domain != domain.lower():
        # "user/repo": the first component is a path, and paths are lowercase.
        raise InvalidImage(f"not an image reference: {reference!r} (uppercase in name)")
    name = f"{domain}/{found['path']}" if domain else found["path"]
    if len(name) > MAX_NAME:
        raise InvalidImage(f"image name longer than {MAX_NAME} characters: {reference!r}")
    return reference


def allowed(reference: str, patterns: Sequence[str] | None) -> bool:
    """Whether a queue whose allow-list is `patterns` (shell-style, e.g.
    `registry.example.org/*` or `python:3.*`; None: any image) takes this image."""
    if patterns is None:
        return True
    return any(fnmatch.fnmatchcase(reference, pattern) for pattern in patterns)
