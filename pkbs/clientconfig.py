"""Where the CLI finds the dispatcher endpoint and its token. Standard library only,
and cheap to import (no dataclasses, no pathlib): qsub reads it on every call.

Order: environment (PKBS_ENDPOINT, PKBS_TOKEN), then `$PKBS_HOME/client.json`
(written by `pkbs up`), then `~/.config/pkbs/client.json` (written by `pkbs login`).
"""

from __future__ import annotations

import os

from pkbs import wirejson
from pkbs.constants import ENV_ENDPOINT, ENV_HOME, ENV_TOKEN
from pkbs.errors import NoConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

CLIENT_FILE = "client.json"


def _home() -> str:
    return os.environ.get(ENV_HOME) or os.path.expanduser("~/.local/share/pkbs")


def _login() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "pkbs", CLIENT_FILE)


def pkbs_home() -> Path:
    from pathlib import Path

    return Path(_home())


def login_file() -> Path:
    from pathlib import Path

    return Path(_login())


class ClientConfig:
    __slots__ = ("endpoint", "token", "server")

    def __init__(self, endpoint: str, token: str, server: str = "pkbs") -> None:
        self.endpoint = endpoint
        self.token = token
        self.server = server

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClientConfig):
            return NotImplemented
        return (self.endpoint, self.token, self.server) == (
            other.endpoint,
            other.token,
            other.server,
        )

    def __repr__(self) -> str:
        return f"ClientConfig(endpoint={self.endpoint!r}, server={self.server!r})"


def load() -> ClientConfig:
    endpoint = os.environ.get(ENV_ENDPOINT)
    token = os.environ.get(ENV_TOKEN)
    if endpoint and token:
        return ClientConfig(endpoint.rstrip("/"), token)
    for path in (os.path.join(_home(), CLIENT_FILE), _login()):
        try:
            with open(path) as fh:
                data = wirejson.load(fh)
        except (OSError, ValueError):
            continue
        return ClientConfig(
            (endpoint or data["endpoint"]).rstrip("/"),
            token or data["token"],
            data.get("server", "pkbs"),
        )
    raise NoConfig()


def save(path: Path, config: ClientConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        wirejson.dump(
            {"endpoint": config.endpoint, "token": config.token, "server": config.server}, fh
        )
    os.replace(tmp, path)
