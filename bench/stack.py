"""A private local stack for one benchmark run: the real `pkbs up` in a temp PKBS_HOME."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


class StackFailed(RuntimeError):
    pass


class BenchStack:
    def __init__(self, workers: int | None, slots: int | None, keep_home: bool = False,
                 extra_env: dict[str, str] | None = None) -> None:
        self.extra_env = extra_env or {}
        self.requested_workers = workers
        self.requested_slots = slots
        self.keep_home = keep_home
        self.home = Path(tempfile.mkdtemp(prefix="pkbs-bench-"))
        self.started = False
        self.startup_s = 0.0

    # -- environment ---------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        """The caller's environment minus any PKBS_* (so nothing points elsewhere)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PKBS_")}
        env["PKBS_HOME"] = str(self.home)
        env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
        return env

    def stack_env(self) -> dict[str, str]:
        """The environment `pkbs up` (and so every process of the stack) gets."""
        return {**self.base_env(), **self.extra_env}

    # -- lifecycle -----------------------------------------------------------

    def up(self) -> None:
        argv = [str(BIN / "pkbs"), "up"]
        if self.requested_workers:
            argv += ["--workers", str(self.requested_workers)]
        if self.requested_slots:
            argv += ["--slots", str(self.requested_slots)]
        t0 = time.perf_counter()
        result = subprocess.run(argv, env=self.stack_env(), capture_output=True, text=True,
                                timeout=180)
        self.startup_s = time.perf_counter() - t0
        if result.returncode != 0:
            tails = []
            for log in sorted((self.home / "logs").glob("*.log")):
                lines = log.read_text(errors="replace").splitlines()[-8:]
                tails.append(f"--- {log.name}\n" + "\n".join(lines))
            raise StackFailed(f"pkbs up failed:\n{result.stdout}\n{result.stderr}\n"
                              + "\n".join(tails))
        self.started = True
        self.state = json.loads((self.home / "run" / "stack.json").read_text())
        self.client = json.loads((self.home / "client.json").read_text())
        self.secrets = json.loads((self.home / "secrets.json").read_text())

    def down(self) -> None:
        if self.started:
            subprocess.run([str(BIN / "pkbs"), "down"], env=self.base_env(),
                           capture_output=True, text=True, timeout=180)
            self.started = False
        if not self.keep_home:
            shutil.rmtree(self.home, ignore_errors=True)

    # -- what the stack is made of --------------------------------------------

    @property
    def endpoint(self) -> str:
        return str(self.client["endpoint"])

    @property
    def token(self) -> str:
        return str(self.client["token"])

    def processes(self) -> list[dict[str, Any]]:
        return list(self.state["processes"])

    def pids(self, with_supervisor: bool = True) -> dict[str, int]:
        """name -> pid of every process the stack runs (the jobs are not among them)."""
        out = {p["name"]: int(p["pid"]) for p in self.processes() if p.get("pid")}
        if with_supervisor:
            out["supervisor"] = int(self.state["supervisor_pid"])
        return out

    def port_of(self, name: str) -> int:
        for proc in self.processes():
            if proc["name"] == name:
                return int(proc["port"])
        raise KeyError(name)

    def supervisor_args(self) -> list[str]:
        """The supervisor's command line: `python -m pkbs.local HOME WORKERS SLOTS
        SERVER` (readable although the supervisor hides its environment)."""
        pid = self.pids()["supervisor"]
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]

    def layout(self) -> dict[str, Any]:
        workers = [p["name"] for p in self.processes() if p["name"].startswith("worker")]
        slots = int(self.supervisor_args()[-2]) if workers else 0
        return {
            "workers": len(workers),
            "slots_per_worker": slots,
            "total_slots": len(workers) * slots,
            "defaults_from_pkbs_up": not (self.requested_workers or self.requested_slots),
            "startup_s": round(self.startup_s, 3),
            "docker": self.state.get("docker"),
        }

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.port_of('nats-server')}"

    @property
    def webdav_url(self) -> str:
        return f"http://127.0.0.1:{self.port_of('webdav')}"
