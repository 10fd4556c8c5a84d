"""Bounded storage against a real stack whose JetStream store is a few MB: a full
store refuses qsub at once with PBS's message and exit status, leaves nothing
half-queued, lets running jobs finish and report, and takes jobs again once history
retention has made room (pkbs/storage.py)."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkbs import constants as C
from pkbs.control import JobControl
from pkbs.errors import PBSE_SAVE_ERR, StoreFull, exit_code
from pkbs.jobstore import JobStore
from pkbs.models import JobSpec
from pkbs.storage import JOBS_STREAM, SHARES, stream_limit
from tests.stackutil import (
    BIN,
    Stack,
    poll,
    results_dir,
    set_server_attrs,
    store_settings,
    write_file,
)

STORE = 4 * 1024 * 1024
PAYLOAD = 500_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("storage"),
        extra_env={"PKBS_MAX_STORE_BYTES": "4mb", "PKBS_RETENTION_SWEEP_SECONDS": "0.5"},
    )
    s.up(workers=1, slots=2)
    yield s
    s.down()


def big_script(path: Path) -> Path:
    """A job script of PAYLOAD bytes that cannot be compressed."""
    filler = base64.b64encode(os.urandom(PAYLOAD * 3 // 4)).decode()
    return write_file(path, f"#!/bin/sh\n# {filler[: PAYLOAD - 20]}\ntrue\n")


def counts(stack: Stack) -> tuple[int, int]:
    """(messages in the submit stream, records in the jobs bucket), asked of NATS."""

    async def ask() -> tuple[int, int]:
        store = await JobStore.open(store_settings(stack), "test-counts")
        try:
            submit = await store.js.stream_info(C.SUBMIT_STREAM)
            jobs = await store.js.stream_info(JOBS_STREAM)
            return int(submit.state.messages), int(jobs.state.messages)
        finally:
            await store.close()

    return asyncio.run(ask())


def test_limits_are_the_shares_of_the_store() -> None:
    assert sum(SHARES.values()) == pytest.approx(1.0)
    limits = [stream_limit(STORE, name) for name in SHARES]
    assert all(limit is not None for limit in limits)
    assert sum(limit or 0 for limit in limits) <= STORE  # nats-server reserves each
    assert stream_limit(None, C.SUBMIT_STREAM) is None


def test_a_full_store_refuses_qsub_at_once_and_recovers_after_retention(
    stack: Stack, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    running = stack.qsub(
        "-N", "long", input=f"while [ ! -e {go} ]; do sleep 0.1; done\necho reported > r.txt\n"
    )
    stack.wait_state(running, "R")
    script = big_script(tmp_path / "big.sh")
    accepted: list[str] = []
    refused = None
    for _ in range(12):
        result = stack.run(str(BIN / "qsub"), str(script))
        if result.returncode != 0:
            refused = result
            break
        accepted.append(result.stdout.strip())
    assert refused is not None, "the store never filled"
    assert len(accepted) >= 3  # 60 % of 4 MB holds a few 500 KB payloads
    assert refused.returncode == exit_code(PBSE_SAVE_ERR) == 57
    assert refused.stderr.startswith(
        "qsub: Failed to save job/resv, refer server logs for details: job store full ("
    ), refused.stderr
    assert "room is made as finished jobs' history expires" in refused.stderr

    # Nothing of the refused submission was stored: one payload and one record per job.
    assert counts(stack) == (len(accepted) + 1, len(accepted) + 1)
    started = time.monotonic()
    again = stack.run(str(BIN / "qsub"), str(script))
    assert again.returncode == 57 and time.monotonic() - started < 5  # at once

    # A batch the server itself refuses midway (no admission check in this client)
    # is taken back whole: nothing of it stays.
    async def overfill() -> StoreFull:
        settings = store_settings(stack)  # no PKBS_MAX_STORE_BYTES: no check here
        store = await JobStore.open(settings, "test-overfill")
        try:
            spec = JobSpec(name="over", kind="file", entrypoint="big.sh", payload_format="file")
            small = b"#!/bin/sh\ntrue\n"
            jobs = [(spec, small, f"over-small-{time.time_ns()}")]
            big = script.read_bytes()
            jobs += [(spec, big, f"over-big-{i}-{time.time_ns()}") for i in range(3)]
            with pytest.raises(StoreFull) as refusal:
                await JobControl(store).submit_many("someone", jobs)
            return refusal.value
        finally:
            await store.close()

    refusal = asyncio.run(overfill())
    assert "maximum bytes exceeded" in refusal.message
    assert counts(stack) == (len(accepted) + 1, len(accepted) + 1)

    # The running job finishes and reports although the store is full.
    go.touch()
    job = stack.wait_state(running, "F")
    assert job["Exit_status"] == 0
    assert (results_dir(stack, job) / "r.txt").read_text() == "reported\n"
    for job_id in accepted:
        assert stack.wait_state(job_id, "F")["Exit_status"] == 0

    # History expires: the sweep makes room and qsub takes jobs again by itself.
    set_server_attrs(stack, job_history_duration="1")

    def submitted() -> str | None:
        result = stack.run(str(BIN / "qsub"), str(script))
        if result.returncode == 0:
            return result.stdout.strip()
        assert result.returncode == 57, result.stderr
        return None

    later = poll(submitted, 60, 0.5, "qsub to be accepted again")
    assert stack.wait_state(later, "F")["Exit_status"] == 0
