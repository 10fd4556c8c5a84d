"""Where the CLI finds the dispatcher endpoint and its token. Standard library only.

Order: environment (PKBS_ENDPOINT, PKBS_TOKEN), then `$PKBS_HOME/client.json`
(written by `pkbs up`), then `~/.config/pkbs/client.json` (written by `pkbs login`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pkbs.constants import ENV_ENDPOINT, ENV_HOME, ENV_TOKEN

CLIENT_FILE = "client.json"


def pkbs_home() -> Path:
    return Path(os.environ.get(ENV_HOME) or os.path.expanduser("~/.local/share/pkbs"))


def login_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "pkbs" / CLIENT_FILE


@dataclass(frozen=True)
class ClientConfig:
    endpoint: str
    token: str
    server: str = "pkbs"


class NoConfig(Exception):
    pass


def load() -> ClientConfig:
    endpoint = os.environ.get(ENV_ENDPOINT)
    token = os.environ.get(ENV_TOKEN)
    if endpoint and token:
        return ClientConfig(endpoint.rstrip("/"), token)
    for path in (pkbs_home() / CLIENT_FILE, login_file()):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        return ClientConfig(
            (endpoint or data["endpoint"]).rstrip("/"),
            token or data["token"],
            data.get("server", "pkbs"),
        )
    raise NoConfig(
        "no pkbs endpoint configured: run `pkbs up` or `pkbs login`, "
        "or set PKBS_ENDPOINT and PKBS_TOKEN"
    )


def save(path: Path, config: ClientConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"endpoint": config.endpoint, "token": config.token, "server": config.server}, fh)
    os.replace(tmp, path)
