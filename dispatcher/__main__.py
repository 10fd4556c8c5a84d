"""Run the dispatcher: `python -m pkbs.dispatcher`."""

from __future__ import annotations

from pkbs.procs import hide_from_jobs

if __name__ == "__main__":
    # First thing, before the slow imports below: the environment holds the admin
    # token, the NATS and WebDAV passwords and the job-token secret (pkbs/procs.py).
    hide_from_jobs()

import uvicorn  # noqa: E402

from pkbs.logs import setup_logging  # noqa: E402
from pkbs.settings import get_settings  # noqa: E402

from .app import create_app  # noqa: E402


def main() -> None:
    hide_from_jobs()
    settings = get_settings()
    setup_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.dispatcher_host,
        port=settings.dispatcher_port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's lines go through ours (pkbs/logs.py)
        access_log=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
