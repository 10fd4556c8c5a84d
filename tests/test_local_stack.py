"""`pkbs up / down / status` and the supervisor, on stacks of their own: status lists
every process, a killed process is restarted alone, `up` twice is harmless, `down` stops
everything and jobs survive it (a running one is handed back and rerun), nats-server
gets a quarter of the cores, ports are picked outside the ephemeral range."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkbs import servers
from pkbs.local import nats_server_env
from tests.stackutil import (
    Stack,
    cli,
    fetch_results,
    job_number,
    pid_gone,
    poll,
    status_rows,
    submit,
)

PROCESSES = ["supervisor", "nats-server", "webdav", "dispatcher", "worker-1", "worker-2"]


def _status(stack: Stack) -> dict[str, dict[str, str]]:
    result = cli(stack, "pkbs", "status")
    assert result.stdout.splitlines()[0].split() == ["process", "pid", "port", "health",
                                                     "restarts"], result.stdout
    return status_rows(result)


def _all_ok(stack: Stack) -> dict[str, dict[str, str]] | None:
    result = cli(stack, "pkbs", "status")
    if result.returncode != 0:
        return None
    rows = status_rows(result)
    return rows if all(r["health"] == "ok" for r in rows.values()) else None


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose processes these tests kill (the session stack is left alone)."""
    s = Stack(tmp_path_factory.mktemp("pkbs-supervised"),
              extra_env={"PKBS_DRAIN_GRACE_SECONDS": "0.5"})
    s.up(workers=2, slots=1)
    yield s
    if (s.home / "run" / "stack.json").exists():
        s.down()


def test_status_lists_every_process(supervised: Stack) -> None:
    result = cli(supervised, "pkbs", "status")
    assert (result.returncode, result.stderr) == (0, "")
    rows = status_rows(result)
    assert list(rows) == PROCESSES
    state = supervised.state()
    assert int(rows["supervisor"]["pid"]) == state["supervisor_pid"]
    for name, row in rows.items():
        assert row["health"] == "ok", (name, row)
        assert not pid_gone(int(row["pid"])), (name, row)
        if name != "supervisor":
            assert int(row["pid"]) == supervised.pid_of(name)
    assert rows["dispatcher"]["port"] == state["endpoint"].rsplit(":", 1)[1]


