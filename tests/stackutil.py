"""Drive a real local stack (`pkbs up`) and the real CLI in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def poll(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
         what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Stack:
    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PKBS_")}
        env.update({"PKBS_HOME": str(self.home), "PATH": f"{BIN}:{env.get('PATH', '')}"})
        env.update(self.extra_env)
        return env

    def run(self, *args: str, input: str | bytes | None = None, cwd: Path | None = None,
            env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        data = input.decode() if isinstance(input, bytes) else input
        return subprocess.run(
            list(args), input=data, capture_output=True, text=True, cwd=cwd,
            env={**self.env, **(env or {})}, timeout=timeout,
        )

    def up(self, workers: int = 2, slots: int = 2) -> None:
        result = self.run(str(BIN / "pkbs"), "up", "--workers", str(workers), "--slots", str(slots),
                          timeout=120)
        assert result.returncode == 0, result.stderr + result.stdout

    def down(self) -> None:
        result = self.run(str(BIN / "pkbs"), "down", timeout=120)
        assert result.returncode == 0, result.stderr

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.home / "run" / "stack.json").read_text())
        return data

    def pid_of(self, name: str) -> int:
        for proc in self.state()["processes"]:
            if proc["name"] == name:
                return int(proc["pid"])
        raise KeyError(name)

    def qsub(self, *args: str, input: str | None = None, cwd: Path | None = None,
             env: dict[str, str] | None = None) -> str:
        result = self.run(str(BIN / "qsub"), *args, input=input, cwd=cwd, env=env)
        assert result.returncode == 0, f"qsub failed: {result.stderr}"
        return result.stdout.strip()

    def qstat_json(self, *ids: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        result = self.run(str(BIN / "qstat"), "-f", "-F", "json", "-x", *ids, env=env)
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def job(self, job_id: str) -> dict[str, Any]:
        jobs: dict[str, Any] = self.qstat_json(job_id).get("Jobs", {})
        return dict(jobs[job_id])

    def wait_state(self, job_id: str, state: str = "F", timeout: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["job_state"] == state else None

        result: dict[str, Any] = poll(check, timeout, 0.1, f"{job_id} to reach {state}")
        return result

    def token_for(self, user: str) -> str:
        result = self.run(str(BIN / "pkbs"), "token", "create", user)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def as_user(self, user: str) -> dict[str, str]:
        state = self.state()
        return {"PKBS_ENDPOINT": state["endpoint"], "PKBS_TOKEN": self.token_for(user)}
