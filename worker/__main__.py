"""Run a worker: `python -m pkbs.worker`. SIGTERM drains it."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from prometheus_client import start_http_server

from pkbs.logs import setup_logging
from pkbs.settings import get_settings

from .service import Worker


async def serve() -> None:
    settings = get_settings()
    worker = Worker(settings)
    running = asyncio.create_task(worker.run())

    def stop() -> None:
        """Drain; a worker still waiting for NATS has nothing to drain: just stop."""
        worker.request_drain()
        if not worker.connected:
            running.cancel()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port)
    with contextlib.suppress(asyncio.CancelledError):
        await running


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
