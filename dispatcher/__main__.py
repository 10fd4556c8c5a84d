"""Run the dispatcher: `python -m pkbs.dispatcher`."""

from __future__ import annotations

import uvicorn

from pkbs.logs import setup_logging
from pkbs.settings import get_settings

from .app import create_app


def main() -> None:
    settings = get_settings()
    setup_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.dispatcher_host,
        port=settings.dispatcher_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