def test_nats_server_gets_a_quarter_of_the_cores(supervised: Stack,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with open(f"/proc/{supervised.pid_of('nats-server')}/environ", "rb") as fh:
        env = dict(v.split(b"=", 1) for v in fh.read().split(b"\0") if b"=" in v)
    assert env.get(b"GOMAXPROCS") == os.environ.get(
        "GOMAXPROCS", str(max(1, (os.cpu_count() or 1) // 4))).encode()
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    assert [nats_server_env(n)["GOMAXPROCS"] for n in (1, 2, 7, 8, 64)] == \
        ["1", "1", "1", "2", "16"]
    monkeypatch.setenv("GOMAXPROCS", "3")
    assert nats_server_env(8) == {}  # the user's choice is left as it is


def test_ports_are_free_and_outside_the_ephemeral_range() -> None:
    """A port from the ephemeral range can turn into the local end of some outgoing
    connection before the server meant for it binds it (seen once: WebDAV could never
    start, every result waited)."""
    low, high = servers.ephemeral_ports()
    for _ in range(50):
        port = servers.free_port()
        assert not low <= port <= high and port >= servers.LOWEST_PORT, port
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize("victim", ["worker-1", "dispatcher"])
def test_killed_process_is_restarted(supervised: Stack, victim: str) -> None:
    before = poll(lambda: _all_ok(supervised), 30, 0.1, "a healthy stack")
    old_pid = int(before[victim]["pid"])
    os.kill(old_pid, signal.SIGKILL)

    def restarted() -> dict[str, dict[str, str]] | None:
        rows = _all_ok(supervised)
        if rows and rows[victim]["pid"] != str(old_pid):
            return rows
        return None

    after = poll(restarted, 30, 0.1, f"{victim} to be restarted")
    assert int(after[victim]["restarts"]) >= 1 + int(before[victim]["restarts"])
    assert not pid_gone(int(after[victim]["pid"]))
    # Nobody else was touched.
    for name in PROCESSES:
        if name != victim:
            assert after[name]["pid"] == before[name]["pid"], name
    # And the stack still works end to end.
    job_id = submit(supervised, "-N", "after", input="echo alive\n")
    assert supervised.wait_state(job_id, "F")["Exit_status"] == 0


def test_up_twice_is_harmless(supervised: Stack) -> None:
    before = poll(lambda: _all_ok(supervised), 30, 0.1, "a healthy stack")
    result = cli(supervised, "pkbs", "up", "--workers", "2", "--slots", "1")
    assert result.returncode == 0, result.stderr
    assert "already running" in result.stderr
    assert result.stdout.startswith(f"pkbs is up: {supervised.state()['endpoint']} ")
    assert _status(supervised) == before


def test_down_stops_everything_and_jobs_survive(fresh_stack: Stack, tmp_path: Path) -> None:
    # Drain quickly so that `pkbs down` hands the running job back; a short ack wait
    # so that its redelivery after the restart comes soon (see the xfail test below).
    fresh_stack.extra_env.update({"PKBS_DRAIN_GRACE_SECONDS": "0.5",
                                  "PKBS_ACK_WAIT_SECONDS": "3"})
    fresh_stack.up(workers=1, slots=1)
    done = submit(fresh_stack, "-N", "done", input="exit 3\n")
    assert fresh_stack.wait_state(done, "F")["Exit_status"] == 3
    held = submit(fresh_stack, "-h", "-N", "held", input="echo held\n")
    # Runs until `pkbs down` hands it back; its rerun (seeing the marker) exits at once.
    marker = tmp_path / "first-run"
    running = submit(fresh_stack, "-N", "running", "-v", f"MARK={marker}", input=(
        'if [ -e "$MARK" ]; then echo rerun; exit 0; fi\ntouch "$MARK"\nsleep 60\n'))
    fresh_stack.wait_state(running, "R")
    poll(marker.exists, 30, 0.05, "the first run to start")
    queued = submit(fresh_stack, "-N", "queued", input="true\n")
    assert fresh_stack.job(queued)["job_state"] == "Q"

    pids = [int(r["pid"]) for r in _status(fresh_stack).values()]
    down = cli(fresh_stack, "pkbs", "down", timeout=120)
    assert (down.returncode, down.stdout) == (0, "pkbs is down\n"), down.stderr
    for pid in pids:
        assert pid_gone(pid), pid
    status = cli(fresh_stack, "pkbs", "status")
    assert (status.returncode, status.stdout) == (1, "pkbs is not running\n")
    again = cli(fresh_stack, "pkbs", "down")
    assert (again.returncode, again.stdout) == (0, "pkbs was not running\n")

    fresh_stack.up(workers=1, slots=1)
    job = fresh_stack.job(done)
    assert (job["job_state"], job["Exit_status"]) == ("F", 3)
    assert fresh_stack.job(held)["job_state"] == "H"
    assert fresh_stack.wait_state(queued, "F", timeout=60)["Exit_status"] == 0
    rerun = fresh_stack.wait_state(running, "F", timeout=60)
    assert rerun["Exit_status"] == 0
    assert rerun["run_count"] == 2  # handed back at `pkbs down`, run again after `pkbs up`
    fetch_results(fresh_stack, running, tmp_path / "rerun")
    assert (tmp_path / "rerun" / f"running.o{job_number(running)}").read_text() == "rerun\n"
    plain = cli(fresh_stack, "qstat")
    assert [line.split()[0] for line in plain.stdout.splitlines()[2:]] == [held]


def test_handed_back_job_runs_promptly_after_restart(supervised: Stack) -> None:
    job_id = submit(supervised, "-N", "handback", input="sleep 30\n")
    supervised.wait_state(job_id, "R")
    supervised.down()
    supervised.up(workers=2, slots=1)
    assert supervised.job(job_id)["comment"] == "Handed back by a draining worker"
    try:
        supervised.wait_state(job_id, "R", timeout=15)  # ack_wait is 30 s
    finally:
        cli(supervised, "qdel", job_id)
