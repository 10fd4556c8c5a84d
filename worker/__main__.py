"""Run a worker: `python -m pkbs.worker`. SIGTERM drains it; a second hands its
running jobs back at once."""

from __future__ import annotations

from pkbs.procs import drop_peek_caps, hide_from_jobs

if __name__ == "__main__":
    # First thing, before the slow imports below (about a second): the environment
    # holds the NATS and WebDAV passwords and the job-token secret, and jobs of other
    # workers run as the same user. Jobs started later lack the capabilities that
    # would let them read a non-dumpable process anyway (pkbs/procs.py).
    hide_from_jobs()
    drop_peek_caps()

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import signal  # noqa: E402

from prometheus_client import start_http_server  # noqa: E402

from pkbs.logs import setup_logging  # noqa: E402
from pkbs.settings import get_settings  # noqa: E402

from .runners import job_runner  # noqa: E402
from .service import Worker  # noqa: E402


async def serve() -> None:
    settings = get_settings()
    worker = Worker(settings, runner=job_runner(settings))
    running = asyncio.create_task(worker.run())

    def stop() -> None:
        """Drain; a second signal hands the running jobs back at once. A worker
        still waiting for NATS has nothing to drain: it just stops."""
        if worker.draining.is_set():
            worker.hand_back_now()
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
    hide_from_jobs()
    drop_peek_caps()
    setup_logging(get_settings().log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
