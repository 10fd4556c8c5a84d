"""Direct HTTP calls to a dispatcher, for tests of the API itself."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from typing import Any

from pkbs.payload import build_from_script


def submit_body(
    script: str = "true\n", name: str = "api", submit_id: str | None = None, queue: str = "workq"
) -> dict[str, Any]:
    return {
        "submit_id": submit_id or os.urandom(16).hex(),
        "spec": {
            "name": name,
            "queue": queue,
            "kind": "stdin",
            "entrypoint": "STDIN",
            "variables": {"PBS_O_WORKDIR": "/tmp"},
        },
        "payload_b64": base64.b64encode(build_from_script(script.encode(), "STDIN")).decode(),
    }


def call(
    endpoint: str,
    method: str,
    path: str,
    token: str | None,
    body: Any = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(endpoint + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as err:
        text = err.read()
        return err.code, json.loads(text) if text else None
