"""Run a worker: `python -m pkbs.worker`. SIGTERM drains it."""

from __future__ import annotations

import asyncio
import signal

from prometheus_client import start_http_server

from pkbs.logs import setup_logging
from pkbs.settings import get_settings

from .service import Worker


async def serve() -> None:
    settings = get_settings()
    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.request_drain)
    loop.add_signal_handler(signal.SIGINT, worker.request_drain)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port)
    await worker.run()


def main() -> None:
    setup_logging(get_settings().log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
