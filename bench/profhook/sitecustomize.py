"""cProfile hook for the stack's Python processes (used by `python -m bench --profile
cprofile`). Active only when BENCH_CPROFILE_DIR is set and this directory is on
PYTHONPATH of `pkbs up`: then the dispatcher, each worker and the WebDAV server
install two signal handlers -- SIGUSR1 starts a cProfile (CPU-time clock) of the main
thread, SIGUSR2 stops it and writes <dir>/<module>-<pid>.prof. The product code is
not touched.
"""

import os
import sys

_DIR = os.environ.get("BENCH_CPROFILE_DIR")
_TARGETS = ("pkbs.worker", "pkbs.dispatcher", "pkbs.webdav")


def _install(directory: str, module: str) -> None:
    import cProfile
    import signal
    import time

    state: dict[str, cProfile.Profile] = {}

    def start(signum: int, frame: object) -> None:
        if "p" not in state:
            state["p"] = cProfile.Profile(time.process_time)
            state["p"].enable()

    def stop(signum: int, frame: object) -> None:
        prof = state.pop("p", None)
        if prof is not None:
            prof.disable()
            name = f"{module.rsplit('.', 1)[-1]}-{os.getpid()}.prof"
            prof.dump_stats(os.path.join(directory, name + ".tmp"))
            os.replace(os.path.join(directory, name + ".tmp"), os.path.join(directory, name))

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


if _DIR:
    _argv = getattr(sys, "orig_argv", [])
    if "-m" in _argv[:-1]:
        _module = _argv[_argv.index("-m") + 1]
        if _module in _TARGETS:
            _install(_DIR, _module)
