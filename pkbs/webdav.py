"""The built-in WebDAV server (WsgiDAV on cheroot): `python -m pkbs.webdav`.

Used by the local stack and by the Kubernetes base; any other WebDAV server works
as well (see the `nextcloud` overlay).
"""

from __future__ import annotations

import signal
from typing import Any

from cheroot import wsgi
from wsgidav.wsgidav_app import WsgiDAVApp

from pkbs.logs import setup_logging
from pkbs.procs import hide_from_jobs
from pkbs.settings import Settings, get_settings


def build_app(settings: Settings) -> WsgiDAVApp:
    if settings.webdav_root is None:
        raise SystemExit("PKBS_WEBDAV_ROOT must name the directory to serve")
    settings.webdav_root.mkdir(parents=True, exist_ok=True)
    user = settings.webdav_user
    password = settings.webdav_password.get_secret_value() if settings.webdav_password else None
    config: dict[str, Any] = {
        "host": settings.webdav_listen_host,
        "port": settings.webdav_listen_port,
        "provider_mapping": {"/": str(settings.webdav_root)},
        "verbose": 1,
        "logging": {"enable": False},
        "property_manager": True,
        "lock_storage": True,
        "dir_browser": {"enable": False},
        "http_authenticator": {
            "accept_basic": True,
            "accept_digest": False,
            "default_to_digest": False,
            "trusted_auth_header": None,
        },
    }
    if user and password:
        config["simple_dc"] = {"user_mapping": {"*": {user: {"password": password}}}}
    else:
        config["simple_dc"] = {"user_mapping": {"*": True}}
    return WsgiDAVApp(config)


def main() -> None:
    hide_from_jobs()  # its environment holds the WebDAV password (pkbs/procs.py)
    settings = get_settings()
    setup_logging(settings.log_level)
    app = build_app(settings)
    server = wsgi.Server(
        (settings.webdav_listen_host, settings.webdav_listen_port), app, numthreads=8
    )

    def stop(signum: int, frame: object) -> None:
        # Only unwind here: server.stop() waits for the serve loop this thread runs.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.start()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
